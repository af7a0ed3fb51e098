//! Data migrations for existing Redis deployments (`migrations/`, applied by `gatehouse migrate`).
//!
//! A migration is a TOML file of steps; each step names a key family to `SCAN` and a Lua
//! script called once per batch (see `migrations/README.md`). Applied migrations are recorded in
//! `{prefix}migrations` and skipped afterwards; every script is idempotent, so even a forced
//! re-run changes nothing the second time.

use std::collections::BTreeMap;

use redis::aio::ConnectionManager;
use redis::{Script, Value};
use serde::{Deserialize, Serialize};

use crate::store::KeySchema;
use crate::timestamp::Timestamp;

/// The migrations, in order, compiled in from `migrations/`.
pub const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_persist_owner_keys",
        include_str!("../migrations/0001_persist_owner_keys.toml"),
    ),
    (
        "0002_rebuild_user_index",
        include_str!("../migrations/0002_rebuild_user_index.toml"),
    ),
];

/// Keys per `SCAN` step (and per script call).
const SCAN_COUNT: usize = 1000;

#[derive(Debug, Deserialize)]
struct Migration {
    description: String,
    steps: Vec<Step>,
}

#[derive(Debug, Deserialize)]
struct Step {
    scan: Target,
    script: String,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Target {
    OwnerKeys,
    UserIndex,
}

/// What running one migration did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Report {
    /// The migration id (its file name).
    pub id: String,
    /// What it does.
    pub description: String,
    /// Skipped: recorded as applied before.
    pub skipped: bool,
    /// Keys examined per step.
    pub scanned: Vec<u64>,
    /// Keys changed (or, in a dry run, that would be) per step.
    pub changed: Vec<u64>,
    /// When it was applied (not for dry runs and skipped ones).
    pub applied_at: Option<Timestamp>,
}

/// Why migrating failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A migration file is invalid.
    #[error("migration {id}: {why}")]
    Invalid {
        /// The migration.
        id: String,
        /// What is wrong.
        why: String,
    },
}

fn parse(id: &str, text: &str) -> Result<Migration, MigrateError> {
    toml::from_str(text).map_err(|e| MigrateError::Invalid {
        id: id.to_owned(),
        why: e.to_string(),
    })
}

/// Applies the migrations not yet recorded (all of them with `force`) to the Redis at `url`;
/// a dry run changes and records nothing.
pub async fn migrate(
    url: &str,
    keys: &KeySchema,
    dry_run: bool,
    force: bool,
) -> Result<Vec<Report>, MigrateError> {
    let client = redis::Client::open(url)?;
    let mut conn = ConnectionManager::new(client).await?;
    let applied: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(keys.migrations())
        .query_async(&mut conn)
        .await?;
    let mut reports = Vec::new();
    for (id, text) in MIGRATIONS {
        let migration = parse(id, text)?;
        let mut report = Report {
            id: (*id).to_owned(),
            description: migration.description.clone(),
            skipped: false,
            scanned: Vec::new(),
            changed: Vec::new(),
            applied_at: None,
        };
        if applied.contains_key(*id) && !force {
            report.skipped = true;
            reports.push(report);
            continue;
        }
        for step in &migration.steps {
            let (scanned, changed) = run_step(&mut conn, keys, step, dry_run).await?;
            report.scanned.push(scanned);
            report.changed.push(changed);
        }
        if !dry_run {
            report.applied_at = Some(Timestamp::now());
            let record = serde_json::to_string(&report).unwrap_or_default();
            redis::cmd("HSET")
                .arg(keys.migrations())
                .arg(*id)
                .arg(record)
                .query_async::<()>(&mut conn)
                .await?;
        }
        tracing::info!(id, dry_run, scanned = ?report.scanned, changed = ?report.changed, "migration run");
        reports.push(report);
    }
    Ok(reports)
}

async fn run_step(
    conn: &mut ConnectionManager,
    keys: &KeySchema,
    step: &Step,
    dry_run: bool,
) -> Result<(u64, u64), MigrateError> {
    let (prefix, kind) = match step.scan {
        Target::OwnerKeys => (&keys.owner_prefix, "string"),
        Target::UserIndex => (&keys.user_sessions_prefix, "set"),
    };
    let pattern = format!("{}*", crate::store::glob_escape(prefix));
    let script = Script::new(&step.script);
    let (mut cursor, mut scanned, mut changed) = (0_u64, 0_u64, 0_u64);
    loop {
        let reply: Value = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .arg("TYPE")
            .arg(kind)
            .query_async(conn)
            .await?;
        let (next, batch): (u64, Vec<Vec<u8>>) =
            redis::from_redis_value(reply).map_err(|e| MigrateError::Invalid {
                id: "SCAN".into(),
                why: e.to_string(),
            })?;
        if !batch.is_empty() {
            scanned += batch.len() as u64;
            let mut invocation = script.prepare_invoke();
            for key in &batch {
                invocation.key(key.as_slice());
            }
            invocation
                .arg(if dry_run { "1" } else { "0" })
                .arg(&keys.owner_prefix)
                .arg(&keys.user_sessions_prefix);
            let n: u64 = invocation.invoke_async(conn).await?;
            changed += n;
        }
        if next == 0 {
            return Ok((scanned, changed));
        }
        cursor = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compiled_list_is_the_migrations_directory() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .filter_map(|name| name.strip_suffix(".toml").map(str::to_owned))
            .collect();
        on_disk.sort();
        let compiled: Vec<&str> = MIGRATIONS.iter().map(|(id, _)| *id).collect();
        assert_eq!(on_disk, compiled);
        for (id, text) in MIGRATIONS {
            let migration = parse(id, text).unwrap();
            assert!(!migration.steps.is_empty(), "{id}");
        }
    }
}
