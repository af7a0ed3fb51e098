//! One spelling per session (issue 14, point 4): the upper-case, hyphen-less, braced and
//! `urn:uuid:` spellings of a UUID another user owns are that user's session at every entry
//! point (claim, validate, batch, forward-auth, the ownership middleware, owner PUT, delete,
//! backfill), and `GATEHOUSE_SESSION_IDS=exact` keeps the spellings apart as before.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::both_backends;
use crate::common::{Backend, TestApp, eventually};
use crate::forward_auth::{header, nginx};

both_backends!(
    aliases_of_an_owned_uuid_are_its_owners_session,
    backfill_reads_aliases_as_the_canonical_id,
    exact_keeps_the_spellings_apart,
    lenient_parser_spellings_are_not_fresh_sessions_under_self_claim,
    exact_delete_releases_the_spelling_it_names,
    integer_parser_spellings_are_not_fresh_sessions_under_self_claim,
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
            let reply = nginx(&app, Some(&bob), "GET", &uri).await;
            assert_eq!(reply.status, 403, "{alias}: {reply:?}");
            assert_eq!(header(&reply, "x-gatehouse-reason"), "not_owner");
            let reply = nginx(&app, Some(&alice), "GET", &uri).await;
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
    let reply = nginx(
        &app,
        Some(&bob),
        "GET",
        &format!("/api/chat/sessions/{upper}/messages"),
    )
    .await;
    assert_eq!(header(&reply, "x-gatehouse-session"), upper);
    let reply = app.validate(&bob, json!({ "session_id": CANONICAL })).await;
    assert_eq!(reply.body["reason"], "not_owner");
    // Braces stay outside the grammar.
    let reply = app
        .validate(&bob, json!({ "session_id": unescaped(ALIASES[3]) }))
        .await;
    reply.assert_problem(400, "invalid-session-id");
    // A release names the spelling it releases, like every other entry point: an admin's
    // DELETE of the upper-case id releases bob's, never alice's lower-case one.
    let path = |id: &str| format!("/v1/sessions/{id}");
    let reply = app
        .call(Method::DELETE, &path(upper), Some(&app.admin()), None)
        .await;
    assert_eq!(reply.status, 204, "{reply:?}");
    let reply = app
        .call(Method::GET, &path(CANONICAL), Some(&app.admin()), None)
        .await;
    assert_eq!(reply.body["owner"], "alice", "{reply:?}");
    let reply = app
        .call(Method::GET, &path(upper), Some(&app.admin()), None)
        .await;
    reply.assert_problem(404, "not-found");
    app.stop().await;
}

/// Spellings of [`CANONICAL`] that widely used UUID parsers read as it, but that gatehouse
/// keeps as other, unowned ids (review rv-fa), each with the parser that folds it:
const LENIENT_ALIASES: [(&str, &str); 6] = [
    // github.com/google/uuid `Parse`: a 38-byte string is `{uuid}` without the braces being
    // checked (`s = s[1:]`, the last byte ignored).
    (
        "_3f2b8c1e-6a4d-4a43-9d36-2f0e6c1b8a77_",
        "Go github.com/google/uuid Parse (38 bytes)",
    ),
    (
        "03f2b8c1e-6a4d-4a43-9d36-2f0e6c1b8a770",
        "Go github.com/google/uuid Parse (38 bytes)",
    ),
    (
        ":3f2b8c1e-6a4d-4a43-9d36-2f0e6c1b8a77:",
        "Go github.com/google/uuid Parse (38 bytes)",
    ),
    // Python `uuid.UUID(hex)`: `hex.replace('urn:', '').replace('uuid:', '')` first.
    (
        "uuid:3f2b8c1e-6a4d-4a43-9d36-2f0e6c1b8a77",
        "Python uuid.UUID",
    ),
    ("urn:3f2b8c1e6a4d4a439d362f0e6c1b8a77", "Python uuid.UUID"),
    // Rails: `:id` stops at a dot, the rest is the format (`.json`).
    (
        "3f2b8c1e-6a4d-4a43-9d36-2f0e6c1b8a77.json",
        "Rails (:id and .:format)",
    ),
];

/// Under `GATEHOUSE_CLAIM=self`, a user claims an unowned id for themselves. An alias of
/// another user's UUID that gatehouse keeps as a distinct id is such an id: bob claims it
/// (201), is then allowed on it as its owner, and a backend whose UUID parser folds it serves
/// alice's session. The README's "run the backfill before offering self" does not help: the
/// alias is never owned by anyone. Each alias must be refused (400) or read as the canonical
/// id (409 for bob); never a fresh session of bob's.
async fn lenient_parser_spellings_are_not_fresh_sessions_under_self_claim(backend: Backend) {
    let app = TestApp::spawn(
        &backend,
        &[
            ("GATEHOUSE_INITIAL_MODE", "ENFORCED"),
            ("GATEHOUSE_CLAIM", "self"),
        ],
    )
    .await;
    app.claim(CANONICAL, "alice").await;
    let bob = app.user("bob");
    let aliases: Vec<(&str, &str, &str)> = LENIENT_ALIASES
        .iter()
        .map(|(alias, parser)| (*alias, CANONICAL, *parser))
        .collect();
    assert_none_taken(&app, &bob, &aliases).await;
}

