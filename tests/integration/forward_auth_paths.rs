//! `/v1/forward-auth` strict paths: spellings backends read alike are decided, spellings they
//! may read differently are refused (never decided); case-insensitive static segments, HEAD
//! as GET, and the CORS preflight policy.

use std::time::Duration;

use reqwest::Method;

use crate::both_backends;
use crate::common::{Backend, TestApp, eventually};
use crate::forward_auth::{ask, header, nginx, read};

both_backends!(spellings_of_a_protected_path_get_its_decision);

/// Sends `method path` as written (no client-side normalisation) with a bearer token; returns
/// the status and the response head.
async fn raw_request(app: &TestApp, method: &str, path: &str, token: &str) -> (u16, String) {
    let addr = app.base.trim_start_matches("http://");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    let text = crate::common::exchange(&app.base, &request).await;
    let head = text.split("\r\n\r\n").next().unwrap_or("").to_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head)
}

async fn spellings_of_a_protected_path_get_its_decision(backend: Backend) {
    let app = TestApp::spawn(&backend, &[]).await;
    app.claim("s2", "alice").await;
    app.set_mode("ENFORCED").await;
    let bob = app.user("bob");
    // Spellings every backend reads as session s2: decided on s2.
    for spelling in [
        "/api/chat/sessions/s2",
        "/api/chat/sessions/s2/",
        "/api/chat/sessions/%73%32",
        "/%61pi/chat/sessions/s2/files/1",
        "/api/chat/sessions/s2?next=/api/chat/sessions/s1",
    ] {
        let reply = nginx(&app, Some(&bob), "GET", spelling).await;
        assert_eq!(reply.status, 403, "{spelling}: {reply:?}");
        assert_eq!(header(&reply, "x-gatehouse-session"), "s2", "{spelling}");
    }
    app.stop().await;
}

both_backends!(
    spellings_backends_read_differently_are_refused,
    static_segments_match_case_insensitively,
    head_is_matched_as_get,
    cors_preflight_policy,
);

async fn spellings_backends_read_differently_are_refused(backend: Backend) {
    let app = TestApp::spawn(&backend, &[]).await;
    app.claim("s1", "bob").await;
    app.claim("s2", "alice").await;
    app.set_mode("ENFORCED").await;
    let bob = app.user("bob");
    for spelling in [
        // dot segments, raw and encoded (gatehouse used to resolve them: s1 for bob)
        "/api/chat/sessions/s2/../s1/messages",
        "/api/chat/sessions/s2/./messages",
        "/api/chat/sessions/s2/files/%2e%2e/%2e%2e/s1",
        "/api/chat/sessions/s2/files/.%2E/.%2e/s1",
        "/api/chat/sessions/s2/files/%2E./%2E./s1",
        "/api/chat/sessions/s%2e2",
        // ;params, raw and encoded (Tomcat and Spring strip them)
        "/api/chat/sessions;x/s2/messages",
        "/api/chat/sessions/s1/..;/s2/messages",
        "/api/chat/sessions/s2;v=1/messages",
        "/api/chat/sessions/s2%3Bx/messages",
        // backslashes and encoded slashes
        "/api/chat/sessions/s1\\..\\s2",
        "/api/chat/sessions/s1%5C..%5Cs2",
        "/api/chat/sessions/s1%2F..%2Fs2",
        // double encoding, encoded ? and #
        "/api/chat/sessions/s1/%252e%252e/s2",
        "/api/chat/sessions/s1%3F/s2",
        "/api/chat/sessions/s1%23/s2",
        // trailing dots and spaces (Windows servers drop them)
        "/api/chat/sessions./s2/messages",
        "/api/chat/sessions%20/s2/messages",
        // empty segments
        "//api/chat/sessions/s2",
        "/api/chat/sessions//s2/messages",
        "/api/chat/sessions/s1//",
        // control characters, raw (a tab fits in a header) and encoded; invalid UTF-8
        "/api/chat/sessions/s2\t/messages",
        "/api/chat/sessions/s2%00",
        "/api/chat/sessions/s2%0A/messages",
        "/api/chat/sessions/%ff",
        // look-alikes that case-insensitive routers read as ASCII
        "/api/chat/%C5%BFessions/s2/messages",
        "/api/chat/sessions%EF%BC%8Fs2",
    ] {
        let reply = nginx(&app, Some(&bob), "GET", spelling).await;
        reply.assert_problem(400, "refused-uri");
        assert_eq!(
            header(&reply, "x-gatehouse-reason"),
            "refused_uri",
            "{spelling}"
        );
    }
    // Envoy's path is read raw: the same rules apply to it. (Sent over a plain socket: an
    // HTTP client library would resolve the dot segments itself.)
    for path in [
        "/v1/forward-auth/api/chat/sessions;x/s2/messages",
        "/v1/forward-auth/api/chat/sessions/s2/../s1",
        "/v1/forward-auth/api/chat/sessions/s2/%2e%2e/s1",
        "/v1/forward-auth/api/chat/sessions/s2/files/.%2E/.%2E/s1",
        "/v1/forward-auth//api/chat/sessions/s2",
        "/v1/forward-auth/API/chat/sessions/s1/..;/s2",
    ] {
        let (status, head) = raw_request(&app, "GET", path, &bob).await;
        assert_eq!(status, 400, "{path}: {head}");
        assert!(
            head.contains("x-gatehouse-reason: refused_uri"),
            "{path}: {head}"
        );
    }
    // Refusals are audited with the raw path.
    let entry = eventually(Duration::from_secs(5), "refused URI audited", || async {
        let reply = app
            .call(
                Method::GET,
                "/v1/audit?source=forward_auth&decision=deny&user=bob&limit=50",
                Some(&app.admin()),
                None,
            )
            .await;
        reply.body["entries"]
            .as_array()?
            .iter()
            .find(|e| e["path"] == "/api/chat/sessions;x/s2/messages")
            .cloned()
    })
    .await;
    assert_eq!(entry["reason"], "refused_uri");
    assert_eq!(entry["method"], "GET");
    app.stop().await;
}

