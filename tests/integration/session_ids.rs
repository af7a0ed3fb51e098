//! One spelling per session (issue 14, point 4): the upper-case, hyphen-less, braced and
//! `urn:uuid:` spellings of a UUID another user owns are that user's session at every entry
//! point (claim, validate, batch, forward-auth, the ownership middleware, owner PUT, delete,
//! backfill), and `GATEHOUSE_SESSION_IDS=exact` keeps the spellings apart as before.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::both_backends;
use crate::common::{Backend, Reply, TestApp, eventually};

both_backends!(
    aliases_of_an_owned_uuid_are_its_owners_session,
    backfill_reads_aliases_as_the_canonical_id,
    exact_keeps_the_spellings_apart,
    exact_delete_releases_the_spelling_it_names,
);

const CANONICAL: &str = "3f2b8c1e-6a4d-4a43-9d36-2f0e6c1b8a77";

/// The spellings a backend reads as [`CANONICAL`], usable in a URL path.
const ALIASES: [&str; 4] = [
    "3F2B8C1E-6A4D-4A43-9D36-2F0E6C1B8A77",
    "3f2B8c1E6a4D4a439D362f0E6c1B8a77",
    "urn:uuid:3F2B8C1E-6A4D-4A43-9D36-2F0E6C1B8A77",
    "%7B3f2b8c1e-6a4d-4a43-9d36-2f0e6c1b8a77%7D",
];

/// The same spellings as a JSON string holds them.
fn unescaped(alias: &str) -> String {
    alias.replace("%7B", "{").replace("%7D", "}")
}

