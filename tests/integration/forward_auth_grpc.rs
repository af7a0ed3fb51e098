//! Envoy's gRPC `Authorization/Check` (`GATEHOUSE_GRPC_LISTEN`) against `/v1/forward-auth`:
//! every row of the HTTP forward-auth tests is asked over both, to the same instance, and
//! must get the same status, the same six `X-Gatehouse-*` headers, the same
//! `WWW-Authenticate` and the same problem body. The gRPC client is tonic's, built from the
//! same `envoy-types` protos as the server; the HTTP side is the `envoy` style (the request's
//! own method, the raw path after `/v1/forward-auth`), sent byte for byte over a plain socket.
//!
//! The two clients are in `tests/common/ext_authz.rs`. Each row goes over gRPC three ways: as Envoy sends headers by default (one map entry per
//! name, repeats joined with `,`, pseudo-headers included), with `encode_raw_headers` (a list,
//! repeats kept), and checked against what Envoy would forward upstream (the `ok_response`
//! applied to the request in Envoy's order: headers set, then `headers_to_remove`).

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{HeaderMap as RawHeaders, HeaderValue as RawHeader};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::both_backends;
use crate::common::ext_authz::{
    Ask, Encoding, check, check_request, compare, over_grpc, over_http, same_over_both,
};
use crate::common::{Backend, TestApp};
use crate::forward_auth::last_entry;

both_backends!(every_http_row_gets_the_same_answer_over_grpc);

