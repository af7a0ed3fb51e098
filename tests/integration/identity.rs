//! Identity providers (issue 18): keys from a JWKS URL or OpenID Connect discovery, served by a
//! local HTTPS provider with the test CA (`common::idp`), never mocked. Rotation (a key added
//! after start, a key withdrawn), the refetch's rate limit and coalescing, outages, a wrong
//! CA, a discovery document for another issuer, several issuers with their own audiences and
//! claims, key confusion, bad JWKS answers, and what `/readyz` and `/metrics` say.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use gatehouse::config::Config;
use gatehouse::server::Gatehouse;
use serde_json::{Value, json};

use crate::common::idp::{SigningKey, TestIdp, claims};
use crate::common::tls::certs;
use crate::common::{Backend, TestApp, eventually};

const AUDIENCE: &str = "gatehouse";

fn ca() -> String {
    certs().ca().to_string_lossy().into_owned()
}

/// The settings of an instance whose only issuer is `idp`, found by discovery (no secret).
fn discovery_of(idp: &TestIdp) -> Vec<(String, String)> {
    [
        ("GATEHOUSE_JWT_SECRET", String::new()),
        ("GATEHOUSE_JWT_DISCOVERY", "on".into()),
        ("GATEHOUSE_JWT_ISSUER", idp.issuer()),
        ("GATEHOUSE_JWT_AUDIENCE", AUDIENCE.into()),
        ("GATEHOUSE_JWT_ALGORITHMS", "ES256".into()),
        ("GATEHOUSE_JWT_CA_FILE", ca()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

async fn spawn(idp: &TestIdp, extra: &[(&str, &str)]) -> TestApp {
    let mut vars = discovery_of(idp);
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    TestApp::spawn(&Backend::Memory, &vars).await
}

/// The status of a check with `token`, and the `WWW-Authenticate` header.
async fn check(app: &TestApp, token: &str) -> (u16, String) {
    let reply = app.validate(token, json!({ "session_id": "s1" })).await;
    let challenge = reply
        .headers
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (reply.status, challenge)
}

/// A token from `idp`'s issuer for `sub` signed with `key` (a new one each call: `sub` and
/// a nonce differ, so that no remembered token answers for the keys).
fn token(idp: &TestIdp, key: &SigningKey, sub: &str) -> String {
    key.sign(&claims(
        &idp.issuer(),
        AUDIENCE,
        sub,
        json!({ "jti": uuid::Uuid::new_v4().to_string() }),
    ))
}

async fn readyz(app: &TestApp) -> (u16, Value) {
    let reply = app.call(reqwest::Method::GET, "/readyz", None, None).await;
    (reply.status, reply.body)
}

/// The value of the sample `name{labels}` in a scrape.
fn sample(scrape: &str, name_and_labels: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(name_and_labels)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_added_after_start_is_taken_after_one_refetch() {
    let (a, b) = (SigningKey::ec("a-2026"), SigningKey::ec("b-2026"));
    let idp = TestIdp::start(&[&a]).await;
    let app = spawn(&idp, &[("GATEHOUSE_JWT_JWKS_REFETCH_INTERVAL", "1s")]).await;
    assert_eq!((idp.discovery_requests(), idp.jwks_requests()), (1, 1));
    assert_eq!(check(&app, &token(&idp, &a, "alice")).await.0, 200);

    // The provider rotates: b is published, and its tokens arrive.
    idp.publish(&[&a, &b]);
    let bob = token(&idp, &b, "bob");
    let took = Instant::now();
    eventually(Duration::from_secs(10), "b's token to be taken", || async {
        (check(&app, &bob).await.0 == 200).then_some(())
    })
    .await;
    // Refused without a fetch until a second after the start-up fetch, then one refetch.
    assert_eq!(
        idp.jwks_requests(),
        2,
        "one refetch, after {:?}",
        took.elapsed()
    );
    assert_eq!(idp.discovery_requests(), 1, "the jwks_uri is remembered");
    assert_eq!(check(&app, &token(&idp, &b, "carol")).await.0, 200);
    assert_eq!(check(&app, &token(&idp, &a, "alice")).await.0, 200);
    assert_eq!(idp.jwks_requests(), 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_key_stops_its_tokens_at_the_next_refresh() {
    let (a, b) = (SigningKey::ec("a-2026"), SigningKey::ec("b-2026"));
    let idp = TestIdp::start(&[&a, &b]).await;
    // The provider's Cache-Control sets the period (1 s, the lowest allowed here).
    idp.cache_control(Some("public, max-age=1"));
    let app = spawn(
        &idp,
        &[
            ("GATEHOUSE_JWT_JWKS_REFRESH_MIN", "1s"),
            ("GATEHOUSE_JWT_JWKS_REFETCH_INTERVAL", "1h"),
        ],
    )
    .await;
    // Verified, and so remembered by the verified-token cache.
    let bob = token(&idp, &b, "bob");
    assert_eq!(check(&app, &bob).await.0, 200);
    assert_eq!(check(&app, &bob).await.0, 200);
    let fetched = idp.jwks_requests();

    idp.publish(&[&a]);
    let (status, challenge) = eventually(
        Duration::from_secs(10),
        "b's remembered token to be refused",
        || async {
            let (status, challenge) = check(&app, &bob).await;
            (status == 401).then_some((status, challenge))
        },
    )
    .await;
    assert_eq!(status, 401);
    assert!(challenge.contains("unknown key id"), "{challenge}");
    assert!(idp.jwks_requests() > fetched, "refreshed on schedule");
    assert_eq!(check(&app, &token(&idp, &a, "alice")).await.0, 200);
    assert_eq!(check(&app, &token(&idp, &b, "dave")).await.0, 401);
    let scrape = app.scrape().await;
    assert!(
        sample(
            &scrape,
            "gatehouse_auth_failures_total{reason=\"unknown_key\"}"
        )
        .is_some_and(|n| n >= 2.0),
        "{scrape}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_made_up_kids_cost_at_most_the_rate_limits_fetches() {
    let a = SigningKey::ec("a-2026");
    let idp = TestIdp::start(&[&a]).await;
    let interval = Duration::from_secs(1);
    // From before the start-up fetch: the k-th fetch after it starts k intervals later at least.
    let started = Instant::now();
    let app = spawn(&idp, &[("GATEHOUSE_JWT_JWKS_REFETCH_INTERVAL", "1s")]).await;
    assert_eq!(idp.jwks_requests(), 1);
    let statuses: Vec<u16> = futures_util::stream::iter(0..1000)
        .map(|i| {
            let kid = format!("made-up-{i}-{}", uuid::Uuid::new_v4());
            let forged = a.sign_as(
                Some(&kid),
                &claims(&idp.issuer(), AUDIENCE, "mallory", json!({})),
            );
            let app = &app;
            async move { check(app, &forged).await.0 }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let fetched = idp.jwks_requests();
    // The start-up fetch, then one per interval at most.
    let allowed = (elapsed.as_secs_f64() / interval.as_secs_f64()).floor() as usize + 1;
    eprintln!(
        "1000 made-up kids within {elapsed:?} of the start: {fetched} fetches, the start-up \
         one included (the limit allows {allowed})"
    );
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    assert!(fetched <= allowed, "{fetched} fetches in {elapsed:?}");
    // The real key still works, with no fetch.
    let now = idp.jwks_requests();
    assert_eq!(check(&app, &token(&idp, &a, "alice")).await.0, 200);
    assert_eq!(idp.jwks_requests(), now);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_unknown_kids_share_one_fetch() {
    let a = SigningKey::ec("a-2026");
    let idp = TestIdp::start(&[&a]).await;
    // No rate limit to speak of: what keeps it to one fetch is the coalescing.
    let app = spawn(&idp, &[("GATEHOUSE_JWT_JWKS_REFETCH_INTERVAL", "1ms")]).await;
    let b = SigningKey::ec("b-2026");
    idp.publish(&[&a, &b]);
    idp.delay(Duration::from_millis(1500));
    let before = idp.jwks_requests();
    let checks = (0..100).map(|i| {
        let (app, t) = (&app, token(&idp, &b, &format!("user{i}")));
        async move { check(app, &t).await.0 }
    });
    let statuses = futures_util::future::join_all(checks).await;
    let fetched = idp.jwks_requests() - before;
    eprintln!("100 concurrent tokens with a new kid: {fetched} fetches");
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert!(
        fetched <= 2,
        "{fetched} fetches for 100 concurrent requests"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_keys_stay_while_the_provider_is_down_and_readyz_and_metrics_say_how_old() {
    let a = SigningKey::ec("a-2026");
    let idp = TestIdp::start(&[&a]).await;
    idp.cache_control(Some("max-age=1"));
    let app = spawn(&idp, &[("GATEHOUSE_JWT_JWKS_REFRESH_MIN", "1s")]).await;
    let (status, body) = readyz(&app).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["identity_providers"][0]["state"], "fresh", "{body}");
    assert_eq!(body["identity_providers"][0]["issuer"], idp.issuer());
    assert_eq!(body["identity_providers"][0]["keys"], 1);

    idp.down(true);
    let body = eventually(Duration::from_secs(10), "a failed refresh", || async {
        let (status, body) = readyz(&app).await;
        (body["identity_providers"][0]["state"] == "stale").then_some((status, body))
    })
    .await;
    // Keys still in force: still ready, and the age says since when.
    assert_eq!(body.0, 200, "{}", body.1);
    assert!(
        body.1["identity_providers"][0]["age_seconds"].is_u64(),
        "{}",
        body.1
    );
    for user in ["alice", "bob", "carol"] {
        assert_eq!(check(&app, &token(&idp, &a, user)).await.0, 200, "{user}");
    }
    let scrape = app.scrape().await;
    let issuer = idp.issuer();
    assert!(
        sample(
            &scrape,
            &format!("gatehouse_jwks_age_seconds{{issuer=\"{issuer}\"}}")
        )
        .is_some(),
        "{scrape}"
    );
    assert_eq!(
        sample(
            &scrape,
            &format!("gatehouse_jwks_last_fetch_failed{{issuer=\"{issuer}\"}}")
        ),
        Some(1.0),
        "{scrape}"
    );
    assert_eq!(
        sample(
            &scrape,
            &format!("gatehouse_jwks_keys{{issuer=\"{issuer}\"}}")
        ),
        Some(1.0)
    );
    assert!(
        sample(
            &scrape,
            &format!("gatehouse_jwks_fetches_total{{issuer=\"{issuer}\",outcome=\"error\"}}")
        )
        .is_some_and(|n| n >= 1.0),
        "{scrape}"
    );

    idp.down(false);
    eventually(Duration::from_secs(10), "the keys fresh again", || async {
        let (_, body) = readyz(&app).await;
        (body["identity_providers"][0]["state"] == "fresh").then_some(())
    })
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_or_invalid_jwks_keeps_the_last_good_keys() {
    let a = SigningKey::ec("a-2026");
    let idp = TestIdp::start(&[&a]).await;
    idp.cache_control(Some("no-cache"));
    let app = spawn(&idp, &[("GATEHOUSE_JWT_JWKS_REFRESH_MIN", "200ms")]).await;
    let issuer = idp.issuer();
    let invalid =
        format!("gatehouse_jwks_fetches_total{{issuer=\"{issuer}\",outcome=\"invalid\"}}");
    let oct = json!({ "keys": [{ "kty": "oct", "kid": "a-2026", "k": "c2VjcmV0LXNlY3JldA" }] });
    let bodies: Vec<Vec<u8>> = vec![
        vec![b' '; gatehouse::auth::MAX_KEYS_DOCUMENT + 1],
        b"<html>Service Unavailable</html>".to_vec(),
        br#"{"keys": []}"#.to_vec(),
        serde_json::to_vec(&oct).unwrap(),
    ];
    let mut seen = 0.0;
    for (i, body) in bodies.into_iter().enumerate() {
        idp.publish_raw(body);
        seen = eventually(Duration::from_secs(10), "an invalid answer", || async {
            let n = sample(&app.scrape().await, &invalid).unwrap_or(0.0);
            (n > seen).then_some(n)
        })
        .await;
        assert_eq!(
            check(&app, &token(&idp, &a, "alice")).await.0,
            200,
            "body {i}"
        );
        let (status, body) = readyz(&app).await;
        assert_eq!(
            (status, &body["identity_providers"][0]["state"]),
            (200, &json!("stale"))
        );
    }
    // A 500 is an error, not an invalid answer; the keys stay too.
    idp.status(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    let error = format!("gatehouse_jwks_fetches_total{{issuer=\"{issuer}\",outcome=\"error\"}}");
    eventually(Duration::from_secs(10), "an error answer", || async {
        sample(&app.scrape().await, &error).filter(|n| *n >= 1.0)
    })
    .await;
    assert_eq!(check(&app, &token(&idp, &a, "bob")).await.0, 200);
    app.stop().await;
}

/// Starts an instance without serving it: the start-up error, if any.
async fn start_error(vars: Vec<(String, String)>) -> Option<String> {
    let config = Config::from_vars(vars).expect("valid configuration");
    Gatehouse::start(&config).await.err().map(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_or_a_discovery_document_for_another_issuer_stops_the_start() {
    let a = SigningKey::ec("a-2026");
    let idp = TestIdp::start(&[&a]).await;
    let with = |name: &str, value: &str| {
        let mut vars = discovery_of(&idp);
        vars.retain(|(k, _)| k != name);
        if !value.is_empty() {
            vars.push((name.into(), value.into()));
        }
        vars
    };
    let other = certs().other_ca().to_string_lossy().into_owned();
    let wrong_ca = start_error(with("GATEHOUSE_JWT_CA_FILE", &other)).await;
    let wrong_ca = wrong_ca.expect("a CA that signed nothing here is refused");
    assert!(wrong_ca.contains(&idp.issuer()), "{wrong_ca}");
    assert!(wrong_ca.contains("UnknownIssuer"), "{wrong_ca}");
    // The system's roots do not know the test CA either.
    let system = start_error(with("GATEHOUSE_JWT_CA_FILE", "")).await;
    assert!(system.is_some_and(|e| e.contains("certificate")));
    assert_eq!(
        idp.discovery_requests(),
        0,
        "no request passed the handshake"
    );

    idp.discovery_names("https://idp.example.com/realms/chat");
    let mismatch = start_error(discovery_of(&idp)).await.expect("refused");
    assert!(mismatch.contains("must be equal exactly"), "{mismatch}");
    assert_eq!(
        idp.jwks_requests(),
        0,
        "the keys of another issuer were not fetched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_does_not_start_without_the_keys_unless_told_to_wait() {
    let a = SigningKey::ec("a-2026");
    let idp = TestIdp::start(&[&a]).await;
    idp.down(true);
    let dir = tempfile::tempdir().unwrap();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    command
        .arg("serve")
        .envs(discovery_of(&idp))
        .env(
            "GATEHOUSE_LISTEN",
            format!("127.0.0.1:{}", crate::common::free_port()),
        )
        .env("GATEHOUSE_AUDIT_SPOOL", dir.path().join("audit.spool"))
        .env("GATEHOUSE_JWT_JWKS_TIMEOUT", "2s")
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("the start fails by itself")
        .unwrap();
    // The log is on stdout.
    let log = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert!(log.contains("cannot start"), "{log}");
    assert!(log.contains(&idp.issuer()), "{log}");
    assert!(log.contains("GATEHOUSE_JWT_WAIT_FOR_KEYS"), "{log}");

    // Told to wait: up, not ready, its tokens 503 until the provider answers.
    let app = spawn(
        &idp,
        &[
            ("GATEHOUSE_JWT_WAIT_FOR_KEYS", "on"),
            ("GATEHOUSE_JWT_JWKS_REFRESH_MIN", "1s"),
            ("GATEHOUSE_JWT_JWKS_TIMEOUT", "1s"),
        ],
    )
    .await;
    let (status, body) = readyz(&app).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["identity_providers"][0]["state"], "missing", "{body}");
    let reply = app
        .validate(&token(&idp, &a, "alice"), json!({ "session_id": "s1" }))
        .await;
    reply.assert_problem(503, "keys-unavailable");
    idp.down(false);
    eventually(
        Duration::from_secs(15),
        "ready once the keys are in",
        || async { (readyz(&app).await.0 == 200).then_some(()) },
    )
    .await;
    assert_eq!(check(&app, &token(&idp, &a, "alice")).await.0, 200);
    let scrape = app.scrape().await;
    assert!(
        sample(
            &scrape,
            "gatehouse_auth_failures_total{reason=\"keys_unavailable\"}"
        )
        .is_some(),
        "{scrape}"
    );
    app.stop().await;
}

/// Two providers in the file, each with its audience and claims; the test secret beside them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_issuers_each_with_its_audience_claims_and_keys() {
    let (ka, kb) = (SigningKey::ec("kc-1"), SigningKey::ec("auth0-1"));
    let (keycloak, auth0) = (TestIdp::start(&[&ka]).await, TestIdp::start(&[&kb]).await);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gatehouse.toml");
    std::fs::write(
        &file,
        format!(
            r#"jwt_ca_file = "{ca}"

[[jwt_issuers]]
issuer = "{kc}"
user_prefix = "kc:"
discovery = true
audience = "chat-a"
algorithms = ["ES256"]
roles_claim = "/resource_access/gatehouse/roles"

[[jwt_issuers]]
issuer = "{a0}"
user_prefix = "auth0:"
jwks_url = "{a0_jwks}"
audience = "chat-b"
algorithms = "ES256"
roles_claim = "https://chat.example.com/roles"
scope_claim = "permissions"
"#,
            ca = ca(),
            kc = keycloak.issuer(),
            a0 = auth0.issuer(),
            a0_jwks = auth0.jwks_url(),
        ),
    )
    .unwrap();
    let file = file.to_string_lossy().into_owned();
    let app = TestApp::spawn(&Backend::Memory, &[("GATEHOUSE_CONFIG", &file)]).await;
    let (kc, a0) = (keycloak.issuer(), auth0.issuer());
    let admin_call = |token: String| {
        let app = &app;
        async move {
            app.call(reqwest::Method::GET, "/v1/enforcement", Some(&token), None)
                .await
                .status
        }
    };

    // Each issuer's shape of admin.
    let kc_admin = ka.sign(&claims(
        &kc,
        "chat-a",
        "8d9f-4e1b",
        json!({
            "resource_access": { "gatehouse": { "roles": ["admin"] } },
            "realm_access": { "roles": ["offline_access"] }
        }),
    ));
    assert_eq!(admin_call(kc_admin).await, 200);
    let a0_admin = kb.sign(&claims(
        &a0,
        "chat-b",
        "auth0|42",
        json!({
            "https://chat.example.com/roles": ["admin"]
        }),
    ));
    assert_eq!(admin_call(a0_admin).await, 200);
    // `roles` is not where this issuer puts them: not an admin.
    let a0_plain = kb.sign(&claims(
        &a0,
        "chat-b",
        "auth0|43",
        json!({ "roles": ["admin"] }),
    ));
    assert_eq!(admin_call(a0_plain).await, 403);
    let a0_service = kb.sign(&claims(
        &a0,
        "chat-b",
        "svc",
        json!({
            "permissions": ["gatehouse:admin"], "scope": "openid"
        }),
    ));
    assert_eq!(admin_call(a0_service).await, 200);
    // The test secret's tokens still work beside them.
    assert_eq!(admin_call(app.admin()).await, 200);

    // Across issuers: the other's audience, the other's key.
    let cross_aud = ka.sign(&claims(&kc, "chat-b", "alice", json!({})));
    let (status, challenge) = check(&app, &cross_aud).await;
    assert_eq!(status, 401);
    assert!(challenge.contains("wrong audience"), "{challenge}");
    let cross_key = kb.sign(&claims(&kc, "chat-a", "alice", json!({})));
    let (status, challenge) = check(&app, &cross_key).await;
    assert_eq!(status, 401);
    assert!(challenge.contains("unknown key id"), "{challenge}");
    let cross_key = kb.sign_as(Some("kc-1"), &claims(&kc, "chat-a", "alice", json!({})));
    assert_eq!(check(&app, &cross_key).await.0, 401);
    // An issuer's key for a token claiming no issuer, or another: the secret's keys, refused.
    let no_iss = ka.sign(&json!({ "sub": "alice", "aud": "chat-a", "exp": 4_000_000_000u64 }));
    assert_eq!(check(&app, &no_iss).await.0, 401);
    // The secret signing a token that claims an identity provider's iss: its keys, refused.
    let secret = jsonwebtoken::EncodingKey::from_secret(crate::common::SECRET.as_bytes());
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims(&kc, "chat-a", "alice", json!({ "roles": ["admin"] })),
        &secret,
    )
    .unwrap();
    assert_eq!(check(&app, &hs).await.0, 401);
    assert_eq!(
        check(&app, &ka.sign(&claims(&kc, "chat-a", "alice", json!({}))))
            .await
            .0,
        200
    );

    // Each issuer's users are its own: the same `sub` from the other issuer is another user
    // (review: it was given the first one's sessions).
    let reply = app
        .call(
            reqwest::Method::PUT,
            "/v1/sessions/n1/owner",
            Some(&app.admin()),
            Some(json!({ "owner": "kc:user-42" })),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    app.set_mode("ENFORCED").await;
    let own = ka.sign(&claims(&kc, "chat-a", "user-42", json!({})));
    let reply = app.validate(&own, json!({ "session_id": "n1" })).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let other = kb.sign(&claims(&a0, "chat-b", "user-42", json!({})));
    let reply = app.validate(&other, json!({ "session_id": "n1" })).await;
    assert_eq!(reply.status, 403, "{reply:?}");
    assert_eq!(reply.body["reason"], "not_owner", "{reply:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_rsa_key_is_never_an_hmac_secret() {
    let rsa = SigningKey::rsa_fixture();
    let idp = TestIdp::start(&[&rsa]).await;
    let app = spawn(&idp, &[("GATEHOUSE_JWT_ALGORITHMS", "RS256")]).await;
    let good = claims(&idp.issuer(), AUDIENCE, "alice", json!({}));
    assert_eq!(check(&app, &rsa.sign(&good)).await.0, 200);
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let pem = std::fs::read(format!("{dir}/rsa.pub.pem")).unwrap();
    let jwk = serde_json::to_vec(rsa.jwk()).unwrap();
    let n = rsa.jwk()["n"].as_str().unwrap().as_bytes().to_vec();
    for secret in [pem, jwk, n] {
        for kid in [Some(rsa.kid.as_str()), None] {
            let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
            header.kid = kid.map(str::to_owned);
            let confused = jsonwebtoken::encode(
                &header,
                &good,
                &jsonwebtoken::EncodingKey::from_secret(&secret),
            )
            .unwrap();
            let (status, challenge) = check(&app, &confused).await;
            assert_eq!(status, 401, "{kid:?}");
            assert!(challenge.contains("algorithm not allowed"), "{challenge}");
        }
    }
    // alg none.
    let b64 = |v: &Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    };
    let none = format!(
        "{}.{}.",
        b64(&json!({ "alg": "none", "kid": rsa.kid })),
        b64(&good)
    );
    assert_eq!(check(&app, &none).await.0, 401);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_provider_alone_means_no_random_key_and_no_printed_admin_token() {
    let a = SigningKey::ec("a-2026");
    let idp = TestIdp::start(&[&a]).await;
    let config = Config::from_vars(discovery_of(&idp)).unwrap();
    let gatehouse = Gatehouse::start(&config).await.expect("starts");
    assert!(gatehouse.bootstrap_token.is_none());
    // Without it (and without keys), the embedded default: a random key and a token.
    let mut vars = discovery_of(&idp);
    vars.retain(|(k, _)| k == "GATEHOUSE_JWT_SECRET");
    let config = Config::from_vars(vars).unwrap();
    assert!(
        Gatehouse::start(&config)
            .await
            .unwrap()
            .bootstrap_token
            .is_some()
    );
}
