//! `gatehouse mode` and `gatehouse rollout`: admin calls of a running gatehouse's REST API.

use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};

use super::client::{AdminClient, ClientError};
use super::output::{self, note};
use crate::decision::Mode;

/// Where the admin API is and how to authenticate to it.
#[derive(Args)]
pub struct ApiArgs {
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
pub enum ModeAction {
    /// Print the settings in force.
    Get,
    /// Set the global mode (and, with ENFORCED, the share of users enforced).
    Set {
        /// DISABLED, LOG_ONLY or ENFORCED.
        mode: Mode,
        /// With ENFORCED only: enforce for this percentage of users (0-100, `enforce_percent`);
        /// the rest get LOG_ONLY.
        #[arg(long, value_parser = percent)]
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
        /// How many entries (1-1000).
        #[arg(long, default_value_t = 20, value_parser = page_limit)]
        limit: usize,
    },
}

/// What every change carries.
#[derive(Args)]
pub struct ChangeArgs {
    /// Why (required; recorded in the history).
    #[arg(long)]
    reason: String,
    /// Apply only if the settings are still at this version (`expected_version`).
    #[arg(long, value_parser = version)]
    expected_version: Option<u64>,
}

/// `--percent`: 0-100, said in those words (clap's own range check says `0..=100`).
fn percent(raw: &str) -> Result<u8, String> {
    raw.trim()
        .parse::<u8>()
        .ok()
        .filter(|p| *p <= 100)
        .ok_or_else(|| "enforce_percent is a whole number from 0 to 100".to_owned())
}

/// A page size: 1-1000, as the API takes it.
pub(crate) fn page_limit(raw: &str) -> Result<usize, String> {
    raw.trim()
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=1000).contains(n))
        .ok_or_else(|| "limit is a whole number from 1 to 1000".to_owned())
}

/// `--expected-version`: a settings version.
fn version(raw: &str) -> Result<u64, String> {
    raw.trim()
        .parse::<u64>()
        .map_err(|_| "expected_version is a settings version: a whole number such as 7".to_owned())
}

/// An endpoint's mode, or `global` to follow the global mode again.
#[derive(Clone)]
pub enum EndpointMode {
    /// Override with this mode.
    Set(Mode),
    /// Remove the override.
    Global,
}

impl std::str::FromStr for EndpointMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("global") {
            Ok(EndpointMode::Global)
        } else {
            s.parse().map(EndpointMode::Set).map_err(|_| {
                format!("unknown mode {s:?}: use DISABLED, LOG_ONLY, ENFORCED or global")
            })
        }
    }
}

/// The kill switch's new state.
#[derive(Clone, Copy, ValueEnum)]
pub enum OnOff {
    /// Every check allowed unchecked.
    On,
    /// Checks as the modes say.
    Off,
}

/// `gatehouse mode ...`.
pub async fn mode(api: ApiArgs, action: ModeAction) -> ExitCode {
    if let ModeAction::Set {
        mode,
        percent: Some(_),
        ..
    } = &action
        && *mode != Mode::Enforced
    {
        // The server takes it (an endpoint set to ENFORCED would follow it), but from this
        // command it reads as "enforce for some": refused before anything is sent.
        note!(
            "error: --percent sets enforce_percent, which applies only under ENFORCED; \
             `mode set {}` enforces no one (leave --percent out)",
            mode.as_str()
        );
        return ExitCode::from(2);
    }
    call(api, |client| async move {
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
pub async fn call<F, Fut>(api: ApiArgs, call: F) -> ExitCode
where
    F: FnOnce(AdminClient) -> Fut,
    Fut: Future<Output = Result<serde_json::Value, ClientError>>,
{
    let client = match AdminClient::new(&api.url, api.token) {
        Ok(client) => client,
        Err(e) => {
            note!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match call(client).await {
        Ok(value) => output::json(&value, ExitCode::SUCCESS),
        Err(e) => {
            note!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
