//! `gatehouse healthcheck`: is the gatehouse of this configuration ready?
//!
//! Made for container health checks (`HEALTHCHECK CMD ["gatehouse", "healthcheck"]`), which run
//! inside the container with its environment: with no `--url` it reads the configuration as
//! the server does and asks `GET /readyz` on `GATEHOUSE_LISTEN`'s port, over loopback when the
//! server listens on every address (`0.0.0.0:8080` → `127.0.0.1:8080`). It exits 0 when the
//! answer is 200 and 1 otherwise (Docker reserves 2), within a few seconds, with one line on
//! stderr.
//!
//! It never goes through a proxy: `HTTP_PROXY` and `ALL_PROXY` name the way out of the
//! container, and a proxy answering 200 would say nothing about this instance.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use reqwest::Url;

use super::client::transport_failure;
use super::output::note;
use crate::config::Config;

/// The whole check's bound (connect included).
const TIMEOUT: Duration = Duration::from_secs(3);

/// Asks `/readyz` at `url` (a base URL), or where the configuration listens.
pub async fn check(url: Option<String>) -> ExitCode {
    let readyz = match url {
        Some(base) => Url::parse(&base)
            .ok()
            .filter(|u| u.scheme() == "http" && u.has_host())
            .and_then(|u| u.join("/readyz").ok())
            .ok_or_else(|| format!("invalid URL {base:?} (write e.g. http://127.0.0.1:8080)")),
        None => Config::from_env()
            .map(|config| readyz_of(config.listen))
            .map_err(|e| format!("cannot read the configuration: {e}")),
    };
    let readyz = match readyz {
        Ok(readyz) => readyz,
        Err(why) => {
            note!("unhealthy: {why}");
            return ExitCode::FAILURE;
        }
    };
    match ask(&readyz).await {
        Ok(()) => {
            note!("ready: {readyz} answered 200");
            ExitCode::SUCCESS
        }
        Err(why) => {
            note!("not ready: {readyz}: {why}");
            ExitCode::FAILURE
        }
    }
}

/// `/readyz` of a server listening on `listen`.
fn readyz_of(listen: SocketAddr) -> Url {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let address = SocketAddr::new(ip, listen.port());
    Url::parse(&format!("http://{address}/readyz")).expect("a socket address makes a valid URL")
}

/// `Ok` when `readyz` answers 200; else what it answered, or why it did not.
async fn ask(readyz: &Url) -> Result<(), String> {
    let http = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .no_proxy()
        .build()
        .map_err(|e| transport_failure(&e, TIMEOUT))?;
    let response = http
        .get(readyz.clone())
        .send()
        .await
        .map_err(|e| transport_failure(&e, TIMEOUT))?;
    let status = response.status();
    if status == reqwest::StatusCode::OK {
        return Ok(());
    }
    // The readiness document says what is missing (`store`, `settings_loaded`).
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    let part = |name: &str| body.get(name).map(|v| format!("{name} {v}"));
    let parts: Vec<String> = ["store", "settings_loaded"]
        .iter()
        .filter_map(|name| part(name))
        .collect();
    Err(if parts.is_empty() {
        format!("answered {status}")
    } else {
        format!("answered {status} ({})", parts.join(", "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_address_is_asked_on_loopback_and_a_named_one_as_it_is() {
        let url = |listen: &str| readyz_of(listen.parse().unwrap()).to_string();
        assert_eq!(url("0.0.0.0:8080"), "http://127.0.0.1:8080/readyz");
        assert_eq!(url("[::]:9000"), "http://[::1]:9000/readyz");
        assert_eq!(url("10.1.2.3:8081"), "http://10.1.2.3:8081/readyz");
    }
}
