//! The Redis adapter: legacy-compatible keys, `SET NX` claims, Lua compare-and-set.
//!
//! Connections are redis-rs [`ConnectionManager`]s: multiplexed (concurrent requests share a
//! connection and are pipelined on it) and reconnecting on their own after an outage. A small
//! fixed set is used round-robin instead of a checkout pool, because a pool that pings on every
//! checkout (deadpool-redis does) doubles the round trips of the one `GET` a check needs.
//!
//! Every call is bounded by the configured timeout, so a paused or unreachable Redis turns
//! into an error quickly, never into a hung request: [`StoreError::Unavailable`] for reads and
//! for writes that were certainly not applied, [`StoreError::OutcomeUnknown`] for writes that
//! were sent (or may have been) and got no answer ([`write_failed`]). The ownership scripts
//! (claim, transfer, release, backfill) move the owner key and the user index together and
//! compute some of their keys, so they need standalone Redis or Sentinel (see `CLAIM`); the
//! settings and audit scripts touch keys sharing a hash tag.

mod lookups;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, Value};

use self::lookups::Lookups;
use super::{
    AuditStore, BackfillStore, ClaimOutcome, Expected, KeySchema, OwnerChange, OwnerFeed,
    OwnershipStore, Released, SaveOutcome, SessionPage, SettingsFeed, SettingsStore, StoreError,
};
use crate::audit::{AuditEntry, AuditEvent, AuditId, Sequenced};
use crate::enforcement::{EnforcementSettings, HistoryEntry};
use crate::session_id::SessionId;

/// The heartbeat payload on the owner-change channel: not a session id (`#` is not allowed in
/// one), so it invalidates nothing.
pub const OWNERS_HEARTBEAT: &str = "#heartbeat";

/// How to reach Redis and lay out keys.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://` or `rediss://` URL.
    pub url: String,
    /// Number of multiplexed connections used round-robin (owner lookups get one more).
    pub connections: usize,
    /// Bound on every store call (connect included).
    pub timeout: Duration,
    /// TTL given to owner keys; `None` (the default) keeps ownership persistent.
    pub owner_ttl: Option<Duration>,
    /// Key names.
    pub keys: KeySchema,
    /// Approximate bound of the audit stream (`XADD MAXLEN ~`).
    pub audit_maxlen: usize,
}

// Claim, transfer and release move the owner key and the user index in one script, so that
// no interleaving of writes from several instances (and no timeout between two round trips)
// can leave an index entry without its owner key or the other way round. The new owner's
// index key is declared in KEYS; the previous owner's is only known inside the script, so it
// is computed there from the index prefix (ARGV). That is fine on standalone Redis and
// Sentinel, where every key lives on the one primary, but not in Cluster: there (issue 16)
// the owner key and the index sets live in different slots, and the index has to follow the
// owner key instead (and be repaired from it).

/// Makes ARGV[1] the owner if the session has none (`SET NX`: of concurrent claims exactly one
/// wins), adds the session to the new owner's index (also when it already was theirs: a
/// repeated claim mends an index entry lost before writes were atomic), and announces the
/// session (whatever the outcome: an instance caching "no owner" must not keep it once the
/// claim is acknowledged).
/// KEYS: owner key, new owner's index; ARGV: user, TTL in ms (0: none), channel, session id.
/// Returns {1, false} when claimed, else {0, current owner}.
const CLAIM: &str = r"
local ok
if ARGV[2] ~= '0' then
  ok = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
else
  ok = redis.call('SET', KEYS[1], ARGV[1], 'NX')
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
if ok then
  redis.call('SADD', KEYS[2], ARGV[4])
  return {1, false}
end
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then redis.call('SADD', KEYS[2], ARGV[4]) end
return {0, cur}
";

/// Sets the owner if the current one matches, moves the session from the previous owner's
/// index to the new one's, and announces the change. KEYS: owner key, new owner's index;
/// ARGV: new owner, check flag, expected owner, TTL in ms (0: none), channel, session id,
/// index key prefix. Returns {1, previous} or {0, actual}.
const SET_OWNER: &str = r"
local cur = redis.call('GET', KEYS[1])
if ARGV[2] == '1' and cur ~= ARGV[3] then return {0, cur} end
if ARGV[4] ~= '0' then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
if cur and cur ~= ARGV[1] then redis.call('SREM', ARGV[7] .. cur, ARGV[6]) end
redis.call('SADD', KEYS[2], ARGV[6])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return {1, cur}
";

