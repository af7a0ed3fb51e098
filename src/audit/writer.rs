//! The audit writer task: numbering, batching, retrying, spooling and replaying.
//!
//! The channel from the request path stays drained while the writer waits on the store or the
//! disk: every store call and spool write runs beside a receive loop (`AuditWriter::during`), so a slow
//! `fsync` or a store timeout does not leave [`super::Audit::record`] facing a full channel
//! (which would drop events). What arrives meanwhile is numbered once the call returns. Events
//! in memory are therefore bounded by about four times `GATEHOUSE_AUDIT_QUEUE`: the channel,
//! what arrived during a call, and the buffer (up to twice the queue before it overflows).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::spool::{Chunk, Spool};
use super::{AuditConfig, AuditEvent, Sequenced};
use crate::metrics::AuditMetrics;
use crate::store::{AuditStore, StoreError};
use crate::tasks::Backoff;

/// The waits between failed writes: 50 ms doubling to 2 s.
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));

/// Empties the audit channel into the store; see the [module docs](super).
pub struct AuditWriter {
    receiver: mpsc::Receiver<AuditEvent>,
    /// Events taken from the channel while a store or spool call was in flight.
    arrived: Vec<AuditEvent>,
    backlog: Backlog,
}

/// The numbered events not yet in the store, and where they go.
struct Backlog {
    store: Arc<dyn AuditStore>,
    buffer: VecDeque<Sequenced>,
    next_seq: u64,
    writer_id: String,
    spool: Option<Arc<Mutex<Spool>>>,
    metrics: AuditMetrics,
    batch: usize,
    capacity: usize,
}

/// Runs a spool operation off the async threads.
async fn on_spool<T: Send + 'static>(
    spool: &Arc<Mutex<Spool>>,
    operation: impl FnOnce(&mut Spool) -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let spool = Arc::clone(spool);
    tokio::task::spawn_blocking(move || {
        let mut spool = spool.lock().unwrap_or_else(PoisonError::into_inner);
        operation(&mut spool)
    })
    .await
    .map_err(std::io::Error::other)?
}

#[derive(Debug, thiserror::Error)]
enum FlushError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("spool: {0}")]
    Spool(#[from] std::io::Error),
}

impl AuditWriter {
    pub(super) fn new(
        store: Arc<dyn AuditStore>,
        receiver: mpsc::Receiver<AuditEvent>,
        config: &AuditConfig,
        metrics: AuditMetrics,
    ) -> std::io::Result<Self> {
        let spool = config
            .spool
            .as_deref()
            .map(|path| Spool::open(path, config.spool_max_bytes))
            .transpose()?;
        if let Some(spool) = spool.as_ref().filter(|s| s.has_pending()) {
            tracing::info!(
                path = %spool.path().display(),
                bytes = spool.pending_bytes(),
                "audit spool holds events from an earlier run; replaying them first"
            );
        }
        Ok(Self {
            receiver,
            arrived: Vec::new(),
            backlog: Backlog {
                store,
                buffer: VecDeque::new(),
                next_seq: 1,
                writer_id: crate::records::writer_id(&config.instance),
                spool: spool.map(|s| Arc::new(Mutex::new(s))),
                metrics,
                batch: config.batch.max(1),
                capacity: config.queue.max(1),
            },
        })
    }

    /// Numbers what arrived during the last call, then what waits in the channel (while the
    /// buffer is under twice its bound).
    fn take_in(&mut self) {
        for event in self.arrived.drain(..) {
            self.backlog.push(event);
        }
        while self.backlog.buffer.len() < self.backlog.capacity * 2 {
            match self.receiver.try_recv() {
                Ok(event) => self.backlog.push(event),
                Err(_) => break,
            }
        }
        self.backlog.metrics.set_backlog(self.backlog.buffer.len());
    }

    /// Runs a backlog call (store or spool I/O) while taking events from the channel into
    /// `arrived`, up to one queue of them; [`Self::take_in`] numbers them afterwards.
    async fn during<'a, F: Future>(
        &'a mut self,
        io: impl FnOnce(&'a mut Backlog) -> F,
    ) -> F::Output {
        let limit = self.backlog.capacity;
        let mut io = std::pin::pin!(io(&mut self.backlog));
        loop {
            tokio::select! {
                biased;
                out = &mut io => return out,
                // A closed channel disables this branch until `io` is done.
                Some(event) = self.receiver.recv(), if self.arrived.len() < limit => {
                    self.arrived.push(event);
                }
            }
        }
    }

