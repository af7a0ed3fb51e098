//! `gatehouse healthcheck`: is the gatehouse of this configuration ready?
//!
//! Made for container health checks (`HEALTHCHECK CMD ["gatehouse", "healthcheck"]`), which run
//! inside the container with its environment: with no `--url` it reads the configuration as
//! the server does and asks `GET /readyz` on `GATEHOUSE_LISTEN`'s port, over loopback when the
//! server listens on every address (`0.0.0.0:8080` → `127.0.0.1:8080`; `[::]:8080` →
//! `127.0.0.1:8080`, then `[::1]:8080`: a `[::]` socket is dual-stack on Linux, and Docker
//! gives containers no IPv6 by default). It exits 0 when the answer is 200 and 1 otherwise
//! (Docker reserves 2), within a few seconds, with one line on stderr.
//!
//! It never goes through a proxy: `HTTP_PROXY` and `ALL_PROXY` name the way out of the
//! container, and a proxy answering 200 would say nothing about this instance.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use reqwest::Url;
use tokio::time::Instant;

use super::client::transport_failure;
use super::output::note;
use crate::config::Config;

/// The whole check's bound (connect included), over every address tried.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Asks `/readyz` at `url` (a base URL), or where the configuration listens.
pub async fn check(url: Option<String>) -> ExitCode {
    let candidates = match url {
        Some(base) => readyz_at(&base).map(|readyz| vec![readyz]),
        None => Config::from_env()
            .map(|config| readyz_of(config.listen))
            .map_err(|e| format!("cannot read the configuration: {e}")),
    };
    let candidates = match candidates {
        Ok(candidates) => candidates,
        Err(why) => {
            note!("unhealthy: {why}");
            return ExitCode::FAILURE;
        }
    };
    let http = match reqwest::Client::builder().no_proxy().build() {
        Ok(http) => http,
        Err(e) => {
            note!("unhealthy: {}", transport_failure(&e, TIMEOUT));
            return ExitCode::FAILURE;
        }
    };
    let deadline = Instant::now() + TIMEOUT;
    // Addresses passed over (no connection), with why: said with the outcome.
    let mut passed_over: Vec<String> = Vec::new();
    let mut candidates = candidates.iter().peekable();
    while let Some(readyz) = candidates.next() {
        let outcome = ask(&http, readyz, deadline).await;
        let after = if passed_over.is_empty() {
            String::new()
        } else {
            format!(" (after {})", passed_over.join("; "))
        };
        match outcome {
            Ok(()) => {
                note!("ready: {readyz} answered 200{after}");
                return ExitCode::SUCCESS;
            }
            Err(Failure::NotConnected(why)) if candidates.peek().is_some() => {
                passed_over.push(format!("{readyz}: {why}"));
            }
            Err(Failure::NotConnected(why) | Failure::Answered(why)) => {
                note!("not ready: {readyz}: {why}{after}");
                return ExitCode::FAILURE;
            }
        }
    }
    note!("unhealthy: no address to ask");
    ExitCode::FAILURE
}

/// `/readyz` under the base URL `base` (`http://host:port` or `http://host:port/prefix/`; a
/// path is a prefix whether or not it ends in `/`).
fn readyz_at(base: &str) -> Result<Url, String> {
    let invalid = || format!("invalid URL {base:?} (write e.g. http://127.0.0.1:8080)");
    let mut url = Url::parse(base)
        .ok()
        .filter(|u| u.scheme() == "http" && u.has_host())
        .ok_or_else(invalid)?;
    if !url.path().ends_with('/') {
        // Without it `join` would replace the last segment (`/gatehouse` → `/readyz`).
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url.join("readyz").map_err(|_| invalid())
}

/// Where to ask `/readyz` of a server listening on `listen`, in order: the first to answer
/// decides. Every IPv6 address (`[::]`) is asked on IPv4 loopback first (that socket takes
/// IPv4 too on Linux, and works where IPv6 is disabled), then on IPv6 loopback.
fn readyz_of(listen: SocketAddr) -> Vec<Url> {
    let ips = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        IpAddr::V6(ip) if ip.is_unspecified() => vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ],
        ip => vec![ip],
    };
    ips.into_iter()
        .map(|ip| {
            let address = SocketAddr::new(ip, listen.port());
            Url::parse(&format!("http://{address}/readyz"))
                .expect("a socket address makes a valid URL")
        })
        .collect()
}

/// Why `/readyz` did not say ready.
enum Failure {
    /// No connection was made (refused, no route, no such address): the next address may
    /// answer.
    NotConnected(String),
    /// It answered something else than 200, or did not answer in time.
    Answered(String),
}

/// `Ok` when `readyz` answers 200 before `deadline`; else what it answered, or why it did not.
async fn ask(http: &reqwest::Client, readyz: &Url, deadline: Instant) -> Result<(), Failure> {
    let failure = |e: reqwest::Error| {
        let why = transport_failure(&e, TIMEOUT);
        if e.is_connect() && !e.is_timeout() {
            Failure::NotConnected(why)
        } else {
            Failure::Answered(why)
        }
    };
    let response = http
        .get(readyz.clone())
        .timeout(deadline.saturating_duration_since(Instant::now()))
        .send()
        .await
        .map_err(failure)?;
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
    Err(Failure::Answered(if parts.is_empty() {
        format!("answered {status}")
    } else {
        format!("answered {status} ({})", parts.join(", "))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_address_is_asked_on_loopback_and_a_named_one_as_it_is() {
        let urls = |listen: &str| -> Vec<String> {
            readyz_of(listen.parse().unwrap())
                .iter()
                .map(Url::to_string)
                .collect()
        };
        assert_eq!(urls("0.0.0.0:8080"), ["http://127.0.0.1:8080/readyz"]);
        // IPv4 loopback first: it answers where IPv6 is disabled (Docker's default).
        assert_eq!(
            urls("[::]:9000"),
            ["http://127.0.0.1:9000/readyz", "http://[::1]:9000/readyz"]
        );
        assert_eq!(urls("10.1.2.3:8081"), ["http://10.1.2.3:8081/readyz"]);
        assert_eq!(urls("[::1]:8081"), ["http://[::1]:8081/readyz"]);
        assert_eq!(urls("[fd00::2]:8081"), ["http://[fd00::2]:8081/readyz"]);
    }

    #[test]
    fn a_url_is_a_base_its_path_kept() {
        let readyz = |base: &str| readyz_at(base).map(String::from);
        for (base, readyz_url) in [
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080/readyz"),
            ("http://127.0.0.1:8080/", "http://127.0.0.1:8080/readyz"),
            (
                "http://127.0.0.1:8080/gatehouse/",
                "http://127.0.0.1:8080/gatehouse/readyz",
            ),
            (
                "http://127.0.0.1:8080/gatehouse",
                "http://127.0.0.1:8080/gatehouse/readyz",
            ),
            (
                "http://gh.internal/a/b/?x=1#top",
                "http://gh.internal/a/b/readyz",
            ),
            ("http://[::1]:8080", "http://[::1]:8080/readyz"),
        ] {
            assert_eq!(readyz(base).as_deref(), Ok(readyz_url), "{base}");
        }
        for bad in [
            "127.0.0.1:8080",
            "https://127.0.0.1:8080",
            "http://",
            "nowhere",
        ] {
            let why = readyz(bad).unwrap_err();
            assert!(why.contains("invalid URL"), "{bad}: {why}");
        }
    }
}
