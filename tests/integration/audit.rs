//! The audit stream: every source is recorded, queries filter and page without skipping or
//! repeating, and nothing is lost or doubled through a Redis outage and a restart.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::both_backends;
use crate::common::{Backend, TestApp, eventually};

both_backends!(
    filters_and_paging_over_mixed_events,
    bad_queries_are_400,
    the_session_filter_reads_every_spelling_of_an_id
);

/// Every entry of the stream, newest first, through the API.
async fn all_entries(app: &TestApp) -> Vec<Value> {
    let reply = app
        .call(
            Method::GET,
            "/v1/audit?limit=1000",
            Some(&app.admin()),
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body["entries"].as_array().unwrap().clone()
}

/// Pages through `/v1/audit?{query}` `limit` at a time.
async fn paged(app: &TestApp, query: &str, limit: usize) -> Vec<Value> {
    let mut seen = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let cursor = before
            .as_ref()
            .map(|b| format!("&before={b}"))
            .unwrap_or_default();
        let path = format!("/v1/audit?limit={limit}&{query}{cursor}");
        let reply = app.call(Method::GET, &path, Some(&app.admin()), None).await;
        assert_eq!(reply.status, 200, "{path}: {reply:?}");
        let entries = reply.body["entries"].as_array().unwrap();
        assert!(entries.len() <= limit);
        seen.extend(entries.iter().cloned());
        match reply.body["next_before"].as_str() {
            Some(next) => before = Some(next.to_owned()),
            None => return seen,
        }
    }
}