/// Deletes the owner if it matches, removes the session from that owner's index, and
/// announces the change. KEYS[1] owner key; ARGV: check flag, expected owner, channel,
/// session id, index key prefix. Returns {1, previous} or {0, actual}.
const RELEASE: &str = r"
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == '1' and cur ~= ARGV[2] then return {0, cur} end
if cur then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', ARGV[5] .. cur, ARGV[4])
  redis.call('PUBLISH', ARGV[3], ARGV[4])
end
return {1, cur}
";

/// Saves settings if the stored version is the expected one (and below the new one), appends
/// the history entry and announces the settings. KEYS: settings hash, history zset; ARGV: new
/// version, settings JSON, entry JSON, channel, expected version. Returns -1 when saved, else
/// the stored version.
const SAVE_SETTINGS: &str = r"
local cur = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if cur ~= tonumber(ARGV[5]) or tonumber(ARGV[1]) <= cur then return cur end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'settings', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[2])
return -1
";

/// Appends a writer's audit events, skipping those already appended. KEYS: stream, writers
/// hash; ARGV: maxlen, writer, then per event: seq, field count n, n field/value strings.
/// Returns how many were appended.
const APPEND_AUDIT: &str = r"
local last = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
local written = 0
local i = 3
while i <= #ARGV do
  local seq = tonumber(ARGV[i])
  local n = tonumber(ARGV[i + 1])
  if seq > last then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, i + 2, i + 1 + n))
    last = seq
    written = written + 1
  end
  i = i + 2 + n
end
redis.call('HSET', KEYS[2], ARGV[2], last)
return written
";