async fn static_segments_match_case_insensitively(backend: Backend) {
    let app = TestApp::spawn(&backend, &[]).await;
    app.claim("s2", "alice").await;
    app.set_mode("ENFORCED").await;
    for (user, expected) in [("bob", 403), ("alice", 200)] {
        for spelling in [
            "/API/Chat/sessions/s2/messages",
            "/api/CHAT/SESSIONS/s2",
            "/Api/chat/Sessions/s2/Files/X",
        ] {
            let reply = nginx(&app, Some(&app.user(user)), "GET", spelling).await;
            assert_eq!(reply.status, expected, "{user} {spelling}: {reply:?}");
            assert_eq!(header(&reply, "x-gatehouse-session"), "s2", "{spelling}");
        }
    }
    // The session id keeps its spelling: S2 is another session (nobody's).
    let reply = nginx(
        &app,
        Some(&app.user("alice")),
        "GET",
        "/API/chat/sessions/S2",
    )
    .await;
    assert_eq!(
        (reply.status, header(&reply, "x-gatehouse-session")),
        (403, "S2"),
        "{reply:?}"
    );
    app.stop().await;
}

async fn head_is_matched_as_get(backend: Backend) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let routes = dir.path().join("routes.conf");
    std::fs::write(
        &routes,
        "chat.messages GET /api/chat/sessions/{session_id}/messages\n",
    )
    .expect("write routes");
    let app = TestApp::spawn(
        &backend,
        &[("GATEHOUSE_ROUTES", routes.to_str().expect("utf-8 path"))],
    )
    .await;
    app.claim("s2", "alice").await;
    app.set_mode("ENFORCED").await;
    let uri = "/api/chat/sessions/s2/messages";
    for method in ["HEAD", "head", "GET"] {
        let reply = nginx(&app, Some(&app.user("bob")), method, uri).await;
        assert_eq!(reply.status, 403, "{method}: {reply:?}");
        assert_eq!(header(&reply, "x-gatehouse-endpoint"), "chat.messages");
    }
    let reply = nginx(&app, Some(&app.user("alice")), "HEAD", uri).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    // Envoy: the request's own method is HEAD.
    let reply = ask(
        &app,
        Some(&app.user("bob")),
        Method::HEAD,
        "/v1/forward-auth/api/chat/sessions/s2/messages",
        &[],
    )
    .await;
    assert_eq!(reply.status, 403, "{reply:?}");
    // A GET-only route protects POST too: a backend honouring a method override (a header,
    // `?_method=`, or a `_method` form field gatehouse never sees) runs it as the GET.
    let reply = nginx(&app, Some(&app.user("bob")), "POST", uri).await;
    assert_eq!(reply.status, 403, "{reply:?}");
    assert_eq!(header(&reply, "x-gatehouse-endpoint"), "chat.messages");
    // Other methods without an override header stay unmatched (allowed, by default).
    let reply = nginx(&app, Some(&app.user("bob")), "PUT", uri).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    app.stop().await;
}

