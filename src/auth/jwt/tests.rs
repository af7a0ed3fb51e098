//! The verifier's rules on configured keys.

use super::*;
use crate::auth::{TokenIssuer, TokenRequest};
use jsonwebtoken::EncodingKey;

const SECRET: &[u8] = b"test-secret-test-secret-test-secret";

fn request(sub: &str, ttl: u64) -> TokenRequest {
    TokenRequest {
        sub: sub.into(),
        roles: vec!["admin".into()],
        scopes: vec!["gatehouse:validate".into(), "x".into()],
        ttl: Duration::from_secs(ttl),
    }
}

#[tokio::test]
async fn minted_tokens_verify_with_their_claims() {
    let settings = JwtSettings::default();
    let verifier = JwtVerifier::new(Some(SECRET), vec![], &settings).unwrap();
    let token = TokenIssuer::new(SECRET, &settings)
        .mint(&request("alice", 60))
        .unwrap();
    let p = verifier.verify(&token).await.unwrap();
    assert_eq!(p.sub, "alice");
    assert_eq!(p.roles, vec!["admin"]);
    assert_eq!(p.scopes, vec!["gatehouse:validate", "x"]);
}

#[tokio::test]
async fn verified_tokens_are_remembered_only_until_they_expire() {
    let settings = JwtSettings::default();
    let verifier = JwtVerifier::new(Some(SECRET), vec![], &settings).unwrap();
    let token = TokenIssuer::new(SECRET, &settings)
        .mint(&request("alice", 60))
        .unwrap();
    verifier.verify(&token).await.unwrap();
    let hit = verifier.verified.get(&token).unwrap();
    let (cached, exp) = (hit.principal.clone(), hit.exp);
    assert_eq!(cached.sub, "alice");
    assert!(exp > now_secs());
    let remembered = |principal: Principal, exp: u64| {
        Arc::new(Verified {
            principal,
            exp,
            issuer: hit.issuer,
            serial: hit.serial,
        })
    };
    // Only the exact string: a tampered token is verified, and refused.
    let tampered = format!("{token}x");
    assert!(verifier.verify(&tampered).await.is_err());
    assert!(verifier.verified.get(&tampered).is_none());
    // A remembered entry past its exp is not used: the token is verified again.
    let principal = cached.clone();
    verifier.verified.insert(
        "not.a.token".into(),
        remembered(principal.clone(), now_secs() + 60),
    );
    assert_eq!(
        verifier.verify("not.a.token").await.unwrap().sub,
        "alice",
        "a hit"
    );
    verifier
        .verified
        .insert("not.a.token".into(), remembered(principal, now_secs() - 1));
    assert!(
        verifier.verify("not.a.token").await.is_err(),
        "expired: verified, refused"
    );
    assert!(verifier.verified.get("not.a.token").is_none());
}

#[tokio::test]
async fn issuer_and_audience_are_enforced_when_configured() {
    let strict = JwtSettings {
        issuer: Some("gh".into()),
        audience: Some("chat".into()),
        ..JwtSettings::default()
    };
    let verifier = JwtVerifier::new(Some(SECRET), vec![], &strict).unwrap();
    let plain = TokenIssuer::new(SECRET, &JwtSettings::default())
        .mint(&request("alice", 60))
        .unwrap();
    assert!(verifier.verify(&plain).await.is_err());
    let good = TokenIssuer::new(SECRET, &strict)
        .mint(&request("alice", 60))
        .unwrap();
    assert!(verifier.verify(&good).await.is_ok());
}

fn signed(header: Header, claims: serde_json::Value) -> String {
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(SECRET)).unwrap()
}

fn claims(sub: &str) -> serde_json::Value {
    serde_json::json!({ "sub": sub, "exp": now_secs() + 60 })
}

#[tokio::test]
async fn an_unknown_crit_header_is_refused() {
    let verifier = JwtVerifier::new(Some(SECRET), vec![], &JwtSettings::default()).unwrap();
    let mut header = Header::new(Algorithm::HS256);
    assert!(
        verifier
            .verify(&signed(header.clone(), claims("alice")))
            .await
            .is_ok()
    );
    header.crit = Some(vec!["x-must-understand".into()]);
    let token = signed(header, claims("alice"));
    assert!(
        matches!(verifier.verify(&token).await, Err(AuthError::Invalid(e)) if e.contains("crit"))
    );
}

