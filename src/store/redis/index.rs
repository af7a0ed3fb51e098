//! The user index (`user_chat_sessions:{user}`) on a Redis Cluster, where it cannot change
//! together with the owner key.
//!
//! The owner key is the truth: every check reads it, never the index. The index only lists a
//! user's sessions, so on a Cluster it follows the owner key instead of moving with it:
//!
//! - **After** an ownership script changed the owner key from `previous` to `owner`, the
//!   session is added to `owner`'s set, then removed from `previous`'s, and the owner key is
//!   read once more: when it names `previous` again (a transfer back raced with the removal),
//!   the session is added back. So once every write in flight is done, the current owner's set
//!   holds the session, whatever the interleaving of writes from several instances.
//! - A step that fails (a node down, a timeout) leaves the session in this instance's repair
//!   set; the cluster watch ([`RedisStore::spawn_cluster_watch`]) adds each such session to its
//!   current owner's set every [`REPAIR_EVERY`] until it succeeds. **Bound:** an owned session
//!   is missing from its owner's set from the owner write until the index write (one round
//!   trip), or, after a failure, until the node answers again plus at most [`REPAIR_EVERY`].
//!   An instance that stops in that window (killed between two round trips) leaves the entry
//!   missing until `gatehouse migrate` (0002 rebuilds the index) runs.
//! - Entries of a previous owner may stay behind (a removal that failed, or raced with a later
//!   transfer): listings never show them, because on a Cluster a page keeps only the sessions
//!   whose owner key names the user (`user_sessions_page`).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::RedisStore;
use crate::store::StoreError;

/// How often the cluster watch repairs index entries and reads the slot table again.
pub const REPAIR_EVERY: Duration = Duration::from_millis(500);

impl RedisStore {
    /// The index prefix the ownership scripts get: '' on a Cluster (they leave the index to
    /// [`Self::follow_index`]).
    pub(super) fn index_prefix_in_scripts(&self) -> &str {
        if self.cluster {
            ""
        } else {
            &self.keys.user_sessions_prefix
        }
    }

    /// Makes the index follow an owner key that changed from `previous` to `owner` (see the
    /// module docs); a failure leaves the session for the repair.
    pub(super) async fn follow_index(
        &self,
        session: &str,
        owner: Option<&str>,
        previous: Option<&str>,
    ) {
        let previous = previous.filter(|p| Some(*p) != owner);
        let followed = async {
            if let Some(owner) = owner {
                self.index_add(owner, session).await?;
            }
            if let Some(previous) = previous {
                self.index_remove(previous, session).await?;
                let now: Option<String> = self
                    .read_cmd(redis::cmd("GET").arg(self.keys.owner(session)))
                    .await?;
                if now.as_deref() == Some(previous) {
                    self.index_add(previous, session).await?;
                }
            }
            Ok::<_, StoreError>(())
        };
        if let Err(e) = followed.await {
            tracing::warn!(session, error = %e, "user index not updated yet; repaired when Redis answers");
            self.leave_for_repair([session]);
        }
    }

    /// Leaves `sessions` for the repair.
    pub(super) fn leave_for_repair<'a>(&self, sessions: impl IntoIterator<Item = &'a str>) {
        self.unindexed_set()
            .extend(sessions.into_iter().map(str::to_owned));
    }

    async fn index_add(&self, user: &str, session: &str) -> Result<(), StoreError> {
        self.index_write("SADD", user, session).await
    }

    async fn index_remove(&self, user: &str, session: &str) -> Result<(), StoreError> {
        self.index_write("SREM", user, session).await
    }

    /// `SADD` or `SREM` of `session` in `user`'s set.
    async fn index_write(&self, verb: &str, user: &str, session: &str) -> Result<(), StoreError> {
        self.set_write(verb, self.keys.user_sessions(user), &[session])
            .await
    }

    /// `SADD` or `SREM` of `members` in the set at `key`, as a write (nothing sent for none).
    pub(super) async fn set_write(
        &self,
        verb: &str,
        key: String,
        members: &[&str],
    ) -> Result<(), StoreError> {
        if members.is_empty() {
            return Ok(());
        }
        let cmd = redis::cmd(verb).arg(key).arg(members).clone();
        let mut conn = self.conn().await?;
        self.write(cmd.query_async::<()>(&mut conn)).await
    }

    fn unindexed_set(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<String>> {
        self.unindexed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds each session left by a failed [`Self::follow_index`] to its current owner's set;
    /// those that fail again stay for the next round. Returns how many were repaired.
    pub async fn repair_indexes(&self) -> usize {
        let pending: Vec<String> = std::mem::take(&mut *self.unindexed_set())
            .into_iter()
            .collect();
        let mut repaired = 0;
        for session in pending {
            let owner: Result<Option<String>, StoreError> = self
                .read_cmd(redis::cmd("GET").arg(self.keys.owner(&session)))
                .await;
            let done = match owner {
                Ok(Some(owner)) => self.index_add(&owner, &session).await,
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            };
            match done {
                Ok(()) => repaired += 1,
                Err(_) => {
                    self.unindexed_set().insert(session);
                }
            }
        }
        repaired
    }

    /// Sessions waiting for their index entry (Cluster only).
    pub fn unindexed(&self) -> usize {
        self.unindexed_set().len()
    }

    /// On a Cluster: every [`REPAIR_EVERY`], reads the slot table again and repairs index
    /// entries, until `cancel` fires.
    pub(super) fn spawn_cluster_watch(
        self: &Arc<Self>,
        cancel: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(REPAIR_EVERY) => {}
                }
                if let Some(node) = this.node.load_full()
                    && let (Some(slots), super::Conn::Cluster(conn)) = (&node.slots, node.conn())
                {
                    let _ = tokio::time::timeout(this.timeout, slots.refresh(&conn)).await;
                }
                let repaired = this.repair_indexes().await;
                if repaired > 0 {
                    tracing::info!(repaired, "user index entries repaired");
                }
            }
        })
    }
}
