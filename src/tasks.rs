//! Background tasks that are owned: tracked, cancellable and awaited at shutdown (STYLE 7).
//!
//! The server holds two [`Tasks`], stopped in order: the work (settings refresh and watch,
//! the owner-cache watch, backfill jobs), then the audit writer, so that what the work
//! records while it stops (a backfill job interrupted by the shutdown) is still written.
//!
//! Every loop that waits after a failure waits with one [`Backoff`]; the two change-feed
//! watchers (settings, owner cache) share one [`resubscribe`] loop.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A set of background tasks and the token that stops them.
#[derive(Debug, Clone, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl Tasks {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The token the tasks watch: cancelled by [`Self::shutdown`].
    pub fn token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Runs `task` as one of the set.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// Stops the set: cancels the token, takes no new task, and waits for every task to end.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// Growing waits between failed attempts: the first wait, doubled after each, up to a bound;
/// back to the first after a success ([`Self::reset`]).
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Waits from `first`, doubling, never over `max`.
    pub const fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            next: first,
        }
    }

    /// The wait before the next attempt (and the one after grows).
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (wait * 2).min(self.max);
        wait
    }

    /// After a success: the next wait is the first again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// Sleeps the next wait; `false` when `cancel` fired first.
    pub async fn wait(&mut self, cancel: &CancellationToken) -> bool {
        let wait = self.next_wait();
        tokio::select! {
            () = cancel.cancelled() => false,
            () = tokio::time::sleep(wait) => true,
        }
    }
}

/// Runs `attempt` until it succeeds or has failed `attempts` times (the last error is
/// returned), waiting with `backoff` between failures; `retrying` sees each failure that is
/// retried and its number (1 for the first).
pub async fn retry<T, E, F, Fut>(
    attempts: u32,
    mut backoff: Backoff,
    mut attempt: F,
    mut retrying: impl FnMut(&E, u32),
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut failed = 0;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) if failed + 1 < attempts => {
                failed += 1;
                retrying(&e, failed);
                tokio::time::sleep(backoff.next_wait()).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The waits between subscription attempts of [`resubscribe`].
const RESUBSCRIBE: Backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));

/// Keeps a subscription until `cancel` fires: `subscribe` opens it, `follow` reads it until it
/// is lost (returns); then, and after a refused subscription, subscribes again with backoff
/// (50 ms doubling to 2 s, from 50 ms again after each subscription). `feed` names it in logs.
pub async fn resubscribe<T, E, S, SF, F, FF>(
    cancel: &CancellationToken,
    feed: &'static str,
    mut subscribe: S,
    mut follow: F,
) where
    E: Display,
    S: FnMut() -> SF,
    SF: Future<Output = Result<T, E>>,
    F: FnMut(T) -> FF,
    FF: Future<Output = ()>,
{
    let mut backoff = RESUBSCRIBE;
    loop {
        let subscribed = tokio::select! {
            () = cancel.cancelled() => return,
            subscribed = subscribe() => subscribed,
        };
        match subscribed {
            Ok(subscription) => {
                backoff.reset();
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = follow(subscription) => {}
                }
            }
            Err(e) => tracing::debug!(error = %e, feed, "subscription refused"),
        }
        if !backoff.wait(cancel).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[test]
    fn backoff_doubles_to_its_bound_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(5), Duration::from_millis(30));
        let waits: Vec<u128> = (0..5).map(|_| b.next_wait().as_millis()).collect();
        assert_eq!(waits, [5, 10, 20, 30, 30]);
        b.reset();
        assert_eq!(b.next_wait(), Duration::from_millis(5));
    }

    #[tokio::test]
    async fn retry_stops_at_the_first_success_or_the_last_attempt() {
        let tries = AtomicU32::new(0);
        let backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(1));
        let mut retried = vec![];
        let third = retry(
            5,
            backoff.clone(),
            || async {
                let n = tries.fetch_add(1, Ordering::Relaxed) + 1;
                if n < 3 { Err(n) } else { Ok(n) }
            },
            |e, i| retried.push((*e, i)),
        )
        .await;
        assert_eq!(third, Ok(3));
        assert_eq!(retried, [(1, 1), (2, 2)]);
        let never = retry(2, backoff, || async { Err::<(), _>("down") }, |_, _| {}).await;
        assert_eq!(never, Err("down"));
    }

    #[tokio::test]
    async fn resubscribe_follows_again_after_a_loss_or_a_refusal() {
        let cancel = CancellationToken::new();
        let (subscribed, followed) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        let run = resubscribe(
            &cancel,
            "test",
            || {
                let n = subscribed.fetch_add(1, Ordering::Relaxed);
                async move { if n % 2 == 0 { Err("refused") } else { Ok(n) } }
            },
            |_| {
                let (followed, cancel) = (Arc::clone(&followed), cancel.clone());
                async move {
                    if followed.fetch_add(1, Ordering::Relaxed) == 2 {
                        cancel.cancel();
                        std::future::pending::<()>().await;
                    }
                }
            },
        );
        tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .expect("resubscribe returns once cancelled");
        assert_eq!(subscribed.load(Ordering::Relaxed), 6);
        assert_eq!(followed.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn shutdown_cancels_and_waits_for_every_task() {
        let tasks = Tasks::new();
        let (done, mut ended) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..3 {
            let (stop, done) = (tasks.token(), done.clone());
            tasks.spawn(async move {
                stop.cancelled().await;
                done.send(()).unwrap();
            });
        }
        tasks.shutdown().await;
        for _ in 0..3 {
            assert!(ended.try_recv().is_ok(), "a task had not ended");
        }
    }
}