#[tokio::test]
async fn iss_must_be_the_configured_string_never_an_array() {
    let settings = JwtSettings {
        issuer: Some("gh".into()),
        ..JwtSettings::default()
    };
    let verifier = JwtVerifier::new(Some(SECRET), vec![], &settings).unwrap();
    let header = Header::new(Algorithm::HS256);
    let with_iss = |iss: serde_json::Value| {
        let mut c = claims("alice");
        c["iss"] = iss;
        signed(header.clone(), c)
    };
    assert!(verifier.verify(&with_iss("gh".into())).await.is_ok());
    assert!(verifier.verify(&with_iss("other".into())).await.is_err());
    assert!(
        verifier
            .verify(&with_iss(serde_json::json!(["gh"])))
            .await
            .is_err()
    );
    assert!(
        verifier
            .verify(&with_iss(serde_json::json!(["gh", "other"])))
            .await
            .is_err()
    );
    // Without a configured issuer an array is still refused.
    let open = JwtVerifier::new(Some(SECRET), vec![], &JwtSettings::default()).unwrap();
    assert!(
        open.verify(&with_iss(serde_json::json!(["gh"])))
            .await
            .is_err()
    );
    assert!(open.verify(&with_iss("anyone".into())).await.is_ok());
}

#[tokio::test]
async fn a_kid_that_names_no_configured_key_is_refused() {
    // The secret is configured without a kid: a token naming a kid is not tried on it.
    let verifier = JwtVerifier::new(Some(SECRET), vec![], &JwtSettings::default()).unwrap();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rotated-2026".into());
    let token = signed(header, claims("alice"));
    assert_eq!(
        verifier.verify(&token).await,
        Err(AuthError::Invalid("unknown key id".into()))
    );
    // A key configured with that kid is used.
    let with_kid = JwtVerifier::new(
        None,
        vec![PublicKey {
            kid: Some("rotated-2026".into()),
            key: DecodingKey::from_secret(SECRET),
            source: "test".into(),
        }],
        &JwtSettings::default(),
    )
    .unwrap();
    assert!(with_kid.verify(&token).await.is_ok());
}

#[tokio::test]
async fn sub_with_invisible_formatting_characters_is_refused() {
    let verifier = JwtVerifier::new(Some(SECRET), vec![], &JwtSettings::default()).unwrap();
    for sub in [
        "alice\u{200B}",
        "\u{202E}ecila",
        "ali\u{2066}ce",
        "\u{FEFF}alice",
    ] {
        let token = signed(Header::new(Algorithm::HS256), claims(sub));
        assert!(verifier.verify(&token).await.is_err(), "{sub:?}");
    }
}

#[tokio::test]
async fn a_secret_with_only_rsa_algorithms_is_a_config_error() {
    let settings = JwtSettings {
        algorithms: vec![Algorithm::RS256],
        ..JwtSettings::default()
    };
    assert!(matches!(
        JwtVerifier::new(Some(SECRET), vec![], &settings),
        Err(KeyError::NoAlgorithm { .. })
    ));
}

#[tokio::test]
async fn minted_tokens_put_roles_and_scopes_where_the_verifier_reads_them() {
    let settings = JwtSettings {
        claims: ClaimMapping {
            roles: crate::auth::ClaimPath::new("/realm_access/roles"),
            scopes: crate::auth::ClaimPath::new("scp"),
            user_prefix: None,
        },
        ..JwtSettings::default()
    };
    let verifier = JwtVerifier::new(Some(SECRET), vec![], &settings).unwrap();
    let token = TokenIssuer::new(SECRET, &settings)
        .mint(&request("alice", 60))
        .unwrap();
    let p = verifier.verify(&token).await.unwrap();
    assert!(p.is_admin());
    assert_eq!(p.scopes, ["gatehouse:validate", "x"]);
    // Read elsewhere, the same token has neither.
    let plain = JwtVerifier::new(Some(SECRET), vec![], &JwtSettings::default()).unwrap();
    let p = plain.verify(&token).await.unwrap();
    assert!(p.roles.is_empty() && p.scopes.is_empty());
}