/// The rows of `forward_auth.rs` and `forward_auth_paths.rs`, on instances configured as
/// those tests configure theirs (in the `envoy` style, which is what a gRPC check is).
async fn every_http_row_gets_the_same_answer_over_grpc(backend: Backend) {
    let mut compared = 0;
    let dir = tempfile::tempdir().expect("temporary directory");
    let routes = dir.path().join("routes.conf");
    std::fs::write(
        &routes,
        "chat.messages GET /api/chat/sessions/{session_id}/messages\n\
         chat.session  *   /api/chat/sessions/{session_id}/*\n",
    )
    .expect("write routes");
    let routes = routes.to_str().expect("utf-8 path");
    let envoy = [
        ("GATEHOUSE_FORWARD_AUTH_STYLE", "envoy"),
        ("GATEHOUSE_TRUSTED_PROXIES", "127.0.0.1"),
    ];

    // LOG_ONLY (the initial mode): would-deny passes.
    let app = TestApp::spawn_with_grpc(&backend, &envoy).await;
    app.claim("s1", "alice").await;
    let (alice, bob) = (app.user("alice"), app.user("bob"));
    let uri = "/api/chat/sessions/s1/messages?limit=20";
    compared += compare(
        &app,
        &[
            (
                Ask::new("bob, LOG_ONLY", Some(&bob), "GET", uri),
                200,
                "not_owner",
            ),
            (
                Ask::new("alice, LOG_ONLY", Some(&alice), "GET", uri),
                200,
                "owner",
            ),
        ],
    )
    .await;
    let reply = same_over_both(&app, &Ask::new("would-deny", Some(&bob), "GET", uri)).await;
    assert_eq!(reply.header("x-gatehouse-decision"), "would_deny");
    app.stop().await;

    // ENFORCED, the default route table.
    let app = TestApp::spawn_with_grpc(&backend, &envoy).await;
    app.claim("s1", "alice").await;
    app.claim("s2", "bob").await;
    app.set_mode("ENFORCED").await;
    let (alice, bob, admin) = (app.user("alice"), app.user("bob"), app.admin());
    let zoe = "zoë@example.com";
    app.claim("s-zoe", zoe).await;
    let zoe_token = app.user(zoe);
    let precedence = |label: &str, token: &str| {
        Ask::new(label, Some(token), "GET", "/api/chat/sessions/s2/messages")
            .with("x-original-method", "GET")
            .with("x-original-uri", "/api/chat/sessions/s1/messages")
            .with("x-forwarded-method", "GET")
            .with("x-forwarded-uri", "/api/chat/sessions/s1/messages")
    };
    let mut rows = vec![
        (
            Ask::new("owner GET", Some(&alice), "GET", uri),
            200,
            "owner",
        ),
        (
            Ask::new("owner POST", Some(&alice), "POST", uri),
            200,
            "owner",
        ),
        (
            Ask::new("other user", Some(&bob), "GET", uri),
            403,
            "not_owner",
        ),
        (
            Ask::new(
                "no owner",
                Some(&bob),
                "GET",
                "/api/chat/sessions/nobody-owns-this",
            ),
            403,
            "no_owner",
        ),
        (
            Ask::new("no token", None, "GET", uri),
            401,
            "unauthenticated",
        ),
        (
            Ask::new("junk token", Some("not.a.jwt"), "GET", uri),
            401,
            "unauthenticated",
        ),
        (
            Ask::new(
                "forged token",
                Some(&crate::common::forged(&alice)),
                "GET",
                uri,
            ),
            401,
            "unauthenticated",
        ),
        (
            Ask::new("two Authorization headers", Some(&alice), "GET", uri)
                .with("authorization", &format!("Bearer {bob}")),
            401,
            "unauthenticated",
        ),
        (Ask::new("admin", Some(&admin), "DELETE", uri), 200, "admin"),
        (
            Ask::new("unprotected", None, "GET", "/static/app.js"),
            200,
            "unprotected",
        ),
        (
            Ask::new(
                "PUT (traefik row)",
                Some(&alice),
                "PUT",
                "/api/chat/sessions/s1/title",
            ),
            200,
            "owner",
        ),
        (
            Ask::new(
                "DELETE with a query",
                Some(&bob),
                "DELETE",
                "/api/chat/sessions/s1/messages/7?x=1",
            ),
            403,
            "not_owner",
        ),
        (
            Ask::new(
                "invalid session id",
                Some(&alice),
                "GET",
                "/api/chat/sessions/bad%20id",
            ),
            400,
            "invalid_request",
        ),
        (
            Ask::new(
                "invalid id characters",
                Some(&alice),
                "GET",
                "/api/chat/sessions/a%21b",
            ),
            400,
            "invalid_request",
        ),
        (
            precedence("precedence headers, path names bob's", &alice),
            403,
            "not_owner",
        ),
        (
            precedence("precedence headers, bob's own", &bob),
            200,
            "owner",
        ),
        (
            Ask::new(
                "client-sent identity headers",
                Some(&bob),
                "GET",
                "/api/chat/sessions/s2",
            )
            .with("x-gatehouse-user", "alice")
            .with("x_gatehouse_user", "alice")
            .with("X-Gatehouse-Mode", "DISABLED")
            .with("x-gatehouse-decision", "allow")
            .with("x-gatehouse-admin", "true")
            .with("x-gatehouse-extra", "1"),
            200,
            "owner",
        ),
        (
            Ask::new(
                "identity headers on an unprotected URI",
                None,
                "GET",
                "/static/app.js",
            )
            .with("x-gatehouse-user", "alice")
            .with("x-gatehouse-session", "s1")
            .with("x-gatehouse-whatever", "1"),
            200,
            "unprotected",
        ),
        (
            Ask::new(
                "non-ASCII user",
                Some(&zoe_token),
                "GET",
                "/api/chat/sessions/s-zoe/messages",
            ),
            200,
            "owner",
        ),
        (
            Ask::new(
                "static segments in any case",
                Some(&alice),
                "GET",
                "/API/Chat/sessions/s1/messages",
            ),
            200,
            "owner",
        ),
        (
            Ask::new(
                "HEAD of another's",
                Some(&alice),
                "HEAD",
                "/api/chat/sessions/s2/messages",
            ),
            403,
            "not_owner",
        ),
        (
            Ask::new(
                "lower-case method",
                Some(&alice),
                "get",
                "/api/chat/sessions/s2/messages",
            ),
            403,
            "not_owner",
        ),
    ];
    // Spellings every backend reads as s2 (bob's): decided on s2.
    for spelling in [
        "/api/chat/sessions/s2",
        "/api/chat/sessions/s2/",
        "/api/chat/sessions/%73%32",
        "/%61pi/chat/sessions/s2/files/1",
        "/api/chat/sessions/s2?next=/api/chat/sessions/s1",
    ] {
        rows.push((
            Ask::new(spelling, Some(&alice), "GET", spelling),
            403,
            "not_owner",
        ));
    }
    // Spellings backends read differently: refused, never decided.
    for spelling in [
        "/api/chat/sessions/s2/../s1/messages",
        "/api/chat/sessions/s2/./messages",
        "/api/chat/sessions/s2/files/%2e%2e/%2e%2e/s1",
        "/api/chat/sessions/s2/files/.%2E/.%2e/s1",
        "/api/chat/sessions/s%2e2",
        "/api/chat/sessions;x/s2/messages",
        "/api/chat/sessions/s1/..;/s2/messages",
        "/api/chat/sessions/s2;v=1/messages",
        "/api/chat/sessions/s2%3Bx/messages",
        "/api/chat/sessions/s1%5C..%5Cs2",
        "/api/chat/sessions/s1%2F..%2Fs2",
        "/api/chat/sessions/a%2Fb/messages",
        "/api/chat/sessions/s1/%252e%252e/s2",
        "/api/chat/sessions/s1%3F/s2",
        "/api/chat/sessions/s1%23/s2",
        "/api/chat/sessions./s2/messages",
        "/api/chat/sessions%20/s2/messages",
        "//api/chat/sessions/s2",
        "/api/chat/sessions//s2/messages",
        "/api/chat/sessions/s1//",
        "/api/chat/sessions/s2%00",
        "/api/chat/sessions/s2%0A/messages",
        "/api/chat/sessions/%ff",
        "/api/chat/%C5%BFessions/s2/messages",
        "/api/chat/sessions%EF%BC%8Fs2",
        "/API/chat/sessions/s1/..;/s2",
    ] {
        rows.push((
            Ask::new(spelling, Some(&bob), "GET", spelling),
            400,
            "refused_uri",
        ));
    }
    compared += compare(&app, &rows).await;

    // Audit: a gRPC denial is the same event as the HTTP one (source forward_auth, the
    // original method and path, the client address from X-Forwarded-For of a trusted peer).
    let denied = |user: &str| {
        Ask::new(
            "audited denial",
            Some(&app.user(user)),
            "DELETE",
            "/api/chat/sessions/s1/messages?draft=1",
        )
    };
    over_http(&app, &denied("mallory-http")).await;
    over_grpc(&app, &denied("mallory-grpc"), Encoding::Map).await;
    let (http, grpc) = (
        last_entry(&app, "forward_auth", "mallory-http").await,
        last_entry(&app, "forward_auth", "mallory-grpc").await,
    );
    for field in [
        "decision",
        "reason",
        "session_id",
        "owner",
        "endpoint",
        "method",
        "path",
        "mode",
        "source",
        "client_ip",
    ] {
        assert_eq!(grpc[field], http[field], "audit {field}: {grpc} vs {http}");
    }
    assert_eq!(grpc["client_ip"], "203.0.113.5");
    assert_eq!(grpc["request_id"], "12345", "Envoy's request id: {grpc}");
    app.stop().await;

    // Method-specific routes: HEAD as GET, a POST and override headers under every reading.
    let routed = [envoy[0], envoy[1], ("GATEHOUSE_ROUTES", routes)];
    let app = TestApp::spawn_with_grpc(&backend, &routed).await;
    app.claim("s3", "alice").await;
    app.set_mode("ENFORCED").await;
    let lax = app
        .call(
            Method::PUT,
            "/v1/enforcement/endpoints/chat.session",
            Some(&app.admin()),
            Some(serde_json::json!({ "mode": "LOG_ONLY", "reason": "observed first" })),
        )
        .await;
    assert_eq!(lax.status, 200, "{lax:?}");
    let bob = app.user("bob");
    let messages = "/api/chat/sessions/s3/messages";
    let mut rows = Vec::new();
    for method in ["HEAD", "GET", "POST", "get", "head"] {
        rows.push((
            Ask::new(method, Some(&bob), method, messages),
            403,
            "not_owner",
        ));
    }
    rows.push((
        Ask::new("PUT, LOG_ONLY catch-all", Some(&bob), "PUT", messages),
        200,
        "not_owner",
    ));
    for method in ["PUT", "PATCH", "DELETE"] {
        let ask =
            Ask::new(method, Some(&bob), method, messages).with("x-http-method-override", "GET");
        rows.push((ask, 403, "not_owner"));
    }
    rows.push((
        Ask::new("owner HEAD", Some(&app.user("alice")), "HEAD", messages),
        200,
        "owner",
    ));
    compared += compare(&app, &rows).await;
    // On Redis the next instances share the settings: back to the global mode.
    let back = app
        .call(
            Method::DELETE,
            "/v1/enforcement/endpoints/chat.session",
            Some(&app.admin()),
            Some(serde_json::json!({ "reason": "observed" })),
        )
        .await;
    assert_eq!(back.status, 200, "{back:?}");
    app.stop().await;

    // A cookie, and unmatched URIs denied.
    let cookie = [
        envoy[0],
        envoy[1],
        ("GATEHOUSE_FORWARD_AUTH_COOKIE", "chat_token"),
        ("GATEHOUSE_FORWARD_AUTH_UNMATCHED", "deny"),
    ];
    let app = TestApp::spawn_with_grpc(&backend, &cookie).await;
    app.claim("s1", "alice").await;
    app.set_mode("ENFORCED").await;
    let (alice, bob) = (app.user("alice"), app.user("bob"));
    let path = "/api/chat/sessions/s1";
    let with_cookie =
        |label: &str, value: String| Ask::new(label, None, "GET", path).with("cookie", &value);
    compared += compare(
        &app,
        &[
            (
                with_cookie("cookie", format!("theme=dark; chat_token={alice}")),
                200,
                "owner",
            ),
            (
                with_cookie("another's cookie", format!("chat_token={bob}")),
                403,
                "not_owner",
            ),
            (
                with_cookie("no such cookie", "other=1".into()),
                401,
                "unauthenticated",
            ),
            (
                with_cookie(
                    "the cookie twice",
                    format!("chat_token={alice}; chat_token={bob}"),
                ),
                401,
                "unauthenticated",
            ),
            (
                with_cookie("two cookie headers", format!("chat_token={alice}"))
                    .with("cookie", &format!("chat_token={alice}")),
                401,
                "unauthenticated",
            ),
            (
                Ask::new("bearer over cookie", Some(&alice), "GET", path)
                    .with("cookie", &format!("chat_token={bob}")),
                200,
                "owner",
            ),
            (
                Ask::new("unmatched, denied", Some(&alice), "GET", "/static/app.js"),
                403,
                "unmatched",
            ),
        ],
    )
    .await;
    app.stop().await;

    // CORS preflights.
    let preflight = |label: &str| {
        Ask::new(label, None, "OPTIONS", "/api/chat/sessions/s2/messages")
            .with("access-control-request-method", "GET")
            .with("origin", "https://chat.example")
    };
    for (policy, status, reason) in [
        ("check", 401, "unauthenticated"),
        ("allow", 200, "preflight"),
        ("deny", 403, "preflight"),
    ] {
        let settings = [
            envoy[0],
            envoy[1],
            ("GATEHOUSE_FORWARD_AUTH_PREFLIGHT", policy),
        ];
        let app = TestApp::spawn_with_grpc(&backend, &settings).await;
        app.set_mode("ENFORCED").await;
        compared += compare(&app, &[(preflight(policy), status, reason)]).await;
        app.stop().await;
    }
    eprintln!("forward-auth over gRPC: {compared} rows, each the same over HTTP and gRPC (x2)");
    assert!(compared >= 70, "{compared} rows");
}

