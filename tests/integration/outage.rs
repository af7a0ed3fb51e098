//! Redis stopped or frozen mid-test: ENFORCED fails closed, LOG_ONLY allows and says so,
//! readiness follows, and everything recovers without a restart.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::common::{Backend, TestApp, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_fails_closed_and_recovers() {
    let Some(mut backend) = Backend::redis() else {
        return;
    };
    let app = TestApp::spawn(&backend, &[]).await;
    app.claim("s1", "alice").await;
    app.set_mode("ENFORCED").await;
    let alice = app.user("alice");
    let bob = app.user("bob");
    let ready = app.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, 200, "{ready:?}");

    backend.redis_server().unwrap().stop();
    // Give the settings refresh (every 200ms in tests) time to fail a few times: the last
    // known settings (ENFORCED) must stay in force.
    tokio::time::sleep(Duration::from_millis(700)).await;
    for token in [&alice, &bob] {
        let reply = app.validate(token, json!({ "session_id": "s1" })).await;
        assert_eq!(reply.status, 503, "{reply:?}");
        assert_eq!(reply.body["allowed"], false);
        assert_eq!(reply.body["decision"], "deny");
        assert_eq!(reply.body["reason"], "store_unavailable");
        assert_eq!(reply.body["mode"], "ENFORCED");
    }
    let batch = app
        .call(
            Method::POST,
            "/v1/validate/batch",
            Some(&alice),
            Some(json!({ "checks": [{ "session_id": "s1" }] })),
        )
        .await;
    assert_eq!(
        batch.body["results"][0]["reason"], "store_unavailable",
        "{batch:?}"
    );
    assert_eq!(batch.body["results"][0]["allowed"], false);
    let guarded = app
        .call(Method::GET, "/v1/sessions/s1", Some(&alice), None)
        .await;
    guarded.assert_problem(503, "store-unavailable");
    let claim = app.claim_for("s2", "alice").await;
    claim.assert_problem(503, "store-unavailable");
    let ready = app.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.body["store"], "unavailable");
    assert_eq!(ready.body["settings_version"], 2);
    assert_eq!(
        app.call(Method::GET, "/healthz", None, None).await.status,
        200
    );

    backend.redis_server().unwrap().restart();
    eventually(Duration::from_secs(10), "validate to recover", || async {
        let reply = app.validate(&alice, json!({ "session_id": "s1" })).await;
        (reply.status == 200 && reply.body["reason"] == "owner").then_some(())
    })
    .await;
    eventually(Duration::from_secs(10), "readiness to recover", || async {
        (app.call(Method::GET, "/readyz", None, None).await.status == 200).then_some(())
    })
    .await;
    let reply = app.validate(&bob, json!({ "session_id": "s1" })).await;
    assert_eq!(
        (reply.status, &reply.body["reason"]),
        (403, &json!("not_owner"))
    );

    // LOG_ONLY: allow, and say why.
    app.set_mode("LOG_ONLY").await;
    backend.redis_server().unwrap().stop();
    // In the instant before the owner cache sees its subscription close it may still answer
    // (truly: no owner can change while Redis is down); then the lookup is unavailable.
    let reply = eventually(Duration::from_secs(5), "the outage to be seen", || async {
        let reply = app.validate(&bob, json!({ "session_id": "s1" })).await;
        (reply.body["reason"] == "store_unavailable").then_some(reply)
    })
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["allowed"], true);
    assert_eq!(reply.body["decision"], "allow");
    assert_eq!(reply.body["reason"], "store_unavailable");
    assert_eq!(reply.body["mode"], "LOG_ONLY");
    backend.redis_server().unwrap().restart();
    eventually(
        Duration::from_secs(10),
        "would_deny after recovery",
        || async {
            let reply = app.validate(&bob, json!({ "session_id": "s1" })).await;
            (reply.body["decision"] == "would_deny").then_some(())
        },
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_redis_times_out_instead_of_hanging() {
    let Some(mut backend) = Backend::redis() else {
        return;
    };
    let app = TestApp::spawn(
        &backend,
        &[
            ("GATEHOUSE_INITIAL_MODE", "ENFORCED"),
            ("GATEHOUSE_REDIS_TIMEOUT", "300ms"),
        ],
    )
    .await;
    app.claim("s1", "alice").await;
    let alice = app.user("alice");
    backend.redis_server().unwrap().pause();
    let started = std::time::Instant::now();
    let reply = app.validate(&alice, json!({ "session_id": "s1" })).await;
    let waited = started.elapsed();
    assert_eq!(
        (reply.status, &reply.body["reason"]),
        (503, &json!("store_unavailable"))
    );
    // The store timeout is 300ms in tests; the request timeout (10s) must not be what ended it.
    assert!(waited < Duration::from_secs(5), "waited {waited:?}");
    backend.redis_server().unwrap().resume();
    eventually(Duration::from_secs(10), "recovery after thaw", || async {
        let reply = app.validate(&alice, json!({ "session_id": "s1" })).await;
        (reply.status == 200).then_some(())
    })
    .await;
    app.stop().await;
}
