//! The session API: read, transfer, release and list, with their permission rules.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::both_backends;
use crate::common::{Backend, TestApp, eventually};

both_backends!(
    service_claims_for_users_and_users_cannot_squat,
    self_claim_policy_is_the_old_behaviour,
    read_and_release_are_owner_or_admin,
    transfer_is_compare_and_set,
    listing_pages_through_everything,
    writes_repeated_after_they_were_applied_answer_as_the_first
);

async fn read_and_release_are_owner_or_admin(backend: Backend) {
    // DISABLED globally: gatehouse's own session API stays enforced regardless.
    let app = TestApp::spawn(&backend, &[("GATEHOUSE_INITIAL_MODE", "DISABLED")]).await;
    app.claim("s1", "alice").await;
    let alice = app.user("alice");
    let bob = app.user("bob");
    let admin = app.admin();

    let reply = app
        .call(Method::GET, "/v1/sessions/s1", Some(&alice), None)
        .await;
    assert_eq!(
        (reply.status, &reply.body),
        (200, &json!({ "session_id": "s1", "owner": "alice" }))
    );
    let reply = app
        .call(Method::GET, "/v1/sessions/s1", Some(&bob), None)
        .await;
    reply.assert_problem(403, "access-denied");
    assert_eq!(reply.body["reason"], "not_owner");
    let reply = app.call(Method::GET, "/v1/sessions/s1", None, None).await;
    reply.assert_problem(401, "unauthorized");
    let reply = app
        .call(Method::GET, "/v1/sessions/s1", Some(&admin), None)
        .await;
    assert_eq!(reply.status, 200);
    let reply = app
        .call(Method::GET, "/v1/sessions/bad*id", Some(&admin), None)
        .await;
    reply.assert_problem(400, "invalid-session-id");

    // Bob may neither release nor then claim Alice's session.
    let reply = app
        .call(Method::DELETE, "/v1/sessions/s1", Some(&bob), None)
        .await;
    reply.assert_problem(403, "access-denied");
    let reply = app.claim_for("s1", "bob").await;
    reply.assert_problem(409, "session-owned");

    // Alice releases; it is gone from her index; releasing again (a retry after an unknown
    // outcome) answers the same 204, for her and for an admin.
    let reply = app
        .call(Method::DELETE, "/v1/sessions/s1", Some(&alice), None)
        .await;
    assert_eq!(reply.status, 204, "{reply:?}");
    let reply = app
        .call(Method::GET, "/v1/users/alice/sessions", Some(&alice), None)
        .await;
    assert_eq!(reply.body["sessions"], json!([]));
    for token in [&alice, &admin] {
        let reply = app
            .call(Method::DELETE, "/v1/sessions/s1", Some(token), None)
            .await;
        assert_eq!(reply.status, 204, "{reply:?}");
    }
    let reply = app
        .call(Method::DELETE, "/v1/sessions/s1", None, None)
        .await;
    reply.assert_problem(401, "unauthorized");
    let reply = app
        .call(Method::DELETE, "/v1/sessions/bad*id", Some(&alice), None)
        .await;
    reply.assert_problem(400, "invalid-session-id");

    // An admin releases anyone's session.
    app.claim("s2", "bob").await;
    let reply = app
        .call(Method::DELETE, "/v1/sessions/s2", Some(&admin), None)
        .await;
    assert_eq!(reply.status, 204);
    app.claim("s2", "alice").await;
    app.stop().await;
}

async fn transfer_is_compare_and_set(backend: Backend) {
    let app = TestApp::spawn(&backend, &[]).await;
    app.claim("s1", "alice").await;
    let admin = app.admin();
    let put = |body| {
        app.call(
            Method::PUT,
            "/v1/sessions/s1/owner",
            Some(&admin),
            Some(body),
        )
    };

    let reply = app
        .call(
            Method::PUT,
            "/v1/sessions/s1/owner",
            Some(&app.user("alice")),
            Some(json!({ "owner": "bob" })),
        )
        .await;
    reply.assert_problem(403, "forbidden");

    let reply = put(json!({ "owner": "bob", "expected_owner": "carol" })).await;
    reply.assert_problem(409, "owner-mismatch");
    assert_eq!(reply.body["current_owner"], "alice");

    let reply = put(json!({ "owner": "bob", "expected_owner": "alice" })).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.body,
        json!({ "session_id": "s1", "owner": "bob", "previous_owner": "alice" })
    );

    // The index follows the owner.
    let list = |user: &'static str| {
        let path = format!("/v1/users/{user}/sessions");
        let (app, admin) = (&app, &admin);
        async move { app.call(Method::GET, &path, Some(admin), None).await }
    };
    assert_eq!(list("alice").await.body["sessions"], json!([]));
    assert_eq!(list("bob").await.body["sessions"], json!(["s1"]));

    // Unconditional transfer, also of an unowned session; the gatehouse:admin scope suffices.
    let ops = app.token("ops-bot", &[], &["gatehouse:admin"]);
    let reply = app
        .call(
            Method::PUT,
            "/v1/sessions/fresh/owner",
            Some(&ops),
            Some(json!({ "owner": "carol" })),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert!(reply.body.get("previous_owner").is_none(), "{reply:?}");
    app.stop().await;
}