async fn filters_and_paging_over_mixed_events(backend: Backend) {
    let app = TestApp::spawn(&backend, &[]).await;
    let admin = app.admin();
    for s in ["s1", "s2", "s3"] {
        app.claim(s, "alice").await;
    }
    app.set_mode("ENFORCED").await;
    let reply = app
        .call(
            Method::PUT,
            "/v1/enforcement/endpoints/chat.read",
            Some(&admin),
            Some(json!({ "mode": "LOG_ONLY", "reason": "observe reads" })),
        )
        .await;
    assert_eq!(reply.status, 200);

    let users = ["bob", "carol", "dave"];
    for i in 0..60 {
        let user = users[i % 3];
        let session = if i % 5 == 0 {
            format!("unowned-{i}")
        } else {
            format!("s{}", 1 + i % 3)
        };
        let endpoint = ["default", "chat.read"][i % 2];
        app.validate(
            &app.user(user),
            json!({ "session_id": session, "endpoint": endpoint }),
        )
        .await;
    }
    // Allowed checks are not audited.
    app.validate(&app.user("alice"), json!({ "session_id": "s1" }))
        .await;
    // The ownership middleware of gatehouse's own session API.
    let reply = app
        .call(Method::GET, "/v1/sessions/s2", Some(&app.user("bob")), None)
        .await;
    assert_eq!(reply.status, 403);

    // 2 changes + 60 checks + 1 middleware denial, written off the request path.
    let all = eventually(Duration::from_secs(10), "63 audit entries", || async {
        let all = all_entries(&app).await;
        (all.len() == 63).then_some(all)
    })
    .await;
    let ids: Vec<&str> = all.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 63, "ids unique");
    let middleware = all.iter().find(|e| e["source"] == "middleware").unwrap();
    assert_eq!(middleware["method"], "GET");
    assert_eq!(middleware["path"], "/v1/sessions/s2");
    assert_eq!(middleware["decision"], "deny");
    assert_eq!(middleware["owner"], "alice");
    assert!(middleware["request_id"].is_string() && middleware["client_ip"] == "127.0.0.1");
    let change = all.iter().find(|e| e["source"] == "admin").unwrap();
    assert_eq!(change["decision"], "change");
    assert_eq!(
        change["reason"], "endpoint:chat.read",
        "newest change first"
    );
    assert_eq!(change["detail"]["reason"], "observe reads");
    assert_eq!(change["user"], "root");
    for entry in &all {
        assert!(entry.get("token").is_none() && entry.get("authorization").is_none());
    }

    let field = |e: &Value, k: &str| e[k].as_str().map(str::to_owned);
    type Keep = Box<dyn Fn(&Value) -> bool>;
    let queries: Vec<(&str, Keep)> = vec![
        ("", Box::new(|_: &Value| true)),
        (
            "decision=deny",
            Box::new(|e: &Value| e["decision"] == "deny"),
        ),
        (
            "decision=would_deny",
            Box::new(|e: &Value| e["decision"] == "would_deny"),
        ),
        ("user=bob", Box::new(|e: &Value| e["user"] == "bob")),
        (
            "session_id=s2",
            Box::new(|e: &Value| e["session_id"] == "s2"),
        ),
        (
            "endpoint=chat.read",
            Box::new(|e: &Value| e["endpoint"] == "chat.read"),
        ),
        ("source=admin", Box::new(|e: &Value| e["source"] == "admin")),
        (
            "user=carol&decision=deny&endpoint=default",
            Box::new(move |e: &Value| {
                field(e, "user").as_deref() == Some("carol")
                    && e["decision"] == "deny"
                    && e["endpoint"] == "default"
            }),
        ),
    ];
    for (query, keep) in &queries {
        let expected: Vec<Value> = all.iter().filter(|e| keep(e)).cloned().collect();
        assert!(!expected.is_empty(), "{query} selects something");
        for limit in [1, 7, 100] {
            let got = paged(&app, query, limit).await;
            assert_eq!(got, expected, "{query} by {limit}");
        }
    }

    let summary = app
        .call(
            Method::GET,
            "/v1/audit/summary?since=1h",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(summary.status, 200, "{summary:?}");
    let mut by_decision: BTreeMap<String, u64> = BTreeMap::new();
    let mut per_user: BTreeMap<String, u64> = BTreeMap::new();
    for e in &all {
        *by_decision
            .entry(e["decision"].as_str().unwrap().to_owned())
            .or_default() += 1;
        if e["decision"] == "deny" || e["decision"] == "would_deny" {
            *per_user
                .entry(e["user"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    assert_eq!(summary.body["total"], 63);
    assert_eq!(summary.body["by_decision"], json!(by_decision));
    assert_eq!(summary.body["complete"], true);
    let top = &summary.body["top_users"][0];
    let most = per_user.values().max().unwrap();
    assert_eq!(&top["count"], most, "{summary:?}");
    assert_eq!(
        summary.body["by_endpoint"]["chat.read"],
        all.iter().filter(|e| e["endpoint"] == "chat.read").count()
    );
    let later = app
        .call(
            Method::GET,
            "/v1/audit/summary?since=2999-01-01T00:00:00Z",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(later.body["total"], 0);

    let rollout = app
        .call(Method::GET, "/v1/rollout?window=1h", Some(&admin), None)
        .await;
    assert_eq!(rollout.status, 200, "{rollout:?}");
    assert_eq!(rollout.body["decisions"]["deny"], by_decision["deny"]);
    assert_eq!(
        rollout.body["decisions"]["would_deny"],
        by_decision["would_deny"]
    );
    assert_eq!(rollout.body["decisions"]["window"], "1h");

    let metrics = app.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(metrics.status, 200);
    app.stop().await;
}

async fn bad_queries_are_400(backend: Backend) {
    let app = TestApp::spawn(&backend, &[]).await;
    let admin = app.admin();
    for query in [
        "before=yesterday",
        "before=1-2-3",
        "decision=maybe",
        "limit=0",
        "limit=1001",
        "source=carrier_pigeon",
        "colour=red",
    ] {
        let reply = app
            .call(
                Method::GET,
                &format!("/v1/audit?{query}"),
                Some(&admin),
                None,
            )
            .await;
        reply.assert_problem(400, "invalid-request");
    }
    for query in ["since=last-tuesday", "since=24"] {
        let reply = app
            .call(
                Method::GET,
                &format!("/v1/audit/summary?{query}"),
                Some(&admin),
                None,
            )
            .await;
        reply.assert_problem(400, "invalid-request");
    }
    let reply = app
        .call(
            Method::GET,
            "/v1/rollout?window=forever",
            Some(&admin),
            None,
        )
        .await;
    reply.assert_problem(400, "invalid-request");
    for path in ["/v1/audit", "/v1/audit/summary"] {
        let reply = app
            .call(Method::GET, path, Some(&app.user("bob")), None)
            .await;
        reply.assert_problem(403, "forbidden");
    }
    app.stop().await;
}

/// Events carry the canonical id; the `session_id` filter is read the same way.
async fn the_session_filter_reads_every_spelling_of_an_id(backend: Backend) {
    const ID: &str = "3f2b8c1e-5d4a-4b6c-9e8f-0a1b2c3d4e5f";
    let app = TestApp::spawn(&backend, &[]).await;
    app.claim(ID, "alice").await;
    app.set_mode("ENFORCED").await;
    let reply = app
        .validate(
            &app.user("bob"),
            json!({ "session_id": "3F2B8C1E5D4A4B6C9E8F0A1B2C3D4E5F" }),
        )
        .await;
    assert_eq!(reply.status, 403, "{reply:?}");
    let admin = app.admin();
    for spelling in [
        ID.to_owned(),
        ID.to_uppercase(),
        ID.replace('-', ""),
        format!("urn:uuid:{ID}"),
    ] {
        let found = eventually(Duration::from_secs(10), "the denial audited", || async {
            let reply = app
                .call(
                    Method::GET,
                    &format!("/v1/audit?session_id={spelling}"),
                    Some(&admin),
                    None,
                )
                .await;
            assert_eq!(reply.status, 200, "{reply:?}");
            let entries = reply.body["entries"].as_array().unwrap().clone();
            (!entries.is_empty()).then_some(entries)
        })
        .await;
        assert_eq!(found.len(), 1, "{spelling}: {found:?}");
        assert_eq!(found[0]["session_id"], ID);
    }
    let reply = app
        .call(
            Method::GET,
            "/v1/audit?session_id=3F2B8C1E-5D4A4B6C-9E8F0A1B2C3D4E5F",
            Some(&admin),
            None,
        )
        .await;
    reply.assert_problem(400, "invalid-session-id");
    app.stop().await;
}

/// The `outcome` counter of the audit writer in `/metrics`.
async fn audit_metric(app: &TestApp, outcome: &str) -> u64 {
    let text = app.scrape().await;
    let prefix = format!("gatehouse_audit_events_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {outcome} counter in:\n{text}"))
}

/// Sends `count` checks denied in ENFORCED (unowned sessions `ev-{from}`...), 100 per batch.
async fn denied_checks(app: &TestApp, from: usize, count: usize) {
    let token = app.user("mallory");
    for start in (from..from + count).step_by(100) {
        let checks: Vec<Value> = (start..(start + 100).min(from + count))
            .map(|i| json!({ "session_id": format!("ev-{i}") }))
            .collect();
        let reply = app
            .call(
                Method::POST,
                "/v1/validate/batch",
                Some(&token),
                Some(json!({ "checks": checks })),
            )
            .await;
        assert_eq!(reply.status, 200, "{reply:?}");
        for result in reply.body["results"].as_array().unwrap() {
            assert_eq!(result["decision"], "deny");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_denials_survive_an_outage_and_a_restart_exactly_once() {
    let Some(mut backend) = Backend::redis() else {
        return;
    };
    let spool_dir = tempfile::tempdir().unwrap();
    let spool = spool_dir.path().join("audit.spool");
    let spool = spool.to_str().unwrap();
    let env = [
        ("GATEHOUSE_AUDIT_SPOOL", spool),
        // A memory bound below each outage phase's 2,500 events, so the outage overflows to
        // the spool. Not much smaller: batches of 100 denials arrive back to back, and the
        // writer must hold what arrives during each spool `fsync` (slow on some CI disks).
        ("GATEHOUSE_AUDIT_QUEUE", "1000"),
        // Denied even while the settings cannot be read at start.
        ("GATEHOUSE_INITIAL_MODE", "ENFORCED"),
    ];

    let first = TestApp::spawn(&backend, &env).await;
    denied_checks(&first, 0, 2500).await;
    backend.redis_server().unwrap().stop();
    denied_checks(&first, 2500, 2500).await;
    assert!(
        audit_metric(&first, "spooled").await > 0,
        "the outage spooled"
    );
    assert_eq!(audit_metric(&first, "dropped").await, 0);
    first.stop().await;

    let second = TestApp::spawn(&backend, &env).await;
    denied_checks(&second, 5000, 2500).await;
    backend.redis_server().unwrap().restart();
    denied_checks(&second, 7500, 2500).await;

    let mut redis = backend.redis_server().unwrap().client();
    let sessions = eventually(Duration::from_secs(60), "10,000 audited denials", || {
        let read: redis::RedisResult<redis::streams::StreamRangeReply> = redis::cmd("XRANGE")
            .arg("gatehouse:audit")
            .arg("-")
            .arg("+")
            .query(&mut redis);
        let sessions: Vec<String> = read
            .map(|reply| {
                reply
                    .ids
                    .iter()
                    .filter_map(|e| e.get::<String>("session_id"))
                    .filter(|s| s.starts_with("ev-"))
                    .collect()
            })
            .unwrap_or_default();
        async move { (sessions.len() >= 10_000).then_some(sessions) }
    })
    .await;
    // Settle, then look again: nothing more may arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let unique: HashSet<&String> = sessions.iter().collect();
    assert_eq!(sessions.len(), 10_000, "exactly 10,000 entries");
    assert_eq!(unique.len(), 10_000, "none twice");
    assert!(
        audit_metric(&second, "replayed").await > 0,
        "the spool was replayed"
    );
    assert_eq!(audit_metric(&second, "dropped").await, 0);
    let len: usize = redis::cmd("XLEN")
        .arg("gatehouse:audit")
        .query(&mut redis)
        .unwrap();
    assert_eq!(len, 10_000, "and nothing else arrived");
    assert_eq!(
        std::fs::metadata(spool).unwrap().len(),
        0,
        "the spool is emptied once replayed"
    );
    second.stop().await;
}
