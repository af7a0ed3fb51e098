//! Data migrations for existing Redis deployments (`migrations/`, applied by `gatehouse migrate`).
//!
//! A migration is a TOML file of steps; each step names a key family to `SCAN` and a Lua
//! script called once per batch (see `migrations/README.md`). Applied migrations are recorded in
//! `{prefix}migrations` and skipped afterwards; every script is idempotent, so even a forced
//! re-run changes nothing the second time.
//!
//! A migration may be opt-in (`opt_in = "name"`): unless `gatehouse migrate --name` asks for
//! it, it runs as a dry run that reports what it would change, and is not recorded. A step
//! with `group_by = "canonical_session_id"` does not hand the script SCAN batches: the runner
//! collects the owner keys whose id is a UUID in a non-canonical spelling
//! ([`SessionId::canonical_form`], the service's own rule), groups them by canonical id and
//! calls the script once per group, so that every spelling of one session is decided together
//! (a collision, two owners, is seen whole and left alone; see `migrations/0003_*`).

mod cluster;

use std::collections::{BTreeMap, BTreeSet};

use redis::Script;
use serde::{Deserialize, Serialize};

use self::cluster::ClusterStep;
use crate::session_id::SessionId;
use crate::store::{KeySchema, RedisStore, StoreError};
use crate::timestamp::Timestamp;

/// The migrations, in order, compiled in from `migrations/`.
pub const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_persist_owner_keys",
        include_str!("../../migrations/0001_persist_owner_keys.toml"),
    ),
    (
        "0002_rebuild_user_index",
        include_str!("../../migrations/0002_rebuild_user_index.toml"),
    ),
    (
        "0003_canonical_session_ids",
        include_str!("../../migrations/0003_canonical_session_ids.toml"),
    ),
];

/// Most findings kept per report (the counts stay exact).
const MAX_FINDINGS: usize = 1000;

/// Keys per `SCAN` step (and per script call).
const SCAN_COUNT: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Migration {
    description: String,
    /// Runs only when asked by this name (else: a dry run, not recorded).
    #[serde(default)]
    opt_in: Option<String>,
    steps: Vec<Step>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    scan: Target,
    script: String,
    #[serde(default)]
    group_by: Option<GroupBy>,
    /// The step's single-slot form on a Redis Cluster ([`cluster`]); without one, the script
    /// runs once per key there.
    #[serde(default)]
    cluster: Option<ClusterStep>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum GroupBy {
    /// Owner keys of UUID ids in another spelling, by canonical id.
    CanonicalSessionId,
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
    /// An opt-in migration that was not asked for: it only reported (not recorded).
    #[serde(default)]
    pub report_only: bool,
    /// Conflicts found and left as they are (the migration is not recorded while any remain).
    #[serde(default)]
    pub collisions: u64,
    /// What was found, one line each (at most 1,000).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<String>,
}

/// Why migrating failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The store failed.
    #[error("redis: {0}")]
    Store(#[from] StoreError),
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

/// Applies the migrations not yet recorded (all of them with `force`) to `store`; a dry run
/// changes and records nothing. Opt-in migrations run only when `opted_in` names them (else
/// they report, as a dry run).
pub async fn migrate(
    store: &RedisStore,
    dry_run: bool,
    force: bool,
    opted_in: &[&str],
) -> Result<Vec<Report>, MigrateError> {
    let applied = store.applied_migrations().await?;
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
            report_only: false,
            collisions: 0,
            findings: Vec::new(),
        };
        if applied.contains_key(*id) && !force {
            report.skipped = true;
            reports.push(report);
            continue;
        }
        report.report_only = migration
            .opt_in
            .as_deref()
            .is_some_and(|name| !opted_in.contains(&name));
        let dry_run = dry_run || report.report_only;
        for step in &migration.steps {
            let (scanned, changed) = run_step(store, step, dry_run, &mut report).await?;
            report.scanned.push(scanned);
            report.changed.push(changed);
        }
        if report.report_only
            && let Some(name) = &migration.opt_in
        {
            report.findings.push(format!(
                "reported only: run `gatehouse migrate --{name}` to apply"
            ));
        }
        if report.collisions > 0 && !dry_run {
            report.findings.push(format!(
                "not recorded as applied: {} collision(s) remain; resolve them and run it again",
                report.collisions
            ));
        }
        if !dry_run && report.collisions == 0 {
            report.applied_at = Some(Timestamp::now());
            let record = serde_json::to_string(&report).unwrap_or_default();
            store.record_migration(id, &record).await?;
        }
        tracing::info!(
            id,
            dry_run,
            steps = report.scanned.len(),
            scanned = report.scanned.iter().sum::<u64>(),
            changed = report.changed.iter().sum::<u64>(),
            "migration run"
        );
        reports.push(report);
    }
    Ok(reports)
}

