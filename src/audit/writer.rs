//! The audit writer task: numbering, batching, retrying, spooling and replaying.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::spool::{Chunk, Spool};
use super::{AuditConfig, AuditEvent, Sequenced};
use crate::metrics::AuditMetrics;
use crate::store::{AuditStore, StoreError};

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Empties the audit channel into the store; see the [module docs](super).
pub struct AuditWriter {
    store: Arc<dyn AuditStore>,
    receiver: mpsc::Receiver<AuditEvent>,
    buffer: VecDeque<Sequenced>,
    next_seq: u64,
    writer_id: String,
    spool: Option<Arc<Mutex<Spool>>>,
    metrics: AuditMetrics,
    batch: usize,
    capacity: usize,
    failing: bool,
}

/// Runs a spool operation off the async threads.
async fn on_spool<T: Send + 'static>(
    spool: &Arc<Mutex<Spool>>,
    operation: impl FnOnce(&mut Spool) -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let spool = Arc::clone(spool);
    tokio::task::spawn_blocking(move || {
        let mut spool = spool.lock().unwrap_or_else(|p| p.into_inner());
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
        let unique = uuid::Uuid::new_v4().simple().to_string();
        Ok(Self {
            store,
            receiver,
            buffer: VecDeque::new(),
            next_seq: 1,
            writer_id: format!("{}-{}", config.instance, &unique[..12]),
            spool: spool.map(|s| Arc::new(Mutex::new(s))),
            metrics,
            batch: config.batch.max(1),
            capacity: config.queue.max(1),
            failing: false,
        })
    }

    fn push(&mut self, event: AuditEvent) {
        self.buffer.push_back(Sequenced {
            seq: self.next_seq,
            event,
        });
        self.next_seq += 1;
    }

    fn drain_channel(&mut self) {
        while self.buffer.len() < self.capacity * 2 {
            match self.receiver.try_recv() {
                Ok(event) => self.push(event),
                Err(_) => break,
            }
        }
        self.metrics.set_backlog(self.buffer.len());
    }

    async fn spool_pending(&self) -> bool {
        match &self.spool {
            Some(spool) => on_spool(spool, |s| Ok(s.has_pending()))
                .await
                .unwrap_or(false),
            None => false,
        }
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
        if self.spool_pending().await {
            return self.replay_chunk().await;
        }
        self.write_batch().await
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
                        self.push(event);
                        self.drain_channel();
                        self.overflow(false).await;
                    }
                    None => return,
                },
            }
        }
    }

    /// Runs until `cancel` fires, then takes the events still queued and stores or spools
    /// them before returning.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut backoff = MIN_BACKOFF;
        while !cancel.is_cancelled() {
            if self.buffer.is_empty() && !self.spool_pending().await {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    event = self.receiver.recv() => match event {
                        Some(event) => self.push(event),
                        None => break,
                    },
                }
            }
            self.drain_channel();
            self.overflow(false).await;
            match self.flush_once().await {
                Ok(_) => {
                    if self.failing {
                        tracing::info!("audit store reachable again; catching up");
                    }
                    self.failing = false;
                    backoff = MIN_BACKOFF;
                }
                Err(e) => {
                    if !self.failing {
                        tracing::warn!(error = %e, "audit events not written yet; retrying with backoff");
                    }
                    self.failing = true;
                    self.pause(backoff, &cancel).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        self.receiver.close();
        while let Ok(event) = self.receiver.try_recv() {
            self.push(event);
        }
        // Memory goes to the store only when nothing older waits in the spool (a writer's
        // events must reach the store in order); otherwise, and on any failure, to the spool.
        if !self.spool_pending().await {
            while !self.buffer.is_empty() {
                if let Err(e) = self.write_batch().await {
                    tracing::warn!(error = %e, "audit store unreachable at shutdown");
                    break;
                }
            }
        }
        self.overflow(true).await;
        let counts = self.metrics.counts();
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
