//! Public-key verification: RS256, ES256 and EdDSA (JWKS) with `kid`s, algorithms pinned by
//! configuration, and the classic key-confusion attacks refused.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::common::{Backend, TestApp};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).expect("fixture exists")
}

fn token(alg: Algorithm, kid: Option<&str>, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    let claims = json!({ "sub": "alice", "exp": jsonwebtoken::get_current_timestamp() + 600 });
    jsonwebtoken::encode(&header, &claims, key).expect("sign")
}

#[tokio::test]
async fn public_keys_verify_and_pinning_refuses_confusion() {
    let keys =
        format!("rsa-1={FIXTURES}/rsa.pub.pem,ec-1={FIXTURES}/ec.pub.pem,{FIXTURES}/jwks.json");
    let app = TestApp::spawn(
        &Backend::Memory,
        &[
            ("GATEHOUSE_JWT_SECRET", ""),
            ("GATEHOUSE_JWT_PUBLIC_KEYS", &keys),
            ("GATEHOUSE_JWT_ALGORITHMS", "RS256,ES256,EdDSA"),
        ],
    )
    .await;
    let rsa = EncodingKey::from_rsa_pem(&read("rsa.key.pem")).unwrap();
    let ec = EncodingKey::from_ec_pem(&read("ec.key.pem")).unwrap();
    let ed = EncodingKey::from_ed_pem(&read("ed.key.pem")).unwrap();
    let check = |token: String| {
        let app = &app;
        async move {
            app.validate(&token, json!({ "session_id": "s1" }))
                .await
                .status
        }
    };
    assert_eq!(
        check(token(Algorithm::RS256, Some("rsa-1"), &rsa)).await,
        200
    );
    assert_eq!(check(token(Algorithm::RS256, None, &rsa)).await, 200);
    assert_eq!(check(token(Algorithm::ES256, Some("ec-1"), &ec)).await, 200);
    assert_eq!(
        check(token(Algorithm::EdDSA, Some("ed-2026"), &ed)).await,
        200
    );

    // A known kid with another key's signature, an unknown kid, a family not configured.
    assert_eq!(
        check(token(Algorithm::RS256, Some("ec-1"), &rsa)).await,
        401
    );
    assert_eq!(
        check(token(Algorithm::RS256, Some("rsa-9"), &rsa)).await,
        401
    );
    assert_eq!(
        check(token(Algorithm::RS384, Some("rsa-1"), &rsa)).await,
        401
    );
    // Key confusion: HS256 signed with the public key as the secret.
    let confused = EncodingKey::from_secret(&read("rsa.pub.pem"));
    assert_eq!(
        check(token(Algorithm::HS256, Some("rsa-1"), &confused)).await,
        401
    );
    assert_eq!(check(token(Algorithm::HS256, None, &confused)).await, 401);
    app.stop().await;
}
