//! What the published schemas promise, held by the server: the fixes of `.ci/fuzz-api`'s
//! findings. Each request here is one the OpenAPI document calls invalid (refused: 400, and
//! nothing changes) or valid (accepted).

use reqwest::Method;
use serde_json::json;

use crate::both_backends;
use crate::common::{Backend, TestApp};

both_backends!(bodies_and_names_are_what_the_document_says);

async fn bodies_and_names_are_what_the_document_says(backend: Backend) {
    let app = TestApp::spawn(&backend, &[]).await;
    let admin = app.admin();
    let claimer = app.claimer();

    // A claim body is a JSON object or nothing: an array was read as the struct's fields in
    // order (`["bob"]` claimed for bob), and `null` is no object either.
    for body in [r#"["bob"]"#, "null", "[]", r#""bob""#] {
        let reply = app
            .raw(Method::POST, "/v1/sessions/s1/claim", Some(&claimer), body)
            .await;
        reply.assert_problem(400, "invalid-request");
    }
    let reply = app
        .call(Method::GET, "/v1/sessions/s1", Some(&admin), None)
        .await;
    reply.assert_problem(404, "not-found");

    // Names are 1-256 characters (JSON Schema's maxLength), not bytes.
    let long = "é".repeat(256);
    let reply = app.claim_for("s1", &long).await;
    assert_eq!(reply.status, 201, "{reply:?}");
    assert_eq!(reply.body["owner"], long.as_str());
    let reply = app.claim_for("s2", &"é".repeat(257)).await;
    reply.assert_problem(400, "invalid-name");

    // A backfill's explicit ids are checked before anything starts.
    let reply = app
        .call(
            Method::POST,
            "/v1/backfill",
            Some(&admin),
            Some(json!({ "dry_run": false, "default_owner": "legacy", "session_ids": ["s3", "1-2-3-4-5"] })),
        )
        .await;
    reply.assert_problem(400, "invalid-request");
    assert!(
        reply.body["detail"]
            .as_str()
            .unwrap()
            .contains("session_ids[1]"),
        "{reply:?}"
    );
    let reply = app
        .call(Method::GET, "/v1/sessions/s3", Some(&admin), None)
        .await;
    reply.assert_problem(404, "not-found");

    // 32 underscores: Python reads no number there, but the id is refused all the same.
    let reply = app.claim_for(&"_".repeat(32), "alice").await;
    reply.assert_problem(400, "invalid-session-id");
    app.stop().await;
}

#[tokio::test]
async fn numbers_times_and_reasons_are_what_the_document_says() {
    let app = TestApp::spawn(&Backend::Memory, &[]).await;
    let admin = app.admin();
    let put = |body: serde_json::Value| {
        app.call(Method::PUT, "/v1/enforcement", Some(&admin), Some(body))
    };

    // `integer` in JSON Schema: 1.0 is the integer 1; a fraction or an inexact float is not.
    let current = app
        .call(Method::GET, "/v1/enforcement", Some(&admin), None)
        .await;
    let version = current.body["version"].as_u64().unwrap() as f64;
    let reply =
        put(json!({ "mode": "LOG_ONLY", "reason": "r", "expected_version": version })).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let version = reply.body["version"].as_u64().unwrap();
    let reply = put(json!({ "mode": "ENFORCED", "enforce_percent": 50.0, "reason": "r", "expected_version": version as f64 })).await;
    assert_eq!(
        (reply.status, &reply.body["enforce_percent"]),
        (200, &json!(50)),
        "{reply:?}"
    );
    for body in [
        json!({ "mode": "DISABLED", "reason": "r", "expected_version": 1.5 }),
        json!({ "mode": "DISABLED", "reason": "r", "expected_version": 9_223_372_036_854_775_808_u64 }),
        json!({ "mode": "DISABLED", "reason": "r", "enforce_percent": 2_147_483_646 }),
        json!({ "mode": "DISABLED", "reason": "r", "enforce_percent": 101 }),
        // maxLength counts the reason as sent, before it is trimmed.
        json!({ "mode": "DISABLED", "reason": format!(" {} ", "r".repeat(999)) }),
        json!({ "mode": "DISABLED", "reason": "\u{a0}\u{3000}" }),
    ] {
        put(body).await.assert_problem(400, "invalid-request");
    }
    let reply = put(json!({ "mode": "DISABLED", "reason": "r".repeat(1000) })).await;
    assert_eq!(reply.status, 200, "{reply:?}");

    // Query values: strict shapes, as their patterns say.
    for path in [
        "/v1/audit?before=%2B1-0",
        "/v1/audit?before=01-0",
        "/v1/audit?before=",
        "/v1/audit?before=18446744073709551616-0",
        "/v1/audit/summary?since=1h30m",
        "/v1/audit/summary?since=",
        "/v1/audit/summary?since=2026-11-23%2010:00:00",
        "/v1/audit/summary?since=2026-11-23T10:00:00%2B02:00",
        "/v1/audit/summary?since=2026-02-29T10:00:00Z",
        "/v1/rollout?window=0h",
        "/v1/rollout?window=1%20h",
        "/v1/rollout?window=forever",
        "/v1/enforcement/history?before=9223372036854775808",
    ] {
        let reply = app.call(Method::GET, path, Some(&admin), None).await;
        reply.assert_problem(400, "invalid-request");
    }
    for path in [
        "/v1/audit?before=18446744073709551615-0",
        "/v1/audit/summary?since=2w",
        "/v1/audit/summary?since=2024-02-29T10:00:00.5Z",
        "/v1/rollout?window=90s",
        "/v1/enforcement/history?before=9223372036854775807",
    ] {
        let reply = app.call(Method::GET, path, Some(&admin), None).await;
        assert_eq!(reply.status, 200, "{path}: {reply:?}");
    }
    app.stop().await;
}
