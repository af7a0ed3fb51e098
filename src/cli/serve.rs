//! `gatehouse serve`: the HTTP service until SIGINT or SIGTERM.

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::config::{AuthConfig, Config};
use crate::server::Gatehouse;

/// Serves until a signal, then drains.
pub async fn serve(config: Config) -> ExitCode {
    crate::telemetry::init(config.log_format, &config.log_filter);
    let gatehouse = match Gatehouse::start(&config).await {
        Ok(gatehouse) => gatehouse,
        Err(e @ crate::server::BuildError::Key(crate::auth::KeyError::Unfetched(_))) => {
            tracing::error!(
                error = %e,
                "cannot start: no keys from an identity provider (GATEHOUSE_JWT_WAIT_FOR_KEYS=on \
                 starts without them and refuses its tokens until they are fetched)"
            );
            return ExitCode::FAILURE;
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    for warning in &config.warnings {
        tracing::warn!(setting = %warning, "setting has no effect");
    }
    if matches!(config.auth, AuthConfig::Disabled) {
        tracing::warn!(
            "GATEHOUSE_AUTH=disabled: every caller is the virtual user `admin`; ownership is not protected"
        );
    }
    if let Some(token) = &gatehouse.bootstrap_token {
        eprintln!(
            "\nWARNING: no GATEHOUSE_JWT_SECRET, GATEHOUSE_JWT_PUBLIC_KEYS or identity provider set: using a random signing key\n\
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
