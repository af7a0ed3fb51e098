//! The `gatehouse` binary: `serve` (the default), `token`, `openapi`, the admin clients `mode`
//! and `rollout`, and the operator tools working directly on Redis: `backfill`, `verify`,
//! `rollback` and `migrate`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use clap::{Args, Parser, Subcommand, ValueEnum};
use gatehouse::audit::{Audit, AuditConfig};
use gatehouse::auth::{TokenIssuer, TokenRequest};
use gatehouse::backfill::sources::Roots;
use gatehouse::backfill::{Backfill, JobRequest, JobState};
use gatehouse::client::{AdminClient, ClientError};
use gatehouse::config::{AuthConfig, Config};
use gatehouse::decision::Mode;
use gatehouse::server::Gatehouse;
use gatehouse::store::{RedisOptions, RedisStore};
use tokio_util::sync::CancellationToken;

/// Session-ownership checks and their gradual enforcement.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP service (the default). Configuration comes from the environment.
    Serve,
    /// Mint a token signed with GATEHOUSE_JWT_SECRET, for curl sessions.
    Token {
        /// The user name (`sub`).
        #[arg(long)]
        sub: String,
        /// A role, e.g. `admin` (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// A scope, e.g. `gatehouse:validate` or `gatehouse:claim` (repeatable).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Lifetime, e.g. `1h`, `30m`, `7d`.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// Print the OpenAPI document (the committed openapi/openapi.json).
    Openapi,
    /// Read or change the enforcement settings of a running gatehouse (REST client).
    Mode {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        action: ModeAction,
    },
    /// Print the rollout report of a running gatehouse (GET /v1/rollout).
    Rollout {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Give sessions of legacy data directories (or an id list) a default owner, directly on
    /// REDIS_URL (SET NX: existing owners are kept). Prints the job record.
    Backfill {
        /// Count only: write no owner.
        #[arg(long)]
        dry_run: bool,
        /// A data directory holding chats/ and/or conversation_transcripts/ (repeatable).
        #[arg(long = "data-dir")]
        data_dirs: Vec<PathBuf>,
        /// A file of session ids, one per line.
        #[arg(long)]
        ids_file: Option<PathBuf>,
        /// The owner given to sessions that have none.
        #[arg(long)]
        default_owner: String,
    },
    /// Compare legacy data directories with the owners on REDIS_URL.
    Verify {
        /// A data directory (repeatable).
        #[arg(long = "data-dir", required = true)]
        data_dirs: Vec<PathBuf>,
    },
    /// Roll a backfill job back on REDIS_URL: release what it assigned and still owns.
    Rollback {
        /// The job id (printed by `gatehouse backfill`).
        job_id: String,
    },
    /// Apply the data migrations of migrations/ to REDIS_URL.
    Migrate {
        /// Report what would change; change and record nothing.
        #[arg(long)]
        dry_run: bool,
        /// Run migrations already recorded as applied again.
        #[arg(long)]
        force: bool,
        /// Move owner keys of UUID session ids in another spelling (upper case, no hyphens,
        /// urn:uuid:) to the canonical id; without it, 0003 only reports them.
        #[arg(long)]
        rewrite_session_ids: bool,
    },
}

/// Where the admin API is and how to authenticate to it.
#[derive(Args)]
struct ApiArgs {
    /// Base URL of a gatehouse instance (plain HTTP).
    #[arg(
        long,
        env = "GATEHOUSE_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    url: String,
    /// An admin bearer token (e.g. from `gatehouse token --sub ops --role admin`).
    #[arg(long, env = "GATEHOUSE_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
}

#[derive(Subcommand)]
enum ModeAction {
    /// Print the settings in force.
    Get,
    /// Set the global mode (and, with ENFORCED, the share of users enforced).
    Set {
        /// DISABLED, LOG_ONLY or ENFORCED.
        mode: Mode,
        /// Enforce only for this percentage of users (0-100); the rest get LOG_ONLY.
        #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100))]
        percent: Option<u8>,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Override one endpoint's mode, or make it follow the global mode again (`global`).
    Endpoint {
        /// The endpoint name.
        name: String,
        /// DISABLED, LOG_ONLY, ENFORCED, or `global` to remove the override.
        mode: EndpointMode,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Turn the kill switch on (every check allowed unchecked) or off.
    KillSwitch {
        state: OnOff,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Print the latest changes.
    History {
        /// How many entries.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

/// What every change carries.
#[derive(Args)]
struct ChangeArgs {
    /// Why (required; recorded in the history).
    #[arg(long)]
    reason: String,
    /// Apply only if the settings are still at this version.
    #[arg(long)]
    expected_version: Option<u64>,
}

#[derive(Clone)]
enum EndpointMode {
    Set(Mode),
    Global,
}

impl std::str::FromStr for EndpointMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("global") {
            Ok(EndpointMode::Global)
        } else {
            s.parse().map(EndpointMode::Set)
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum OnOff {
    On,
    Off,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The REST clients need no server configuration.
    match command {
        Command::Mode { api, action } => return runtime.block_on(mode(api, action)),
        Command::Rollout { api } => {
            return runtime.block_on(admin(api, |client| async move { client.rollout().await }));
        }
        Command::Openapi => return runtime.block_on(openapi()),
        _ => {}
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Serve => runtime.block_on(serve(config)),
        Command::Token {
            sub,
            roles,
            scopes,
            ttl,
        } => token(
            &config,
            TokenRequest {
                sub,
                roles,
                scopes,
                ttl,
            },
        ),
        Command::Backfill {
            dry_run,
            data_dirs,
            ids_file,
            default_owner,
        } => runtime.block_on(backfill(
            config,
            dry_run,
            data_dirs,
            ids_file,
            default_owner,
        )),
        Command::Verify { data_dirs } => runtime.block_on(verify(config, data_dirs)),
        Command::Rollback { job_id } => runtime.block_on(rollback(config, job_id)),
        Command::Migrate {
            dry_run,
            force,
            rewrite_session_ids,
        } => {
            let opted_in: &[&str] = if rewrite_session_ids {
                &["rewrite-session-ids"]
            } else {
                &[]
            };
            runtime.block_on(migrate(config, dry_run, force, opted_in))
        }
        Command::Mode { .. } | Command::Rollout { .. } | Command::Openapi => {
            unreachable!("handled above")
        }
    }
}

async fn mode(api: ApiArgs, action: ModeAction) -> ExitCode {
    admin(api, |client| async move {
        match action {
            ModeAction::Get => client.settings().await,
            ModeAction::Set {
                mode,
                percent,
                change,
            } => {
                client
                    .set_global(mode, percent, &change.reason, change.expected_version)
                    .await
            }
            ModeAction::Endpoint { name, mode, change } => {
                let mode = match mode {
                    EndpointMode::Set(mode) => Some(mode),
                    EndpointMode::Global => None,
                };
                client
                    .set_endpoint(&name, mode, &change.reason, change.expected_version)
                    .await
            }
            ModeAction::KillSwitch { state, change } => {
                client
                    .kill_switch(matches!(state, OnOff::On), &change.reason)
                    .await
            }
            ModeAction::History { limit } => client.history(limit).await,
        }
    })
    .await
}

/// Runs one admin call and prints its answer as JSON (stdout) or its error (stderr, exit 1).
async fn admin<F, Fut>(api: ApiArgs, call: F) -> ExitCode
where
    F: FnOnce(AdminClient) -> Fut,
    Fut: Future<Output = Result<serde_json::Value, ClientError>>,
{
    let client = match AdminClient::new(&api.url, api.token) {
        Ok(client) => client,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match call(client).await {
        Ok(value) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&value).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> ExitCode {
    gatehouse::telemetry::init(config.log_format, &config.log_filter);
    let gatehouse = match Gatehouse::build(&config) {
        Ok(gatehouse) => gatehouse,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    if matches!(config.auth, AuthConfig::Disabled) {
        tracing::warn!(
            "GATEHOUSE_AUTH=disabled: every caller is the virtual user `admin`; ownership is not protected"
        );
    }
    if let Some(token) = &gatehouse.bootstrap_token {
        eprintln!(
            "\nWARNING: no GATEHOUSE_JWT_SECRET or GATEHOUSE_JWT_PUBLIC_KEYS set: using a random signing key\n\
             that lives only as long as this process. Admin token (valid 30 days, shown once):\n\n{token}\n"
        );
    }
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(listen = %config.listen, error = %e, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(listen = %config.listen, store = gatehouse.store_kind, "gatehouse listening");
    let shutdown = CancellationToken::new();
    tokio::spawn(signal_shutdown(shutdown.clone()));
    match gatehouse.serve(listener, shutdown).await {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            ExitCode::FAILURE
        }
    }
}

async fn signal_shutdown(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    shutdown.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
    shutdown.cancel();
}

fn token(config: &Config, request: TokenRequest) -> ExitCode {
    let AuthConfig::Jwt {
        secret: Some(secret),
        settings,
        ..
    } = &config.auth
    else {
        eprintln!(
            "gatehouse token needs GATEHOUSE_JWT_SECRET (the embedded default's key is random and\n\
             lives only inside the running process; set a secret for both the server and this command)"
        );
        return ExitCode::from(2);
    };
    match TokenIssuer::new(secret.as_bytes(), settings).mint(&request) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot mint: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn openapi() -> ExitCode {
    let document = gatehouse::http::openapi_document(&gatehouse::server::spec_state());
    match document.to_pretty_json() {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot render the OpenAPI document: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// The Redis store of the configuration (the operator tools need one).
fn redis_store(config: &Config) -> Result<Arc<RedisStore>, String> {
    let redis = config
        .redis
        .as_ref()
        .ok_or("set REDIS_URL: this works directly on the Redis gatehouse uses")?;
    RedisStore::connect(&RedisOptions {
        url: redis.url.clone(),
        connections: 2,
        timeout: redis.timeout.max(Duration::from_secs(5)),
        owner_ttl: config.owner_ttl,
        keys: config.keys.clone(),
        audit_maxlen: config.audit.maxlen,
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

/// A backfill service on the configured Redis, auditing into its stream; stop the returned
/// token and await the task to flush the audit events.
fn operator_backfill(
    config: &Config,
) -> Result<(Backfill, CancellationToken, tokio::task::JoinHandle<()>), String> {
    let store = redis_store(config)?;
    let mut audit_config = AuditConfig::in_memory(format!("{}-cli", config.instance));
    audit_config.queue = config.audit.queue;
    let (audit, writer) =
        Audit::start(store.clone(), audit_config, Default::default()).map_err(|e| e.to_string())?;
    let cancel = CancellationToken::new();
    let task = tokio::spawn(writer.run(cancel.clone()));
    let service =
        Backfill::new(store, Roots::default(), audit).with_session_ids(config.session_ids);
    Ok((service, cancel, task))
}

async fn backfill(
    config: Config,
    dry_run: bool,
    dirs: Vec<PathBuf>,
    ids_file: Option<PathBuf>,
    default_owner: String,
) -> ExitCode {
    gatehouse::telemetry::init(config.log_format, "warn");
    let prepared = (|| {
        gatehouse::session_id::check_name("default owner", &default_owner)
            .map_err(|e| e.to_string())?;
        let sources = data_dirs(&dirs)?;
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
        let (service, cancel, writer) = operator_backfill(&config)?;
        Ok((sources, session_ids, service, cancel, writer))
    })();
    let (sources, session_ids, service, cancel, writer) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => {
            eprintln!("error: {e}");
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
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("job {}", job.job_id);
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
    cancel.cancel();
    let _ = writer.await;
    print_json(&job);
    if job.state == JobState::Completed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn verify(config: Config, dirs: Vec<PathBuf>) -> ExitCode {
    let prepared = data_dirs(&dirs).and_then(|sources| Ok((sources, redis_store(&config)?)));
    let (sources, store) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let service = Backfill::new(store, Roots::default(), Audit::disabled("cli"))
        .with_session_ids(config.session_ids);
    match service.verify(sources, Vec::new()).await {
        Ok(report) => {
            print_json(&report);
            if report.complete {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn rollback(config: Config, job_id: String) -> ExitCode {
    let (service, cancel, writer) = match operator_backfill(&config) {
        Ok(prepared) => prepared,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let actor = format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "operator".into())
    );
    let result = service.rollback(&job_id, &actor).await;
    cancel.cancel();
    let _ = writer.await;
    match result {
        Ok(job) => {
            print_json(&job);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn migrate(config: Config, dry_run: bool, force: bool, opted_in: &[&str]) -> ExitCode {
    let Some(redis) = &config.redis else {
        eprintln!("error: set REDIS_URL: migrations apply to the Redis gatehouse uses");
        return ExitCode::from(2);
    };
    match gatehouse::migrate::migrate(&redis.url, &config.keys, dry_run, force, opted_in).await {
        Ok(reports) => {
            print_json(&reports);
            // Collisions are left for a person to decide: say so in the exit code too.
            let collisions: u64 = reports.iter().map(|r| r.collisions).sum();
            if collisions > 0 {
                eprintln!("{collisions} collision(s) found and left as they are: see the findings");
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
