//! `/v1/forward-auth` over HTTP: the nginx, Traefik/Caddy and Envoy conventions, status codes
//! and headers, normalised spellings, cookies, unmatched URIs, and the audit trail.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::both_backends;
use crate::common::{Backend, Reply, TestApp, eventually};

both_backends!(
    nginx_convention_status_codes_and_headers,
    traefik_caddy_and_envoy_conventions,
    spellings_of_a_protected_path_get_its_decision,
    cookie_credentials_and_unmatched_policy,
);

/// Asks as nginx would: `X-Original-Method` / `X-Original-URI`.
async fn nginx(app: &TestApp, token: Option<&str>, method: &str, uri: &str) -> Reply {
    let mut request = app
        .http
        .get(format!("{}/v1/forward-auth", app.base))
        .header("x-original-method", method)
        .header("x-original-uri", uri)
        .header("x-real-ip", "203.0.113.7");
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    read(request).await
}

async fn read(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = response.json().await.unwrap_or(Value::Null);
    Reply {
        status,
        body,
        content_type,
        headers,
    }
}

fn header<'a>(reply: &'a Reply, name: &str) -> &'a str {
    reply
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

async fn nginx_convention_status_codes_and_headers(backend: Backend) {
    let app = TestApp::spawn(&backend, &[]).await;
    app.claim("s1", "alice").await;
    let (alice, bob) = (app.user("alice"), app.user("bob"));
    let uri = "/api/chat/sessions/s1/messages?limit=20";

    // LOG_ONLY (the initial mode): bob passes, and it is recorded as would_deny.
    let reply = nginx(&app, Some(&bob), "GET", uri).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(header(&reply, "x-gatehouse-decision"), "would_deny");
    assert_eq!(header(&reply, "x-gatehouse-mode"), "LOG_ONLY");

    app.set_mode("ENFORCED").await;
    let reply = nginx(&app, Some(&alice), "POST", uri).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(header(&reply, "x-gatehouse-user"), "alice");
    assert_eq!(header(&reply, "x-gatehouse-decision"), "allow");
    assert_eq!(header(&reply, "x-gatehouse-reason"), "owner");
    assert_eq!(header(&reply, "x-gatehouse-endpoint"), "chat.session");
    assert_eq!(header(&reply, "x-gatehouse-session"), "s1");

    let reply = nginx(&app, Some(&bob), "GET", uri).await;
    reply.assert_problem(403, "access-denied");
    assert_eq!(header(&reply, "x-gatehouse-decision"), "deny");
    assert_eq!(header(&reply, "x-gatehouse-reason"), "not_owner");
    assert_eq!(reply.body["user"], "bob");

    let reply = nginx(
        &app,
        Some(&bob),
        "GET",
        "/api/chat/sessions/nobody-owns-this",
    )
    .await;
    assert_eq!(
        (reply.status, header(&reply, "x-gatehouse-reason")),
        (403, "no_owner")
    );

    let reply = nginx(&app, None, "GET", uri).await;
    reply.assert_problem(401, "unauthorized");
    assert!(header(&reply, "www-authenticate").starts_with("Bearer"));
    let reply = nginx(&app, Some("not.a.jwt"), "GET", uri).await;
    reply.assert_problem(401, "unauthorized");

    // Admins pass; an unprotected URI passes without credentials.
    let reply = nginx(&app, Some(&app.admin()), "DELETE", uri).await;
    assert_eq!(
        (reply.status, header(&reply, "x-gatehouse-reason")),
        (200, "admin")
    );
    let reply = nginx(&app, None, "GET", "/static/app.js").await;
    assert_eq!(
        (reply.status, header(&reply, "x-gatehouse-reason")),
        (200, "unprotected")
    );

    // Bad input: fail closed with a 400.
    for bad in [
        "/api/chat/sessions/a%2Fb/messages",
        "/api/chat/sessions/a\\b",
        "relative/path",
        "/api/chat/sessions/bad%20id",
    ] {
        let reply = nginx(&app, Some(&alice), "GET", bad).await;
        assert_eq!(reply.status, 400, "{bad}: {reply:?}");
    }
    let reply = read(
        app.http
            .get(format!("{}/v1/forward-auth", app.base))
            .bearer_auth(&alice),
    )
    .await;
    reply.assert_problem(400, "invalid-request");

    // The denial is in the audit stream with the original request's details.
    let entry = eventually(
        Duration::from_secs(5),
        "forward-auth audit entry",
        || async {
            let reply = app
                .call(
                    Method::GET,
                    "/v1/audit?source=forward_auth&decision=deny&user=bob&limit=1",
                    Some(&app.admin()),
                    None,
                )
                .await;
            reply.body["entries"].as_array()?.first().cloned()
        },
    )
    .await;
    assert_eq!(entry["method"], "GET");
    assert_eq!(entry["path"], "/api/chat/sessions/nobody-owns-this");
    assert_eq!(entry["client_ip"], "203.0.113.7");
    assert_eq!(entry["endpoint"], "chat.session");
    app.stop().await;
}

