//! The `SCAN`s: a user's index set page by page (`SSCAN`), and the owner keys (`SCAN MATCH`,
//! never `KEYS`), for the rollout report and the backfill's verification. On a Cluster a
//! `SCAN` walks every primary in turn (the cursor says which, see [`RedisStore::scan_keys`]),
//! and a page of a user's index keeps only the sessions the owner keys give them
//! ([`super::index`]).

use redis::Value;

use super::RedisStore;
use super::cluster;
use super::conn::Conn;
use crate::session_id::SessionId;
use crate::store::{SessionPage, StoreError};

/// Keys asked for per `SCAN` round trip.
const SCAN_COUNT: usize = 1000;

/// Escapes the glob metacharacters of a key prefix for `SCAN MATCH`.
fn glob_escape(prefix: &str) -> String {
    let mut escaped = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Reads one SSCAN batch as (next cursor, members).
pub(super) fn scan_reply(value: Value) -> Result<(u64, Vec<String>), StoreError> {
    redis::from_redis_value(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl RedisStore {
    /// A page of a user's index set ([`OwnershipStore::user_sessions`]).
    pub(super) async fn user_sessions_page(
        &self,
        user: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<SessionPage, StoreError> {
        // The cursor is `{sscan cursor}:{last member returned from that batch}`: a page can
        // end inside a batch, so `limit` is exact. Each batch is sorted and resumed after the
        // last member returned, so removing a member meanwhile cannot shift another one out.
        let (mut scan, mut after) = match cursor {
            None => (0u64, None),
            Some(raw) => {
                let (scan, after) = raw.split_once(':').ok_or(StoreError::InvalidCursor)?;
                let scan = scan.parse().map_err(|_| StoreError::InvalidCursor)?;
                let after = match after {
                    "" => None,
                    id => Some(
                        SessionId::parse_exact(id)
                            .map_err(|_| StoreError::InvalidCursor)?
                            .as_str()
                            .to_owned(),
                    ),
                };
                (scan, after)
            }
        };
        let key = self.keys.user_sessions(user);
        let mut sessions: Vec<String> = Vec::with_capacity(limit);
        loop {
            let cmd = redis::cmd("SSCAN")
                .arg(&key)
                .arg(scan)
                .arg("COUNT")
                .arg(limit.max(10))
                .clone();
            let reply = self.read_cmd(&cmd).await?;
            let (next, mut batch) = scan_reply(reply)?;
            batch.sort_unstable();
            batch.dedup();
            let mut rest: Vec<String> = batch
                .into_iter()
                .filter(|member| after.as_ref().is_none_or(|a| member > a))
                .filter(|member| !sessions.contains(member))
                .collect();
            if self.cluster {
                rest = self.still_owned_by(user, rest).await?;
            }
            let wanted = limit - sessions.len();
            if rest.len() > wanted {
                sessions.extend(rest.into_iter().take(wanted));
                let last = sessions.last().map_or("", String::as_str);
                let next_cursor = Some(format!("{scan}:{last}"));
                return Ok(SessionPage {
                    sessions,
                    next_cursor,
                });
            }
            sessions.extend(rest);
            if next == 0 {
                return Ok(SessionPage {
                    sessions,
                    next_cursor: None,
                });
            }
            (scan, after) = (next, None);
            if sessions.len() == limit {
                return Ok(SessionPage {
                    sessions,
                    next_cursor: Some(format!("{scan}:")),
                });
            }
        }
    }

    /// The members of `sessions` whose owner key names `user` (a Cluster's index may hold
    /// entries of a previous owner).
    async fn still_owned_by(
        &self,
        user: &str,
        sessions: Vec<String>,
    ) -> Result<Vec<String>, StoreError> {
        if sessions.is_empty() {
            return Ok(sessions);
        }
        let owners = self.owner_keys(sessions.iter().map(String::as_str)).await?;
        Ok(sessions
            .into_iter()
            .zip(owners)
            .filter(|(_, owner)| matches!(owner, Ok(Some(owner)) if owner == user))
            .map(|(id, _)| id)
            .collect())
    }

    /// One `SCAN` batch of the keys under `prefix` whose Redis type is `kind` (`string`,
    /// `set`): the next cursor (0: done) and the keys, as bytes (a foreign key matching the
    /// pattern need not be UTF-8).
    ///
    /// On a Cluster the cursor's top byte is the primary (in address order) and the rest that
    /// primary's own cursor: a scan goes through every primary, each with `SCAN`'s guarantee
    /// (a key present for the whole scan is returned), except for keys whose slot moves to a
    /// primary already scanned while the scan runs (a reshard): those can be missed.
    pub async fn scan_keys(
        &self,
        prefix: &str,
        kind: &str,
        cursor: u64,
        count: usize,
    ) -> Result<(u64, Vec<Vec<u8>>), StoreError> {
        let scan = |cursor: u64| {
            redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}*", glob_escape(prefix)))
                .arg("COUNT")
                .arg(count)
                .arg("TYPE")
                .arg(kind)
                .clone()
        };
        let node = self.node().await?;
        let (Some(slots), Conn::Cluster(conn)) = (&node.slots, node.conn()) else {
            let reply: Value = self.read_cmd(&scan(cursor)).await?;
            return redis::from_redis_value(reply).map_err(|e| StoreError::Corrupt(e.to_string()));
        };
        slots.ensure(&conn).await;
        let primaries = slots.primaries();
        if primaries.is_empty() {
            return Err(StoreError::Unavailable(
                "the Cluster's slot table could not be read".into(),
            ));
        }
        let (index, inner) = split_cursor(cursor);
        let Some(addr) = primaries.get(index) else {
            return Err(StoreError::InvalidCursor);
        };
        let reply: Value = self
            .bounded(cluster::on_primary(&conn, addr, scan(inner)))
            .await?;
        let (next, keys): (u64, Vec<Vec<u8>>) =
            redis::from_redis_value(reply).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        if next >= 1 << NODE_BITS {
            return Err(StoreError::Corrupt(format!("SCAN cursor {next} too large")));
        }
        let next = match (next, index + 1 < primaries.len()) {
            (0, true) => ((index + 1) as u64) << NODE_BITS,
            (0, false) => 0,
            (next, _) => ((index as u64) << NODE_BITS) | next,
        };
        Ok((next, keys))
    }

    /// Counts the owner keys with `SCAN` ([`OwnershipStore::count_owned`]).
    pub(super) async fn count_owner_keys(&self) -> Result<u64, StoreError> {
        let (mut cursor, mut count) = (0_u64, 0_u64);
        loop {
            let (next, keys) = self
                .scan_keys(&self.keys.owner_prefix, "string", cursor, SCAN_COUNT)
                .await?;
            count += keys.len() as u64;
            if next == 0 {
                return Ok(count);
            }
            cursor = next;
        }
    }

    /// One `SCAN` batch of owner keys, as session ids ([`BackfillStore::owned_page`]).
    pub(super) async fn owner_keys_page(
        &self,
        cursor: u64,
        count: usize,
    ) -> Result<(u64, Vec<String>), StoreError> {
        let prefix = &self.keys.owner_prefix;
        let (next, keys) = self.scan_keys(prefix, "string", cursor, count).await?;
        let ids = keys
            .iter()
            .filter_map(|key| key.strip_prefix(prefix.as_bytes()))
            .filter_map(|id| std::str::from_utf8(id).ok())
            .map(str::to_owned)
            .collect();
        Ok((next, ids))
    }
}

/// Bits of a Cluster scan cursor that hold the primary's own cursor.
const NODE_BITS: u32 = 56;

/// A Cluster scan cursor: (primary, that primary's cursor).
fn split_cursor(cursor: u64) -> (usize, u64) {
    (
        usize::try_from(cursor >> NODE_BITS).unwrap_or(usize::MAX),
        cursor & ((1 << NODE_BITS) - 1),
    )
}

#[cfg(test)]
mod tests {
    use super::{glob_escape, split_cursor};

    #[test]
    fn cluster_cursors_keep_the_primary_apart() {
        assert_eq!(split_cursor(0), (0, 0));
        assert_eq!(split_cursor((2 << 56) | 17), (2, 17));
    }

    #[test]
    fn glob_metacharacters_in_prefixes_are_escaped() {
        assert_eq!(glob_escape("chat_session_owner:"), "chat_session_owner:");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
