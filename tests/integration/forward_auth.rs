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
