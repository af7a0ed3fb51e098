//! `/docs` offline: Debian's Chromium, driven headless by Playwright for Python (no browser is
//! downloaded), loads the page from the instance, finds the operation list, and makes no
//! request anywhere else; the page is served under a `'self'`-only Content-Security-Policy.

use std::path::PathBuf;
use std::process::Command;

use crate::common::{Backend, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_page_renders_offline_from_the_instance_alone() {
    let Some((chromium, python)) =
        crate::common::browser::chromium_and_playwright("the /docs browser test")
    else {
        return;
    };
    let app = TestApp::spawn(&Backend::Memory, &[]).await;
    let page = app
        .http
        .get(format!("{}/docs/", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    assert!(!csp.contains("http"), "no other origin is allowed: {csp}");
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("docs");
    std::fs::create_dir_all(&out_dir).unwrap();
    let screenshot = out_dir.join("docs.png");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/docs_offline.py");
    let base = app.base.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .arg(&base)
            .arg(&chromium)
            .arg(&screenshot)
            .output()
            .expect("python runs")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let operations: Vec<&str> = report["operations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.as_str())
        .collect();
    assert!(
        operations.iter().any(|o| o.contains("/v1/validate")),
        "{report}"
    );
    assert!(operations.len() >= 20, "the whole operation list: {report}");
    assert_eq!(
        report["foreign"],
        serde_json::json!([]),
        "every request stays on the instance: {report}"
    );
    assert!(
        report["requests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap_or("").ends_with("/openapi.json")),
        "{report}"
    );
    println!(
        "/docs: {} operations, {} requests, all to the instance; screenshot {}",
        operations.len(),
        report["requests"].as_array().unwrap().len(),
        out_dir.join("docs.png").display()
    );
}