crate::tests_on!([redis]; an_unreachable_store_is_unavailable_over_grpc_as_over_http);

/// Store down under ENFORCED: 503 over HTTP, `UNAVAILABLE` (14) with a 503 denied response
/// over gRPC; and the settings never read: the same, `settings_unavailable`.
async fn an_unreachable_store_is_unavailable_over_grpc_as_over_http(mut backend: Backend) {
    let app = TestApp::spawn_with_grpc(
        &backend,
        &[
            ("GATEHOUSE_FORWARD_AUTH_STYLE", "envoy"),
            ("GATEHOUSE_OWNER_CACHE", "off"),
            ("GATEHOUSE_REDIS_TIMEOUT", "300ms"),
        ],
    )
    .await;
    app.claim("s1", "alice").await;
    app.set_mode("ENFORCED").await;
    let alice = app.user("alice");
    let ask = Ask::new(
        "store down",
        Some(&alice),
        "GET",
        "/api/chat/sessions/s1/messages",
    );
    let up = same_over_both(&app, &ask).await;
    assert_eq!(up.status, 200, "{up:?}");
    backend.redis_server().expect("a Redis server").stop();
    let down = same_over_both(&app, &ask).await;
    assert_eq!(
        (down.status, down.header("x-gatehouse-reason")),
        (503, "store_unavailable"),
        "{down:?}"
    );
    let response = check(app.grpc.expect("gRPC"), check_request(&ask, Encoding::Map)).await;
    assert_eq!(response.status.map(|s| s.code), Some(14), "UNAVAILABLE");
    app.stop().await;

    // An instance that never read the settings (Redis down since before its start, no
    // snapshot): every check is ENFORCED with the store unavailable, over both.
    let cold = TestApp::spawn_with_grpc(
        &backend,
        &[
            ("GATEHOUSE_FORWARD_AUTH_STYLE", "envoy"),
            ("GATEHOUSE_SETTINGS_SNAPSHOT", "off"),
            ("GATEHOUSE_REDIS_TIMEOUT", "300ms"),
        ],
    )
    .await;
    let never_read = same_over_both(&cold, &ask).await;
    assert_eq!(
        (never_read.status, never_read.header("x-gatehouse-reason")),
        (503, "settings_unavailable"),
        "{never_read:?}"
    );
    let response = check(cold.grpc.expect("gRPC"), check_request(&ask, Encoding::Raw)).await;
    assert_eq!(response.status.map(|s| s.code), Some(14), "UNAVAILABLE");
    cold.stop().await;
}

