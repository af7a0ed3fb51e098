//! The audit port on Redis: a stream appended by one script per batch, which skips what a
//! writer already appended (its last sequence number is kept in a hash), and read with
//! `XRANGE`/`XREVRANGE`.

use async_trait::async_trait;

use super::RedisStore;
use crate::records::{AuditEntry, AuditEvent, AuditId, Sequenced};
use crate::store::{AuditStore, StoreError};

impl RedisStore {
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
        invocation.key(self.keys.audit_writers());
        // Standalone and Sentinel only (one server: no slots), where deployments from before the
        // move exist; a Cluster deployment is new (it was refused before), and the legacy key
        // lives in another slot.
        if let Some(legacy) = self.keys.legacy_audit_writers().filter(|_| !self.cluster) {
            invocation.key(legacy);
        }
        invocation.arg(self.audit_maxlen).arg(writer);
        for sequenced in events {
            let fields = sequenced.event.to_fields();
            invocation.arg(sequenced.seq).arg(fields.len() * 2);
            for (key, value) in fields {
                invocation.arg(key).arg(value);
            }
        }
        let mut conn = self.conn().await?;
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
