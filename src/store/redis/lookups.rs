//! Owner lookups coalesced into pipelines (group commit for reads).
//!
//! A check that misses the owner cache needs one `GET`. Sent one by one, every `GET` costs a
//! trip through the multiplexed connection, a timer, and (when the driver is quick) a socket
//! write and a Redis read of its own: on loopback the write alone is several microseconds of
//! kernel time. Here lookups join a queue instead, and one flusher task at a time sends the
//! whole queue as a single pipeline, answers each waiter, and goes again while lookups keep
//! coming. Nothing waits on purpose: a lone lookup leaves at once, and a batch is whatever
//! arrived during the previous round trip, so batches grow with load and stay at one under a
//! light one.
//!
//! Each batch is one bounded [`read_on`] (timeout, one retry on a dead connection). A reply
//! that is an error (a key of the wrong type) answers only its own lookup. When the batch
//! fails, its waiters get the error, and so does everything queued behind it: those lookups
//! would be sent into the same outage, so a lookup waits at most about one timeout, and a
//! frozen Redis gets no pile of doomed pipelines. A batch is the whole queue, so throughput
//! is not capped at some batch size per round trip; the queue itself is bounded by the checks
//! in flight. Waiters may give up (their request was cancelled): the flusher is a task of its
//! own, and skips their lookups if they gave up before their batch left.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};

use super::calls::read_on;
use super::cluster::{self, SlotMap};
use super::conn::Conn;
use crate::store::StoreError;

/// The coalescing front of the lookup connection.
pub(super) struct Lookups {
    shared: Arc<Shared>,
}

struct Shared {
    conn: Conn,
    /// A Cluster's slot table: a batch then goes as one pipeline per primary.
    slots: Option<Arc<SlotMap>>,
    timeout: Duration,
    /// Told when a batch fails (the topology watch then looks for a moved master).
    suspect: Arc<Notify>,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Waiter>,
    /// A flusher task is running; it takes everything queued before it stops.
    flushing: bool,
}

type Answer = Result<Option<String>, StoreError>;

struct Waiter {
    key: String,
    answer: oneshot::Sender<Answer>,
}

impl Lookups {
    /// Lookups over `conn` (of a Cluster with `slots`), each batch bounded by `timeout`;
    /// failed batches told to `suspect`.
    pub(super) fn new(
        conn: Conn,
        slots: Option<Arc<SlotMap>>,
        timeout: Duration,
        suspect: Arc<Notify>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                conn,
                slots,
                timeout,
                suspect,
                queue: Mutex::default(),
            }),
        }
    }

    /// The connection lookups go through.
    pub(super) fn connection(&self) -> Conn {
        self.shared.conn.clone()
    }

    /// The value at `key` (a `GET`), sent with whatever other lookups are queued.
    pub(super) async fn get(&self, key: String) -> Answer {
        let (answer, reply) = oneshot::channel();
        let start_flusher = {
            let mut queue = self.shared.lock();
            queue.waiting.push(Waiter { key, answer });
            !std::mem::replace(&mut queue.flushing, true)
        };
        if start_flusher {
            tokio::spawn(Arc::clone(&self.shared).flush());
        }
        // The flusher answers every waiter it takes, so a closed channel means it panicked or
        // the runtime is going away under us.
        reply
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("lookup abandoned".into())))
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // The queue is consistent at every await point; a panic elsewhere cannot break it.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends the queue in batches until it is empty.
    async fn flush(self: Arc<Self>) {
        let _unwind = ResetOnPanic(&self);
        loop {
            let mut batch = {
                let mut queue = self.lock();
                if queue.waiting.is_empty() {
                    queue.flushing = false;
                    return;
                }
                std::mem::take(&mut queue.waiting)
            };
            batch.retain(|waiter| !waiter.answer.is_closed());
            if batch.is_empty() {
                continue;
            }
            let keys: Vec<&str> = batch.iter().map(|waiter| waiter.key.as_str()).collect();
            let owners = get_all(self.timeout, &self.conn, self.slots.as_deref(), &keys).await;
            match owners {
                Ok(owners) if owners.len() == batch.len() => {
                    for (waiter, owner) in batch.into_iter().zip(owners) {
                        let owner = owner.map_err(|e| unreadable(&waiter.key, &e));
                        let _ = waiter.answer.send(owner);
                    }
                }
                Ok(owners) => {
                    let e = StoreError::Corrupt(format!(
                        "{} replies to {} lookups",
                        owners.len(),
                        batch.len()
                    ));
                    answer_all(batch, &e);
                }
                Err(e) => {
                    self.suspect.notify_one();
                    answer_all(batch, &e);
                    let queued = std::mem::take(&mut self.lock().waiting);
                    answer_all(queued, &e);
                }
            }
        }
    }
}

/// `GET` of every key, each reply on its own (a key that cannot be read, a wrong type, fails
/// its own lookup, never the others): one pipeline on a server, one per primary on a Cluster;
/// one bounded [`read_on`] either way.
pub(super) async fn get_all(
    timeout: Duration,
    conn: &Conn,
    slots: Option<&SlotMap>,
    keys: &[&str],
) -> Result<Vec<redis::RedisResult<Option<String>>>, StoreError> {
    // One server: one pipeline (a Cluster's are made per primary by `get_many`).
    let pipe = slots.is_none().then(|| {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for key in keys {
            pipe.get(*key);
        }
        pipe
    });
    let pipe = pipe.as_ref();
    read_on(
        timeout,
        conn.clone(),
        |mut conn| async move {
            match (&conn, slots, pipe) {
                (Conn::Cluster(cluster), Some(slots), _) => {
                    cluster::get_many(cluster, slots, keys).await
                }
                (_, _, Some(pipe)) => pipe.query_async(&mut conn).await,
                // A Cluster connection comes with its slot table.
                _ => Err((redis::ErrorKind::InvalidClientConfig, "no slot table").into()),
            }
        },
        || {},
    )
    .await
}

/// Lets the next lookup start a flusher if this one panicked (its waiters see their channel
/// closed).
struct ResetOnPanic<'a>(&'a Shared);

impl Drop for ResetOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.lock().flushing = false;
        }
    }
}

/// The error of one key whose reply was an error (e.g. `WRONGTYPE`: something else was written
/// at an owner key). Corrupt, not unavailable: the store answered, and retrying changes nothing.
pub(super) fn unreadable(key: &str, e: &redis::RedisError) -> StoreError {
    StoreError::Corrupt(format!("{key}: {e}"))
}

fn answer_all(batch: Vec<Waiter>, e: &StoreError) {
    for waiter in batch {
        let _ = waiter.answer.send(Err(e.clone()));
    }
}