async fn cors_preflight_policy(backend: Backend) {
    let preflight = |app: &TestApp, origin: bool| {
        let mut headers = vec![
            ("x-original-method", "OPTIONS"),
            ("x-original-uri", "/api/chat/sessions/s2/messages"),
            ("access-control-request-method", "GET"),
        ];
        if origin {
            headers.push(("origin", "https://chat.example"));
        }
        let headers: Vec<(&'static str, &'static str)> = headers;
        let base = app.base.clone();
        let http = app.http.clone();
        async move {
            let mut request = http.get(format!("{base}/v1/forward-auth"));
            for (name, value) in headers {
                request = request.header(name, value);
            }
            read(request).await
        }
    };
    // check (the default): a preflight is an OPTIONS request like any other; it carries no
    // credentials, so on a protected route it is a 401.
    let app = TestApp::spawn(&backend, &[]).await;
    app.claim("s2", "alice").await;
    app.set_mode("ENFORCED").await;
    preflight(&app, true)
        .await
        .assert_problem(401, "unauthorized");
    app.stop().await;

    let app = TestApp::spawn(&backend, &[("GATEHOUSE_FORWARD_AUTH_PREFLIGHT", "allow")]).await;
    app.set_mode("ENFORCED").await;
    let reply = preflight(&app, true).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(header(&reply, "x-gatehouse-reason"), "preflight");
    assert_eq!(header(&reply, "x-gatehouse-user"), "");
    assert_eq!(header(&reply, "x-gatehouse-session"), "");
    // Not a preflight without Origin: checked.
    preflight(&app, false)
        .await
        .assert_problem(401, "unauthorized");
    // The path rules still apply first.
    let reply = nginx(&app, None, "OPTIONS", "/api/chat/sessions;x/s2").await;
    reply.assert_problem(400, "refused-uri");
    app.stop().await;

    let app = TestApp::spawn(&backend, &[("GATEHOUSE_FORWARD_AUTH_PREFLIGHT", "deny")]).await;
    let reply = preflight(&app, true).await;
    reply.assert_problem(403, "forbidden");
    assert_eq!(header(&reply, "x-gatehouse-reason"), "preflight");
    app.stop().await;
}

both_backends!(
    post_override_to_a_method_only_the_catch_all_covers_is_decided_under_it,
    header_override_on_any_method_is_decided_under_the_method_it_runs_as,
);

/// Writes `routes` to a temporary route file and spawns gatehouse on it, with alice owning
/// `s2`, the global mode ENFORCED, and `lax` set to LOG_ONLY (rolled out later).
async fn routed_app(backend: &Backend, routes: &str, lax: &str) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("routes.conf");
    std::fs::write(&file, routes).expect("write routes");
    let app = TestApp::spawn(
        backend,
        &[("GATEHOUSE_ROUTES", file.to_str().expect("utf-8 path"))],
    )
    .await;
    app.claim("s2", "alice").await;
    app.set_mode("ENFORCED").await;
    let reply = app
        .call(
            Method::PUT,
            &format!("/v1/enforcement/endpoints/{lax}"),
            Some(&app.admin()),
            Some(serde_json::json!({ "mode": "LOG_ONLY", "reason": "observed first" })),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    (app, dir)
}

