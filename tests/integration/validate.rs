//! `/v1/validate` and its batch: every row of DESIGN §2, scope rules, bad credentials, bad input.

use reqwest::Method;
use serde_json::{Value, json};

use crate::both_backends;
use crate::common::{Backend, SECRET, TestApp};

both_backends!(
    design_table_every_mode_and_subject,
    claim_race_has_exactly_one_winner,
    service_scope_rules,
    bad_tokens_are_401,
    bad_input_is_400_and_writes_nothing,
    batch_answers_in_order,
);

async fn design_table_every_mode_and_subject(backend: Backend) {
    let app = TestApp::spawn(&backend, &[]).await;
    app.claim("owned", "alice").await;
    let alice = app.user("alice");
    let bob = app.user("bob");
    let admin = app.admin();
    // (mode, token, session, status, allowed, decision, reason)
    let rows: &[(&str, &str, &str, u16, bool, &str, &str)] = &[
        (
            "DISABLED",
            &alice,
            "owned",
            200,
            true,
            "allow",
            "enforcement_disabled",
        ),
        (
            "DISABLED",
            &bob,
            "owned",
            200,
            true,
            "allow",
            "enforcement_disabled",
        ),
        (
            "DISABLED",
            &admin,
            "owned",
            200,
            true,
            "allow",
            "enforcement_disabled",
        ),
        (
            "DISABLED",
            &bob,
            "unowned",
            200,
            true,
            "allow",
            "enforcement_disabled",
        ),
        ("LOG_ONLY", &alice, "owned", 200, true, "allow", "owner"),
        (
            "LOG_ONLY",
            &bob,
            "owned",
            200,
            true,
            "would_deny",
            "not_owner",
        ),
        ("LOG_ONLY", &admin, "owned", 200, true, "allow", "admin"),
        (
            "LOG_ONLY",
            &bob,
            "unowned",
            200,
            true,
            "would_deny",
            "no_owner",
        ),
        ("ENFORCED", &alice, "owned", 200, true, "allow", "owner"),
        ("ENFORCED", &bob, "owned", 403, false, "deny", "not_owner"),
        ("ENFORCED", &admin, "owned", 200, true, "allow", "admin"),
        ("ENFORCED", &bob, "unowned", 403, false, "deny", "no_owner"),
        ("ENFORCED", &admin, "unowned", 200, true, "allow", "admin"),
    ];
    for (mode, token, session, status, allowed, decision, reason) in rows {
        app.set_mode(mode).await;
        let reply = app.validate(token, json!({ "session_id": session })).await;
        let row = format!("{mode} {session} -> {reply:?}");
        assert_eq!(reply.status, *status, "{row}");
        assert_eq!(reply.content_type, "application/json", "{row}");
        assert_eq!(reply.body["allowed"], *allowed, "{row}");
        assert_eq!(reply.body["decision"], *decision, "{row}");
        assert_eq!(reply.body["reason"], *reason, "{row}");
        assert_eq!(reply.body["mode"], *mode, "{row}");
        assert_eq!(reply.body["session_id"], *session, "{row}");
        // The owner is told to the owner and admins, never to another user.
        let shows_owner = *mode != "DISABLED" && *session == "owned" && *token != bob;
        if shows_owner {
            assert_eq!(reply.body["owner"], "alice", "{row}");
        } else {
            assert!(reply.body.get("owner").is_none(), "{row}");
        }
    }
    // An unowned session is never auto-claimed by a check.
    let reply = app
        .call(Method::GET, "/v1/sessions/unowned", Some(&admin), None)
        .await;
    reply.assert_problem(404, "not-found");
    app.stop().await;
}

async fn claim_race_has_exactly_one_winner(backend: Backend) {
    let app = TestApp::spawn(&backend, &[]).await;
    let claims = (0..50).map(|i| {
        let app = &app;
        async move { (i, app.claim_for("contested", &format!("user{i}")).await) }
    });
    let replies = futures_util::future::join_all(claims).await;
    let winners: Vec<usize> = replies
        .iter()
        .filter(|(_, r)| r.status == 201)
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(winners.len(), 1, "exactly one 201: {winners:?}");
    for (_, reply) in replies.iter().filter(|(_, r)| r.status != 201) {
        reply.assert_problem(409, "session-owned");
    }
    let owner = format!("user{}", winners[0]);
    let reply = app
        .call(
            Method::GET,
            "/v1/sessions/contested",
            Some(&app.admin()),
            None,
        )
        .await;
    assert_eq!(reply.body["owner"], owner);
    // The winner claiming again is a 200, not a second 201.
    let again = app.claim_for("contested", &owner).await;
    assert_eq!(again.status, 200);
    app.stop().await;
}