/// Assigns unowned sessions to a backfill job's owner. KEYS[1]: the job's assigned set;
/// ARGV: owner, owner key prefix, index key prefix, TTL in ms (0: none), owner-change
/// channel, then session ids (the assigned ones are announced on the channel).
/// Returns how many were assigned. Touches keys it computes: standalone Redis only.
const BACKFILL_ASSIGN: &str = r"
local assigned = 0
local changed = {}
local index = ARGV[3] .. ARGV[1]
for i = 6, #ARGV do
  local id = ARGV[i]
  local ok
  if ARGV[4] ~= '0' then
    ok = redis.call('SET', ARGV[2] .. id, ARGV[1], 'NX', 'PX', ARGV[4])
  else
    ok = redis.call('SET', ARGV[2] .. id, ARGV[1], 'NX')
  end
  if ok then
    redis.call('SADD', index, id)
    redis.call('SADD', KEYS[1], id)
    assigned = assigned + 1
    changed[#changed + 1] = id
  end
end
if #changed > 0 then redis.call('PUBLISH', ARGV[5], table.concat(changed, '\n')) end
return assigned
";

/// Releases a job's sessions that still have its owner. KEYS[1]: the job's assigned set;
/// ARGV: owner, owner key prefix, index key prefix, owner-change channel, then session ids.
/// Returns {released, {kept ids}}.
const BACKFILL_RELEASE: &str = r"
local released = 0
local kept = {}
local changed = {}
local index = ARGV[3] .. ARGV[1]
for i = 5, #ARGV do
  local id = ARGV[i]
  local key = ARGV[2] .. id
  if redis.call('GET', key) == ARGV[1] then
    redis.call('DEL', key)
    redis.call('SREM', index, id)
    released = released + 1
    changed[#changed + 1] = id
  else
    kept[#kept + 1] = id
  end
  redis.call('SREM', KEYS[1], id)
end
if #changed > 0 then redis.call('PUBLISH', ARGV[4], table.concat(changed, '\n')) end
return {released, kept}
";

/// Production adapter for both store ports.
pub struct RedisStore {
    client: redis::Client,
    connections: Vec<ConnectionManager>,
    next: AtomicUsize,
    /// Owner lookups only: the checks in flight are coalesced into pipelines on this one
    /// socket (one write and one read carry many `GET`s, for gatehouse and for Redis), and no
    /// audit batch, scan or admin reply queues ahead of them on it.
    lookups: Lookups,
    keys: KeySchema,
    owner_ttl: Option<Duration>,
    timeout: Duration,
    claim: Script,
    set_owner: Script,
    release: Script,
    save_settings: Script,
    append_audit: Script,
    backfill_assign: Script,
    backfill_release: Script,
    audit_maxlen: usize,
}

impl RedisStore {
    /// Prepares the connections without waiting for Redis: it may be down at start, and
    /// gatehouse then reports not-ready until it answers. Must run inside a Tokio runtime.
    pub fn connect(options: &RedisOptions) -> Result<Self, StoreError> {
        let client = redis::Client::open(options.url.as_str())
            .map_err(|e| StoreError::Unavailable(format!("invalid Redis URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.timeout))
            // Every call is bounded by our own timeout (`bounded`, `read_on`): a second timer
            // per call in the manager would only cost (measured: ~0.5 us of CPU per check).
            .set_response_timeout(None)
            .set_number_of_retries(1)
            .set_max_delay(options.timeout);
        let connect = || {
            ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
                .map_err(unavailable)
        };
        let connections = (0..options.connections.max(1))
            .map(|_| connect())
            .collect::<Result<Vec<_>, _>>()?;
        let lookups = Lookups::new(connect()?, options.timeout);
        Ok(Self {
            client,
            connections,
            next: AtomicUsize::new(0),
            lookups,
            keys: options.keys.clone(),
            owner_ttl: options.owner_ttl,
            timeout: options.timeout,
            claim: Script::new(CLAIM),
            set_owner: Script::new(SET_OWNER),
            release: Script::new(RELEASE),
            save_settings: Script::new(SAVE_SETTINGS),
            append_audit: Script::new(APPEND_AUDIT),
            backfill_assign: Script::new(BACKFILL_ASSIGN),
            backfill_release: Script::new(BACKFILL_RELEASE),
            audit_maxlen: options.audit_maxlen.max(1),
        })
    }

    /// The key names in use.
    pub fn keys(&self) -> &KeySchema {
        &self.keys
    }

    fn conn(&self) -> ConnectionManager {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.connections.len();
        self.connections[i].clone()
    }

    /// Runs one store call under the timeout.
    async fn bounded<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        bounded(self.timeout, call).await
    }

    /// [`read_on`] the next connection.
    async fn read<T, Fut>(&self, call: impl Fn(ConnectionManager) -> Fut) -> Result<T, StoreError>
    where
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        read_on(self.timeout, self.conn(), call).await
    }

    /// [`Self::read`] of one command.
    async fn read_cmd<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        self.read(|mut conn| async move { cmd.query_async(&mut conn).await })
            .await
    }

    fn ttl_millis(&self) -> u64 {
        self.owner_ttl
            .map_or(0, |ttl| u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
    }

    /// Runs one write under the timeout; a failure says whether it may have been applied
    /// ([`write_failed`]).
    async fn write<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result.map_err(write_failed),
            // The command may be in Redis's socket buffer or running: it may yet be applied.
            Err(_) => Err(StoreError::OutcomeUnknown(format!(
                "no answer within {:?}",
                self.timeout
            ))),
        }
    }
}

/// Runs one store call under `timeout`.
async fn bounded<T>(
    timeout: Duration,
    call: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result.map_err(unavailable),
        Err(_) => Err(timed_out(timeout)),
    }
}

/// Runs a read-only call on `conn` under `timeout`, and once more if the connection turns out
/// to be dead: after a Redis restart each idle connection finds out on its next use, and its
/// manager reconnects at once, so the same connection is the one to retry on (a read is safe
/// to repeat). A timeout is not retried: it already took the whole budget.
pub(super) async fn read_on<T, Fut>(
    timeout: Duration,
    conn: ConnectionManager,
    call: impl Fn(ConnectionManager) -> Fut,
) -> Result<T, StoreError>
where
    Fut: Future<Output = redis::RedisResult<T>>,
{
    match tokio::time::timeout(timeout, call(conn.clone())).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) if is_dead_connection(&e) => bounded(timeout, call(conn)).await,
        Ok(Err(e)) => Err(unavailable(e)),
        Err(_) => Err(timed_out(timeout)),
    }
}

fn timed_out(timeout: Duration) -> StoreError {
    StoreError::Unavailable(format!("no answer within {timeout:?}"))
}

