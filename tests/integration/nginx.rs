//! End to end through a real nginx running the shipped recipe (`examples/proxies/nginx.conf`)
//! in front of a small upstream: owners reach it, others are refused before it in ENFORCED,
//! LOG_ONLY lets them through and audits them, no token is a 401, and with gatehouse down the
//! proxy fails closed. (`proxies.rs` runs the attacks against every proxy, nginx included.)

use std::time::Duration;

use reqwest::Method;

use crate::common::proxies::{Kind, Proxy};
use crate::common::upstream::Upstream;
use crate::common::{Backend, TestApp, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_recipe_enforces_ownership_end_to_end() {
    let Some(binary) = Kind::Nginx.binary() else {
        return;
    };
    let backend = Backend::Memory;
    let style = Kind::Nginx.style();
    let app = TestApp::spawn(&backend, &[("GATEHOUSE_FORWARD_AUTH_STYLE", &style)]).await;
    app.claim("s1", "alice").await;
    let upstream = Upstream::start().await;
    let nginx = Proxy::start(Kind::Nginx, &binary, &app.base, &upstream).await;
    let client = reqwest::Client::new();
    let get = |token: Option<String>| {
        let mut request = client.get(format!("{}/api/chat/sessions/s1/messages", nginx.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let response = request.send().await.expect("nginx answers");
            let status = response.status().as_u16();
            (status, response.text().await.unwrap_or_default())
        }
    };

    // LOG_ONLY (initial): another user reaches the upstream, and it is audited.
    let (status, body) = get(Some(app.user("bob"))).await;
    assert_eq!((status, body.as_str()), (200, "upstream served bob"));
    assert_eq!(upstream.count(), 1);
    eventually(
        Duration::from_secs(5),
        "the would_deny audit entry",
        || async {
            let reply = app
                .call(
                    Method::GET,
                    "/v1/audit?decision=would_deny&source=forward_auth&user=bob",
                    Some(&app.admin()),
                    None,
                )
                .await;
            let entry = reply.body["entries"].as_array()?.first()?.clone();
            (entry["path"] == "/api/chat/sessions/s1/messages" && entry["client_ip"] == "127.0.0.1")
                .then_some(())
        },
    )
    .await;

    app.set_mode("ENFORCED").await;
    let (status, body) = get(Some(app.user("alice"))).await;
    assert_eq!((status, body.as_str()), (200, "upstream served alice"));
    assert_eq!(upstream.count(), 2);
    let (status, _) = get(Some(app.user("bob"))).await;
    assert_eq!(status, 403, "{}", nginx.log());
    let (status, _) = get(None).await;
    assert_eq!(status, 401);
    assert_eq!(
        upstream.count(),
        2,
        "refused requests never reach the upstream"
    );
    // A spelling trick is caught by the same route.
    let response = client
        .get(format!(
            "{}/api/chat/sessions/x/..%2F/../s1/messages",
            nginx.base
        ))
        .bearer_auth(app.user("bob"))
        .send()
        .await
        .unwrap();
    assert!(
        matches!(response.status().as_u16(), 400 | 403 | 500),
        "not served: {}",
        response.status()
    );
    assert_eq!(upstream.count(), 2);

    // gatehouse down: nginx fails closed, the upstream is not reached.
    app.stop().await;
    let (status, _) = get(Some(app_token_for_alice())).await;
    assert_eq!(status, 500, "fail closed");
    assert_eq!(upstream.count(), 2);
}

/// A token for alice minted without a running instance (same secret as every test instance).
fn app_token_for_alice() -> String {
    gatehouse::auth::TokenIssuer::new(
        crate::common::SECRET.as_bytes(),
        &gatehouse::auth::JwtSettings::default(),
    )
    .mint(&gatehouse::auth::TokenRequest {
        sub: "alice".into(),
        roles: vec![],
        scopes: vec![],
        ttl: Duration::from_secs(600),
    })
    .unwrap()
}
