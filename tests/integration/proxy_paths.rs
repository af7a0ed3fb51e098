//! Path spellings through real proxies (issue 14, class 3, end to end): bob sends raw request
//! targets for alice's session that some backend reads differently from the plain path (dot
//! segments raw, encoded and `..;`, `;params`, case, doubled slashes, encoded ids and slashes,
//! HEAD and OPTIONS), byte for byte, through each proxy running its recipe as shipped, with
//! gatehouse under ENFORCED in the recipe's style. Whatever reaches the upstream must not be
//! read as alice's `s1` by any common backend reading of what it received: gatehouse refuses
//! what backends may read differently, and the proxy forwards what gatehouse decided on.

use crate::common::proxies::Kind;
use crate::common::stage::{Failures, Stage};
use crate::common::upstream::raw_request;

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

async fn spellings_hold(kind: Kind) {
    let Some(stage) = Stage::set(kind, None).await else {
        return;
    };
    let mut failures = Failures::new(kind);
    // Path spellings: what reaches the upstream is never read as alice's session by any common
    // backend reading (gatehouse refuses what backends may read differently).
    let auth = format!("Bearer {}", stage.bob);
    let mut answers = Vec::new();
    for (method, target) in SPELLINGS {
        let before = stage.upstream.count();
        let status = raw_request(
            &stage.proxy.base,
            method,
            target,
            &[("Authorization", &auth)],
        )
        .await;
        let served = stage.upstream.count() > before;
        answers.push(format!("{status}{}", if served { "*" } else { "" }));
        if !served {
            continue;
        }
        let seen = stage
            .upstream
            .last()
            .expect("the request reached the upstream");
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

    // One answer per spelling, in order; `*`: reached the upstream (for what gatehouse decided).
    stage.report(&format!("path spellings [{}]", answers.join(" ")));
    failures.finish(&stage.proxy.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_serves_no_spelling_of_another_session() {
    spellings_hold(Kind::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_debian_serves_no_spelling_of_another_session() {
    spellings_hold(Kind::CaddyDebian).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_current_serves_no_spelling_of_another_session() {
    spellings_hold(Kind::CaddyCurrent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_serves_no_spelling_of_another_session() {
    spellings_hold(Kind::Traefik).await;
}

/// One dodge: method, request target, extra headers, the endpoint the backend runs it as.
type Dodge = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);

/// Endpoint dodges (review rv-fa): bob asks for alice's `s1` in spellings that a common
/// backend runs as a read of `chat.messages` / `chat.export`, but that gatehouse decides under
/// `chat.session` (the `*` catch-all). The session is the same, the endpoint (and so the mode)
/// is not: with the reads rolled out first (`chat.messages` and `chat.export` ENFORCED, the
/// catch-all still LOG_ONLY), each reads alice's messages past the endpoint that is enforced.
/// Each case names the backend reading that runs it as the read:
///
/// - a method override on a POST: Rails (`Rack::MethodOverride` is in the default stack:
///   `_method` form field and `X-HTTP-Method-Override`), Express `method-override` (header, or
///   `?_method=` with a query getter), ASP.NET Core `UseHttpMethodOverride`
///   (`X-HTTP-Method-Override`), Symfony (`X-HTTP-Method-Override`, `_method`);
/// - a format suffix: Rails routes `messages(.:format)`, so `messages.json` is
///   `messages#index`; Spring MVC's suffix pattern match (on by default before 5.3) does the
///   same for `@GetMapping(".../messages")`.
///
/// Whatever reaches the upstream must have been decided under the endpoint the backend runs.
const DODGES: &[Dodge] = &[
    (
        "POST",
        "/api/chat/sessions/s1/messages",
        &[("X-HTTP-Method-Override", "GET")],
        "chat.messages",
    ),
    (
        "POST",
        "/api/chat/sessions/s1/messages",
        &[("X-HTTP-Method", "GET")],
        "chat.messages",
    ),
    (
        "POST",
        "/api/chat/sessions/s1/messages",
        &[("X-Method-Override", "GET")],
        "chat.messages",
    ),
    (
        "POST",
        "/api/chat/sessions/s1/messages?_method=GET",
        &[],
        "chat.messages",
    ),
    (
        "POST",
        "/api/chat/sessions/s1/export",
        &[("X-HTTP-Method-Override", "get")],
        "chat.export",
    ),
    // Slim 4 honours the header on any method: each proxy must let gatehouse see it.
    (
        "PUT",
        "/api/chat/sessions/s1/messages",
        &[("X-HTTP-Method-Override", "GET")],
        "chat.messages",
    ),
    (
        "DELETE",
        "/api/chat/sessions/s1/messages",
        &[("X-Method-Override", "GET")],
        "chat.messages",
    ),
    (
        "GET",
        "/api/chat/sessions/s1/messages.json",
        &[],
        "chat.messages",
    ),
    (
        "GET",
        "/api/chat/sessions/s1/export.json",
        &[],
        "chat.export",
    ),
    (
        "HEAD",
        "/api/chat/sessions/s1/messages.xml",
        &[],
        "chat.messages",
    ),
];

async fn endpoint_dodges_hold(kind: Kind) {
    let Some(stage) = Stage::set(kind, None).await else {
        return;
    };
    let app = stage.app();
    // Reads enforced (ENFORCED is the global mode), the catch-all still observed.
    let reply = app
        .call(
            reqwest::Method::PUT,
            "/v1/enforcement/endpoints/chat.session",
            Some(&app.admin()),
            Some(serde_json::json!({ "mode": "LOG_ONLY", "reason": "writes observed first" })),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let mut failures = Failures::new(kind);
    let auth = format!("Bearer {}", stage.bob);
    // The plain read is refused: its endpoint is enforced.
    let before = stage.upstream.count();
    let status = raw_request(
        &stage.proxy.base,
        "GET",
        "/api/chat/sessions/s1/messages",
        &[("Authorization", &auth)],
    )
    .await;
    failures.check(status == 403 && stage.upstream.count() == before, || {
        format!("bob's plain GET of alice's messages got {status}")
    });
    let mut answers = Vec::new();
    for (method, target, extra, runs_as) in DODGES {
        let mut headers = vec![("Authorization", auth.as_str())];
        if *method == "POST" {
            headers.push(("Content-Length", "0"));
        }
        headers.extend(extra.iter().copied());
        let before = stage.upstream.count();
        let status = raw_request(&stage.proxy.base, method, target, &headers).await;
        let served = stage.upstream.count() > before;
        answers.push(format!("{status}{}", if served { "*" } else { "" }));
        if !served {
            continue;
        }
        let seen = stage.upstream.last().expect("reached the upstream");
        let endpoint = seen.values("x-gatehouse-endpoint").join(",");
        failures.check(endpoint == *runs_as, || {
            format!(
                "bob's {method} {target} with {extra:?} got {status} and reached the upstream \
                 as {} {:?}, which the backend runs as {runs_as} (ENFORCED) on alice's s1, but \
                 gatehouse decided it under {endpoint:?} (mode {:?}, decision {:?}, reason {:?})",
                seen.method,
                seen.uri,
                seen.values("x-gatehouse-mode"),
                seen.values("x-gatehouse-decision"),
                seen.values("x-gatehouse-reason"),
            )
        });
    }
    stage.report(&format!("endpoint dodges [{}]", answers.join(" ")));
    failures.finish(&stage.proxy.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_decides_each_request_under_the_endpoint_the_backend_runs() {
    endpoint_dodges_hold(Kind::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_debian_decides_each_request_under_the_endpoint_the_backend_runs() {
    endpoint_dodges_hold(Kind::CaddyDebian).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_current_decides_each_request_under_the_endpoint_the_backend_runs() {
    endpoint_dodges_hold(Kind::CaddyCurrent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_decides_each_request_under_the_endpoint_the_backend_runs() {
    endpoint_dodges_hold(Kind::Traefik).await;
}

/// Hop-by-hop stripping (review rv-fa): a client that lists the identity headers in its own
/// `Connection` header asks every hop to drop them (RFC 9110 §7.6.1). The proxies that honour
/// it (Go's reverse proxy in Caddy and Traefik) then remove what gatehouse's answer just put on
/// the request, so the owner's checked request reaches the upstream with none of gatehouse's
/// six values: the backend cannot tell it from an unchecked one, and the defence in depth the
/// README asks of backends ("check that the session they serve is the one in
/// `X-Gatehouse-Session`") has nothing to compare. The upstream must see all six.
async fn identity_survives_connection_header(kind: Kind) {
    let Some(stage) = Stage::set(kind, None).await else {
        return;
    };
    let mut failures = Failures::new(kind);
    let auth = format!("Bearer {}", stage.alice);
    let listed = crate::common::stage::IDENTITY.join(", ");
    let before = stage.upstream.count();
    let status = raw_request(
        &stage.proxy.base,
        "GET",
        "/api/chat/sessions/s1/messages",
        &[("Authorization", &auth), ("Connection", &listed)],
    )
    .await;
    let served = stage.upstream.count() > before;
    failures.check(status == 200 && served, || {
        format!("the owner got {status} (served: {served})")
    });
    if served {
        failures.identity(
            stage.upstream.last(),
            ["alice", "s1", "chat.messages", "ENFORCED", "allow", "owner"],
        );
    }
    stage.report("connection-listed identity headers");
    failures.finish(&stage.proxy.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_keeps_identity_headers_a_client_lists_in_connection() {
    identity_survives_connection_header(Kind::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_debian_keeps_identity_headers_a_client_lists_in_connection() {
    identity_survives_connection_header(Kind::CaddyDebian).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_current_keeps_identity_headers_a_client_lists_in_connection() {
    identity_survives_connection_header(Kind::CaddyCurrent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_keeps_identity_headers_a_client_lists_in_connection() {
    identity_survives_connection_header(Kind::Traefik).await;
}
