//! Redis Cluster: which primary serves which slot, and the calls that span slots.
//!
//! redis-rs's cluster connection routes every single-slot call itself. Two kinds of call span
//! slots: the coalesced owner lookups (each session's owner key hashes to its own slot) and
//! the `SCAN`s (each primary holds its own keys). For those gatehouse keeps its own copy of
//! the slot table ([`SlotMap`], from `CLUSTER SLOTS`): lookups are grouped into one pipeline
//! per primary ([`get_many`]), and a scan walks every primary in turn
//! (`RedisStore::scan_keys`).
//!
//! The copy may lag a reshard or a failover. Nothing is wrong then, only slower: a pipeline
//! with a key whose slot moved answers `MOVED` or `ASK`, and its keys are sent again one by
//! one through redis-rs's routing (which follows the redirect), while the table is marked stale
//! and read again by the next call. A lookup is never answered from a node that does not serve
//! its key's slot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo, Slot};
use redis::{ErrorKind, RedisResult, ServerErrorKind, Value};

/// A primary, as `CLUSTER SLOTS` names it.
pub(super) type Addr = (String, u16);

/// The slot table: each slot's primary.
#[derive(Default)]
pub(super) struct SlotMap {
    table: RwLock<Arc<Table>>,
    /// A redirect was seen: read the table again before the next grouping.
    stale: AtomicBool,
    /// Held while `CLUSTER SLOTS` is asked (one refresh at a time).
    refreshing: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Table {
    slots: HashMap<Slot, usize>,
    primaries: Vec<Addr>,
}

impl SlotMap {
    /// The primary serving `key`'s slot, if the table knows it.
    pub(super) fn node_of(&self, key: &[u8]) -> Option<Addr> {
        let table = self.table();
        let node = *table.slots.get(&Slot::for_key(key))?;
        table.primaries.get(node).cloned()
    }

    /// Every primary, in a stable order (by address).
    pub(super) fn primaries(&self) -> Vec<Addr> {
        self.table().primaries.clone()
    }

    /// Marks the table as out of date (a redirect was seen).
    pub(super) fn mark_stale(&self) {
        self.stale.store(true, Ordering::Relaxed);
    }