async fn service_scope_rules(backend: Backend) {
    let app = TestApp::spawn(&backend, &[]).await;
    app.claim("s1", "alice").await;
    app.set_mode("ENFORCED").await;
    let plain_service = app.user("svc");
    let validator = app.token("svc", &[], &["gatehouse:validate"]);
    let admin_service = app.token("svc", &["admin"], &["gatehouse:validate"]);

    // Naming another user without the scope: 403 problem, nothing decided.
    let reply = app
        .validate(
            &plain_service,
            json!({ "session_id": "s1", "user": "alice" }),
        )
        .await;
    reply.assert_problem(403, "forbidden");

    // With the scope: the answer is data (200), allowed or not.
    let reply = app
        .validate(&validator, json!({ "session_id": "s1", "user": "alice" }))
        .await;
    assert_eq!(
        (reply.status, &reply.body["reason"]),
        (200, &json!("owner"))
    );
    let reply = app
        .validate(&validator, json!({ "session_id": "s1", "user": "bob" }))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["allowed"], false);
    assert_eq!(reply.body["reason"], "not_owner");
    assert_eq!(reply.body["user"], "bob");

    // A service's admin role does not rub off on the user it names.
    let reply = app
        .validate(&admin_service, json!({ "session_id": "s1", "user": "bob" }))
        .await;
    assert_eq!(reply.body["reason"], "not_owner", "{reply:?}");

    // Naming oneself needs no scope.
    let reply = app
        .validate(
            &app.user("alice"),
            json!({ "session_id": "s1", "user": "alice" }),
        )
        .await;
    assert_eq!(reply.status, 200);

    // gatehouse:admin grants the admin API; gatehouse:validate does not.
    let reply = app
        .call(Method::GET, "/v1/enforcement", Some(&validator), None)
        .await;
    reply.assert_problem(403, "forbidden");
    let admin_scope = app.token("ops-bot", &[], &["gatehouse:admin"]);
    let reply = app
        .call(Method::GET, "/v1/enforcement", Some(&admin_scope), None)
        .await;
    assert_eq!(reply.status, 200);
    app.stop().await;
}

/// Encodes a JWT part.
fn b64(value: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

fn sign(header: &jsonwebtoken::Header, claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        header,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("sign")
}

async fn bad_tokens_are_401(backend: Backend) {
    let app = TestApp::spawn(&backend, &[("GATEHOUSE_INITIAL_MODE", "ENFORCED")]).await;
    let now = jsonwebtoken::get_current_timestamp();
    let claims = |exp: u64| json!({ "sub": "alice", "roles": ["admin"], "exp": exp });
    let hs256 = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    let hs512 = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512);
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        (
            "expired",
            Some(sign(&hs256, &claims(now - 3600), SECRET.as_bytes())),
        ),
        (
            "wrong alg",
            Some(sign(&hs512, &claims(now + 3600), SECRET.as_bytes())),
        ),
        (
            "alg none",
            Some(format!(
                "{}.{}.",
                b64(&json!({ "alg": "none", "typ": "JWT" })),
                b64(&claims(now + 3600))
            )),
        ),
        (
            "wrong key",
            Some(sign(
                &hs256,
                &claims(now + 3600),
                b"another-secret-another-secret-xx",
            )),
        ),
        (
            "no exp",
            Some(sign(&hs256, &json!({ "sub": "alice" }), SECRET.as_bytes())),
        ),
        ("garbage", Some("not.a.jwt".into())),
        ("empty parts", Some("..".into())),
    ];
    for (case, token) in cases {
        for path in ["/v1/validate", "/v1/enforcement"] {
            let method = if path == "/v1/validate" {
                Method::POST
            } else {
                Method::GET
            };
            let reply = app
                .call(
                    method,
                    path,
                    token.as_deref(),
                    Some(json!({ "session_id": "s1" })),
                )
                .await;
            reply.assert_problem(401, "unauthorized");
            let challenge = reply.headers["www-authenticate"].to_str().unwrap();
            assert!(challenge.starts_with("Bearer"), "{case}: {challenge}");
            if let Some(token) = &token {
                assert!(
                    !reply.body.to_string().contains(token.as_str()),
                    "{case}: token echoed"
                );
            }
        }
    }
    // The valid version of the same token is accepted.
    let good = sign(&hs256, &claims(now + 3600), SECRET.as_bytes());
    let reply = app.validate(&good, json!({ "session_id": "s1" })).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    app.stop().await;
}

