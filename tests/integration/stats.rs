//! The decision time series (`GET /v1/stats/decisions`): its counts equal the decisions made,
//! across two instances on one Redis and a restart of one of them, by the minute and by the
//! hour; through a Redis outage; and the query is checked like every other (400s, admin only).
//! `GET /v1/instances` lists the instances with their settings versions.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{Backend, TcpProxy, TestApp, eventually};

/// (endpoint, decision, reason) → count.
type Tally = BTreeMap<(String, String, String), u64>;

/// Counts the series of an answer of `GET /v1/stats/decisions` by endpoint, decision and
/// reason, checking that each series' counts add up to its total and the totals to `totals`.
fn tally_of(answer: &Value) -> Tally {
    let mut tally = Tally::new();
    let mut by_decision: BTreeMap<String, u64> = BTreeMap::new();
    let buckets = answer["buckets"].as_array().expect("buckets").len();
    for series in answer["series"].as_array().expect("series") {
        let counts: Vec<u64> = series["counts"]
            .as_array()
            .expect("counts")
            .iter()
            .map(|n| n.as_u64().expect("a count"))
            .collect();
        assert_eq!(counts.len(), buckets, "{series}");
        let total = series["total"].as_u64().expect("a total");
        assert_eq!(counts.iter().sum::<u64>(), total, "{series}");
        let key = (
            series["endpoint"].as_str().unwrap_or("(other)").to_owned(),
            series["decision"].as_str().unwrap().to_owned(),
            series["reason"].as_str().unwrap().to_owned(),
        );
        *by_decision.entry(key.1.clone()).or_default() += total;
        *tally.entry(key).or_default() += total;
    }
    for decision in ["allow", "deny", "would_deny"] {
        assert_eq!(
            answer["totals"][decision].as_u64(),
            Some(by_decision.get(decision).copied().unwrap_or(0)),
            "totals.{decision}: {answer}"
        );
    }
    tally
}

/// `GET /v1/stats/decisions?{query}` as `token`.
async fn stats(app: &TestApp, query: &str, token: &str) -> crate::common::Reply {
    let path = format!("/v1/stats/decisions?{query}");
    app.call(Method::GET, &path, Some(token), None).await
}

/// Asks `app` for the series until it equals `expected` (counts lag by a flush).
async fn series_equal(app: &TestApp, query: &str, expected: &Tally) -> Value {
    let admin = app.admin();
    let mut last = Value::Null;
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let reply = stats(app, query, &admin).await;
            assert_eq!(reply.status, 200, "{:?}", reply.body);
            if tally_of(&reply.body) == *expected {
                return reply.body;
            }
            last = reply.body;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    match found {
        Ok(body) => body,
        Err(_) => panic!(
            "the series never equalled the decisions made\nexpected {expected:?}\nlast {:?}",
            tally_of(&last)
        ),
    }
}

/// Checks one session as `user` on `endpoint` through `app`, counts the answer and returns
/// it.
async fn check(
    app: &TestApp,
    tally: &mut Tally,
    token: &str,
    session: &str,
    endpoint: &str,
) -> Value {
    let reply = app
        .validate(
            token,
            json!({ "session_id": session, "endpoint": endpoint }),
        )
        .await;
    assert!([200, 403, 503].contains(&reply.status), "{reply:?}");
    let key = (
        endpoint.to_owned(),
        reply.body["decision"]
            .as_str()
            .expect("a decision")
            .to_owned(),
        reply.body["reason"].as_str().expect("a reason").to_owned(),
    );
    *tally.entry(key).or_default() += 1;
    reply.body
}

/// A mix of checks: owners, other users, unowned sessions and an admin, on two endpoints.
async fn mix(app: &TestApp, tally: &mut Tally, rounds: usize) {
    let (alice, carol, admin) = (app.user("alice"), app.user("carol"), app.admin());
    for _ in 0..rounds {
        check(app, tally, &alice, "s1", "chat").await;
        check(app, tally, &alice, "s2", "chat").await;
        check(app, tally, &alice, "s2", "files").await;
        check(app, tally, &carol, "s9", "files").await;
        check(app, tally, &admin, "s2", "chat").await;
    }
}

