//! The ownership port on Redis: lookups (coalesced on their own connection, see
//! [`super::lookups`]), and claim, transfer and release, each one Lua script that moves the
//! owner key and the user index together and announces the change.
//!
//! On one server (standalone or Sentinel), claim, transfer and release move the owner key and
//! the user index in one script, so that no interleaving of writes from several instances
//! (and no timeout between two round trips) can leave an index entry without its owner key or
//! the other way round. The new owner's index key is declared in KEYS; the previous owner's is
//! only known inside the script, so it is computed there from the index prefix (ARGV).
//!
//! On a Cluster the owner key (its legacy name, one slot) and the index sets (other slots)
//! cannot change together: the script changes the owner key alone, and the index follows it
//! ([`super::index`]).

use async_trait::async_trait;

use super::RedisStore;
use super::lookups::{get_all, unreadable};
use crate::session_id::SessionId;
use crate::store::{ClaimOutcome, Expected, OwnerChange, OwnershipStore, SessionPage, StoreError};

fn expected_args(expected: &Expected) -> (&'static str, &str) {
    match expected {
        Expected::Any => ("0", ""),
        Expected::Owner(owner) => ("1", owner.as_str()),
    }
}

fn owner_change(reply: (i64, Option<String>)) -> OwnerChange {
    match reply {
        (1, previous) => OwnerChange::Done { previous },
        (_, actual) => OwnerChange::Mismatch { actual },
    }
}

impl RedisStore {
    /// On a Cluster, a write whose outcome is unknown (it may have changed the owner key)
    /// leaves the session for the index repair, which follows whatever the owner key says.
    fn repair_if_in_doubt<T>(
        &self,
        session: &SessionId,
        written: Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if self.cluster && matches!(written, Err(StoreError::OutcomeUnknown(_))) {
            self.leave_for_repair([session.as_str()]);
        }
        written
    }

    /// The owner key of each of `sessions`, each reply on its own (one pipeline; one per
    /// primary on a Cluster, rather than MGET: the keys of different sessions live in different
    /// slots), on the lookup connection.
    pub(super) async fn owner_keys<'a>(
        &self,
        sessions: impl Iterator<Item = &'a str>,
    ) -> Result<Vec<redis::RedisResult<Option<String>>>, StoreError> {
        let keys: Vec<String> = sessions.map(|id| self.keys.owner(id)).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let node = self.node().await?;
        let lookups = node.lookups.connection();
        let replies = get_all(self.timeout, &lookups, node.slots.as_deref(), &keys).await;
        if replies.is_err() {
            self.suspect();
        }
        replies
    }
}

#[async_trait]
impl OwnershipStore for RedisStore {
    async fn owner(&self, session: &SessionId) -> Result<Option<String>, StoreError> {
        let node = self.node().await?;
        node.lookups.get(self.keys.owner(session.as_str())).await
    }

    async fn owners(&self, sessions: &[SessionId]) -> Result<Vec<Option<String>>, StoreError> {
        if sessions.is_empty() {
            return Ok(Vec::new());
        }
        let replies = self
            .owner_keys(sessions.iter().map(SessionId::as_str))
            .await?;
        // An error reply (a key of the wrong type) is that key's problem: `Corrupt`, which
        // callers may answer key by key ([`crate::gatekeeper::Gatekeeper::check_many`]).
        sessions
            .iter()
            .zip(replies)
            .map(|(session, reply)| {
                reply.map_err(|e| unreadable(&self.keys.owner(session.as_str()), &e))
            })
            .collect()
    }

    async fn claim(&self, session: &SessionId, user: &str) -> Result<ClaimOutcome, StoreError> {
        let mut invocation = self.claim.key(self.keys.owner(session.as_str()));
        if !self.cluster {
            invocation.key(self.keys.user_sessions(user));
        }
        invocation
            .arg(user)
            .arg(self.ttl_millis())
            .arg(self.keys.owners_channel())
            .arg(session.as_str());
        let (claimed, current): (i64, Option<String>) =
            self.repair_if_in_doubt(session, self.write_owners(&invocation).await)?;
        if self.cluster && (claimed == 1 || current.as_deref() == Some(user)) {
            self.follow_index(session.as_str(), Some(user), None).await;
        }
        Ok(match current {
            _ if claimed == 1 => ClaimOutcome::Claimed,
            Some(owner) if owner == user => ClaimOutcome::AlreadyOwned,
            Some(owner) => ClaimOutcome::OwnedByOther(owner),
            // SET NX failed, so there was an owner, and the GET in the same script saw it.
            None => return Err(StoreError::Corrupt("claim saw an owner and none".into())),
        })
    }

    async fn set_owner(
        &self,
        session: &SessionId,
        owner: &str,
        expected: &Expected,
    ) -> Result<OwnerChange, StoreError> {
        let (check, expected_owner) = expected_args(expected);
        let mut invocation = self.set_owner.key(self.keys.owner(session.as_str()));
        if !self.cluster {
            invocation.key(self.keys.user_sessions(owner));
        }
        invocation
            .arg(owner)
            .arg(check)
            .arg(expected_owner)
            .arg(self.ttl_millis())
            .arg(self.keys.owners_channel())
            .arg(session.as_str())
            .arg(&self.keys.user_sessions_prefix);
        let change =
            owner_change(self.repair_if_in_doubt(session, self.write_owners(&invocation).await)?);
        if let (true, OwnerChange::Done { previous }) = (self.cluster, &change) {
            self.follow_index(session.as_str(), Some(owner), previous.as_deref())
                .await;
        }
        Ok(change)
    }

    async fn release(
        &self,
        session: &SessionId,
        expected: &Expected,
    ) -> Result<OwnerChange, StoreError> {
        let (check, expected_owner) = expected_args(expected);
        let mut invocation = self.release.key(self.keys.owner(session.as_str()));
        invocation
            .arg(check)
            .arg(expected_owner)
            .arg(self.keys.owners_channel())
            .arg(session.as_str())
            .arg(self.index_prefix_in_scripts());
        let change =
            owner_change(self.repair_if_in_doubt(session, self.write_owners(&invocation).await)?);
        if let (true, OwnerChange::Done { previous }) = (self.cluster, &change) {
            self.follow_index(session.as_str(), None, previous.as_deref())
                .await;
        }
        Ok(change)
    }

    async fn user_sessions(
        &self,
        user: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<SessionPage, StoreError> {
        self.user_sessions_page(user, cursor, limit).await
    }

    async fn count_owned(&self) -> Result<u64, StoreError> {
        self.count_owner_keys().await
    }

    /// Pings every connection, so that "ready" means each of them works (and a dead one
    /// starts reconnecting now rather than on a request).
    async fn ping(&self) -> Result<(), StoreError> {
        let node = self.node().await?;
        let connections = node.connections.iter().cloned();
        let pings = connections
            .chain([node.lookups.connection(), node.waited_writes.clone()])
            .map(|mut conn| async move {
                self.bounded(redis::cmd("PING").query_async::<String>(&mut conn))
                    .await
            });
        let pinged = futures_util::future::join_all(pings)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .map(drop);
        // A TLS-only port closes a plain connection at its first bytes.
        pinged.map_err(|e| match e {
            StoreError::Unavailable(why) if self.plain && !why.contains("refused") => {
                StoreError::Unavailable(format!(
                    "{why} (if this port speaks TLS, the URL must be rediss://)"
                ))
            }
            e => e,
        })
    }
}