async fn traefik_caddy_and_envoy_conventions(backend: Backend) {
    let app = TestApp::spawn(&backend, &[]).await;
    app.claim("s1", "alice").await;
    app.set_mode("ENFORCED").await;
    for (user, expected) in [("alice", 200), ("bob", 403)] {
        // Traefik and Caddy: X-Forwarded-Method / X-Forwarded-Uri on a GET.
        let reply = read(
            app.http
                .get(format!("{}/v1/forward-auth", app.base))
                .header("x-forwarded-method", "PUT")
                .header("x-forwarded-uri", "/api/chat/sessions/s1/title")
                .header("x-forwarded-for", "198.51.100.1, 203.0.113.9")
                .bearer_auth(app.user(user)),
        )
        .await;
        assert_eq!(reply.status, expected, "traefik {user}: {reply:?}");

        // Envoy: the original method, and the original path after the prefix.
        let reply = read(
            app.http
                .request(
                    Method::DELETE,
                    format!(
                        "{}/v1/forward-auth/api/chat/sessions/s1/messages/7?x=1",
                        app.base
                    ),
                )
                .bearer_auth(app.user(user)),
        )
        .await;
        assert_eq!(reply.status, expected, "envoy {user}: {reply:?}");
        assert_eq!(header(&reply, "x-gatehouse-session"), "s1");
    }
    // Envoy's path is read raw, so an encoded slash is refused, not decoded into a new segment.
    let reply = read(
        app.http
            .post(format!(
                "{}/v1/forward-auth/api/chat/sessions/s1%2F..%2Fs2",
                app.base
            ))
            .bearer_auth(app.user("alice")),
    )
    .await;
    assert_eq!(reply.status, 400, "{reply:?}");
    app.stop().await;
}

async fn spellings_of_a_protected_path_get_its_decision(backend: Backend) {
    let app = TestApp::spawn(&backend, &[]).await;
    app.claim("s2", "alice").await;
    app.set_mode("ENFORCED").await;
    let bob = app.user("bob");
    for spelling in [
        "/api/chat/sessions/s2",
        "//api/chat/sessions/s2/",
        "/api/./chat/sessions/s2",
        "/api/chat/sessions/x/../s2/messages",
        "/api/chat/sessions/s1/%2e%2e/s2",
        "/api/chat/sessions/%73%32",
        "/%61pi/chat//sessions/s2/../s2/files/1",
        "/../api/chat/sessions/s2",
    ] {
        let reply = nginx(&app, Some(&bob), "GET", spelling).await;
        assert_eq!(reply.status, 403, "{spelling}: {reply:?}");
        assert_eq!(header(&reply, "x-gatehouse-session"), "s2", "{spelling}");
    }
    // Normalised away from the protected prefix: what it names is what is checked.
    let reply = nginx(&app, Some(&bob), "GET", "/api/chat/sessions/%2e%2e/x").await;
    assert_eq!(reply.status, 200, "that is /api/chat/x: unprotected");
    app.stop().await;
}

