//! The `gatehouse` command line: `serve` (the default), `token`, `openapi`, `healthcheck`
//! ([`healthcheck`]), the admin REST clients `mode` and `rollout` ([`admin`], over [`client`]),
//! and the operator tools working directly on Redis: `backfill` (and `backfill jobs`), `verify`,
//! `rollback` and `migrate` ([`operator`]). Everything they print goes through [`output`].
//!
//! `main.rs` only parses the command line and calls [`run`].

pub mod admin;
pub mod client;
mod healthcheck;
mod operator;
mod output;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use self::output::note;
use crate::auth::{TokenIssuer, TokenRequest, check_sub};
use crate::config::{AuthConfig, Config};

/// Session-ownership checks and their gradual enforcement.
#[derive(Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
pub enum Command {
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
        #[arg(long, default_value = "1h", value_parser = lifetime)]
        ttl: Duration,
    },
    /// Print the OpenAPI document (the committed openapi/openapi.json).
    Openapi,
    /// Exit 0 when the gatehouse on GATEHOUSE_LISTEN is ready (GET /readyz answers 200), 1
    /// otherwise: for container health checks (`HEALTHCHECK CMD ["gatehouse", "healthcheck"]`).
    Healthcheck {
        /// Base URL to check instead, its path kept (`http://host:8080/gatehouse` asks
        /// `/gatehouse/readyz`; default: GATEHOUSE_LISTEN's port, on loopback when it listens
        /// on every address).
        #[arg(long)]
        url: Option<String>,
    },
    /// Read or change the enforcement settings of a running gatehouse (REST client).
    Mode {
        #[command(flatten)]
        api: admin::ApiArgs,
        #[command(subcommand)]
        action: admin::ModeAction,
    },
    /// Print the rollout report of a running gatehouse (GET /v1/rollout).
    Rollout {
        #[command(flatten)]
        api: admin::ApiArgs,
    },
    /// Give sessions of legacy data directories (or an id list) a default owner, directly on
    /// REDIS_URL (SET NX: existing owners are kept). Prints the job record. `backfill jobs`
    /// lists the jobs.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Backfill {
        #[command(subcommand)]
        list: Option<BackfillCommand>,
        #[command(flatten)]
        run: BackfillRun,
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

/// What `gatehouse backfill` runs (without a subcommand).
#[derive(Args)]
pub struct BackfillRun {
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
    #[arg(long, required = true)]
    default_owner: Option<String>,
}

/// `gatehouse backfill <command>`.
#[derive(Subcommand)]
pub enum BackfillCommand {
    /// List the backfill jobs on REDIS_URL, newest first (the page of GET /v1/backfill).
    Jobs {
        /// How many jobs (1-1000).
        #[arg(long, default_value_t = 20, value_parser = admin::page_limit)]
        limit: usize,
        /// Only jobs older than this place (the `next_before` of the previous page).
        #[arg(long)]
        before: Option<String>,
    },
}

/// `--ttl`: a duration, said in those words.
fn lifetime(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw)
        .map_err(|_| "a lifetime is a duration such as 1h, 30m or 7d".to_owned())
}

/// Runs one command to its end.
pub fn run(cli: Cli) -> ExitCode {
    let command = cli.command.unwrap_or(Command::Serve);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            note!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The REST clients need no server configuration.
    match command {
        Command::Mode { api, action } => return runtime.block_on(admin::mode(api, action)),
        Command::Rollout { api } => {
            return runtime.block_on(admin::call(
                api,
                |client| async move { client.rollout().await },
            ));
        }
        Command::Openapi => return openapi(),
        // Reads the configuration itself: a health check never exits 2 (Docker reserves it).
        Command::Healthcheck { url } => return runtime.block_on(healthcheck::check(url)),
        _ => {}
    }
    // The server's own rule, checked first: a token it would refuse is no use to anyone.
    if let Command::Token { sub, .. } = &command
        && let Err(e) = check_sub(sub)
    {
        note!("error: {e}: the server refuses a token with such a sub");
        return ExitCode::from(2);
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            note!("{e}");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Serve => runtime.block_on(serve::serve(config)),
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
            list: Some(BackfillCommand::Jobs { limit, before }),
            ..
        } => runtime.block_on(operator::jobs(config, limit, before)),
        Command::Backfill { list: None, run } => runtime.block_on(operator::backfill(
            config,
            run.dry_run,
            run.data_dirs,
            run.ids_file,
            run.default_owner.unwrap_or_default(),
        )),
        Command::Verify { data_dirs } => runtime.block_on(operator::verify(config, data_dirs)),
        Command::Rollback { job_id } => runtime.block_on(operator::rollback(config, job_id)),
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
            runtime.block_on(operator::migrate(config, dry_run, force, opted_in))
        }
        Command::Mode { .. }
        | Command::Rollout { .. }
        | Command::Openapi
        | Command::Healthcheck { .. } => unreachable!("handled above"),
    }
}

fn token(config: &Config, request: TokenRequest) -> ExitCode {
    let AuthConfig::Jwt {
        secret: Some(secret),
        settings,
        ..
    } = &config.auth
    else {
        note!(
            "gatehouse token needs GATEHOUSE_JWT_SECRET (the embedded default's key is random and\n\
             lives only inside the running process; set a secret for both the server and this command)"
        );
        return ExitCode::from(2);
    };
    match TokenIssuer::new(secret.as_bytes(), settings).mint(&request) {
        Ok(token) => output::line(&token, ExitCode::SUCCESS),
        Err(e) => {
            note!("cannot mint: {e}");
            ExitCode::FAILURE
        }
    }
}

fn openapi() -> ExitCode {
    match crate::app::openapi_document().to_pretty_json() {
        Ok(json) => output::line(&json, ExitCode::SUCCESS),
        Err(e) => {
            note!("cannot render the OpenAPI document: {e}");
            ExitCode::FAILURE
        }
    }
}
