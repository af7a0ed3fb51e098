//! The scene of the end-to-end proxy tests ([`Stage`]: gatehouse, a proxy running its recipe,
//! the recording upstream) and how they judge what the upstream saw ([`Failures`]): every
//! check runs, and a test fails at the end with all that went wrong.

use std::time::{Duration, Instant};

use super::proxies::{Kind, Proxy};
use super::upstream::{Seen, Upstream};
use super::{Backend, TestApp};

const ROUTES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/proxies/routes.conf");

/// Where the test clients connect from (loopback, but not the proxies' 127.0.0.1, so that
/// gatehouse can trust the proxy and not the client).
pub const CLIENT_IP: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

/// The scene every proxy test plays in: gatehouse (embedded store, the shipped
/// `routes.conf`, ENFORCED, alice owns `s1`, bob owns `s2`, the proxy's 127.0.0.1 trusted) asked by `kind` running its recipe,
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
                // The proxies connect from 127.0.0.1; test clients from [`CLIENT_IP`].
                ("GATEHOUSE_TRUSTED_PROXIES", "127.0.0.1/32"),
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

    /// An HTTP client connecting from [`CLIENT_IP`].
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .local_address(CLIENT_IP)
            .build()
            .expect("a client bound to a loopback address")
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