async fn bad_input_is_400_and_writes_nothing(mut backend: Backend) {
    let app = TestApp::spawn(&backend, &[]).await;
    let alice = app.user("alice");
    let admin = app.admin();
    let too_long = "a".repeat(257);
    for bad in ["a b", "a*", "../etc", "é", "", too_long.as_str(), "a%2Fb"] {
        let reply = app.validate(&alice, json!({ "session_id": bad })).await;
        reply.assert_problem(400, "invalid-session-id");
    }
    for bad in ["a%20b", "a*", "a%2Fb", too_long.as_str()] {
        let reply = app.claim_for(bad, "alice").await;
        reply.assert_problem(400, "invalid-session-id");
        let reply = app
            .call(
                Method::PUT,
                &format!("/v1/sessions/{bad}/owner"),
                Some(&admin),
                Some(json!({ "owner": "alice" })),
            )
            .await;
        reply.assert_problem(400, "invalid-session-id");
    }
    let malformed = [
        "{",
        "[]",
        "{\"session_id\": 5}",
        "{\"sesion_id\": \"s1\"}",
        "{\"session_id\": \"s1\", \"user\": null, \"extra\": 1}",
        "",
        // Arrays of the fields in order: serde reads a struct from them, the contract does not.
        "[\"s1\"]",
        "[\"alice\"]",
        "[\"ENFORCED\", \"why\"]",
        "\"s1\"",
    ];
    for body in malformed {
        let reply = app
            .raw(Method::POST, "/v1/validate", Some(&alice), body)
            .await;
        reply.assert_problem(400, "invalid-request");
        let reply = app
            .raw(Method::PUT, "/v1/sessions/s1/owner", Some(&admin), body)
            .await;
        reply.assert_problem(400, "invalid-request");
        let reply = app
            .raw(Method::PUT, "/v1/enforcement", Some(&admin), body)
            .await;
        reply.assert_problem(400, "invalid-request");
    }
    let reply = app
        .call(
            Method::PUT,
            "/v1/sessions/s1/owner",
            Some(&admin),
            Some(json!({ "owner": "has space" })),
        )
        .await;
    reply.assert_problem(400, "invalid-name");
    let reply = app
        .call(
            Method::PUT,
            "/v1/enforcement",
            Some(&admin),
            Some(json!({ "mode": "STRICT", "reason": "x" })),
        )
        .await;
    reply.assert_problem(400, "invalid-request");
    let reply = app
        .call(
            Method::PUT,
            "/v1/enforcement",
            Some(&admin),
            Some(json!({ "mode": "ENFORCED", "reason": "  " })),
        )
        .await;
    reply.assert_problem(400, "invalid-request");
    let reply = app
        .call(
            Method::GET,
            "/v1/users/alice/sessions?limit=0",
            Some(&alice),
            None,
        )
        .await;
    reply.assert_problem(400, "invalid-request");
    let reply = app
        .call(
            Method::GET,
            "/v1/users/alice/sessions?cursor=zzz",
            Some(&alice),
            None,
        )
        .await;
    reply.assert_problem(400, "invalid-request");

    // Nothing was written: no owner anywhere, settings still at version 1 (the fresh store's
    // initialisation at start).
    for user in ["alice", "root"] {
        let reply = app
            .call(
                Method::GET,
                &format!("/v1/users/{user}/sessions"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(reply.body["sessions"], json!([]), "{user}: {reply:?}");
    }
    let reply = app
        .call(Method::GET, "/v1/enforcement", Some(&admin), None)
        .await;
    assert_eq!(reply.body["version"], 1);
    if let Some(redis) = backend.redis_server() {
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query(&mut redis.client())
            .unwrap();
        keys.sort();
        let schema = gatehouse::store::KeySchema::default();
        // The instance's heartbeat is written whatever the requests (`GET /v1/instances`).
        keys.retain(|key| *key != schema.instances());
        assert_eq!(
            keys,
            [schema.settings(), schema.history()],
            "bad input wrote to Redis (only the settings' initialisation is there)"
        );
    }
    app.stop().await;
}

async fn batch_answers_in_order(backend: Backend) {
    let app = TestApp::spawn(&backend, &[]).await;
    app.claim("a1", "alice").await;
    app.claim("b1", "bob").await;
    app.set_mode("ENFORCED").await;
    let validator = app.token("svc", &[], &["gatehouse:validate"]);
    let checks = json!({ "checks": [
        { "session_id": "a1", "user": "alice" },
        { "session_id": "b1", "user": "alice" },
        { "session_id": "nobody", "user": "alice" },
        { "session_id": "b1", "user": "bob", "endpoint": "chat" },
    ]});
    let reply = app
        .call(
            Method::POST,
            "/v1/validate/batch",
            Some(&validator),
            Some(checks),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let reasons: Vec<&str> = reply.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["owner", "not_owner", "no_owner", "owner"]);
    assert_eq!(reply.body["results"][3]["endpoint"], "chat");

    let too_many: Vec<Value> = (0..101)
        .map(|i| json!({ "session_id": format!("s{i}") }))
        .collect();
    let reply = app
        .call(
            Method::POST,
            "/v1/validate/batch",
            Some(&validator),
            Some(json!({ "checks": too_many })),
        )
        .await;
    reply.assert_problem(400, "invalid-request");
    let reply = app
        .call(
            Method::POST,
            "/v1/validate/batch",
            Some(&app.user("alice")),
            Some(json!({ "checks": [{ "session_id": "a1" }, { "session_id": "b1", "user": "bob" }] })),
        )
        .await;
    reply.assert_problem(403, "forbidden");
    app.stop().await;
}
