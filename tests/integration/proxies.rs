//! End to end through real proxies (issue 14, acceptance 1): nginx, Debian's Caddy 2.6.2, a
//! current Caddy 2.11 and Traefik 3, each running its recipe from `examples/proxies/` exactly as
//! shipped, with gatehouse started in the `GATEHOUSE_FORWARD_AUTH_STYLE` the recipe names, under
//! ENFORCED, in front of a recording upstream. For each proxy:
//!
//! - the owner reaches the upstream, which sees gatehouse's six `X-Gatehouse-*` values;
//! - another user gets 403 and the upstream is never reached; no token is a 401;
//! - header precedence: a client's own `X-Original-URI` / `X-Forwarded-Uri` (and methods)
//!   naming a session it owns never get another user's session served;
//! - client-sent `X-Gatehouse-*` (all six, each twice) never reach the upstream, on a checked
//!   request and on an unprotected (unmatched) URI, and no placeholder text does either;
//! - gatehouse down: the proxy fails closed, the upstream is not reached.
//!
//! One proxy process per test (one test per proxy: every check runs against the same start).
//! Each test prints how long its proxy took to start and to run the checks.

use std::time::Instant;

use crate::common::proxies::{Kind, Proxy, Seen, Upstream, raw_request};
use crate::common::{Backend, TestApp};

const ROUTES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/proxies/routes.conf");

/// The six identity headers, as gatehouse names them.
const IDENTITY: [&str; 6] = [
    "x-gatehouse-user",
    "x-gatehouse-session",
    "x-gatehouse-endpoint",
    "x-gatehouse-mode",
    "x-gatehouse-decision",
    "x-gatehouse-reason",
];

/// The failed checks of one proxy: every check runs, the test fails at the end with all of
/// them (so one run shows everything a recipe gets wrong).
struct Failures {
    kind: Kind,
    found: Vec<String>,
}

impl Failures {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            let failure = what();
            if !self.found.contains(&failure) {
                self.found.push(failure);
            }
        }
    }

    /// The upstream saw exactly gatehouse's `expected` identity values (a non-empty one
    /// exactly once, an empty one empty or absent) and nothing a client sent.
    fn identity(&mut self, seen: Option<Seen>, expected: [&str; 6]) {
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

    fn finish(self, log: &str) {
        assert!(
            self.found.is_empty(),
            "{}: {} failed checks:\n- {}\nproxy log:\n{log}",
            self.kind.name(),
            self.found.len(),
            self.found.join("\n- ")
        );
    }
}

/// A request carrying every identity header twice, with values a client would like to be
/// believed.
fn spoofed(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    let mut request = request;
    for name in ["X-Gatehouse-User", "x-gatehouse-user"] {
        request = request.header(name, "root-spoof");
    }
    for (name, value) in [
        ("X-Gatehouse-Session", "s2-spoof"),
        ("X-Gatehouse-Endpoint", "chat.spoof"),
        ("X-Gatehouse-Mode", "DISABLED-spoof"),
        ("X-Gatehouse-Decision", "allow-spoof"),
        ("X-Gatehouse-Reason", "admin-spoof"),
    ] {
        request = request.header(name, value).header(name, value);
    }
    request
}

/// What a request through the proxy got: the status, and the request as the upstream received
/// it if it got there.
struct Outcome {
    status: u16,
    reached: Option<Seen>,
}

async fn send(upstream: &Upstream, request: reqwest::RequestBuilder) -> Outcome {
    let before = upstream.count();
    let response = request.send().await.expect("the proxy answers");
    let status = response.status().as_u16();
    let _ = response.bytes().await;
    let reached = (upstream.count() > before)
        .then(|| upstream.last())
        .flatten();
    Outcome { status, reached }
}

/// A 403 or a 5xx: what a proxy that fails closed answers.
fn refused(status: u16) -> bool {
    status == 403 || (500..600).contains(&status)
}

/// Raw spellings of alice's `s1` (and of bob's `s2` turning into `s1`) that some backend reads
/// as `s1`; bob sends each. Refused, or served for what gatehouse decided, never as `s1`.
const SPELLINGS: &[(&str, &str)] = &[
    ("GET", "/api/chat/sessions/s2/../s1/messages"),
    ("GET", "/api/chat/sessions/s2/%2e%2e/s1/messages"),
    ("GET", "/api/chat/sessions/s2/..%2fs1/messages"),
    ("GET", "/api/chat/sessions/s2%2f..%2f..%2fs1/messages"),
    ("GET", "/api/chat/sessions/s2/..;/s1/messages"),
    ("GET", "/api/chat/sessions/./s1/messages"),
    ("GET", "/API/chat/sessions/s1/messages"),
    ("GET", "/api/CHAT/Sessions/s1/messages"),
    ("GET", "/api/chat/sessions;x/s1/messages"),
    ("GET", "/api/chat/sessions/s1;x/messages"),
    ("GET", "//api/chat/sessions/s1/messages"),
    ("GET", "/api/chat//sessions/s1/messages"),
    ("GET", "/api/chat/sessions/%73%31/messages"),
    ("GET", "/api/chat/sessions/s1%2fmessages"),
    (
        "GET",
        "/api/chat/sessions/s1/messages?next=/api/chat/sessions/s2/messages",
    ),
    (
        "GET",
        "/api/chat/sessions/s1/messages#/api/chat/sessions/s2/messages",
    ),
    ("HEAD", "/api/chat/sessions/s1/messages"),
    ("OPTIONS", "/api/chat/sessions/s1/messages"),
];