async fn forward_auth(app: &TestApp, token: &str, uri: &str) -> Reply {
    let response = app
        .http
        .get(format!("{}/v1/forward-auth", app.base))
        .header("x-original-method", "GET")
        .header("x-original-uri", uri)
        .bearer_auth(token)
        .send()
        .await
        .expect("request sent");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    Reply {
        status,
        body,
        content_type: String::new(),
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

async fn aliases_of_an_owned_uuid_are_its_owners_session(backend: Backend) {
    let app = TestApp::spawn(&backend, &[("GATEHOUSE_INITIAL_MODE", "ENFORCED")]).await;
    app.claim(CANONICAL, "alice").await;
    let (alice, bob, admin) = (app.user("alice"), app.user("bob"), app.admin());

    for alias in ALIASES {
        let json_alias = unescaped(alias);
        // Claim: someone else's session is a 409, not a fresh 201; the owner's is a 200.
        let reply = app.claim_for(alias, "bob").await;
        reply.assert_problem(409, "session-owned");
        let reply = app.claim_for(alias, "alice").await;
        assert_eq!(reply.status, 200, "{alias}: {reply:?}");
        assert_eq!(reply.body["session_id"], CANONICAL);

        // Validate and batch: bob is denied as not_owner, alice allowed; the answer names
        // the canonical id.
        let reply = app
            .validate(&bob, json!({ "session_id": json_alias }))
            .await;
        assert_eq!(reply.status, 403, "{alias}: {reply:?}");
        assert_eq!(reply.body["reason"], "not_owner");
        assert_eq!(reply.body["session_id"], CANONICAL);
        let reply = app
            .validate(&alice, json!({ "session_id": json_alias }))
            .await;
        assert_eq!(
            (reply.status, &reply.body["reason"]),
            (200, &json!("owner"))
        );
        let batch = app
            .call(
                Method::POST,
                "/v1/validate/batch",
                Some(&bob),
                Some(json!({ "checks": [{ "session_id": json_alias }] })),
            )
            .await;
        assert_eq!(batch.body["results"][0]["reason"], "not_owner", "{batch:?}");
        assert_eq!(batch.body["results"][0]["session_id"], CANONICAL);

        // Forward-auth: the captured id is canonicalised too.
        if !alias.contains('%') {
            let uri = format!("/api/chat/sessions/{alias}/messages");
            let reply = forward_auth(&app, &bob, &uri).await;
            assert_eq!(reply.status, 403, "{alias}: {reply:?}");
            assert_eq!(header(&reply, "x-gatehouse-reason"), "not_owner");
            let reply = forward_auth(&app, &alice, &uri).await;
            assert_eq!(reply.status, 200, "{alias}: {reply:?}");
            assert_eq!(header(&reply, "x-gatehouse-session"), CANONICAL);
        }

        // The ownership middleware (path parameter) on the session API.
        let path = format!("/v1/sessions/{alias}");
        let reply = app.call(Method::GET, &path, Some(&bob), None).await;
        reply.assert_problem(403, "access-denied");
        assert_eq!(reply.body["reason"], "not_owner");
        let reply = app.call(Method::DELETE, &path, Some(&bob), None).await;
        reply.assert_problem(403, "access-denied");
        let reply = app.call(Method::GET, &path, Some(&alice), None).await;
        assert_eq!(
            (reply.status, &reply.body),
            (200, &json!({ "session_id": CANONICAL, "owner": "alice" }))
        );

        // Owner PUT: compare-and-set against the canonical key.
        let reply = app
            .call(
                Method::PUT,
                &format!("{path}/owner"),
                Some(&admin),
                Some(json!({ "owner": "alice", "expected_owner": "alice" })),
            )
            .await;
        assert_eq!(reply.status, 200, "{alias}: {reply:?}");
        assert_eq!(reply.body["session_id"], CANONICAL);
    }
    // One session in alice's index, whatever spellings were used.
    let reply = app
        .call(Method::GET, "/v1/users/alice/sessions", Some(&alice), None)
        .await;
    assert_eq!(reply.body["sessions"], json!([CANONICAL]));
    // Delete through an alias releases the canonical session.
    let reply = app
        .call(
            Method::DELETE,
            &format!("/v1/sessions/{}", ALIASES[1]),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(reply.status, 204, "{reply:?}");
    let reply = app
        .call(
            Method::GET,
            &format!("/v1/sessions/{CANONICAL}"),
            Some(&admin),
            None,
        )
        .await;
    reply.assert_problem(404, "not-found");
    // Near-UUIDs are refused rather than guessed.
    let reply = app
        .validate(
            &alice,
            json!({ "session_id": "3f2b8c1e6a4d-4a43-9d36-2f0e6c1b8a77" }),
        )
        .await;
    reply.assert_problem(400, "invalid-session-id");
    app.stop().await;
}

async fn backfill_reads_aliases_as_the_canonical_id(backend: Backend) {
    let root = tempfile::tempdir().unwrap();
    let chats = root.path().join("data/chats");
    std::fs::create_dir_all(&chats).unwrap();
    // A legacy file names alice's session in upper case; another UUID only appears in
    // upper case.
    let other = "0a1b2c3d-0000-4000-8000-00000000abcd";
    for id in [ALIASES[0], &other.to_ascii_uppercase()] {
        std::fs::write(chats.join(format!("chat_{id}.json")), "{}").unwrap();
    }
    let roots = root.path().display().to_string();
    let app = TestApp::spawn(&backend, &[("GATEHOUSE_BACKFILL_ROOTS", &roots)]).await;
    app.claim(CANONICAL, "alice").await;
    let admin = app.admin();
    let reply = app
        .call(
            Method::POST,
            "/v1/backfill",
            Some(&admin),
            Some(json!({
                "dry_run": false,
                "default_owner": "legacy",
                "sources": [root.path().join("data").display().to_string()],
                "session_ids": [unescaped(ALIASES[3]), "urn:uuid:0A1B2C3D00004000800000000000ABCD"],
            })),
        )
        .await;
    assert_eq!(reply.status, 202, "{reply:?}");
    let job_id = reply.body["job_id"].as_str().unwrap().to_owned();
    let job = eventually(Duration::from_secs(20), "the job to complete", || async {
        let job = app
            .call(
                Method::GET,
                &format!("/v1/backfill/{job_id}"),
                Some(&admin),
                None,
            )
            .await
            .body;
        (job["state"] == "completed").then_some(job)
    })
    .await;
    // Two sessions, not four: alice's is kept, the other one assigned once.
    assert_eq!(job["counts"]["found"], 2, "{job}");
    assert_eq!(job["counts"]["assigned"], 1, "{job}");
    assert_eq!(job["counts"]["skipped_owned"], 1, "{job}");
    for (id, expected) in [(CANONICAL, "alice"), (other, "legacy")] {
        let reply = app
            .call(
                Method::GET,
                &format!("/v1/sessions/{id}"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(reply.body["owner"], expected, "{id}: {reply:?}");
    }
    app.stop().await;
}

async fn exact_keeps_the_spellings_apart(backend: Backend) {
    let app = TestApp::spawn(
        &backend,
        &[
            ("GATEHOUSE_INITIAL_MODE", "ENFORCED"),
            ("GATEHOUSE_SESSION_IDS", "exact"),
        ],
    )
    .await;
    app.claim(CANONICAL, "alice").await;
    let bob = app.user("bob");
    // Today's behaviour: another spelling is another session, claimable and then bob's.
    let upper = ALIASES[0];
    let reply = app.claim_for(upper, "bob").await;
    assert_eq!(reply.status, 201, "{reply:?}");
    assert_eq!(reply.body["session_id"], upper);
    let reply = app.validate(&bob, json!({ "session_id": upper })).await;
    assert_eq!(
        (reply.status, &reply.body["reason"]),
        (200, &json!("owner"))
    );
    let reply = forward_auth(&app, &bob, &format!("/api/chat/sessions/{upper}/messages")).await;
    assert_eq!(header(&reply, "x-gatehouse-session"), upper);
    let reply = app.validate(&bob, json!({ "session_id": CANONICAL })).await;
    assert_eq!(reply.body["reason"], "not_owner");
    // Braces stay outside the grammar.
    let reply = app
        .validate(&bob, json!({ "session_id": unescaped(ALIASES[3]) }))
        .await;
    reply.assert_problem(400, "invalid-session-id");
    app.stop().await;
}

/// Review (rv-st): under `GATEHOUSE_SESSION_IDS=exact` the spellings are different sessions at
/// every entry point, `DELETE /v1/sessions/{id}` included. Today `delete_session` reads the id
/// with `SessionId::parse` (always canonical) instead of the configured policy, so an admin's
/// release of bob's upper-case session releases alice's canonical one, and bob cannot release
/// the session he owns (403).
async fn exact_delete_releases_the_spelling_it_names(backend: Backend) {
    let app = TestApp::spawn(
        &backend,
        &[
            ("GATEHOUSE_INITIAL_MODE", "ENFORCED"),
            ("GATEHOUSE_SESSION_IDS", "exact"),
        ],
    )
    .await;
    let upper = ALIASES[0];
    let (alice, bob, admin) = (app.user("alice"), app.user("bob"), app.admin());
    let mut violations = Vec::new();

    app.claim(CANONICAL, "alice").await;
    app.claim(upper, "bob").await;
    // An admin releases bob's session `upper`...
    let path = format!("/v1/sessions/{upper}");
    let reply = app.call(Method::DELETE, &path, Some(&admin), None).await;
    assert_eq!(reply.status, 204, "{reply:?}");
    // ...and alice's session is the one that lost its owner.
    let reply = app.validate(&alice, json!({ "session_id": CANONICAL })).await;
    if reply.body["reason"] != "owner" {
        violations.push(format!(
            "admin DELETE {path} released alice's {CANONICAL}: {}",
            reply.body
        ));
    }
    let reply = app.validate(&bob, json!({ "session_id": upper })).await;
    if reply.body["reason"] != "no_owner" {
        violations.push(format!(
            "admin DELETE {path} left {upper} owned: {}",
            reply.body
        ));
    }

    // The owner of `upper` releases it.
    app.claim(CANONICAL, "alice").await;
    app.claim(upper, "bob").await;
    let reply = app.call(Method::DELETE, &path, Some(&bob), None).await;
    if reply.status != 204 {
        violations.push(format!(
            "bob's DELETE of his own {upper}: {} {}",
            reply.status, reply.body
        ));
    }
    assert!(violations.is_empty(), "{violations:#?}");
    app.stop().await;
}
