//! Every call to Redis is bounded by the configured timeout, and a failure says what it
//! means: a read failed ([`StoreError::Unavailable`]), a write certainly not applied (also
//! `Unavailable`) or a write that may have been ([`StoreError::OutcomeUnknown`]).

use std::time::Duration;

use redis::{ErrorKind, ServerErrorKind};

use super::conn::Conn;
use super::{RedisStore, topology};
use crate::store::StoreError;

impl RedisStore {
    /// Runs one store call under the timeout.
    pub(super) async fn bounded<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        let watched = async {
            let result = call.await;
            self.notice(&result);
            result
        };
        match tokio::time::timeout(self.timeout, watched).await {
            Ok(result) => result.map_err(unavailable),
            Err(_) => {
                self.suspect();
                Err(timed_out(self.timeout))
            }
        }
    }

    /// [`read_on`] the next connection.
    pub(super) async fn read<T, Fut>(&self, call: impl Fn(Conn) -> Fut) -> Result<T, StoreError>
    where
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.read_on(self.conn().await?, call).await
    }

    /// [`read_on`] `conn`, with what fails told to the topology watch.
    pub(super) async fn read_on<T, Fut>(
        &self,
        conn: Conn,
        call: impl Fn(Conn) -> Fut,
    ) -> Result<T, StoreError>
    where
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let watched = |conn| {
            let call = call(conn);
            async move {
                let result = call.await;
                self.notice(&result);
                result
            }
        };
        read_on(self.timeout, conn, watched, || self.suspect()).await
    }

    /// Tells the topology watch about an error a failover may explain.
    fn notice<T>(&self, result: &redis::RedisResult<T>) {
        if let Err(e) = result
            && topology::suggests_failover(e)
        {
            self.suspect();
        }
    }

    /// Tells the topology watch that the server may be gone (a timeout, a refusal...).
    pub(super) fn suspect(&self) {
        if self.sentinel.is_some() {
            self.node_options.suspect.notify_one();
        }
    }

    /// [`Self::read`] of one command.
    pub(super) async fn read_cmd<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> Result<T, StoreError> {
        self.read(|mut conn| async move { cmd.query_async(&mut conn).await })
            .await
    }

    /// Runs an ownership script (claim, transfer, release, a backfill batch). With
    /// `min_replicas`, `WAIT` follows it in the same pipeline (so on the same connection, and
    /// `WAIT` covers the script's writes) and the write counts only when that many replicas
    /// confirmed it within most of the timeout: else it is [`StoreError::OutcomeUnknown`] (it
    /// is on the master, and may be lost if the master fails before a replica has it).
    pub(super) async fn write_owners<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let Some(replicas) = self.min_replicas else {
            let mut conn = self.conn().await?;
            return self.write(invocation.invoke_async(&mut conn)).await;
        };
        let mut conn = self.node().await?.waited_writes.clone();
        // Leaves a fifth of the budget for the reply itself.
        let wait = (self.timeout * 4 / 5).max(Duration::from_millis(1));
        let mut pipe = redis::pipe();
        // Each reply on its own: a failed `WAIT` after a script that ran is no failed script.
        pipe.ignore_errors()
            .invoke_script(invocation)
            .cmd("WAIT")
            .arg(replicas)
            .arg(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
        type Replies = Vec<redis::RedisResult<redis::Value>>;
        // A pipeline sends EVALSHA only: a server that does not know the script yet (a fresh
        // master) refuses it without running it; load it and send the pipeline again.
        let call = async {
            let replies: Replies = pipe.query_async(&mut conn).await?;
            match replies.first() {
                Some(Err(e)) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                    invocation.load_async(&mut conn).await?;
                    pipe.query_async::<Replies>(&mut conn).await
                }
                _ => Ok(replies),
            }
        };
        let mut replies = self.write(call).await?.into_iter();
        let (Some(script), Some(waited)) = (replies.next(), replies.next()) else {
            return Err(StoreError::OutcomeUnknown("a reply is missing".into()));
        };
        let value = script.map_err(write_failed)?;
        let value: T = redis::from_redis_value(value)
            .map_err(|e| StoreError::Corrupt(format!("ownership script reply: {e}")))?;
        let confirmed: u32 = waited
            .map_err(|e| e.to_string())
            .and_then(|v| redis::from_redis_value(v).map_err(|e| e.to_string()))
            .map_err(|e| StoreError::OutcomeUnknown(format!("written on the master; WAIT: {e}")))?;
        if confirmed < replicas {
            return Err(StoreError::OutcomeUnknown(format!(
                "written on the master but confirmed by {confirmed} of the {replicas} replicas \
                 GATEHOUSE_REDIS_MIN_REPLICAS asks for within {wait:?}"
            )));
        }
        Ok(value)
    }

    pub(super) fn ttl_millis(&self) -> u64 {
        self.owner_ttl
            .map_or(0, |ttl| u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
    }

    /// Runs one write under the timeout; a failure says whether it may have been applied
    /// ([`write_failed`]).
    pub(super) async fn write<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => {
                self.notice(&result);
                result.map_err(write_failed)
            }
            // The command may be in Redis's socket buffer or running: it may yet be applied.
            Err(_) => {
                self.suspect();
                Err(StoreError::OutcomeUnknown(format!(
                    "no answer within {:?}",
                    self.timeout
                )))
            }
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
    conn: Conn,
    call: impl Fn(Conn) -> Fut,
    timed_out_hook: impl Fn(),
) -> Result<T, StoreError>
where
    Fut: Future<Output = redis::RedisResult<T>>,
{
    let result = match tokio::time::timeout(timeout, call(conn.clone())).await {
        Ok(Ok(value)) => return Ok(value),
        Ok(Err(e)) if is_dead_connection(&e) => bounded(timeout, call(conn)).await,
        Ok(Err(e)) => return Err(unavailable(e)),
        Err(_) => Err(timed_out(timeout)),
    };
    if result.is_err() {
        timed_out_hook();
    }
    result
}

fn timed_out(timeout: Duration) -> StoreError {
    StoreError::Unavailable(format!("no answer within {timeout:?}"))
}

fn is_dead_connection(e: &redis::RedisError) -> bool {
    !e.is_timeout() && (e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal())
}

pub(super) fn unavailable(e: redis::RedisError) -> StoreError {
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
pub(super) fn write_failed(e: redis::RedisError) -> StoreError {
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
                | ServerErrorKind::NoScript
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

#[cfg(test)]
mod tests {
    use std::io;

    use super::{StoreError, write_failed};

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
            server_error("NOSCRIPT No matching script. Please use EVAL."),
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
}