fn is_dead_connection(e: &redis::RedisError) -> bool {
    !e.is_timeout() && (e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal())
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// What a failed write tells the caller: [`StoreError::Unavailable`] only when the write was
/// certainly not applied, else [`StoreError::OutcomeUnknown`].
///
/// Certainly not applied: no connection could be made (refused: the manager reconnects before
/// it sends, so a refusal means nothing left this process), or Redis answered that it refuses
/// the command before running any of it (still loading, a read-only replica, master down,
/// a script busy, no permission, a Cluster redirect, too few replicas for `min-replicas-to-write`,
/// a failed RDB save with `stop-writes-on-bgsave-error`: these two refuse every write command,
/// so a script stopped by them wrote nothing). Everything else is in doubt: a dropped
/// connection or any I/O error may have come after the command was written, and a script
/// that failed part-way may have written something before failing.
fn write_failed(e: redis::RedisError) -> StoreError {
    use redis::{ErrorKind, ServerErrorKind};
    let refused_by_server = matches!(
        e.kind(),
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
                | ServerErrorKind::ReadOnly
                | ServerErrorKind::MasterDown
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::Moved
                | ServerErrorKind::Ask
                | ServerErrorKind::CrossSlot
                | ServerErrorKind::NoPerm
        )
    ) || matches!(e.code(), Some("BUSY" | "NOREPLICAS" | "MISCONF"));
    let never_connected = e.is_connection_refusal()
        || matches!(
            e.kind(),
            ErrorKind::AuthenticationFailed | ErrorKind::InvalidClientConfig
        );
    if refused_by_server || never_connected {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::OutcomeUnknown(e.to_string())
    }
}

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

/// Keys asked for per `SCAN` round trip.
const SCAN_COUNT: usize = 1000;