/// The session ids backends could read from a received request target: with or without each
/// of percent-decoding, `;params` stripped, `//` collapsed and dot segments resolved, and the
/// static segments matched case-insensitively.
fn backend_readings(target: &str) -> Vec<String> {
    let path = target.split(['?', '#']).next().unwrap_or("");
    let mut ids = Vec::new();
    for variant in 0..16u8 {
        let mut p = path.to_owned();
        if variant & 1 != 0 {
            p = percent_encoding::percent_decode_str(&p)
                .decode_utf8_lossy()
                .into_owned();
        }
        let mut segments: Vec<String> = p.split('/').map(str::to_owned).collect();
        if variant & 2 != 0 {
            for segment in &mut segments {
                if let Some(at) = segment.find(';') {
                    segment.truncate(at);
                }
            }
        }
        if variant & 4 != 0 {
            let first = segments.first().cloned();
            segments.retain(|s| !s.is_empty());
            segments.insert(0, first.unwrap_or_default());
        }
        if variant & 8 != 0 {
            let mut resolved: Vec<String> = Vec::new();
            for segment in segments {
                match segment.as_str() {
                    "." => {}
                    ".." => {
                        if resolved.len() > 1 {
                            resolved.pop();
                        }
                    }
                    _ => resolved.push(segment),
                }
            }
            segments = resolved;
        }
        // ["", "api", "chat", "sessions", id, ...]
        let prefix = ["", "api", "chat", "sessions"];
        if segments.len() > 4
            && segments
                .iter()
                .zip(prefix)
                .all(|(s, want)| s.eq_ignore_ascii_case(want))
        {
            ids.push(segments[4].clone());
        }
    }
    ids.sort();
    ids.dedup();
    ids
}

