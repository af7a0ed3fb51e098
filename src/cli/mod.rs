//! The `gatehouse` command line: `serve` (the default), `token`, `openapi`, the admin REST
//! clients `mode` and `rollout` ([`admin`], over [`client`]), and the operator tools working
//! directly on Redis: `backfill`, `verify`, `rollback` and `migrate` ([`operator`]).
//!
//! `main.rs` only parses the command line and calls [`run`].

pub mod admin;
pub mod client;
mod operator;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::auth::{TokenIssuer, TokenRequest};
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
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// Print the OpenAPI document (the committed openapi/openapi.json).
    Openapi,
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

/// Runs one command to its end.
pub fn run(cli: Cli) -> ExitCode {
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
        Command::Mode { api, action } => return runtime.block_on(admin::mode(api, action)),
        Command::Rollout { api } => {
            return runtime.block_on(admin::call(
                api,
                |client| async move { client.rollout().await },
            ));
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
            dry_run,
            data_dirs,
            ids_file,
            default_owner,
        } => runtime.block_on(operator::backfill(
            config,
            dry_run,
            data_dirs,
            ids_file,
            default_owner,
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
        Command::Mode { .. } | Command::Rollout { .. } | Command::Openapi => {
            unreachable!("handled above")
        }
    }
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
    let document = crate::app::openapi_document();
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

pub(crate) fn print_json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}
