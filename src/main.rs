//! The `gatehouse` binary: `serve` (the default), `token` and `openapi`.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use gatehouse::auth::{TokenIssuer, TokenRequest};
use gatehouse::config::{AuthConfig, Config};
use gatehouse::server::Gatehouse;
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
        /// A scope, e.g. `gatehouse:validate` (repeatable).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Lifetime, e.g. `1h`, `30m`, `7d`.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// Print the OpenAPI document (the committed openapi/openapi.json).
    Openapi,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
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
        Command::Openapi => runtime.block_on(openapi()),
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