crate::tests_on!([memory]; grpc_only_inputs_are_refused_never_decided);

/// What only a CheckRequest can say: no HTTP attributes, a bad method, pseudo-headers that
/// contradict the fields, both header forms, control characters in the path (which an HTTP
/// request line cannot carry) — each refused, never decided.
async fn grpc_only_inputs_are_refused_never_decided(backend: Backend) {
    let app = TestApp::spawn_with_grpc(&backend, &[("GATEHOUSE_INITIAL_MODE", "ENFORCED")]).await;
    app.claim("s1", "alice").await;
    let addr = app.grpc.expect("gRPC");
    let alice = app.user("alice");
    let status_of = |r: &CheckResponse| match &r.http_response {
        Some(HttpResponse::DeniedResponse(d)) => d.status.map_or(0, |s| s.code),
        Some(HttpResponse::OkResponse(_)) => 200,
        _ => 0,
    };
    let empty = check(addr, CheckRequest::default()).await;
    assert_eq!(
        (empty.status.as_ref().map(|s| s.code), status_of(&empty)),
        (Some(3), 400)
    );
    let good = Ask::new(
        "owner",
        Some(&alice),
        "GET",
        "/api/chat/sessions/s1/messages",
    );
    let mutated = |f: &dyn Fn(&mut HttpRequest)| {
        let mut request = check_request(&good, Encoding::Map);
        let http = request
            .attributes
            .as_mut()
            .and_then(|a| a.request.as_mut())
            .and_then(|r| r.http.as_mut())
            .expect("http");
        f(http);
        request
    };
    assert_eq!(status_of(&check(addr, mutated(&|_| {})).await), 200);
    for (what, request, status) in [
        ("no method", mutated(&|h| h.method.clear()), 400),
        (
            "a method with a space",
            mutated(&|h| h.method = "G ET".into()),
            400,
        ),
        ("no path", mutated(&|h| h.path.clear()), 400),
        (
            "a relative path",
            mutated(&|h| h.path = "api/chat/sessions/s1".into()),
            400,
        ),
        (
            "a tab in the path",
            mutated(&|h| h.path = "/api/chat/sessions/s1\t/x".into()),
            400,
        ),
        (
            "a raw space in the path",
            mutated(&|h| h.path = "/api/chat/sessions/s1 x".into()),
            400,
        ),
        (
            ":path says another",
            mutated(&|h| {
                h.headers.insert(":path".into(), "/static/app.js".into());
            }),
            400,
        ),
        (
            ":method says another",
            mutated(&|h| {
                h.headers.insert(":method".into(), "OPTIONS".into());
            }),
            400,
        ),
        (
            "both header forms",
            mutated(&|h| {
                h.header_map = Some(RawHeaders {
                    headers: vec![RawHeader {
                        key: "x-a".into(),
                        value: "1".into(),
                        ..Default::default()
                    }],
                })
            }),
            400,
        ),
        (
            "a header value HTTP cannot carry",
            mutated(&|h| {
                h.headers
                    .insert("x-http-method-override".into(), "GET\r\nX: 1".into());
            }),
            400,
        ),
    ] {
        let response = check(addr, request).await;
        assert_eq!(status_of(&response), status, "{what}: {response:?}");
        assert_eq!(response.status.map(|s| s.code), Some(3), "{what}");
    }
    // The gRPC port speaks HTTP/2 only: an HTTP/1.1 request there is never answered 2xx.
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = "GET /api/chat/sessions/s1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    assert!(
        !String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 2"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    // gRPC calls are counted by code.
    let metrics = app.scrape().await;
    for series in [
        "gatehouse_grpc_requests_total{method=\"Check\",code=\"OK\"}",
        "gatehouse_grpc_requests_total{method=\"Check\",code=\"INVALID_ARGUMENT\"}",
    ] {
        assert!(metrics.contains(series), "{series} in\n{metrics}");
    }
    assert!(metrics.contains("gatehouse_grpc_request_duration_seconds_count{method=\"Check\"}"));
    app.stop().await;
}