    /// Waits `backoff` while still taking events in (and spooling past the bound).
    async fn pause(&mut self, backoff: Duration, cancel: &CancellationToken) {
        let until = tokio::time::Instant::now() + backoff;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(until) => return,
                () = cancel.cancelled() => return,
                event = self.receiver.recv() => match event {
                    Some(event) => {
                        self.backlog.push(event);
                        self.take_in();
                        self.during(|b| b.overflow(false)).await;
                    }
                    None => return,
                },
            }
        }
    }

    /// Runs until `cancel` fires, then takes the events still queued and stores or spools
    /// them before returning.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut backoff = BACKOFF;
        let mut failing = false;
        while !cancel.is_cancelled() {
            if self.arrived.is_empty() && self.backlog.is_empty() {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    event = self.receiver.recv() => match event {
                        Some(event) => self.backlog.push(event),
                        None => break,
                    },
                }
            }
            self.take_in();
            self.during(|b| b.overflow(false)).await;
            self.take_in();
            match self.during(Backlog::flush_once).await {
                Ok(_) => {
                    if failing {
                        tracing::info!("audit store reachable again; catching up");
                    }
                    failing = false;
                    backoff.reset();
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "audit events not written yet; retrying with backoff");
                    }
                    failing = true;
                    self.pause(backoff.next_wait(), &cancel).await;
                }
            }
        }
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        self.receiver.close();
        self.take_in();
        while let Ok(event) = self.receiver.try_recv() {
            self.backlog.push(event);
        }
        // Memory goes to the store only when nothing older waits in the spool (a writer's
        // events must reach the store in order); otherwise, and on any failure, to the spool.
        if !self.backlog.spool_pending() {
            while !self.backlog.buffer.is_empty() {
                if let Err(e) = self.during(Backlog::write_batch).await {
                    tracing::warn!(error = %e, "audit store unreachable at shutdown");
                    break;
                }
            }
        }
        self.during(|b| b.overflow(true)).await;
        let counts = self.backlog.metrics.counts();
        tracing::info!(
            queued = counts.queued,
            written = counts.written,
            spooled = counts.spooled,
            replayed = counts.replayed,
            dropped = counts.dropped,
            "audit writer stopped"
        );
    }
}

impl Backlog {
    fn push(&mut self, event: AuditEvent) {
        self.buffer.push_back(Sequenced {
            seq: self.next_seq,
            event,
        });
        self.next_seq += 1;
    }

    /// Whether the spool holds events not yet replayed. Only this task touches the spool, and
    /// never during this call, so the lock is free and nothing here blocks.
    fn spool_pending(&self) -> bool {
        self.spool.as_ref().is_some_and(|spool| {
            spool
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .has_pending()
        })
    }

    /// Nothing to write: the buffer is empty and the spool replayed.
    fn is_empty(&self) -> bool {
        self.buffer.is_empty() && !self.spool_pending()
    }

    /// Moves the oldest events to the spool while the buffer is over its bound (all of them
    /// when `everything`). Without a spool, or when it refuses, they are dropped.
    async fn overflow(&mut self, everything: bool) {
        let keep = if everything { 0 } else { self.capacity / 2 };
        if !everything && self.buffer.len() <= self.capacity {
            return;
        }
        let moved: Vec<Sequenced> = self
            .buffer
            .drain(..self.buffer.len().saturating_sub(keep))
            .collect();
        if moved.is_empty() {
            return;
        }
        let n = moved.len();
        let result = match &self.spool {
            Some(spool) => {
                let writer = self.writer_id.clone();
                on_spool(spool, move |s| s.append(&writer, &moved)).await
            }
            None => Err(std::io::Error::other("no spool configured")),
        };
        match result {
            Ok(()) => {
                self.metrics.spooled(n);
                tracing::warn!(
                    events = n,
                    "audit events spooled to disk until the store takes them"
                );
            }
            Err(e) => {
                self.metrics.dropped(n);
                tracing::error!(events = n, error = %e, "audit events dropped");
            }
        }
        self.metrics.set_backlog(self.buffer.len());
    }