/// An instance named `name` that flushes every 200 ms and counts `chat` under its name (it has
/// no override; `files` has one).
fn named(name: &'static str) -> [(&'static str, &'static str); 3] {
    [
        ("GATEHOUSE_INSTANCE", name),
        ("GATEHOUSE_STATS_FLUSH", "200ms"),
        ("GATEHOUSE_STATS_ENDPOINTS", "chat"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_series_counts_every_decision_across_two_instances_and_a_restart() {
    let Some(backend) = Backend::redis() else {
        return;
    };
    let a = TestApp::spawn(&backend, &named("stats-a")).await;
    let b = TestApp::spawn(&backend, &named("stats-b")).await;
    a.claim("s1", "alice").await;
    a.claim("s2", "bob").await;
    a.set_mode("LOG_ONLY").await;
    let files = a
        .call(
            Method::PUT,
            "/v1/enforcement/endpoints/files",
            Some(&a.admin()),
            Some(json!({ "mode": "ENFORCED", "reason": "files first" })),
        )
        .await;
    assert_eq!(files.status, 200, "{:?}", files.body);
    let version = files.body["version"].as_u64().unwrap();
    for app in [&a, &b] {
        eventually(
            Duration::from_secs(5),
            "the override everywhere",
            || async {
                let body = app
                    .call(Method::GET, "/v1/enforcement", Some(&app.admin()), None)
                    .await
                    .body;
                (body["version"] == version).then_some(())
            },
        )
        .await;
    }

    let mut made = Tally::new();
    let began = gatehouse::timestamp::Timestamp::now();
    mix(&a, &mut made, 20).await;
    b.stop().await;
    // B again, flushing only once a minute: what it counts reaches the store through the
    // graceful stop's last flush.
    let mut slow = named("stats-b").to_vec();
    slow[1] = ("GATEHOUSE_STATS_FLUSH", "60s");
    let b = TestApp::spawn(&backend, &slow).await;
    mix(&b, &mut made, 15).await;
    // B restarts (a graceful stop sends what it counted), under the same name.
    b.stop().await;
    let b = TestApp::spawn(&backend, &named("stats-b")).await;
    mix(&b, &mut made, 10).await;
    mix(&a, &mut made, 5).await;
    let ended = gatehouse::timestamp::Timestamp::now();
    // Every kind of decision the mix makes is there.
    let kinds: Vec<(&str, &str, &str)> = made
        .keys()
        .map(|(e, d, r)| (e.as_str(), d.as_str(), r.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("chat", "allow", "admin"),
            ("chat", "allow", "owner"),
            ("chat", "would_deny", "not_owner"),
            ("files", "deny", "no_owner"),
            ("files", "deny", "not_owner"),
        ]
    );
    assert_eq!(made.values().sum::<u64>(), 50 * 5);

    // By the minute, read through either instance; by the hour; for one endpoint.
    let minutes = series_equal(&a, "since=15m&step=1m", &made).await;
    assert_eq!(minutes["resolution"], "minute");
    assert_eq!(minutes["complete"], true);
    // Each count is in the bucket of the minute it was made in: only the minutes of the mix
    // have any.
    let first = began.unix_millis() / 60_000 * 60_000;
    let last = ended.unix_millis() / 60_000 * 60_000;
    let buckets = minutes["buckets"].as_array().unwrap();
    for series in minutes["series"].as_array().unwrap() {
        for (at, count) in buckets.iter().zip(series["counts"].as_array().unwrap()) {
            let at: gatehouse::timestamp::Timestamp = at.as_str().unwrap().parse().unwrap();
            let inside = (first..=last).contains(&at.unix_millis());
            assert!(
                inside || count == 0,
                "{count} at {at} outside the mix: {series}"
            );
        }
    }
    series_equal(&b, "since=15m&step=5m", &made).await;
    let hours = series_equal(&b, "since=3h&step=1h", &made).await;
    assert_eq!(hours["resolution"], "hour");
    let files_only: Tally = made
        .iter()
        .filter(|((e, _, _), _)| e == "files")
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    series_equal(&a, "since=15m&step=1m&endpoint=files", &files_only).await;

    // Both instances are listed, with the settings version in force.
    let listed = eventually(Duration::from_secs(10), "both instances listed", || async {
        let reply = a
            .call(Method::GET, "/v1/instances", Some(&a.admin()), None)
            .await;
        let names: Vec<String> = reply.body["instances"]
            .as_array()?
            .iter()
            .filter(|i| i["settings_version"] == version)
            .filter_map(|i| i["instance"].as_str().map(str::to_owned))
            .collect();
        (names == ["stats-a", "stats-b"]).then_some(reply.body)
    })
    .await;
    assert_eq!(listed["instances"][0]["settings_source"], "store");
    assert_eq!(
        listed["instances"][0]["build_version"],
        env!("CARGO_PKG_VERSION")
    );
    let metrics = a.scrape().await;
    assert!(
        metrics.contains("gatehouse_decision_stats_dropped_total 0"),
        "{metrics}"
    );
    a.stop().await;
    b.stop().await;
}

/// Redis cut off: the instance keeps counting (the LOG_ONLY checks are allowed with
/// `store_unavailable`) and the counts arrive once it is back, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_made_while_redis_is_away_arrive_once_it_is_back() {
    let Some(mut backend) = Backend::redis() else {
        return;
    };
    let proxy = TcpProxy::start(backend.redis_server().unwrap().addr()).await;
    let via_proxy = proxy.redis_url();
    let reader = TestApp::spawn(&backend, &named("stats-reader")).await;
    let cut = TestApp::spawn(
        &backend,
        &[
            ("REDIS_URL", &via_proxy),
            ("GATEHOUSE_INSTANCE", "stats-cut"),
            ("GATEHOUSE_STATS_FLUSH", "200ms"),
            ("GATEHOUSE_REDIS_TIMEOUT", "300ms"),
            ("GATEHOUSE_OWNER_CACHE", "off"),
        ],
    )
    .await;
    reader.claim("s1", "alice").await;
    reader.set_mode("LOG_ONLY").await;
    let mut made = Tally::new();
    let alice = cut.user("alice");
    // Until the change has reached the cut instance (each probe is a counted decision).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while check(&cut, &mut made, &alice, "s1", "default").await["mode"] != "LOG_ONLY" {
        assert!(
            std::time::Instant::now() < deadline,
            "LOG_ONLY never applied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    series_equal(&reader, "since=15m&step=1m", &made).await;

    proxy.cut();
    for _ in 0..20 {
        check(&cut, &mut made, &alice, "s1", "default").await;
    }
    let away = (
        "default".to_owned(),
        "allow".to_owned(),
        "store_unavailable".to_owned(),
    );
    assert!(made.get(&away).copied().unwrap_or(0) >= 1, "{made:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.restore();
    series_equal(&reader, "since=15m&step=1m", &made).await;
    cut.stop().await;
    reader.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_is_checked_and_for_admins_only() {
    let app = TestApp::spawn(
        &Backend::Memory,
        &[
            ("GATEHOUSE_STATS_FLUSH", "100ms"),
            ("GATEHOUSE_STATS_ENDPOINTS", "chat,files"),
        ],
    )
    .await;
    let admin = app.admin();
    let mut made = Tally::new();
    app.claim("s1", "alice").await;
    app.set_mode("ENFORCED").await;
    // Names the deployment does not know are counted together as "other endpoints" (a caller
    // cannot grow the series, nor push `chat` out of it), even before the known ones.
    let alice = app.user("alice");
    for i in 0..150 {
        let endpoint = format!("made-up-{i}");
        let mut other = Tally::new();
        check(&app, &mut other, &alice, "s1", &endpoint).await;
        *made
            .entry(("(other)".into(), "allow".into(), "owner".into()))
            .or_default() += other.values().sum::<u64>();
    }
    mix(&app, &mut made, 3).await;
    series_equal(&app, "since=1h&step=15m", &made).await;
    // The top sessions of the audit summary: s2 denied to alice 6 times, s9 to carol 3.
    let summary = app
        .call(
            Method::GET,
            "/v1/audit/summary?since=1h",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(
        summary.body["top_sessions"],
        json!([{ "session_id": "s2", "count": 6 }, { "session_id": "s9", "count": 3 }]),
        "{:?}",
        summary.body
    );
    // A day by the minute, from any second: 1,441 buckets once rounded out, allowed.
    let day = stats(&app, "since=24h", &admin).await;
    assert_eq!(day.status, 200, "{:?}", day.body);
    // Since as a time, until as a window back from now: nothing after until.
    let none = app
        .call(
            Method::GET,
            "/v1/stats/decisions?since=2026-08-01T00:00:00Z&until=30d&step=1d",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(none.status, 200, "{:?}", none.body);
    assert_eq!(none.body["series"], json!([]));
    assert_eq!(
        none.body["complete"], false,
        "minutes of a year ago are gone"
    );
    for (query, why) in [
        ("step=30s", "whole number of minutes"),
        ("step=60s", "whole number of minutes"),
        (
            "since=9999-12-31T23:00:00Z&until=9999-12-31T23:59:59Z",
            "9999",
        ),
        ("step=1x", "step"),
        ("since=7d&step=1m", "buckets"),
        ("since=7d&step=10m", "two days"),
        ("since=2026-01-01T00:00:00Z&step=1d", "120 days"),
        ("since=1h&until=2h", "before until"),
        ("since=yesterday", "since"),
        ("endpoint=a%20b", "endpoint"),
        ("window=1h", "unknown"),
    ] {
        let reply = stats(&app, query, &admin).await;
        assert_eq!(reply.status, 400, "{query}: {:?}", reply.body);
        assert_eq!(reply.content_type, "application/problem+json", "{query}");
        let detail = reply.body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(why), "{query}: {detail}");
    }
    for path in ["/v1/stats/decisions", "/v1/instances"] {
        let user = app
            .call(Method::GET, path, Some(&app.user("alice")), None)
            .await;
        assert_eq!(user.status, 403, "{path}");
        let anonymous = app.call(Method::GET, path, None, None).await;
        assert_eq!(anonymous.status, 401, "{path}");
    }
    let instances = eventually(Duration::from_secs(10), "the instance listed", || async {
        let reply = app
            .call(Method::GET, "/v1/instances", Some(&admin), None)
            .await;
        let listed = reply.body["instances"].as_array()?;
        (listed.len() == 1 && listed[0]["settings_version"] == 2).then_some(reply.body)
    })
    .await;
    assert_eq!(instances["instances"][0]["settings_source"], "store");
    app.stop().await;
}

/// `GATEHOUSE_STATS=off`: decisions are not counted (the benchmark's baseline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_with_stats_off_counts_nothing() {
    let app = TestApp::spawn(&Backend::Memory, &[("GATEHOUSE_STATS", "off")]).await;
    let mut made = Tally::new();
    app.claim("s1", "alice").await;
    mix(&app, &mut made, 2).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let reply = app
        .call(Method::GET, "/v1/stats/decisions", Some(&app.admin()), None)
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["series"], json!([]), "{:?}", reply.body);
    app.stop().await;
}