crate::tests_on!([memory]; the_grpc_listener_stops_with_the_instance);

/// SIGTERM's path (the shutdown token): the gRPC listener closes with the HTTP one.
async fn the_grpc_listener_stops_with_the_instance(backend: Backend) {
    let app = TestApp::spawn_with_grpc(&backend, &[]).await;
    let addr = app.grpc.expect("gRPC");
    let ask = Ask::new("unprotected", None, "GET", "/static/app.js");
    assert_eq!(over_grpc(&app, &ask, Encoding::Map).await.status, 200);
    tokio::time::timeout(Duration::from_secs(10), app.stop())
        .await
        .expect("the instance stops within the drain bound");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the gRPC port is closed after the stop"
    );
}

crate::tests_on!([memory]; the_grpc_listener_caps_its_connections);

/// `GATEHOUSE_MAX_CONNECTIONS` bounds the gRPC listener too: with the cap held by peers that
/// say nothing, one more connection is closed at once (its Check fails, and Envoy fails
/// closed); once they go, checks are answered again.
async fn the_grpc_listener_caps_its_connections(backend: Backend) {
    let app = TestApp::spawn_with_grpc(&backend, &[("GATEHOUSE_MAX_CONNECTIONS", "3")]).await;
    let addr = app.grpc.expect("gRPC");
    let ask = Ask::new("unprotected", None, "GET", "/static/app.js");
    assert_eq!(over_grpc(&app, &ask, Encoding::Map).await.status, 200);
    // The connection of that check is closed with its client; wait until the cap is free.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        crate::common::ext_authz::try_check(addr, check_request(&ask, Encoding::Map)),
    )
    .await
    .expect("answered or refused at once, never left hanging");
    assert!(
        refused.is_err(),
        "a fourth connection was served: {refused:?}"
    );
    drop(silent);
    crate::common::eventually(Duration::from_secs(5), "the cap freed", || async {
        crate::common::ext_authz::try_check(addr, check_request(&ask, Encoding::Map))
            .await
            .ok()
    })
    .await;
    app.stop().await;
}
