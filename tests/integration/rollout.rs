//! Gradual enforcement over HTTP: endpoint overrides beat the global mode, the kill switch beats
//! everything, `enforce_percent` splits users by their stable bucket, and `GET /v1/rollout`.

use reqwest::Method;
use serde_json::{Value, json};

use crate::both_backends;
use crate::common::{Backend, TestApp};
use gatehouse::enforcement::rollout_bucket;

both_backends!(
    endpoint_override_beats_global_and_kill_switch_beats_all,
    enforce_percent_follows_the_stable_bucket,
    rollout_report_recommends_with_reasons,
    bad_changes_are_400_and_change_nothing,
);

/// Validates `session` for `user` on `endpoint`: (status, mode, decision).
async fn check(app: &TestApp, user: &str, session: &str, endpoint: &str) -> (u16, String, String) {
    let reply = app
        .validate(
            &app.user(user),
            json!({ "session_id": session, "endpoint": endpoint }),
        )
        .await;
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    (
        reply.status,
        text(&reply.body["mode"]),
        text(&reply.body["decision"]),
    )
}

fn owned(s: (u16, &str, &str)) -> (u16, String, String) {
    (s.0, s.1.to_owned(), s.2.to_owned())
}

async fn endpoint_override_beats_global_and_kill_switch_beats_all(backend: Backend) {
    let app = TestApp::spawn(&backend, &[]).await;
    let admin = app.admin();
    app.claim("s1", "alice").await;
    app.set_mode("ENFORCED").await;
    let put_endpoint = |name: &str, mode: &str| {
        let path = format!("/v1/enforcement/endpoints/{name}");
        let body = json!({ "mode": mode, "reason": "pilot" });
        let (app, admin) = (&app, &admin);
        async move { app.call(Method::PUT, &path, Some(admin), Some(body)).await }
    };
    assert_eq!(put_endpoint("chat.read", "LOG_ONLY").await.status, 200);
    let reply = put_endpoint("chat.export", "DISABLED").await;
    assert_eq!(
        reply.body["endpoints"]["chat.export"], "DISABLED",
        "{reply:?}"
    );
    assert_eq!(reply.body["version"], 4);

    let deny = owned((403, "ENFORCED", "deny"));
    assert_eq!(check(&app, "bob", "s1", "default").await, deny);
    assert_eq!(check(&app, "bob", "s1", "chat.write").await, deny);
    assert_eq!(
        check(&app, "bob", "s1", "chat.read").await,
        owned((200, "LOG_ONLY", "would_deny"))
    );
    assert_eq!(
        check(&app, "bob", "s1", "chat.export").await,
        owned((200, "DISABLED", "allow"))
    );

    // The kill switch: every endpoint, overrides included, resolves to DISABLED.
    let kill = |method| {
        app.call(
            method,
            "/v1/enforcement/kill-switch",
            Some(&admin),
            Some(json!({ "reason": "incident 7" })),
        )
    };
    let reply = kill(Method::POST).await;
    assert_eq!(reply.body["kill_switch"], true, "{reply:?}");
    assert_eq!(reply.body["version"], 5);
    assert_eq!(
        kill(Method::POST).await.body["version"],
        5,
        "idempotent: on twice is one change"
    );
    for endpoint in ["default", "chat.read", "chat.export", "chat.write"] {
        assert_eq!(
            check(&app, "bob", "s1", endpoint).await,
            owned((200, "DISABLED", "allow")),
            "{endpoint}"
        );
    }
    let reply = kill(Method::DELETE).await;
    assert_eq!(
        (
            reply.body["kill_switch"].clone(),
            reply.body["version"].clone()
        ),
        (json!(false), json!(6))
    );
    assert_eq!(check(&app, "bob", "s1", "default").await, deny);

    // Removing an override: the endpoint follows the global mode again.
    let reply = app
        .call(
            Method::DELETE,
            "/v1/enforcement/endpoints/chat.read",
            Some(&admin),
            Some(json!({ "reason": "pilot over" })),
        )
        .await;
    assert_eq!(
        reply.body["endpoints"],
        json!({ "chat.export": "DISABLED" })
    );
    assert_eq!(check(&app, "bob", "s1", "chat.read").await, deny);
    assert_eq!(
        check(&app, "alice", "s1", "chat.read").await,
        owned((200, "ENFORCED", "allow"))
    );

    let history = app
        .call(Method::GET, "/v1/enforcement/history", Some(&admin), None)
        .await;
    let changes: Vec<(String, Value, Value)> = history.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["change"].as_str().unwrap().to_owned(),
                e["from"].clone(),
                e["to"].clone(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            ("endpoint:chat.read".into(), json!("LOG_ONLY"), Value::Null),
            ("kill_switch".into(), json!(true), json!(false)),
            ("kill_switch".into(), json!(false), json!(true)),
            (
                "endpoint:chat.export".into(),
                Value::Null,
                json!("DISABLED")
            ),
            ("endpoint:chat.read".into(), Value::Null, json!("LOG_ONLY")),
            (
                "global".into(),
                json!({ "mode": "LOG_ONLY", "enforce_percent": null }),
                json!({ "mode": "ENFORCED", "enforce_percent": null })
            ),
            (
                "initialise".into(),
                Value::Null,
                json!({ "mode": "LOG_ONLY", "endpoints": {}, "enforce_percent": null,
                        "kill_switch": false, "version": 1 })
            ),
        ]
    );
    app.stop().await;
}

