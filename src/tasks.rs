//! Background tasks that are owned: tracked, cancellable and awaited at shutdown (STYLE 7).
//!
//! The server holds two [`Tasks`], stopped in order: the work (settings refresh and watch,
//! the owner-cache watch, backfill jobs), then the audit writer, so that what the work
//! records while it stops (a backfill job interrupted by the shutdown) is still written.

use std::future::Future;

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

#[cfg(test)]
mod tests {
    use super::*;

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