/// Review (r2): "a POST as every method" only tries the methods that have a method-specific
/// route (`RouteTable::find_readings` takes `by_method.keys()`), never the `*` routes those
/// methods would fall back to. With a POST route of its own (sending messages, observed
/// first) and the catch-all enforced, bob's `POST .../messages` with `X-HTTP-Method-Override:
/// GET` (Rails, Express `method-override`, ASP.NET Core, Symfony) is decided under
/// `chat.send` (LOG_ONLY: 200, would_deny) while the backend runs `GET .../messages`, which
/// gatehouse itself decides under `chat.session` (ENFORCED: 403). Same for an override to
/// DELETE.
async fn post_override_to_a_method_only_the_catch_all_covers_is_decided_under_it(backend: Backend) {
    let (app, _dir) = routed_app(
        &backend,
        "chat.send    POST /api/chat/sessions/{session_id}/messages\n\
         chat.session *    /api/chat/sessions/{session_id}/*\n",
        "chat.send",
    )
    .await;
    let bob = app.user("bob");
    let uri = "/api/chat/sessions/s2/messages";
    // What the backend runs: a GET (or DELETE) of alice's messages, enforced.
    for method in ["GET", "DELETE"] {
        let reply = nginx(&app, Some(&bob), method, uri).await;
        assert_eq!(reply.status, 403, "{method}: {reply:?}");
        assert_eq!(header(&reply, "x-gatehouse-endpoint"), "chat.session");
    }
    // The POST that carries the override.
    let reply = nginx(&app, Some(&bob), "POST", uri).await;
    assert_eq!(
        (
            reply.status,
            header(&reply, "x-gatehouse-endpoint"),
            header(&reply, "x-gatehouse-decision"),
        ),
        (403, "chat.session", "deny"),
        "bob's POST {uri} (+ X-HTTP-Method-Override: GET, run as GET by the backend) was \
         decided under the laxer POST route: {reply:?}"
    );
    app.stop().await;
}

/// Review (r2): the README says no framework overrides methods other than POST ("Other methods
/// stay unmatched ... no framework overrides them", `head_is_matched_as_get`). Slim 4's
/// `MethodOverrideMiddleware` (the 4.x line, current) applies `X-Http-Method-Override` on any
/// method (`if ($methodHeader) { $request = $request->withMethod($methodHeader); } elseif
/// (POST) { _METHOD }`). With the shipped route table shape (a GET route for the reads,
/// enforced; the catch-all observed), bob's `PUT .../messages` + `X-Http-Method-Override: GET`
/// is decided as a PUT under `chat.session` (LOG_ONLY: 200) and Slim serves alice's
/// messages through the GET handler.
async fn header_override_on_any_method_is_decided_under_the_method_it_runs_as(backend: Backend) {
    let (app, _dir) = routed_app(
        &backend,
        "chat.messages GET /api/chat/sessions/{session_id}/messages\n\
         chat.session  *   /api/chat/sessions/{session_id}/*\n",
        "chat.session",
    )
    .await;
    let bob = app.user("bob");
    let uri = "/api/chat/sessions/s2/messages";
    let reply = nginx(&app, Some(&bob), "GET", uri).await;
    assert_eq!(reply.status, 403, "{reply:?}");
    let mut passed = Vec::new();
    for method in ["PUT", "PATCH", "DELETE"] {
        // The proxy passes the client's header to gatehouse (nginx and Caddy pass every one;
        // the Traefik and Envoy recipes list the override headers).
        let reply = ask(
            &app,
            Some(&bob),
            Method::GET,
            "/v1/forward-auth",
            &[
                ("x-original-method", method),
                ("x-original-uri", uri),
                ("x-http-method-override", "GET"),
            ],
        )
        .await;
        if reply.status == 200 {
            passed.push(format!(
                "{method} (endpoint {:?}, decision {:?})",
                header(&reply, "x-gatehouse-endpoint"),
                header(&reply, "x-gatehouse-decision")
            ));
        }
    }
    assert!(
        passed.is_empty(),
        "with X-Http-Method-Override: GET, Slim 4 runs these as the enforced GET of alice's \
         messages, but gatehouse let them through: {passed:?}"
    );
    app.stop().await;
}
