//! The operator tools that work directly on the Redis gatehouse uses: `backfill`, `backfill
//! jobs`, `verify`, `rollback` and `migrate`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use super::output::{self, note};
use crate::audit::{Audit, AuditConfig};
use crate::backfill::sources::{Roots, check_list};
use crate::backfill::{Backfill, JobPage, JobRequest, JobState};
use crate::config::Config;
use crate::store::{RedisOptions, RedisStore};
use crate::tasks::Tasks;

/// The Redis store of the configuration (the operator tools need one).
fn redis_store(config: &Config) -> Result<Arc<RedisStore>, String> {
    let options = config
        .redis_options()
        .ok_or("set REDIS_URL: this works directly on the Redis gatehouse uses")?;
    // One command at a time: two connections, and patience with a busy Redis.
    RedisStore::connect(&RedisOptions {
        connections: 2,
        timeout: options.timeout.max(Duration::from_secs(5)),
        ..options
    })
    .map(Arc::new)
    .map_err(|e| e.to_string())
}

/// Checks that each directory is a legacy data directory.
fn data_dirs(dirs: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    dirs.iter()
        .map(|dir| {
            let text = dir.to_string_lossy();
            Roots::new([dir.clone()])
                .resolve(&text)
                .map_err(|e| e.to_string())
        })
        .collect()
}

/// A backfill service on the configured Redis, auditing into its stream; shut the returned
/// writer down to flush the audit events. The server's spool is its own (and locked by it):
/// this one keeps events in memory only.
fn operator_backfill(config: &Config) -> Result<(Backfill, Tasks), String> {
    let store = redis_store(config)?;
    let audit_config = AuditConfig {
        instance: format!("{}-cli", config.instance),
        spool: None,
        ..config.audit_config()
    };
    let writers = Tasks::new();
    let audit = Audit::start(store.clone(), audit_config, Default::default(), &writers)
        .map_err(|e| e.to_string())?;
    let service =
        Backfill::new(store, Roots::default(), audit).with_session_ids(config.session_ids);
    Ok((service, writers))
}

pub async fn backfill(
    config: Config,
    dry_run: bool,
    dirs: Vec<PathBuf>,
    ids_file: Option<PathBuf>,
    default_owner: String,
) -> ExitCode {
    crate::telemetry::init(config.log_format, "warn");
    let prepared = (|| {
        crate::session_id::check_name("--default-owner", &default_owner)
            .map_err(|e| e.to_string())?;
        let sources = data_dirs(&dirs)?;
        check_list(&sources).map_err(|e| e.to_string())?;
        let session_ids = match &ids_file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("{}: {e}", path.display()))?
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
            None => Vec::new(),
        };
        if sources.is_empty() && session_ids.is_empty() {
            return Err("name at least one --data-dir or an --ids-file".to_owned());
        }
        let (service, writers) = operator_backfill(&config)?;
        Ok((sources, session_ids, service, writers))
    })();
    let (sources, session_ids, service, writers) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => {
            note!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let request = JobRequest {
        dry_run,
        default_owner,
        sources,
        session_ids,
        actor: format!(
            "cli:{}",
            std::env::var("USER").unwrap_or_else(|_| "operator".into())
        ),
    };
    let job = match service.create(&request).await {
        Ok(job) => job,
        Err(e) => {
            note!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    note!("job {}", job.job_id);
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} sessions  {per_sec}  eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let job = service
        .run(job, request, |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        })
        .await;
    bar.finish_and_clear();
    writers.shutdown().await;
    let code = if job.state == JobState::Completed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    };
    output::json(&job, code)
}

/// `gatehouse backfill jobs`: a page of job summaries, newest first, as `GET /v1/backfill`
/// answers it (the full records: `GET /v1/backfill/{job_id}`).
pub async fn jobs(config: Config, limit: usize, before: Option<String>) -> ExitCode {
    let prepared = (|| {
        let before = before
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|why| format!("--before: {why}"))?;
        Ok::<_, String>((before, redis_store(&config)?))
    })();
    let (before, store) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => {
            note!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let service = Backfill::new(store, Roots::default(), Audit::disabled("cli"));
    match service.jobs(before.as_ref(), limit).await {
        Ok((jobs, next)) => output::json(&JobPage::of(&jobs, next), ExitCode::SUCCESS),
        Err(e) => {
            note!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

pub async fn verify(config: Config, dirs: Vec<PathBuf>) -> ExitCode {
    let prepared = data_dirs(&dirs).and_then(|sources| Ok((sources, redis_store(&config)?)));
    let (sources, store) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => {
            note!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let service = Backfill::new(store, Roots::default(), Audit::disabled("cli"))
        .with_session_ids(config.session_ids);
    match service.verify(sources, Vec::new()).await {
        Ok(report) => {
            let code = if report.complete {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
            output::json(&report, code)
        }
        Err(e) => {
            note!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

pub async fn rollback(config: Config, job_id: String) -> ExitCode {
    let (service, writers) = match operator_backfill(&config) {
        Ok(prepared) => prepared,
        Err(e) => {
            note!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let actor = format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "operator".into())
    );
    let result = service.rollback(&job_id, &actor).await;
    writers.shutdown().await;
    match result {
        Ok(outcome) => {
            let job = &outcome.job;
            let report = job.rollback.clone().unwrap_or_default();
            if outcome.already_rolled_back {
                let at = report.at.map(|at| at.to_string()).unwrap_or_default();
                note!(
                    "nothing more was released: job {} was already rolled back at {at} by {}",
                    job.job_id,
                    report.actor
                );
            } else {
                note!(
                    "job {}: released {} session(s); kept {} whose owner changed since",
                    job.job_id,
                    outcome.released,
                    report.kept
                );
            }
            output::json(&outcome, ExitCode::SUCCESS)
        }
        Err(e) => {
            note!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

pub async fn migrate(config: Config, dry_run: bool, force: bool, opted_in: &[&str]) -> ExitCode {
    let store = match redis_store(&config) {
        Ok(store) => store,
        Err(e) => {
            note!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match crate::migrate::migrate(&store, dry_run, force, opted_in).await {
        Ok(reports) => {
            // Collisions are left for a person to decide: say so in the exit code too.
            let collisions: u64 = reports.iter().map(|r| r.collisions).sum();
            let code = if collisions > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
            let code = output::json(&reports, code);
            if collisions > 0 {
                note!("{collisions} collision(s) found and left as they are: see the findings");
            }
            code
        }
        Err(e) => {
            note!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