/// Bob claims each alias and asks forward-auth for it: none may be a fresh session of his
/// (a 201 claim or a 200 check), since a lenient parser reads it as alice's `victim`.
async fn assert_none_taken(app: &TestApp, bob: &str, aliases: &[(&str, &str, &str)]) {
    let mut taken = Vec::new();
    for (alias, victim, parser) in aliases {
        let claim = app
            .call(
                Method::POST,
                &format!("/v1/sessions/{alias}/claim"),
                Some(bob),
                None,
            )
            .await;
        let check = nginx(
            app,
            Some(bob),
            "GET",
            &format!("/api/chat/sessions/{alias}"),
        )
        .await;
        if claim.status == 201 || check.status == 200 {
            taken.push(format!(
                "{alias:?} ({parser} reads it as alice's {victim}): claim {} {}, then \
                 forward-auth {} (session {:?}, reason {:?})",
                claim.status,
                claim.body["session_id"],
                check.status,
                header(&check, "x-gatehouse-session"),
                header(&check, "x-gatehouse-reason"),
            ));
        }
    }
    assert!(
        taken.is_empty(),
        "bob took alice's sessions through aliases gatehouse keeps apart:\n- {}",
        taken.join("\n- ")
    );
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
    let reply = app
        .validate(&alice, json!({ "session_id": CANONICAL }))
        .await;
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

/// A UUID whose first byte is zero (1 in 256 of random ids; every group-start `00` counts for
/// .NET, so about 1 in 50; a leading `0` digit is 1 in 16 for Python's `_`).
const ZERO_LED: &str = "003f2b8c-6a4d-4a43-9d36-2f0e6c1b8a77";

/// Review (r2): spellings that widely used parsers read as a UUID through their integer
/// parsing, which `read_leniently` does not model:
///
/// - Python `uuid.UUID(hex)` ends in `int(hex, 16)` after the length check (32), and `int`
///   takes a `0x`/`0X` prefix and `_` between digits (what Django's `UUIDField.to_python` and
///   DRF's `UUIDField` call): `0x` + 30 digits and `0_` + 30 digits are [`ZERO_LED`];
/// - .NET `Guid.Parse`/`TryParse`, format D: "Components may begin with `0x` and/or `+`"
///   (`TryCompatParsing` in `System.Guid`, kept for compatibility): `0x3f2b8c-6a4d-…` is
///   [`ZERO_LED`] (Python reads it so too);
/// - Java 8's `UUID.fromString` (still the JDK of many Spring Boot 2 services) has no length
///   limit (the 36 of `read_leniently` is JDK 9+): it splits on `-` and `Long.decode`s
///   `"0x" + group`, so leading zeros (`03f2b8c1e-6a4d-…`, 37 bytes) are [`CANONICAL`], for
///   every UUID.
///
/// Each must be refused (400) or read as the owned UUID; never a fresh session of bob's.
async fn integer_parser_spellings_are_not_fresh_sessions_under_self_claim(backend: Backend) {
    let app = TestApp::spawn(
        &backend,
        &[
            ("GATEHOUSE_INITIAL_MODE", "ENFORCED"),
            ("GATEHOUSE_CLAIM", "self"),
        ],
    )
    .await;
    app.claim(CANONICAL, "alice").await;
    app.claim(ZERO_LED, "alice").await;
    let bob = app.user("bob");
    let aliases: &[(&str, &str, &str)] = &[
        (
            "0x3f2b8c6a4d4a439d362f0e6c1b8a77",
            ZERO_LED,
            "Python uuid.UUID (int 0x prefix)",
        ),
        (
            "0X3f2b8c6a4d4a439d362f0e6c1b8a77",
            ZERO_LED,
            "Python uuid.UUID (int 0X prefix)",
        ),
        (
            "0_3f2b8c6a4d4a439d362f0e6c1b8a77",
            ZERO_LED,
            "Python uuid.UUID (int digit separator)",
        ),
        (
            "0_3f2b8c-6a4d-4a43-9d36-2f0e6c1b8a77",
            ZERO_LED,
            "Python uuid.UUID (int digit separator)",
        ),
        (
            "0x3f2b8c-6a4d-4a43-9d36-2f0e6c1b8a77",
            ZERO_LED,
            ".NET Guid.Parse (D, 0x component), Python",
        ),
        (
            "0003f2b8c-6a4d-4a43-9d36-2f0e6c1b8a77",
            ZERO_LED,
            "Java 8 UUID.fromString (leading zeros)",
        ),
        (
            "03f2b8c1e-6a4d-4a43-9d36-2f0e6c1b8a77",
            CANONICAL,
            "Java 8 UUID.fromString (leading zeros)",
        ),
        (
            "3f2b8c1e-6a4d-4a43-9d36-00002f0e6c1b8a77",
            CANONICAL,
            "Java 8 UUID.fromString (leading zeros)",
        ),
    ];
    assert_none_taken(&app, &bob, aliases).await;
}