    fn table(&self) -> Arc<Table> {
        self.table
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Reads the table again when it is empty or stale (one caller asks; the others go on
    /// with the table they have).
    pub(super) async fn ensure(&self, conn: &ClusterConnection) {
        let empty = self.table().primaries.is_empty();
        if !(empty || self.stale.load(Ordering::Relaxed)) {
            return;
        }
        let Ok(_asking) = self.refreshing.try_lock() else {
            return;
        };
        if self.refresh(conn).await.is_ok() {
            self.stale.store(false, Ordering::Relaxed);
        }
    }

    /// Reads `CLUSTER SLOTS`.
    pub(super) async fn refresh(&self, conn: &ClusterConnection) -> RedisResult<()> {
        let mut conn = conn.clone();
        let reply: Vec<Value> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut conn)
            .await?;
        let table = parse_slots(reply)?;
        *self
            .table
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(table);
        Ok(())
    }
}

/// `CLUSTER SLOTS`: `[start, end, [host, port, id], replicas...]` per range.
fn parse_slots(reply: Vec<Value>) -> RedisResult<Table> {
    let mut ranges: Vec<(u16, u16, Addr)> = Vec::new();
    for range in reply {
        let Value::Array(parts) = range else {
            return Err(malformed());
        };
        let mut parts = parts.into_iter();
        let (Some(start), Some(end), Some(primary)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed());
        };
        let (start, end): (u16, u16) = (
            redis::from_redis_value(start)?,
            redis::from_redis_value(end)?,
        );
        let Value::Array(primary) = primary else {
            return Err(malformed());
        };
        let mut primary = primary.into_iter();
        let (Some(host), Some(port)) = (primary.next(), primary.next()) else {
            return Err(malformed());
        };
        ranges.push((
            start,
            end,
            (
                redis::from_redis_value(host)?,
                redis::from_redis_value(port)?,
            ),
        ));
    }
    let mut primaries: Vec<Addr> = ranges.iter().map(|(_, _, addr)| addr.clone()).collect();
    primaries.sort();
    primaries.dedup();
    let mut slots = HashMap::with_capacity(16_384);
    for (start, end, addr) in ranges {
        let node = primaries.binary_search(&addr).unwrap_or_default();
        for slot in (start..=end).filter_map(Slot::new) {
            slots.insert(slot, node);
        }
    }
    Ok(Table { slots, primaries })
}

fn malformed() -> redis::RedisError {
    (ErrorKind::Parse, "CLUSTER SLOTS: unexpected reply").into()
}

/// The route to the primary at `addr`.
pub(super) fn at(addr: &Addr) -> SingleNodeRoutingInfo {
    SingleNodeRoutingInfo::ByAddress {
        host: addr.0.clone(),
        port: addr.1,
    }
}

/// `GET` of every key: one pipeline per primary (sent together), each reply on its own (an
/// error reply is that key's). A key the table places wrongly is asked again on its own.
pub(super) async fn get_many(
    conn: &ClusterConnection,
    slots: &SlotMap,
    keys: &[&str],
) -> RedisResult<Vec<RedisResult<Option<String>>>> {
    slots.ensure(conn).await;
    let mut groups: HashMap<Option<Addr>, Vec<usize>> = HashMap::new();
    for (i, key) in keys.iter().enumerate() {
        groups
            .entry(slots.node_of(key.as_bytes()))
            .or_default()
            .push(i);
    }
    let sends = groups.into_iter().map(|(addr, members)| async move {
        let mut conn = conn.clone();
        let values: Vec<Value> = match &addr {
            Some(addr) => {
                let mut pipe = redis::pipe();
                for i in &members {
                    pipe.get(keys[*i]);
                }
                match conn.route_pipeline(pipe, 0, members.len(), at(addr)).await {
                    Ok(values) => values,
                    // redis-rs sends a pipeline with one redirected key again whole to the
                    // key's new node, where the others are redirected back: each key is then
                    // asked on its own.
                    Err(e) if is_redirect(&e) => {
                        slots.mark_stale();
                        Vec::new()
                    }
                    Err(e) => return Err(e),
                }
            }
            // Not in the table (it could not be read): each key through redis-rs's routing.
            None => Vec::new(),
        };
        let mut answers = Vec::with_capacity(members.len());
        for (n, i) in members.iter().enumerate() {
            let answer = match values.get(n) {
                Some(value) => match value.clone().extract_error() {
                    Err(e) if is_redirect(&e) => {
                        slots.mark_stale();
                        routed_get(&mut conn, keys[*i]).await
                    }
                    Err(e) => Err(e),
                    Ok(value) => redis::from_redis_value(value).map_err(Into::into),
                },
                None if values.is_empty() => routed_get(&mut conn, keys[*i]).await,
                None => Err((ErrorKind::Parse, "a pipeline reply is missing").into()),
            };
            // A transport failure fails the batch, as on one server.
            if let Err(e) = &answer
                && (e.is_io_error() || e.is_connection_dropped() || e.is_timeout())
            {
                return Err(e.clone());
            }
            answers.push((*i, answer));
        }
        Ok::<_, redis::RedisError>(answers)
    });
    let mut out: Vec<Option<RedisResult<Option<String>>>> = (0..keys.len()).map(|_| None).collect();
    for group in futures_util::future::join_all(sends).await {
        // A primary that does not answer may have failed over: read the table again.
        let group = group.inspect_err(|_| slots.mark_stale())?;
        for (i, answer) in group {
            out[i] = Some(answer);
        }
    }
    Ok(out
        .into_iter()
        .map(|answer| answer.unwrap_or_else(|| Err((ErrorKind::Parse, "no answer").into())))
        .collect())
}

async fn routed_get(conn: &mut ClusterConnection, key: &str) -> RedisResult<Option<String>> {
    redis::cmd("GET").arg(key).query_async(conn).await
}

/// `MOVED` or `ASK`: the slot is (being) served elsewhere.
pub(super) fn is_redirect(e: &redis::RedisError) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Server(ServerErrorKind::Moved | ServerErrorKind::Ask)
    )
}

/// Sends `cmd` to the primary at `addr`.
pub(super) async fn on_primary(
    conn: &ClusterConnection,
    addr: &Addr,
    cmd: redis::Cmd,
) -> RedisResult<Value> {
    let mut conn = conn.clone();
    conn.route_command(cmd, RoutingInfo::SingleNode(at(addr)))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(start: i64, end: i64, port: i64) -> Value {
        Value::Array(vec![
            Value::Int(start),
            Value::Int(end),
            Value::Array(vec![
                Value::BulkString(b"127.0.0.1".to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ]),
        ])
    }

    #[test]
    fn the_table_places_each_slot_on_its_primary() {
        let table = parse_slots(vec![
            range(0, 5460, 7001),
            range(5461, 10922, 7002),
            range(10923, 16383, 7003),
        ])
        .unwrap();
        assert_eq!(table.slots.len(), 16_384);
        assert_eq!(table.primaries.len(), 3);
        let map = SlotMap::default();
        *map.table.write().unwrap() = Arc::new(table);
        // CLUSTER KEYSLOT foo = 12182, bar = 5061; a hash tag decides alone.
        assert_eq!(map.node_of(b"foo"), Some(("127.0.0.1".into(), 7003)));
        assert_eq!(map.node_of(b"bar"), Some(("127.0.0.1".into(), 7001)));
        assert_eq!(map.node_of(b"{bar}:x"), map.node_of(b"bar"));
        assert!(parse_slots(vec![Value::Int(1)]).is_err());
    }
}