async fn run_step(
    store: &RedisStore,
    step: &Step,
    dry_run: bool,
    report: &mut Report,
) -> Result<(u64, u64), MigrateError> {
    let keys = store.keys();
    let mut groups = step
        .group_by
        .map(|GroupBy::CanonicalSessionId| BTreeMap::new());
    let (prefix, kind) = match step.scan {
        Target::OwnerKeys => (&keys.owner_prefix, "string"),
        Target::UserIndex => (&keys.user_sessions_prefix, "set"),
    };
    let script = Script::new(&step.script);
    let flag = if dry_run { "1" } else { "0" };
    let args = [flag, &keys.owner_prefix, &keys.user_sessions_prefix];
    let (mut cursor, mut scanned, mut changed) = (0_u64, 0_u64, 0_u64);
    loop {
        let (next, batch) = store.scan_keys(prefix, kind, cursor, SCAN_COUNT).await?;
        scanned += batch.len() as u64;
        if let Some(groups) = groups.as_mut() {
            collect_aliases(&keys.owner_prefix, &batch, groups, report);
        } else if !batch.is_empty() {
            changed += match step.cluster.filter(|_| store.is_cluster()) {
                Some(ClusterStep::IndexOwned) => {
                    cluster::index_owned(store, keys, &batch, dry_run).await?
                }
                Some(ClusterStep::DropStale) => {
                    cluster::drop_stale(store, keys, &batch, dry_run).await?
                }
                Some(ClusterStep::RewriteGroup) | None => {
                    store.run_count_script(&script, &batch, &args).await?
                }
            };
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    if let Some(groups) = groups {
        let on_cluster = store.is_cluster() && step.cluster.is_some();
        changed = rewrite_groups(store, keys, &script, on_cluster, groups, dry_run, report).await?;
    }
    Ok((scanned, changed))
}

/// Adds the owner keys of `batch` whose id is a UUID in another spelling to `groups`
/// (canonical id -> those ids); notes ids the service now refuses (near-UUIDs).
fn collect_aliases(
    owner_prefix: &str,
    batch: &[Vec<u8>],
    groups: &mut BTreeMap<String, BTreeSet<String>>,
    report: &mut Report,
) {
    for key in batch {
        let Some(id) = std::str::from_utf8(key)
            .ok()
            .and_then(|key| key.strip_prefix(owner_prefix))
        else {
            continue;
        };
        if let Some(canonical) = SessionId::canonical_form(id) {
            // SCAN may return a key twice: a set.
            groups.entry(canonical).or_default().insert(id.to_owned());
        } else if SessionId::parse(id).is_err() && SessionId::parse_exact(id).is_ok() {
            note(
                report,
                format!(
                    "refused spelling: {owner_prefix}{id} is nearly a UUID; checks of it are a 400 now"
                ),
            );
        }
    }
}

/// Runs the script once per group; returns the owner keys moved (or that would be).
async fn rewrite_groups(
    store: &RedisStore,
    keys: &KeySchema,
    script: &Script,
    on_cluster: bool,
    groups: BTreeMap<String, BTreeSet<String>>,
    dry_run: bool,
    report: &mut Report,
) -> Result<u64, MigrateError> {
    let mut changed = 0;
    for (canonical, aliases) in groups {
        let owner_key = |id: &str| format!("{}{id}", keys.owner_prefix).into_bytes();
        let script_keys: Vec<Vec<u8>> = std::iter::once(canonical.as_str())
            .chain(aliases.iter().map(String::as_str))
            .map(owner_key)
            .collect();
        let flag = if dry_run { "1" } else { "0" };
        let args: Vec<&str> = [
            flag,
            &keys.owner_prefix,
            &keys.user_sessions_prefix,
            &canonical,
        ]
        .into_iter()
        .chain(aliases.iter().map(String::as_str))
        .collect();
        let reply: Vec<String> = if on_cluster {
            cluster::rewrite_group(store, keys, &canonical, &aliases, dry_run).await?
        } else {
            store.run_script(script, &script_keys, &args).await?
        };
        let spellings = aliases.iter().cloned().collect::<Vec<_>>().join(", ");
        match reply.first().map(String::as_str) {
            Some("rewritten") => {
                let owner = reply.get(1).map_or("", String::as_str);
                let moved: u64 = reply.get(2).and_then(|n| n.parse().ok()).unwrap_or(0);
                changed += moved;
                let verb = if dry_run { "would move" } else { "moved" };
                note(
                    report,
                    format!("non-canonical: {spellings} (owner {owner}) {verb} to {canonical}"),
                );
            }
            Some("collision") => {
                report.collisions += 1;
                let owners: Vec<String> = reply[1..]
                    .chunks(2)
                    .map(|pair| format!("{} ({})", pair[0], pair.get(1).map_or("", String::as_str)))
                    .collect();
                note(
                    report,
                    format!(
                        "collision: {canonical} has different owners: {}; left as they are (set the owner with PUT /v1/sessions/{canonical}/owner, then delete the other keys)",
                        owners.join(", ")
                    ),
                );
            }
            _ => {}
        }
    }
    Ok(changed)
}

fn note(report: &mut Report, finding: String) {
    if report.findings.len() < MAX_FINDINGS {
        report.findings.push(finding);
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