async fn cookie_credentials_and_unmatched_policy(backend: Backend) {
    let app = TestApp::spawn(
        &backend,
        &[
            ("GATEHOUSE_FORWARD_AUTH_COOKIE", "chat_token"),
            ("GATEHOUSE_FORWARD_AUTH_UNMATCHED", "deny"),
        ],
    )
    .await;
    app.claim("s1", "alice").await;
    app.set_mode("ENFORCED").await;
    let ask = |cookie: String| {
        read(
            app.http
                .get(format!("{}/v1/forward-auth", app.base))
                .header("x-original-method", "GET")
                .header("x-original-uri", "/api/chat/sessions/s1")
                .header("cookie", cookie),
        )
    };
    let reply = ask(format!("theme=dark; chat_token={}", app.user("alice"))).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(header(&reply, "x-gatehouse-user"), "alice");
    let reply = ask(format!("chat_token={}", app.user("bob"))).await;
    assert_eq!(reply.status, 403);
    let reply = ask("other=1".into()).await;
    assert_eq!(reply.status, 401);
    let reply = nginx(&app, Some(&app.user("alice")), "GET", "/static/app.js").await;
    reply.assert_problem(403, "forbidden");
    assert_eq!(header(&reply, "x-gatehouse-reason"), "unmatched");
    app.stop().await;
}

both_backends!(
    header_precedence_attack_is_refused_in_auto_and_ignored_in_named_styles,
    a_convention_header_given_twice_is_refused,
    every_answer_sets_all_six_identity_headers,
);

const GATEHOUSE_HEADERS: [&str; 6] = [
    "x-gatehouse-user",
    "x-gatehouse-session",
    "x-gatehouse-endpoint",
    "x-gatehouse-mode",
    "x-gatehouse-decision",
    "x-gatehouse-reason",
];

/// Asks with `headers` (appended in order, so a name given twice is sent twice) at `path`.
async fn ask(
    app: &TestApp,
    token: Option<&str>,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut request = app.http.request(method, format!("{}{path}", app.base));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    read(request).await
}

/// An instance in `style`, ENFORCED, alice owning s1 and bob s2 (claims are idempotent, and
/// each embedded-store instance has its own store).
async fn styled(backend: &Backend, style: &str) -> TestApp {
    let app = TestApp::spawn(backend, &[("GATEHOUSE_FORWARD_AUTH_STYLE", style)]).await;
    app.claim("s1", "alice").await;
    app.claim("s2", "bob").await;
    app.set_mode("ENFORCED").await;
    app
}

/// The Caddy attack: Caddy sets `X-Forwarded-Uri` (bob's session) and passes the client's own
/// `X-Original-URI` (alice's) through.
const PRECEDENCE_ATTACK: [(&str, &str); 4] = [
    ("x-original-method", "GET"),
    ("x-original-uri", "/api/chat/sessions/s1/messages"),
    ("x-forwarded-method", "GET"),
    ("x-forwarded-uri", "/api/chat/sessions/s2/messages"),
];

async fn header_precedence_attack_is_refused_in_auto_and_ignored_in_named_styles(backend: Backend) {
    let app = TestApp::spawn(&backend, &[]).await;
    app.claim("s1", "alice").await;
    app.claim("s2", "bob").await;
    app.set_mode("ENFORCED").await;
    let alice = app.user("alice");
    let reply = ask(
        &app,
        Some(&alice),
        Method::GET,
        "/v1/forward-auth",
        &PRECEDENCE_ATTACK,
    )
    .await;
    reply.assert_problem(400, "ambiguous-request");
    assert_eq!(header(&reply, "x-gatehouse-decision"), "deny");
    assert_eq!(header(&reply, "x-gatehouse-reason"), "ambiguous_request");
    // The Envoy path suffix is a convention too.
    let reply = ask(
        &app,
        Some(&alice),
        Method::GET,
        "/v1/forward-auth/api/chat/sessions/s2/messages",
        &PRECEDENCE_ATTACK[..2],
    )
    .await;
    reply.assert_problem(400, "ambiguous-request");
    // Only one header of another convention is enough.
    let reply = ask(
        &app,
        Some(&alice),
        Method::GET,
        "/v1/forward-auth",
        &PRECEDENCE_ATTACK[1..],
    )
    .await;
    reply.assert_problem(400, "ambiguous-request");

    // The attempt is audited, with who tried.
    let entry = eventually(
        Duration::from_secs(5),
        "ambiguous request audited",
        || async {
            let reply = app
                .call(
                    Method::GET,
                    "/v1/audit?source=forward_auth&decision=deny&user=alice&limit=1",
                    Some(&app.admin()),
                    None,
                )
                .await;
            reply.body["entries"].as_array()?.first().cloned()
        },
    )
    .await;
    assert_eq!(entry["reason"], "ambiguous_request");
    app.stop().await;

    // Named styles read only their own convention: what the proxy itself set.
    for (style, expected, session) in [
        ("caddy", 403, "s2"),
        ("traefik", 403, "s2"),
        ("nginx", 200, "s1"),
    ] {
        let app = styled(&backend, style).await;
        let reply = ask(
            &app,
            Some(&alice),
            Method::GET,
            "/v1/forward-auth",
            &PRECEDENCE_ATTACK,
        )
        .await;
        assert_eq!(reply.status, expected, "{style}: {reply:?}");
        assert_eq!(header(&reply, "x-gatehouse-session"), session, "{style}");
        app.stop().await;
    }
    // Envoy: the path, whatever the headers say.
    let app = styled(&backend, "envoy").await;
    let reply = ask(
        &app,
        Some(&alice),
        Method::GET,
        "/v1/forward-auth/api/chat/sessions/s2/messages",
        &PRECEDENCE_ATTACK[..2],
    )
    .await;
    assert_eq!(
        (reply.status, header(&reply, "x-gatehouse-session")),
        (403, "s2"),
        "{reply:?}"
    );
    let reply = ask(
        &app,
        Some(&alice),
        Method::GET,
        "/v1/forward-auth",
        &PRECEDENCE_ATTACK,
    )
    .await;
    reply.assert_problem(400, "invalid-request");
    app.stop().await;
}