/// Escapes the glob metacharacters of a key prefix for `SCAN MATCH`.
pub(crate) fn glob_escape(prefix: &str) -> String {
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
fn scan_reply(value: Value) -> Result<(u64, Vec<String>), StoreError> {
    redis::from_redis_value(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[async_trait]
impl OwnershipStore for RedisStore {
    async fn owner(&self, session: &SessionId) -> Result<Option<String>, StoreError> {
        self.lookups.get(self.keys.owner(session.as_str())).await
    }

    async fn owners(&self, sessions: &[SessionId]) -> Result<Vec<Option<String>>, StoreError> {
        if sessions.is_empty() {
            return Ok(Vec::new());
        }
        // One GET per key in a pipeline rather than MGET: keys of different sessions may live
        // in different Cluster slots.
        let mut pipe = redis::pipe();
        for session in sessions {
            pipe.get(self.keys.owner(session.as_str()));
        }
        let pipe = &pipe;
        read_on(
            self.timeout,
            self.lookups.connection(),
            |mut conn| async move { pipe.query_async(&mut conn).await },
        )
        .await
    }

    async fn claim(&self, session: &SessionId, user: &str) -> Result<ClaimOutcome, StoreError> {
        let mut invocation = self.claim.key(self.keys.owner(session.as_str()));
        invocation
            .key(self.keys.user_sessions(user))
            .arg(user)
            .arg(self.ttl_millis())
            .arg(self.keys.owners_channel())
            .arg(session.as_str());
        let mut conn = self.conn();
        let (claimed, current): (i64, Option<String>) =
            self.write(invocation.invoke_async(&mut conn)).await?;
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
        invocation
            .key(self.keys.user_sessions(owner))
            .arg(owner)
            .arg(check)
            .arg(expected_owner)
            .arg(self.ttl_millis())
            .arg(self.keys.owners_channel())
            .arg(session.as_str())
            .arg(&self.keys.user_sessions_prefix);
        let mut conn = self.conn();
        Ok(owner_change(
            self.write(invocation.invoke_async(&mut conn)).await?,
        ))
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
            .arg(&self.keys.user_sessions_prefix);
        let mut conn = self.conn();
        Ok(owner_change(
            self.write(invocation.invoke_async(&mut conn)).await?,
        ))
    }

    async fn user_sessions(
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
            let rest: Vec<String> = batch
                .into_iter()
                .filter(|member| after.as_ref().is_none_or(|a| member > a))
                .filter(|member| !sessions.contains(member))
                .collect();
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

    async fn count_owned(&self) -> Result<u64, StoreError> {
        let pattern = format!("{}*", glob_escape(&self.keys.owner_prefix));
        let mut conn = self.conn();
        let (mut cursor, mut count) = (0_u64, 0_u64);
        loop {
            let cmd = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .arg("TYPE")
                .arg("string")
                .clone();
            let reply: Value = self.bounded(cmd.query_async(&mut conn)).await?;
            // Keys as bytes: a foreign key matching the pattern need not be UTF-8.
            let (next, keys): (u64, Vec<Vec<u8>>) =
                redis::from_redis_value(reply).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            count += keys.len() as u64;
            if next == 0 {
                return Ok(count);
            }
            cursor = next;
        }
    }

    /// Pings every connection, so that "ready" means each of them works (and a dead one
    /// starts reconnecting now rather than on a request).
    async fn ping(&self) -> Result<(), StoreError> {
        let connections = self.connections.iter().cloned();
        let pings = connections
            .chain([self.lookups.connection()])
            .map(|mut conn| async move {
                self.bounded(redis::cmd("PING").query_async::<String>(&mut conn))
                    .await
            });
        futures_util::future::join_all(pings)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .map(drop)
    }
}

#[async_trait]
impl SettingsStore for RedisStore {
    async fn load_settings(&self) -> Result<Option<EnforcementSettings>, StoreError> {
        let cmd = redis::cmd("HGET")
            .arg(self.keys.settings())
            .arg("settings")
            .clone();
        let raw: Option<String> = self.read_cmd(&cmd).await?;
        raw.map(|json| serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(e.to_string())))
            .transpose()
    }

    async fn save_settings(
        &self,
        expected: u64,
        next: &EnforcementSettings,
        entry: &HistoryEntry,
    ) -> Result<SaveOutcome, StoreError> {
        let settings =
            serde_json::to_string(next).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let entry = serde_json::to_string(entry).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut invocation = self.save_settings.key(self.keys.settings());
        invocation
            .key(self.keys.history())
            .arg(next.version)
            .arg(settings)
            .arg(entry)
            .arg(self.keys.settings_channel())
            .arg(expected);
        let mut conn = self.conn();
        let reply: i64 = self.write(invocation.invoke_async(&mut conn)).await?;
        Ok(match u64::try_from(reply) {
            Ok(current) => SaveOutcome::VersionConflict { current },
            Err(_) => SaveOutcome::Saved,
        })
    }

    async fn history(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let max = before.map_or_else(|| "+inf".to_owned(), |b| format!("({b}"));
        let cmd = redis::cmd("ZREVRANGEBYSCORE")
            .arg(self.keys.history())
            .arg(max)
            .arg("-inf")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .clone();
        let raw: Vec<String> = self.read_cmd(&cmd).await?;
        raw.iter()
            .map(|json| serde_json::from_str(json).map_err(|e| StoreError::Corrupt(e.to_string())))
            .collect()
    }

    async fn watch(&self) -> Result<SettingsFeed, StoreError> {
        self.subscribe(self.keys.settings_channel(), |json: String| {
            Some(serde_json::from_str(&json).ok())
        })
        .await
    }
}

impl RedisStore {
    /// Subscribes to `channel` on a dedicated connection; each message payload is mapped by
    /// `read` (items it maps to `None` are skipped). The stream ends when the subscription is
    /// lost.
    async fn subscribe<T: Send + 'static>(
        &self,
        channel: String,
        read: fn(String) -> Option<T>,
    ) -> Result<futures_util::stream::BoxStream<'static, T>, StoreError> {
        let subscribe = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok(pubsub)
        };
        let pubsub = self.bounded(subscribe).await?;
        Ok(pubsub
            .into_on_message()
            .filter_map(move |message| {
                let item = message.get_payload::<String>().ok().and_then(read);
                std::future::ready(item)
            })
            .boxed())
    }

    /// Reads up to `count` audit entries with `XRANGE` or `XREVRANGE` from `from` to `to`.
    async fn audit_range(
        &self,
        command: &str,
        from: &str,
        to: &str,
        count: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let cmd = redis::cmd(command)
            .arg(self.keys.audit())
            .arg(from)
            .arg(to)
            .arg("COUNT")
            .arg(count)
            .clone();
        let reply = self.read_cmd(&cmd).await?;
        audit_entries(reply)
    }

    /// Publishes `OWNERS_HEARTBEAT` on the owner-change channel: the subscriber's proof that
    /// its subscription still delivers (see the owner cache, `store::cache`).
    pub async fn owners_heartbeat(&self) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let channel = self.keys.owners_channel();
        self.bounded(async move {
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(OWNERS_HEARTBEAT)
                .query_async::<i64>(&mut conn)
                .await
        })
        .await
        .map(drop)
    }

    /// Subscribes to the owner changes announced by every write (claims, transfers, releases,
    /// backfill): each item is the ids of one write.
    pub async fn owner_changes(&self) -> Result<OwnerFeed, StoreError> {
        self.subscribe(self.keys.owners_channel(), |ids: String| {
            Some(ids.split('\n').map(str::to_owned).collect())
        })
        .await
    }
}

