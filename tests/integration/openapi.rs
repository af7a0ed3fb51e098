//! The committed OpenAPI document is the one the code generates and serves.

use reqwest::Method;

use crate::common::{Backend, TestApp};

#[tokio::test]
async fn committed_document_matches_the_served_one() {
    let app = TestApp::spawn(&Backend::Memory, &[]).await;
    let served = app.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(served.status, 200);
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .expect("openapi/openapi.json is committed");
    let committed: serde_json::Value = serde_json::from_str(&committed).expect("valid JSON");
    assert!(
        served.body == committed,
        "openapi/openapi.json is stale: run `cargo run -- openapi > openapi/openapi.json`"
    );
    // `/docs` sends the browser to `/docs/`, where Swagger UI is served.
    let docs = app
        .http
        .get(format!("{}/docs/", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("swagger-ui"));
    app.stop().await;
}