/// Runs every check through `kind` with gatehouse in the recipe's style, or in `auto` (the
/// default, for an operator who did not set it: the recipes' own stripping must hold then too).
async fn recipe_holds(kind: Kind, recipe_style: bool) {
    let Some(binary) = kind.binary() else {
        return;
    };
    let version = kind.version(&binary);
    let started = Instant::now();
    let style = if recipe_style {
        kind.style()
    } else {
        "auto".to_owned()
    };
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
    let up = started.elapsed();
    let http = reqwest::Client::new();
    let (alice, bob) = (app.user("alice"), app.user("bob"));
    let get = |path: &str| http.get(format!("{}{path}", proxy.base));
    let mut failures = Failures {
        kind,
        found: Vec::new(),
    };
    let (s1, s2) = (
        "/api/chat/sessions/s1/messages",
        "/api/chat/sessions/s2/messages",
    );

    // The owner reaches the upstream with gatehouse's identity headers.
    let owner = send(&upstream, get(s1).bearer_auth(&alice)).await;
    failures.check(owner.status == 200, || {
        format!("the owner got {}", owner.status)
    });
    let reached_uri = owner.reached.as_ref().map(|seen| seen.uri.clone());
    failures.check(reached_uri.as_deref() == Some(s1), || {
        format!("the owner's request reached the upstream as {reached_uri:?}")
    });
    failures.identity(
        owner.reached,
        ["alice", "s1", "chat.messages", "ENFORCED", "allow", "owner"],
    );

    // Another user, and no token, are refused before the upstream.
    let other = send(&upstream, get(s1).bearer_auth(&bob)).await;
    failures.check(other.status == 403 && other.reached.is_none(), || {
        format!(
            "another user got {} (reached the upstream: {})",
            other.status,
            other.reached.is_some()
        )
    });
    let anonymous = send(&upstream, get("/api/chat/sessions/s1/export")).await;
    failures.check(
        anonymous.status == 401 && anonymous.reached.is_none(),
        || {
            format!(
                "no token got {} (reached the upstream: {})",
                anonymous.status,
                anonymous.reached.is_some()
            )
        },
    );

    // Header precedence: bob asks for alice's s1 and names his own s2 in every header a
    // convention reads. The proxy's own value must decide: 403, never served.
    let attacks: [&[(&str, &str)]; 6] = [
        &[("X-Original-URI", s2)],
        &[("X-Forwarded-Uri", s2)],
        &[("X-Original-URI", s2), ("X-Forwarded-Uri", s2)],
        &[("X-Original-URI", s2), ("X-Original-URI", s2)],
        &[("X-Forwarded-Uri", s2), ("X-Forwarded-Uri", s2)],
        &[
            ("X-Original-Method", "GET"),
            ("X-Original-URI", s2),
            ("X-Forwarded-Method", "GET"),
            ("X-Forwarded-Uri", s2),
        ],
    ];
    for headers in attacks {
        let mut request = get(s1).bearer_auth(&bob);
        for (header, value) in headers {
            request = request.header(*header, *value);
        }
        let attack = send(&upstream, request).await;
        failures.check(attack.status == 403 && attack.reached.is_none(), || {
            format!(
                "bob with {headers:?} for alice's s1 got {} (served: {})",
                attack.status,
                attack.reached.is_some()
            )
        });
    }
    // The other way round: what is served is what was decided (bob's own s2, not the s1 his
    // headers name).
    let reverse = send(
        &upstream,
        get(s2)
            .bearer_auth(&bob)
            .header("X-Original-URI", s1)
            .header("X-Forwarded-Uri", s1),
    )
    .await;
    failures.check(reverse.status == 200, || {
        format!(
            "bob naming s1 in headers for his own s2 got {}",
            reverse.status
        )
    });
    failures.identity(
        reverse.reached,
        ["bob", "s2", "chat.messages", "ENFORCED", "allow", "owner"],
    );

    // Spoofed identity headers on a checked request: the upstream sees gatehouse's.
    let checked = send(
        &upstream,
        spoofed(get("/api/chat/sessions/s1/export")).bearer_auth(&alice),
    )
    .await;
    failures.check(checked.status == 200, || {
        format!("the owner with spoofed headers got {}", checked.status)
    });
    failures.identity(
        checked.reached,
        ["alice", "s1", "chat.export", "ENFORCED", "allow", "owner"],
    );

    // ... and on an unprotected URI (no route matches, allowed without a check), with and
    // without a token: nothing identifies anyone.
    for token in [None, Some(&bob)] {
        let mut request = spoofed(get("/api/chat/sessions?limit=5"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let unprotected = send(&upstream, request).await;
        failures.check(unprotected.status == 200, || {
            format!("an unprotected URI got {}", unprotected.status)
        });
        failures.identity(
            unprotected.reached,
            ["", "", "", "", "allow", "unprotected"],
        );
    }

    // Path spellings: what reaches the upstream is never read as alice's session by any common
    // backend reading (gatehouse refuses what backends may read differently).
    let auth = format!("Bearer {bob}");
    for (method, target) in SPELLINGS {
        let before = upstream.count();
        let status = raw_request(&proxy.base, method, target, &[("Authorization", &auth)]).await;
        if upstream.count() == before {
            continue;
        }
        let seen = upstream.last().expect("the request reached the upstream");
        let readings = backend_readings(&seen.uri);
        failures.check(!readings.iter().any(|id| id == "s1"), || {
            format!(
                "bob's {method} {target} got {status} and reached the upstream as {:?}, which a \
                 backend may read as alice's s1 (readings {readings:?}; gatehouse said session \
                 {:?}, reason {:?})",
                seen.uri,
                seen.values("x-gatehouse-session"),
                seen.values("x-gatehouse-reason"),
            )
        });
    }

    // No placeholder text anywhere the upstream looked.
    for seen in upstream.seen() {
        for (header, value) in &seen.headers {
            failures.check(!value.contains("{http.") && !value.contains("{rp."), || {
                format!("{} {header}: placeholder text {value:?}", seen.uri)
            });
        }
    }
    let checks = started.elapsed() - up;

    // gatehouse down: the proxy fails closed, for a checked and an unprotected URI.
    app.stop().await;
    for request in [
        get(s1).bearer_auth(&alice),
        spoofed(get("/api/chat/sessions")),
    ] {
        let down = send(&upstream, request).await;
        failures.check(refused(down.status) && down.reached.is_none(), || {
            format!(
                "gatehouse down: got {} (served: {})",
                down.status,
                down.reached.is_some()
            )
        });
    }

    eprintln!(
        "[proxies] {} ({version}), style {style}: up in {up:.2?}, checks {checks:.2?}, \
         {:.2?} in all",
        kind.name(),
        started.elapsed()
    );
    failures.finish(&proxy.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_recipe_holds() {
    recipe_holds(Kind::Nginx, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_recipe_holds_in_auto_style() {
    recipe_holds(Kind::Nginx, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_debian_recipe_holds() {
    recipe_holds(Kind::CaddyDebian, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_debian_recipe_holds_in_auto_style() {
    recipe_holds(Kind::CaddyDebian, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_current_recipe_holds() {
    recipe_holds(Kind::CaddyCurrent, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_current_recipe_holds_in_auto_style() {
    recipe_holds(Kind::CaddyCurrent, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_recipe_holds() {
    recipe_holds(Kind::Traefik, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_recipe_holds_in_auto_style() {
    recipe_holds(Kind::Traefik, false).await;
}