async fn enforce_percent_follows_the_stable_bucket(mut backend: Backend) {
    let app = TestApp::spawn(&backend, &[]).await;
    let admin = app.admin();
    app.claim("s1", "owner").await;
    let put = |body: Value| app.call(Method::PUT, "/v1/enforcement", Some(&admin), Some(body));
    let reply = put(json!({ "mode": "ENFORCED", "enforce_percent": 30, "reason": "step 1" })).await;
    assert_eq!(reply.body["enforce_percent"], 30, "{reply:?}");

    let users: Vec<String> = (0..60).map(|i| format!("user-{i}")).collect();
    let mut enforced = 0;
    for user in &users {
        let expected = if rollout_bucket("chat.read", user) < 30 {
            enforced += 1;
            owned((403, "ENFORCED", "deny"))
        } else {
            owned((200, "LOG_ONLY", "would_deny"))
        };
        assert_eq!(
            check(&app, user, "s1", "chat.read").await,
            expected,
            "{user}"
        );
    }
    assert!(
        (5..=35).contains(&enforced),
        "about 30% of 60 users: {enforced}"
    );
    // Allowed users stay allowed whatever their bucket.
    assert_eq!(
        check(&app, "owner", "s1", "chat.read").await.2,
        "allow",
        "the owner"
    );

    // Across a restart the same users land in the same buckets (Redis keeps the settings; the
    // embedded store starts afresh, so the percentage is set again there).
    app.stop().await;
    if let Some(redis) = backend.redis_server() {
        redis.restart();
    }
    let app = TestApp::spawn(&backend, &[]).await;
    if matches!(backend, Backend::Memory) {
        app.claim("s1", "owner").await;
        let reply = app
            .call(
                Method::PUT,
                "/v1/enforcement",
                Some(&app.admin()),
                Some(json!({ "mode": "ENFORCED", "enforce_percent": 30, "reason": "again" })),
            )
            .await;
        assert_eq!(reply.status, 200);
    }
    for user in &users {
        let mode = check(&app, user, "s1", "chat.read").await.1;
        let expected = if rollout_bucket("chat.read", user) < 30 {
            "ENFORCED"
        } else {
            "LOG_ONLY"
        };
        assert_eq!(mode, expected, "{user} after restart");
    }
    // 0%: nobody enforced; absent: everyone.
    let admin = app.admin();
    let put = |body: Value| app.call(Method::PUT, "/v1/enforcement", Some(&admin), Some(body));
    put(json!({ "mode": "ENFORCED", "enforce_percent": 0, "reason": "pause" })).await;
    for user in &users[..10] {
        assert_eq!(check(&app, user, "s1", "x").await.1, "LOG_ONLY");
    }
    let reply = put(json!({ "mode": "ENFORCED", "reason": "everyone" })).await;
    assert_eq!(reply.body["enforce_percent"], Value::Null);
    for user in &users[..10] {
        assert_eq!(check(&app, user, "s1", "x").await.1, "ENFORCED");
    }
    app.stop().await;
}