    /// Replays one chunk of the spool. Returns whether there was one.
    async fn replay_chunk(&mut self) -> Result<bool, FlushError> {
        let Some(spool) = &self.spool else {
            return Ok(false);
        };
        let batch = self.batch;
        let chunk: Chunk = on_spool(spool, move |s| s.read_chunk(batch)).await?;
        if chunk.lines.is_empty() && chunk.unreadable == 0 {
            return Ok(false);
        }
        // Consecutive lines of one writer go in one call, in file order.
        let mut start = 0;
        while start < chunk.lines.len() {
            let writer = &chunk.lines[start].writer;
            let end = chunk.lines[start..]
                .iter()
                .position(|l| &l.writer != writer)
                .map_or(chunk.lines.len(), |p| start + p);
            let events: Vec<Sequenced> = chunk.lines[start..end]
                .iter()
                .map(|l| l.sequenced.clone())
                .collect();
            self.store.append_audit(writer, &events).await?;
            start = end;
        }
        let end = chunk.end;
        on_spool(spool, move |s| s.consumed(end)).await?;
        self.metrics.replayed(chunk.lines.len());
        if chunk.unreadable > 0 {
            self.metrics.dropped(chunk.unreadable);
            tracing::error!(
                lines = chunk.unreadable,
                "unreadable audit spool lines skipped (torn by a crash?)"
            );
        }
        Ok(true)
    }

    /// Writes one batch from memory. Returns whether there was one.
    async fn write_batch(&mut self) -> Result<bool, FlushError> {
        if self.buffer.is_empty() {
            return Ok(false);
        }
        let n = self.batch.min(self.buffer.len());
        let events: Vec<Sequenced> = self.buffer.iter().take(n).cloned().collect();
        self.store.append_audit(&self.writer_id, &events).await?;
        self.buffer.drain(..n);
        self.metrics.written(n);
        self.metrics.set_backlog(self.buffer.len());
        Ok(true)
    }

    /// One step: the spool first (older events), then memory.
    async fn flush_once(&mut self) -> Result<bool, FlushError> {
        if self.spool_pending() {
            return self.replay_chunk().await;
        }
        self.write_batch().await
    }
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;

    use super::*;
    use crate::audit::{Audit, AuditEntry, AuditId, Source};
    use crate::decision::{Mode, Reason, Verdict};
    use crate::store::MemoryStore;

    /// A store whose appends take `delay`.
    struct Slow {
        inner: MemoryStore,
        delay: Duration,
    }

    #[async_trait]
    impl AuditStore for Slow {
        async fn append_audit(
            &self,
            writer: &str,
            events: &[Sequenced],
        ) -> Result<usize, StoreError> {
            tokio::time::sleep(self.delay).await;
            self.inner.append_audit(writer, events).await
        }

        async fn audit_before(
            &self,
            before: Option<AuditId>,
            count: usize,
        ) -> Result<Vec<AuditEntry>, StoreError> {
            self.inner.audit_before(before, count).await
        }

        async fn audit_after(
            &self,
            after: Option<AuditId>,
            count: usize,
        ) -> Result<Vec<AuditEntry>, StoreError> {
            self.inner.audit_after(after, count).await
        }
    }

    fn denial() -> AuditEvent {
        AuditEvent::decision(
            Verdict::Deny,
            Reason::NotOwner,
            Mode::Enforced,
            Source::Validate,
            "test",
        )
    }

    #[tokio::test]
    async fn events_keep_arriving_while_a_store_call_is_in_flight() {
        let store = Arc::new(Slow {
            inner: MemoryStore::new(None),
            delay: Duration::from_millis(300),
        });
        let dir = tempfile::tempdir().unwrap();
        let config = AuditConfig {
            queue: 10,
            batch: 10,
            spool: Some(dir.path().join("audit.spool")),
            spool_max_bytes: 1 << 20,
            ..AuditConfig::in_memory("test")
        };
        let metrics = AuditMetrics::default();
        let (audit, writer) = Audit::with_writer(store.clone(), config, metrics.clone()).unwrap();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(writer.run(cancel.clone()));

        audit.record(denial());
        // The writer is now in its first (slow) append. The channel holds 10; the writer
        // keeps taking events in beside the call, so 19 more fit without a drop (past the
        // memory bound they go to the spool afterwards, and from there to the store).
        tokio::time::sleep(Duration::from_millis(50)).await;
        for _ in 0..19 {
            audit.record(denial());
            tokio::task::yield_now().await;
        }
        assert_eq!(metrics.counts().dropped, 0, "{:?}", metrics.counts());

        let stored = loop {
            let stored = store.inner.audit_after(None, 100).await.unwrap().len();
            if stored == 20 {
                break stored;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(stored, 20);
        cancel.cancel();
        task.await.unwrap();
        let counts = metrics.counts();
        assert_eq!((counts.queued, counts.dropped), (20, 0), "{counts:?}");
        assert_eq!(counts.written + counts.replayed, 20, "{counts:?}");
    }
}