async fn a_convention_header_given_twice_is_refused(backend: Backend) {
    for style in ["auto", "nginx", "caddy"] {
        let app = styled(&backend, style).await;
        let alice = app.user("alice");
        let (method, uri) = if style == "caddy" {
            ("x-forwarded-method", "x-forwarded-uri")
        } else {
            ("x-original-method", "x-original-uri")
        };
        // A proxy that appends its own value after the client's: the first one was the
        // client's, and must not win.
        for headers in [
            [
                (method, "GET"),
                (uri, "/api/chat/sessions/s1/messages"),
                (uri, "/api/chat/sessions/s2/messages"),
            ],
            [
                (method, "GET"),
                (method, "DELETE"),
                (uri, "/api/chat/sessions/s1/messages"),
            ],
        ] {
            let reply = ask(
                &app,
                Some(&alice),
                Method::GET,
                "/v1/forward-auth",
                &headers,
            )
            .await;
            reply.assert_problem(400, "ambiguous-request");
        }
        app.stop().await;
    }
}

async fn every_answer_sets_all_six_identity_headers(backend: Backend) {
    let app = TestApp::spawn(&backend, &[]).await;
    app.claim("s1", "alice").await;
    let alice = app.user("alice");
    let all_six = |reply: &Reply| {
        for name in GATEHOUSE_HEADERS {
            assert!(
                reply.headers.contains_key(name),
                "{name} missing: {reply:?}"
            );
        }
    };
    // Unmatched: allowed without a check, every identity header present and empty.
    let reply = nginx(&app, None, "GET", "/static/app.js").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    all_six(&reply);
    for name in &GATEHOUSE_HEADERS[..4] {
        assert_eq!(header(&reply, name), "", "{name}");
    }
    assert_eq!(header(&reply, "x-gatehouse-decision"), "allow");
    assert_eq!(header(&reply, "x-gatehouse-reason"), "unprotected");
    // Checked: every one filled in.
    let reply = nginx(&app, Some(&alice), "GET", "/api/chat/sessions/s1/messages").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    all_six(&reply);
    for (name, value) in
        GATEHOUSE_HEADERS
            .iter()
            .zip(["alice", "s1", "chat.session", "LOG_ONLY", "allow", "owner"])
    {
        assert_eq!(header(&reply, name), value, "{name}");
    }
    // Refusals carry them too (the proxy does not forward those, but nothing is left unset).
    for reply in [
        nginx(&app, None, "GET", "/api/chat/sessions/s1/messages").await,
        nginx(&app, Some(&alice), "GET", "/api/chat/sessions/a%2Fb").await,
        ask(
            &app,
            Some(&alice),
            Method::GET,
            "/v1/forward-auth",
            &PRECEDENCE_ATTACK,
        )
        .await,
    ] {
        assert!(reply.status >= 400, "{reply:?}");
        all_six(&reply);
        assert_eq!(header(&reply, "x-gatehouse-decision"), "deny");
        assert_eq!(header(&reply, "x-gatehouse-user"), "");
    }
    app.stop().await;
}