/// Reads an `XRANGE`/`XREVRANGE` reply.
fn audit_entries(reply: redis::streams::StreamRangeReply) -> Result<Vec<AuditEntry>, StoreError> {
    reply
        .ids
        .into_iter()
        .map(|entry| {
            let id: AuditId = entry.id.parse().map_err(StoreError::Corrupt)?;
            let fields = entry
                .map
                .into_iter()
                .map(|(key, value)| {
                    redis::from_redis_value::<String>(value)
                        .map(|value| (key, value))
                        .map_err(|e| StoreError::Corrupt(e.to_string()))
                })
                .collect::<Result<_, _>>()?;
            let event = AuditEvent::from_fields(fields)
                .map_err(|e| StoreError::Corrupt(format!("audit entry {id}: {e}")))?;
            Ok(AuditEntry { id, event })
        })
        .collect()
}

#[async_trait]
impl AuditStore for RedisStore {
    async fn append_audit(&self, writer: &str, events: &[Sequenced]) -> Result<usize, StoreError> {
        let mut invocation = self.append_audit.key(self.keys.audit());
        invocation
            .key(self.keys.audit_writers())
            .arg(self.audit_maxlen)
            .arg(writer);
        for sequenced in events {
            let fields = sequenced.event.to_fields();
            invocation.arg(sequenced.seq).arg(fields.len() * 2);
            for (key, value) in fields {
                invocation.arg(key).arg(value);
            }
        }
        let mut conn = self.conn();
        self.write(invocation.invoke_async(&mut conn)).await
    }

    async fn audit_before(
        &self,
        before: Option<AuditId>,
        count: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        // Nothing is below the smallest id; Redis refuses the exclusive `(0-0` as an interval
        // end ("invalid end ID"), so answer the empty page the embedded store gives.
        if before == Some(AuditId { millis: 0, seq: 0 }) {
            return Ok(Vec::new());
        }
        let end = before.map_or_else(|| "+".to_owned(), |id| format!("({id}"));
        self.audit_range("XREVRANGE", &end, "-", count).await
    }

    async fn audit_after(
        &self,
        after: Option<AuditId>,
        count: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        // Likewise nothing is above the largest id, which Redis refuses as an exclusive start.
        if after
            == Some(AuditId {
                millis: u64::MAX,
                seq: u64::MAX,
            })
        {
            return Ok(Vec::new());
        }
        let start = after.map_or_else(|| "-".to_owned(), |id| format!("({id}"));
        self.audit_range("XRANGE", &start, "+", count).await
    }
}

#[async_trait]
impl BackfillStore for RedisStore {
    async fn assign(&self, job: &str, owner: &str, sessions: &[String]) -> Result<u64, StoreError> {
        let mut invocation = self.backfill_assign.key(self.keys.backfill_assigned(job));
        invocation
            .arg(owner)
            .arg(&self.keys.owner_prefix)
            .arg(&self.keys.user_sessions_prefix)
            .arg(self.ttl_millis())
            .arg(self.keys.owners_channel())
            .arg(sessions);
        let mut conn = self.conn();
        self.write(invocation.invoke_async(&mut conn)).await
    }

    async fn release_assigned(
        &self,
        job: &str,
        owner: &str,
        sessions: &[String],
    ) -> Result<Released, StoreError> {
        let mut invocation = self.backfill_release.key(self.keys.backfill_assigned(job));
        invocation
            .arg(owner)
            .arg(&self.keys.owner_prefix)
            .arg(&self.keys.user_sessions_prefix)
            .arg(self.keys.owners_channel())
            .arg(sessions);
        let mut conn = self.conn();
        let (released, kept): (u64, Vec<String>) =
            self.write(invocation.invoke_async(&mut conn)).await?;
        Ok(Released { released, kept })
    }

