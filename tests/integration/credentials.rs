//! Credentials and names that could mean two things (issue 14, point 9): two `Authorization`
//! headers, a JWT `sub` or an endpoint name holding invisible formatting characters.

use reqwest::Method;
use serde_json::json;

use crate::common::{Backend, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_authorization_headers_are_a_401_on_validate_and_forward_auth() {
    let app = TestApp::spawn(&Backend::Memory, &[]).await;
    app.claim("s1", "alice").await;
    app.set_mode("ENFORCED").await;
    let (alice, bob) = (app.user("alice"), app.user("bob"));
    // Alone, each token gets its own answer.
    let own = app.validate(&alice, json!({ "session_id": "s1" })).await;
    assert_eq!(own.status, 200, "{:?}", own.body);

    let twice = app
        .http
        .post(format!("{}/v1/validate", app.base))
        .header("authorization", format!("Bearer {alice}"))
        .header("authorization", format!("Bearer {bob}"))
        .json(&json!({ "session_id": "s1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(twice.status(), 401);
    assert!(twice.headers().contains_key("www-authenticate"));
    let problem: serde_json::Value = twice.json().await.unwrap();
    assert_eq!(problem["type"], "urn:gatehouse:problem:unauthorized");

    // Forward-auth: the owner's token first would win the other user's request.
    let forward = app
        .http
        .get(format!("{}/v1/forward-auth", app.base))
        .header("x-original-method", "GET")
        .header("x-original-uri", "/api/chat/sessions/s1/messages")
        .header("authorization", format!("Bearer {alice}"))
        .header("authorization", format!("Bearer {bob}"))
        .send()
        .await
        .unwrap();
    assert_eq!(forward.status(), 401);
    assert!(
        forward
            .headers()
            .get("x-gatehouse-user")
            .is_none_or(|v| v.is_empty())
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_with_invisible_characters_is_a_401() {
    let app = TestApp::spawn(&Backend::Memory, &[]).await;
    for sub in [
        "alice\u{200B}",
        "\u{202E}ecila",
        "al\u{2066}ice\u{2069}",
        "\u{FEFF}alice",
    ] {
        let reply = app
            .validate(&app.user(sub), json!({ "session_id": "s1" }))
            .await;
        assert_eq!(reply.status, 401, "{sub:?}: {:?}", reply.body);
    }
    assert_eq!(
        app.validate(&app.user("alice"), json!({ "session_id": "s1" }))
            .await
            .status,
        200
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_names_with_invisible_characters_are_refused() {
    let app = TestApp::spawn(&Backend::Memory, &[]).await;
    let admin = app.admin();
    // U+202E RIGHT-TO-LEFT OVERRIDE, U+200B ZERO WIDTH SPACE, U+2066 LEFT-TO-RIGHT ISOLATE.
    for name in [
        "chat.read%E2%80%AE",
        "chat%E2%80%8B.read",
        "%E2%81%A6chat.read",
    ] {
        let reply = app
            .call(
                Method::PUT,
                &format!("/v1/enforcement/endpoints/{name}"),
                Some(&admin),
                Some(json!({ "mode": "ENFORCED", "reason": "test" })),
            )
            .await;
        assert_eq!(reply.status, 400, "{name}: {:?}", reply.body);
        assert_eq!(reply.body["type"], "urn:gatehouse:problem:invalid-name");
    }
    // And a check naming such an endpoint is refused too.
    let reply = app
        .validate(
            &app.user("alice"),
            json!({ "session_id": "s1", "endpoint": "chat.read\u{202E}" }),
        )
        .await;
    assert_eq!(reply.status, 400, "{:?}", reply.body);
    let settings = app
        .call(Method::GET, "/v1/enforcement", Some(&admin), None)
        .await;
    assert_eq!(settings.body["endpoints"], json!({}), "{:?}", settings.body);
    app.stop().await;
}