async fn listing_pages_through_everything(backend: Backend) {
    let app = TestApp::spawn(&backend, &[]).await;
    // Enough members for Redis to store the set as a hash table, so SSCAN returns batches.
    let ids: HashSet<String> = (0..300).map(|i| format!("sess-{i:04}")).collect();
    let ops = app.token("ops-bot", &[], &["gatehouse:admin"]);
    for id in &ids {
        let reply = app
            .call(
                Method::PUT,
                &format!("/v1/sessions/{id}/owner"),
                Some(&ops),
                Some(json!({ "owner": "dana" })),
            )
            .await;
        assert_eq!(reply.status, 200);
    }
    let dana = app.user("dana");
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let query = match &cursor {
            Some(c) => format!("?limit=70&cursor={c}"),
            None => "?limit=70".into(),
        };
        let reply = app
            .call(
                Method::GET,
                &format!("/v1/users/dana/sessions{query}"),
                Some(&dana),
                None,
            )
            .await;
        assert_eq!(reply.status, 200, "{reply:?}");
        let page = reply.body["sessions"].as_array().unwrap();
        assert!(page.len() <= 70);
        seen.extend(page.iter().map(|s| s.as_str().unwrap().to_owned()));
        pages += 1;
        assert!(pages < 50, "paging does not end");
        match reply.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), unique.len(), "a session was repeated");
    assert_eq!(unique, ids);

    let reply = app
        .call(
            Method::GET,
            "/v1/users/dana/sessions",
            Some(&app.user("eve")),
            None,
        )
        .await;
    reply.assert_problem(403, "forbidden");
    app.stop().await;
}

/// GATEHOUSE_CLAIM=service (the default): only `gatehouse:claim` callers claim, naming the
/// user. A user who learns from `no_owner` that a legacy id is free cannot take it, so the
/// backfill later assigns it to its owner (issue 14, point 6).
async fn service_claims_for_users_and_users_cannot_squat(backend: Backend) {
    let app = TestApp::spawn(&backend, &[("GATEHOUSE_INITIAL_MODE", "ENFORCED")]).await;
    let (mallory, admin) = (app.user("mallory"), app.admin());
    let reply = app
        .validate(&mallory, json!({ "session_id": "legacy-1" }))
        .await;
    assert_eq!(reply.body["reason"], "no_owner");
    // Self-claims are refused with what is needed, with or without a body, admins too.
    for (token, body) in [
        (&mallory, None),
        (&mallory, Some(json!({ "user": "mallory" }))),
        (&admin, None),
        (
            &app.token("ops", &[], &["gatehouse:admin"]),
            Some(json!({ "user": "ops" })),
        ),
    ] {
        let reply = app
            .call(
                Method::POST,
                "/v1/sessions/legacy-1/claim",
                Some(token),
                body,
            )
            .await;
        reply.assert_problem(403, "forbidden");
        let detail = reply.body["detail"].as_str().unwrap_or("");
        assert!(detail.contains("gatehouse:claim"), "{detail}");
        assert!(detail.contains("\"user\""), "{detail}");
    }
    // The service must name the user; then the user owns it.
    let reply = app
        .call(
            Method::POST,
            "/v1/sessions/new-1/claim",
            Some(&app.claimer()),
            None,
        )
        .await;
    reply.assert_problem(400, "invalid-request");
    let reply = app.claim_for("new-1", "alice").await;
    assert_eq!(
        (reply.status, &reply.body),
        (201, &json!({ "session_id": "new-1", "owner": "alice" }))
    );
    assert_eq!(app.claim_for("new-1", "alice").await.status, 200);
    app.claim_for("new-1", "mallory")
        .await
        .assert_problem(409, "session-owned");
    let reply = app
        .validate(&app.user("alice"), json!({ "session_id": "new-1" }))
        .await;
    assert_eq!(reply.body["reason"], "owner");
    let reply = app
        .call(
            Method::POST,
            "/v1/sessions/new-2/claim",
            Some(&app.claimer()),
            Some(json!({ "user": "bad name" })),
        )
        .await;
    reply.assert_problem(400, "invalid-name");
    // The squatter got nothing: the id is still free for the backfill.
    let reply = app
        .call(Method::GET, "/v1/sessions/legacy-1", Some(&admin), None)
        .await;
    reply.assert_problem(404, "not-found");
    app.stop().await;
}

