//! `/v1/enforcement`: admin only, reasons required, versioned compare-and-set, history.

use reqwest::Method;
use serde_json::json;

use crate::both_backends;
use crate::common::{Backend, TestApp};

both_backends!(changes_are_versioned_and_recorded, racing_admins_one_wins);

async fn changes_are_versioned_and_recorded(backend: Backend) {
    let app = TestApp::spawn(&backend, &[]).await;
    let admin = app.admin();
    let reply = app
        .call(Method::GET, "/v1/enforcement", Some(&admin), None)
        .await;
    // A fresh store: the first instance initialised it with the initial mode, as version 1.
    assert_eq!(reply.body["mode"], "LOG_ONLY");
    assert_eq!(reply.body["version"], 1);
    assert!(
        reply.body["updated_by"]
            .as_str()
            .unwrap()
            .starts_with("instance:"),
        "{reply:?}"
    );
    let reply = app
        .call(
            Method::GET,
            "/v1/enforcement",
            Some(&app.user("alice")),
            None,
        )
        .await;
    reply.assert_problem(403, "forbidden");
    let reply = app
        .call(
            Method::PUT,
            "/v1/enforcement",
            Some(&app.user("alice")),
            Some(json!({ "mode": "DISABLED", "reason": "x" })),
        )
        .await;
    reply.assert_problem(403, "forbidden");

    let put = |body| app.call(Method::PUT, "/v1/enforcement", Some(&admin), Some(body));
    let reply = put(json!({ "mode": "ENFORCED", "reason": "rollout step 3" })).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["version"], 2);
    assert_eq!(reply.body["updated_by"], "root");
    // The same mode again changes nothing (idempotent for retrying operators).
    let reply = put(json!({ "mode": "enforced", "reason": "retry" })).await;
    assert_eq!(reply.body["version"], 2);
    let reply =
        put(json!({ "mode": "DISABLED", "reason": "incident 42", "expected_version": 2 })).await;
    assert_eq!(reply.body["version"], 3);
    let reply = put(json!({ "mode": "ENFORCED", "reason": "stale", "expected_version": 2 })).await;
    reply.assert_problem(409, "version-conflict");
    assert_eq!(reply.body["current_version"], 3);

    let reply = app
        .call(Method::GET, "/v1/enforcement/history", Some(&admin), None)
        .await;
    let entries = reply.body["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0]["version"], 3);
    assert_eq!(entries[0]["change"], "global");
    assert_eq!(
        entries[0]["from"],
        json!({ "mode": "ENFORCED", "enforce_percent": null })
    );
    assert_eq!(
        entries[0]["to"],
        json!({ "mode": "DISABLED", "enforce_percent": null })
    );
    assert_eq!(entries[0]["reason"], "incident 42");
    assert_eq!(entries[0]["actor"], "root");
    assert_eq!(entries[1]["version"], 2);
    assert_eq!(entries[2]["version"], 1);
    assert_eq!(entries[2]["change"], "initialise");
    let reply = app
        .call(
            Method::GET,
            "/v1/enforcement/history?before=3&limit=5",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(reply.body["entries"].as_array().unwrap().len(), 2);
    assert_eq!(reply.body["entries"][0]["version"], 2);
    app.stop().await;
}

async fn racing_admins_one_wins(backend: Backend) {
    let app = TestApp::spawn(&backend, &[]).await;
    let admin = app.admin();
    let put = |mode: &'static str| {
        app.call(
            Method::PUT,
            "/v1/enforcement",
            Some(&admin),
            Some(json!({ "mode": mode, "reason": format!("to {mode}"), "expected_version": 1 })),
        )
    };
    let (a, b) = tokio::join!(put("ENFORCED"), put("DISABLED"));
    let mut statuses = [a.status, b.status];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409], "{a:?} {b:?}");
    let winner = if a.status == 200 { &a } else { &b };
    let reply = app
        .call(Method::GET, "/v1/enforcement/history", Some(&admin), None)
        .await;
    let entries = reply.body["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "the initialisation and the winner's");
    assert_eq!(entries[0]["to"]["mode"], winner.body["mode"]);
    app.stop().await;
}