    async fn assigned_page(
        &self,
        job: &str,
        cursor: u64,
        count: usize,
    ) -> Result<(u64, Vec<String>), StoreError> {
        let cmd = redis::cmd("SSCAN")
            .arg(self.keys.backfill_assigned(job))
            .arg(cursor)
            .arg("COUNT")
            .arg(count)
            .clone();
        let mut conn = self.conn();
        let reply: Value = self.bounded(cmd.query_async(&mut conn)).await?;
        scan_reply(reply)
    }

    async fn assigned_count(&self, job: &str) -> Result<u64, StoreError> {
        let cmd = redis::cmd("SCARD")
            .arg(self.keys.backfill_assigned(job))
            .clone();
        self.read_cmd(&cmd).await
    }

    async fn owned_page(
        &self,
        cursor: u64,
        count: usize,
    ) -> Result<(u64, Vec<String>), StoreError> {
        let pattern = format!("{}*", glob_escape(&self.keys.owner_prefix));
        let cmd = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(count)
            .arg("TYPE")
            .arg("string")
            .clone();
        let mut conn = self.conn();
        let reply: Value = self.bounded(cmd.query_async(&mut conn)).await?;
        let (next, keys): (u64, Vec<Vec<u8>>) =
            redis::from_redis_value(reply).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let prefix = self.keys.owner_prefix.as_bytes();
        let ids = keys
            .iter()
            .filter_map(|key| key.strip_prefix(prefix))
            .filter_map(|id| std::str::from_utf8(id).ok())
            .map(str::to_owned)
            .collect();
        Ok((next, ids))
    }

    async fn save_job(&self, id: &str, record: &str) -> Result<(), StoreError> {
        let cmd = redis::cmd("SET")
            .arg(self.keys.backfill_job(id))
            .arg(record)
            .clone();
        let mut conn = self.conn();
        self.write(cmd.query_async::<()>(&mut conn)).await
    }

    async fn load_job(&self, id: &str) -> Result<Option<String>, StoreError> {
        let cmd = redis::cmd("GET").arg(self.keys.backfill_job(id)).clone();
        self.read_cmd(&cmd).await
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::{StoreError, glob_escape, write_failed};

    /// A server error reply as Redis sends it, e.g. `-READONLY ...`.
    fn server_error(reply: &str) -> redis::RedisError {
        let value = redis::parse_redis_value(format!("-{reply}\r\n").as_bytes()).unwrap();
        value.extract_error().unwrap_err()
    }

    #[test]
    fn only_writes_that_cannot_have_been_applied_are_unavailable() {
        let not_sent = [
            redis::RedisError::from(io::Error::from(io::ErrorKind::ConnectionRefused)),
            server_error("READONLY You can't write against a read only replica."),
            server_error("LOADING Redis is loading the dataset in memory"),
            server_error("MASTERDOWN Link with MASTER is down"),
            server_error("BUSY Redis is busy running a script."),
            server_error("NOPERM this user has no permissions"),
            server_error("NOREPLICAS Not enough good replicas to write."),
            server_error(
                "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.",
            ),
        ];
        for e in not_sent {
            let shown = e.to_string();
            assert!(
                matches!(write_failed(e), StoreError::Unavailable(_)),
                "{shown}"
            );
        }
        let in_doubt = [
            redis::RedisError::from(io::Error::from(io::ErrorKind::BrokenPipe)),
            redis::RedisError::from(io::Error::from(io::ErrorKind::ConnectionReset)),
            redis::RedisError::from(io::Error::from(io::ErrorKind::UnexpectedEof)),
            redis::RedisError::from(io::Error::from(io::ErrorKind::TimedOut)),
            redis::RedisError::from(io::Error::other("anything else")),
            // A script that failed part-way may have written before failing.
            server_error("ERR user_script:5: WRONGTYPE Operation against a key"),
        ];
        for e in in_doubt {
            let shown = e.to_string();
            assert!(
                matches!(write_failed(e), StoreError::OutcomeUnknown(_)),
                "{shown}"
            );
        }
    }

    #[test]
    fn glob_metacharacters_in_prefixes_are_escaped() {
        assert_eq!(glob_escape("chat_session_owner:"), "chat_session_owner:");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