async fn rollout_report_recommends_with_reasons(backend: Backend) {
    let app = TestApp::spawn(&backend, &[]).await;
    let admin = app.admin();
    let report = app
        .call(Method::GET, "/v1/rollout", Some(&admin), None)
        .await;
    assert_eq!(report.status, 200, "{report:?}");
    assert_eq!(report.body["phase"], "observing");
    assert_eq!(report.body["ownership"]["owned_sessions"], 0);
    assert_eq!(report.body["recommendation"]["action"], "hold");
    let reasons = report.body["recommendation"]["reasons"].to_string();
    assert!(reasons.contains("backfill"), "{reasons}");
    assert_eq!(report.body["decisions"]["would_deny"], 0);
    assert_eq!(report.body["decisions"]["deny"], 0);
    assert_eq!(report.body["decisions"]["window"], "24h");

    for session in ["r1", "r2", "r3"] {
        app.claim(session, "alice").await;
    }
    app.set_mode("LOG_ONLY").await; // already LOG_ONLY: a no-op, no history entry
    app.set_mode("DISABLED").await;
    let report = app
        .call(Method::GET, "/v1/rollout", Some(&admin), None)
        .await;
    assert_eq!(report.body["ownership"]["owned_sessions"], 3);
    assert_eq!(report.body["phase"], "disabled");
    assert!(report.body["phase_since"].is_string(), "{report:?}");
    assert_eq!(report.body["recommendation"]["action"], "advance");
    assert_eq!(
        report.body["recommendation"]["next"],
        json!({ "mode": "LOG_ONLY" })
    );

    app.set_mode("LOG_ONLY").await;
    let report = app
        .call(Method::GET, "/v1/rollout", Some(&admin), None)
        .await;
    assert_eq!(report.body["recommendation"]["action"], "hold");
    assert!(
        report.body["recommendation"]["reasons"][0]
            .as_str()
            .unwrap()
            .contains("collect at least 24.0 h"),
        "{report:?}"
    );

    let reply = app
        .call(Method::GET, "/v1/rollout", Some(&app.user("alice")), None)
        .await;
    reply.assert_problem(403, "forbidden");
    app.stop().await;
}

async fn bad_changes_are_400_and_change_nothing(backend: Backend) {
    let app = TestApp::spawn(&backend, &[]).await;
    let admin = app.admin();
    let cases: &[(Method, &str, Value, &str)] = &[
        (
            Method::PUT,
            "/v1/enforcement",
            json!({ "mode": "ENFORCED", "enforce_percent": 101, "reason": "x" }),
            "invalid-request",
        ),
        (
            Method::PUT,
            "/v1/enforcement",
            json!({ "mode": "ENFORCED", "enforce_percent": -1, "reason": "x" }),
            "invalid-request",
        ),
        (
            Method::PUT,
            "/v1/enforcement/endpoints/chat.read",
            json!({ "mode": "ENFORCED" }),
            "invalid-request",
        ),
        (
            Method::PUT,
            "/v1/enforcement/endpoints/chat.read",
            json!({ "mode": "ENFORCED", "reason": "  " }),
            "invalid-request",
        ),
        (
            Method::PUT,
            "/v1/enforcement/endpoints/chat%20read",
            json!({ "mode": "ENFORCED", "reason": "x" }),
            "invalid-name",
        ),
        (
            Method::PUT,
            "/v1/enforcement/endpoints/chat.read",
            json!({ "mode": "STRICT", "reason": "x" }),
            "invalid-request",
        ),
        (
            Method::POST,
            "/v1/enforcement/kill-switch",
            json!({}),
            "invalid-request",
        ),
    ];
    for (method, path, body, kind) in cases {
        let reply = app
            .call(method.clone(), path, Some(&admin), Some(body.clone()))
            .await;
        assert_eq!(reply.status, 400, "{method} {path} {body}: {reply:?}");
        reply.assert_problem(400, kind);
    }
    let reply = app
        .call(Method::GET, "/v1/enforcement", Some(&admin), None)
        .await;
    assert_eq!(
        reply.body["version"], 1,
        "nothing changed since the initialisation: {reply:?}"
    );
    let reply = app
        .call(
            Method::POST,
            "/v1/enforcement/kill-switch",
            Some(&app.user("mallory")),
            Some(json!({ "reason": "lol" })),
        )
        .await;
    reply.assert_problem(403, "forbidden");
    app.stop().await;
}