/// GATEHOUSE_CLAIM=self: a user claims an unowned session for themselves (before issue 14);
/// claiming for someone else still needs the scope.
async fn self_claim_policy_is_the_old_behaviour(backend: Backend) {
    let app = TestApp::spawn(&backend, &[("GATEHOUSE_CLAIM", "self")]).await;
    let alice = app.user("alice");
    let claim = |token: String, session: &'static str, body: Option<serde_json::Value>| {
        let app = &app;
        async move {
            app.call(
                Method::POST,
                &format!("/v1/sessions/{session}/claim"),
                Some(&token),
                body,
            )
            .await
        }
    };
    let reply = claim(alice.clone(), "s1", None).await;
    assert_eq!(
        (reply.status, &reply.body),
        (201, &json!({ "session_id": "s1", "owner": "alice" }))
    );
    let reply = claim(alice.clone(), "s1", Some(json!({ "user": "alice" }))).await;
    assert_eq!(reply.status, 200);
    claim(app.user("bob"), "s1", None)
        .await
        .assert_problem(409, "session-owned");
    let reply = claim(alice.clone(), "s2", Some(json!({ "user": "bob" }))).await;
    reply.assert_problem(403, "forbidden");
    assert_eq!(app.claim_for("s2", "bob").await.status, 201);
    app.stop().await;
}

/// A client that got no answer (504 `write-outcome-unknown`) repeats its request: each write
/// repeated after it was applied must succeed again, not conflict.
async fn writes_repeated_after_they_were_applied_answer_as_the_first(backend: Backend) {
    let app = TestApp::spawn(&backend, &[]).await;
    let admin = app.admin();
    app.claim("s1", "alice").await;
    app.claim("s2", "carol").await;

    // A transfer with expected_owner: the repeat finds the requested owner already in place.
    let put = json!({ "owner": "bob", "expected_owner": "alice" });
    let path = "/v1/sessions/s1/owner";
    let first = app
        .call(Method::PUT, path, Some(&admin), Some(put.clone()))
        .await;
    assert_eq!(first.status, 200, "{first:?}");
    let again = app.call(Method::PUT, path, Some(&admin), Some(put)).await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(
        again.body,
        json!({ "session_id": "s1", "owner": "bob", "previous_owner": "bob" })
    );
    // Another owner than the requested one is still a conflict.
    let other = json!({ "owner": "dave", "expected_owner": "alice" });
    let reply = app.call(Method::PUT, path, Some(&admin), Some(other)).await;
    reply.assert_problem(409, "owner-mismatch");
    assert_eq!(reply.body["current_owner"], "bob");

    // A release by its owner, repeated: 204 both times, and nothing left.
    let bob = app.user("bob");
    for _ in 0..2 {
        let reply = app
            .call(Method::DELETE, "/v1/sessions/s1", Some(&bob), None)
            .await;
        assert_eq!(reply.status, 204, "{reply:?}");
    }
    let reply = app
        .call(Method::GET, "/v1/sessions/s1", Some(&admin), None)
        .await;
    reply.assert_problem(404, "not-found");

    // Releasing another user's session is still refused, and audited as before.
    let reply = app
        .call(Method::DELETE, "/v1/sessions/s2", Some(&bob), None)
        .await;
    reply.assert_problem(403, "access-denied");
    assert_eq!(reply.body["reason"], "not_owner");
    let entry = eventually(Duration::from_secs(10), "the denial audited", || async {
        let reply = app
            .call(
                Method::GET,
                "/v1/audit?source=middleware&user=bob&limit=1",
                Some(&admin),
                None,
            )
            .await;
        reply.body["entries"].get(0).cloned()
    })
    .await;
    assert_eq!(
        (&entry["decision"], &entry["reason"], &entry["owner"]),
        (&json!("deny"), &json!("not_owner"), &json!("carol"))
    );
    assert_eq!(
        (&entry["method"], &entry["path"], &entry["session_id"]),
        (&json!("DELETE"), &json!("/v1/sessions/s2"), &json!("s2"))
    );
    let reply = app
        .call(Method::GET, "/v1/sessions/s2", Some(&admin), None)
        .await;
    assert_eq!(reply.body["owner"], "carol");
    app.stop().await;
}
