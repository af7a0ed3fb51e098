//! `/metrics` after a scripted mix of requests: every family with its labels and plausible
//! values, and `promtool check metrics` (Debian's `prometheus` package) passes on the scrape.

use reqwest::Method;
use serde_json::json;

use crate::common::{Backend, TestApp};

crate::both_backends!(metrics_describe_a_scripted_mix_of_requests);

/// The value of the sample `line` starts with (`name{labels}`), if present.
fn sample(scrape: &str, prefix: &str) -> Option<f64> {
    scrape
        .lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

async fn metrics_describe_a_scripted_mix_of_requests(backend: Backend) {
    let app = TestApp::spawn(&backend, &[("GATEHOUSE_INITIAL_MODE", "ENFORCED")]).await;
    app.claim("m1", "alice").await;
    let (alice, bob) = (app.user("alice"), app.user("bob"));
    for _ in 0..3 {
        let reply = app.validate(&alice, json!({ "session_id": "m1" })).await;
        assert_eq!(reply.status, 200);
    }
    let denied = app.validate(&bob, json!({ "session_id": "m1" })).await;
    assert_eq!(denied.status, 403);
    let missing = app
        .call(Method::POST, "/v1/validate", None, Some(json!({})))
        .await;
    assert_eq!(missing.status, 401);
    let forged = crate::common::forged(&alice);
    let bad = app.validate(&forged, json!({ "session_id": "m1" })).await;
    assert_eq!(bad.status, 401, "{bad:?}");
    let garbage = app
        .validate("not-a-jwt", json!({ "session_id": "m1" }))
        .await;
    assert_eq!(garbage.status, 401);
    let not_admin = app.call(Method::GET, "/v1/audit", Some(&bob), None).await;
    assert_eq!(not_admin.status, 403);
    let unknown = app.call(Method::GET, "/no/such/path", None, None).await;
    assert_eq!(unknown.status, 404);
    app.set_mode("LOG_ONLY").await;

    let scrape = app.scrape().await;
    let at =
        |prefix: &str| sample(&scrape, prefix).unwrap_or_else(|| panic!("{prefix} in\n{scrape}"));
    assert!(
        at(r#"gatehouse_http_requests_total{route="/v1/validate",method="POST",status="200"}"#)
            >= 3.0
    );
    assert_eq!(
        at(r#"gatehouse_http_requests_total{route="/v1/validate",method="POST",status="403"}"#),
        1.0
    );
    assert_eq!(
        at(r#"gatehouse_http_requests_total{route="unmatched",method="GET",status="404"}"#),
        1.0,
        "made-up paths are not label values"
    );
    assert!(!scrape.contains("/no/such/path"));
    assert!(
        at(r#"gatehouse_http_request_duration_seconds_count{route="/v1/validate",method="POST"}"#)
            >= 7.0
    );
    assert!(
        at(r#"gatehouse_http_request_duration_seconds_sum{route="/v1/validate",method="POST"}"#)
            > 0.0
    );
    assert_eq!(
        at(r#"gatehouse_decision_duration_seconds_count{source="validate"}"#),
        4.0
    );
    assert!(at(r#"gatehouse_store_call_duration_seconds_count{operation="owner"}"#) >= 1.0);
    assert!(at(r#"gatehouse_store_call_duration_seconds_count{operation="claim"}"#) >= 1.0);
    assert!(at(r#"gatehouse_store_call_duration_seconds_count{operation="save_settings"}"#) >= 1.0);
    assert_eq!(
        at(r#"gatehouse_auth_failures_total{reason="missing"}"#),
        1.0
    );
    assert_eq!(
        at(r#"gatehouse_auth_failures_total{reason="bad_signature"}"#),
        1.0
    );
    assert_eq!(
        at(r#"gatehouse_auth_failures_total{reason="malformed"}"#),
        1.0
    );
    assert_eq!(at("gatehouse_admin_forbidden_total"), 1.0);
    assert_eq!(
        at(r#"gatehouse_enforcement_mode{endpoint="*",mode="LOG_ONLY"}"#),
        1.0
    );
    assert_eq!(
        at(r#"gatehouse_enforcement_mode{endpoint="*",mode="ENFORCED"}"#),
        0.0
    );
    assert_eq!(at("gatehouse_kill_switch"), 0.0);
    assert_eq!(at("gatehouse_enforce_percent"), 100.0);
    assert!(at("gatehouse_settings_version") >= 2.0);
    assert_eq!(
        at(&format!(
            r#"gatehouse_build_info{{version="{}"}}"#,
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
    if matches!(backend, Backend::Redis(_)) {
        // The owner cache is on with Redis: lookups were hits or misses.
        let lookups =
            at("gatehouse_owner_cache_hits_total") + at("gatehouse_owner_cache_misses_total");
        assert!(lookups >= 1.0, "{scrape}");
        assert!(at("gatehouse_owner_cache_entries") >= 0.0);
    }
    promtool_accepts(&scrape);
    // Prometheus asks for OpenMetrics, and gets it.
    let openmetrics = app
        .http
        .get(format!("{}/metrics", app.base))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert!(
        openmetrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let body = openmetrics.text().await.unwrap();
    assert!(
        body.ends_with("# EOF\n") && body.contains("# TYPE gatehouse_decisions counter"),
        "{body}"
    );
}

/// `promtool check metrics` on the scrape (lint included): required under CI, skipped with a
/// line elsewhere when promtool is missing.
fn promtool_accepts(scrape: &str) {
    crate::common::promtool::passes(&["check", "metrics"], Some(scrape));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_have_an_address_of_their_own() {
    let port = crate::common::processes::free_port();
    let addr = format!("127.0.0.1:{port}");
    let app = TestApp::spawn(&Backend::Memory, &[("GATEHOUSE_METRICS_LISTEN", &addr)]).await;
    let public = app.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(public.status, 404, "not on the API's address: {public:?}");
    let scrape = crate::common::eventually(
        std::time::Duration::from_secs(5),
        "the metrics listener",
        || async {
            let reply = app
                .http
                .get(format!("http://{addr}/metrics"))
                .send()
                .await
                .ok()?;
            (reply.status() == 200).then_some(reply.text().await.ok()?)
        },
    )
    .await;
    assert!(scrape.contains("gatehouse_build_info"), "{scrape}");
    let other = app
        .http
        .get(format!("http://{addr}/v1/validate"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404, "nothing else there");
}

/// A path that `template` matches (`{x}` a segment, `{*x}` two).
fn sample_path(template: &str) -> String {
    template
        .split('/')
        .map(|segment| match segment {
            s if s.starts_with("{*") => "a/b".to_owned(),
            s if s.starts_with('{') => "x1".to_owned(),
            s => s.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Every route the service serves is counted under its own template: the metrics layer's
/// table of templates (`app::observe`) follows the router.
#[tokio::test]
async fn every_route_is_counted_under_its_template() {
    let app = TestApp::spawn(&Backend::Memory, &[]).await;
    let document = gatehouse::app::openapi_document();
    let mut templates: Vec<String> = document.paths.paths.keys().cloned().collect();
    // Served but documented otherwise (or not at all): the docs page, the dashboard and the
    // Envoy prefix.
    templates.retain(|t| t != "/v1/forward-auth/{path}");
    templates.extend(
        [
            "/openapi.json",
            "/docs",
            "/docs/",
            "/docs/{*rest}",
            "/dashboard",
            "/dashboard/",
            "/dashboard/{*asset}",
            "/v1/forward-auth/{*path}",
        ]
        .map(String::from),
    );
    assert!(templates.len() > 15, "{templates:?}");
    let admin = app.admin();
    for template in &templates {
        let path = sample_path(template);
        // Some answer 404 (no session x1): the handler's, counted under its template.
        app.http
            .get(format!("{}{path}", app.base))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
    }
    let scrape = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for template in &templates {
        let series = format!(r#"gatehouse_http_requests_total{{route="{template}",method="GET""#);
        assert!(
            scrape.contains(&series),
            "{template} is not counted under its template:\n{scrape}"
        );
    }
}

/// A request whose client gives up before the answer (a proxy's timeout during a store stall)
/// is counted, with status 499, not lost from the rate and latency series.
#[tokio::test]
async fn a_request_the_client_gave_up_on_counts_as_499() {
    let Some(mut backend) = Backend::redis() else {
        return;
    };
    let app = TestApp::spawn(&backend, &[("GATEHOUSE_OWNER_CACHE", "off")]).await;
    app.claim("g1", "alice").await;
    let alice = app.user("alice");
    let redis = backend.redis_server().unwrap();
    redis.pause();
    let impatient = app
        .http
        .post(format!("{}/v1/validate", app.base))
        .bearer_auth(&alice)
        .json(&json!({ "session_id": "g1" }))
        .timeout(std::time::Duration::from_millis(300))
        .send()
        .await;
    redis.resume();
    assert!(impatient.is_err(), "the store was frozen: {impatient:?}");
    let series =
        r#"gatehouse_http_requests_total{route="/v1/validate",method="POST",status="499"}"#;
    let scrape = crate::common::eventually(
        std::time::Duration::from_secs(5),
        "the dropped request to be counted",
        || async {
            let scrape = app
                .http
                .get(format!("{}/metrics", app.base))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            sample(&scrape, series).map(|_| scrape)
        },
    )
    .await;
    assert_eq!(sample(&scrape, series), Some(1.0), "{scrape}");
}
