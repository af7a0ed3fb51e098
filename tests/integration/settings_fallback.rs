//! Settings never fall back silently (issue 14 point 5): an instance that starts with its Redis
//! unreachable denies (`settings_unavailable`) unless it has a snapshot, whose settings then
//! apply, marked stale; a Redis that loses its data never drops the fleet to a weaker mode,
//! and the record comes back, restored by one instance with a history entry.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{Backend, Reply, TcpProxy, TestApp, eventually};
use crate::forward_auth::nginx;

async fn readyz(app: &TestApp) -> Reply {
    app.call(Method::GET, "/readyz", None, None).await
}

/// The value of the metric line that starts with `name` (labels included).
async fn metric(app: &TestApp, name: &str) -> Option<f64> {
    let text = app.scrape().await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// The store's history, read straight from Redis (newest first).
fn history(redis: &crate::common::RedisServer) -> Vec<Value> {
    let keys = gatehouse::store::KeySchema::default();
    let raw: Vec<String> = redis::cmd("ZREVRANGE")
        .arg(keys.history())
        .arg(0)
        .arg(-1)
        .query(&mut redis.client())
        .unwrap_or_default();
    raw.iter()
        .map(|e| serde_json::from_str(e).expect("history entries are JSON"))
        .collect()
}

/// The version of the store's settings record (0 when there is none).
fn stored_version(redis: &crate::common::RedisServer) -> u64 {
    let keys = gatehouse::store::KeySchema::default();
    redis::cmd("HGET")
        .arg(keys.settings())
        .arg("version")
        .query::<Option<u64>>(&mut redis.client())
        .ok()
        .flatten()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_start_without_a_snapshot_denies_with_settings_unavailable() {
    let Some(mut backend) = Backend::redis() else {
        return;
    };
    // The fleet is ENFORCED and alice owns s1.
    let a = TestApp::spawn(&backend, &[("GATEHOUSE_INSTANCE", "a")]).await;
    a.claim("s1", "alice").await;
    a.set_mode("ENFORCED").await;
    a.stop().await;

    // B starts with Redis unreachable and no snapshot (the default path, beside its spool,
    // holds none).
    let proxy = TcpProxy::start(backend.redis_server().unwrap().addr()).await;
    proxy.cut();
    let via_proxy = proxy.redis_url();
    let b = TestApp::spawn(
        &backend,
        &[("REDIS_URL", &via_proxy), ("GATEHOUSE_INSTANCE", "b")],
    )
    .await;
    let (alice, bob) = (b.user("alice"), b.user("bob"));
    for token in [&alice, &bob] {
        let reply = b.validate(token, json!({ "session_id": "s1" })).await;
        assert_eq!(reply.status, 503, "{reply:?}");
        assert_eq!(reply.body["allowed"], false);
        assert_eq!(reply.body["decision"], "deny");
        assert_eq!(reply.body["reason"], "settings_unavailable");
        assert_eq!(reply.body["mode"], "ENFORCED");
    }
    // A service naming the user gets the same 503 (the question could not be answered).
    let service = b.token("chat", &[], &["gatehouse:validate"]);
    let reply = b
        .validate(&service, json!({ "session_id": "s1", "user": "bob" }))
        .await;
    assert_eq!(
        (reply.status, reply.body["reason"].clone()),
        (503, json!("settings_unavailable"))
    );
    let batch = b
        .call(
            Method::POST,
            "/v1/validate/batch",
            Some(&bob),
            Some(json!({ "checks": [{ "session_id": "s1" }, { "session_id": "s2", "endpoint": "x" }] })),
        )
        .await;
    for result in batch.body["results"].as_array().unwrap() {
        assert_eq!(result["reason"], "settings_unavailable", "{batch:?}");
        assert_eq!(result["allowed"], false);
    }
    let reply = nginx(&b, Some(&bob), "GET", "/api/chat/sessions/s1/messages").await;
    reply.assert_problem(503, "settings-unavailable");
    assert_eq!(reply.body["reason"], "settings_unavailable");
    // Every mode allows admins, so no settings could deny them.
    let reply = b.validate(&b.admin(), json!({ "session_id": "s1" })).await;
    assert_eq!(
        (reply.status, &reply.body["reason"]),
        (200, &json!("admin"))
    );
    b.call(Method::GET, "/v1/enforcement", Some(&b.admin()), None)
        .await
        .assert_problem(503, "store-unavailable");
    let ready = readyz(&b).await;
    assert_eq!(ready.status, 503, "{ready:?}");
    assert_eq!(ready.body["settings_source"], "none");
    assert_eq!(ready.body["settings_loaded"], false);
    assert_eq!(ready.body["settings_version"], 0);
    assert_eq!(
        metric(&b, "gatehouse_settings_source{source=\"none\"}").await,
        Some(1.0)
    );
    assert_eq!(
        metric(
            &b,
            "gatehouse_decisions_total{decision=\"deny\",reason=\"settings_unavailable\",source=\"validate\"}"
        )
        .await,
        Some(5.0)
    );

    // Redis is back: B reads the fleet's settings and converges.
    proxy.restore();
    eventually(
        Duration::from_secs(10),
        "B to read the settings",
        || async {
            let reply = b.validate(&bob, json!({ "session_id": "s1" })).await;
            (reply.status == 403).then_some(())
        },
    )
    .await;
    let reply = b.validate(&bob, json!({ "session_id": "s1" })).await;
    assert_eq!(reply.body["reason"], "not_owner");
    assert_eq!(reply.body["mode"], "ENFORCED");
    let reply = b.validate(&alice, json!({ "session_id": "s1" })).await;
    assert_eq!(
        (reply.status, &reply.body["reason"]),
        (200, &json!("owner"))
    );
    let ready = eventually(Duration::from_secs(10), "B ready", || async {
        let ready = readyz(&b).await;
        (ready.status == 200).then_some(ready)
    })
    .await;
    assert_eq!(ready.body["settings_source"], "store");
    assert_eq!(ready.body["settings_record"], "ok");
    assert_eq!(ready.body["settings_version"], 2);
    // The denials were audited like store_unavailable ones, spooled through the outage.
    let audited = eventually(Duration::from_secs(10), "the denials audited", || async {
        let reply = b
            .call(
                Method::GET,
                "/v1/audit?limit=100&user=bob",
                Some(&b.admin()),
                None,
            )
            .await;
        let entries = reply.body["entries"].as_array()?.clone();
        let unavailable: Vec<Value> = entries
            .into_iter()
            .filter(|e| e["reason"] == "settings_unavailable")
            .collect();
        (unavailable.len() >= 4).then_some(unavailable)
    })
    .await;
    assert!(
        audited
            .iter()
            .all(|e| e["decision"] == "deny" && e["mode"] == "ENFORCED")
    );
    // Nothing was restored or initialised: the record was there all along.
    assert_eq!(stored_version(backend.redis_server().unwrap()), 2);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_start_with_a_snapshot_applies_it_marked_stale_until_the_store_answers() {
    let Some(mut backend) = Backend::redis() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("settings.json");
    let snapshot_path = snapshot.to_string_lossy().into_owned();
    let proxy = TcpProxy::start(backend.redis_server().unwrap().addr()).await;
    let via_proxy = proxy.redis_url();
    let through_proxy = [
        ("REDIS_URL", via_proxy.as_str()),
        ("GATEHOUSE_SETTINGS_SNAPSHOT", snapshot_path.as_str()),
    ];

    // A first life: ENFORCED, written to the snapshot.
    let first = TestApp::spawn(&backend, &through_proxy).await;
    first.claim("s1", "alice").await;
    first.set_mode("ENFORCED").await;
    eventually(Duration::from_secs(10), "the snapshot written", || async {
        let text = std::fs::read_to_string(&snapshot).ok()?;
        let file: Value = serde_json::from_str(&text).ok()?;
        (file["settings"]["version"] == 2 && file["settings"]["mode"] == "ENFORCED").then_some(())
    })
    .await;
    first.stop().await;

    // While this instance is away and Redis is cut off from it, the fleet moves on.
    let other = TestApp::spawn(&backend, &[("GATEHOUSE_SETTINGS_SNAPSHOT", "off")]).await;
    proxy.cut();
    let reply = other
        .call(
            Method::PUT,
            "/v1/enforcement/endpoints/chat.read",
            Some(&other.admin()),
            Some(json!({ "mode": "LOG_ONLY", "reason": "pilot" })),
        )
        .await;
    assert_eq!(reply.body["version"], 3, "{reply:?}");

    // Restarted with Redis unreachable: the snapshot's settings apply, marked stale.
    let app = TestApp::spawn(&backend, &through_proxy).await;
    let ready = readyz(&app).await;
    assert_eq!(ready.status, 503, "{ready:?}");
    assert_eq!(ready.body["settings_source"], "snapshot");
    assert_eq!(ready.body["settings_stale"], true);
    assert_eq!(ready.body["settings_loaded"], false);
    assert_eq!(ready.body["settings_version"], 2);
    assert_eq!(
        metric(&app, "gatehouse_settings_source{source=\"snapshot\"}").await,
        Some(1.0)
    );
    assert_eq!(metric(&app, "gatehouse_settings_stale").await, Some(1.0));
    let bob = app.user("bob");
    // ENFORCED from the snapshot: no owner can be read, so a 503 store_unavailable, never an
    // allow (the initial mode, LOG_ONLY, would have let bob in).
    let reply = app.validate(&bob, json!({ "session_id": "s1" })).await;
    assert_eq!(reply.status, 503, "{reply:?}");
    assert_eq!(reply.body["reason"], "store_unavailable");
    assert_eq!(reply.body["mode"], "ENFORCED");
    let settings = app
        .call(Method::GET, "/v1/enforcement", Some(&app.admin()), None)
        .await;
    assert_eq!(
        (
            settings.body["mode"].clone(),
            settings.body["version"].clone()
        ),
        (json!("ENFORCED"), json!(2))
    );

    // Redis is back: the store's newer settings are applied, confirmed, and snapshotted.
    proxy.restore();
    let ready = eventually(Duration::from_secs(10), "confirmed settings", || async {
        let ready = readyz(&app).await;
        (ready.status == 200 && ready.body["settings_stale"] == false).then_some(ready)
    })
    .await;
    assert_eq!(ready.body["settings_source"], "store");
    assert_eq!(ready.body["settings_version"], 3);
    let reply = app.validate(&bob, json!({ "session_id": "s1" })).await;
    assert_eq!(
        (reply.status, reply.body["reason"].clone()),
        (403, json!("not_owner"))
    );
    let reply = app
        .validate(&bob, json!({ "session_id": "s1", "endpoint": "chat.read" }))
        .await;
    assert_eq!(reply.body["decision"], "would_deny", "{reply:?}");
    eventually(Duration::from_secs(10), "the snapshot updated", || async {
        let text = std::fs::read_to_string(&snapshot).ok()?;
        text.contains("\"version\": 3").then_some(())
    })
    .await;
    // Nobody restored anything: the record was only out of this instance's reach.
    let entries = history(backend.redis_server().unwrap());
    assert!(
        entries.iter().all(|e| e["change"] != "restore"),
        "{entries:?}"
    );
    other.stop().await;
    app.stop().await;
}

/// What is wrong with one answer of the stream of checks under ENFORCED, if anything: a weaker
/// mode, an allow that is not the owner's, a status that does not fit the decision.
fn violation(instance: &str, status: u16, body: &Value) -> Option<String> {
    let decision = body["decision"].as_str().unwrap_or("");
    let fits = match decision {
        "allow" => status == 200 && body["reason"] == "owner" && body["user"] == "alice",
        "deny" => status == 403 || status == 503,
        _ => false,
    };
    (body["mode"] != "ENFORCED" || !fits).then(|| format!("{instance}: {status} {body}"))
}

/// The first violation any stream saw.
type Violations = Arc<std::sync::Mutex<Option<String>>>;

/// Waits (failing at once on any violation) until the store's record is back above `above`
/// with exactly one history entry, and returns it.
async fn restored_once(
    redis: &crate::common::RedisServer,
    above: u64,
    violations: &Violations,
) -> Value {
    eventually(Duration::from_secs(15), "the record restored", || async {
        if let Some(v) = violations.lock().unwrap().as_ref() {
            panic!("an instance answered below ENFORCED: {v}");
        }
        let entries = history(redis);
        (stored_version(redis) > above && !entries.is_empty()).then_some(entries)
    })
    .await
    .into_iter()
    .fold(None, |only: Option<Value>, entry| {
        assert!(only.is_none(), "exactly one instance restored it: {entry}");
        Some(entry)
    })
    .expect("an entry")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_loss_under_enforced_never_lowers_any_instance_and_the_record_is_restored() {
    let Some(mut backend) = Backend::redis() else {
        return;
    };
    let a = Arc::new(TestApp::spawn(&backend, &[("GATEHOUSE_INSTANCE", "a")]).await);
    let b = Arc::new(TestApp::spawn(&backend, &[("GATEHOUSE_INSTANCE", "b")]).await);
    a.claim("s1", "alice").await;
    a.set_mode("ENFORCED").await;
    let enforced = a
        .call(Method::GET, "/v1/enforcement", Some(&a.admin()), None)
        .await
        .body["version"]
        .as_u64()
        .unwrap();
    for app in [&a, &b] {
        eventually(Duration::from_secs(10), "ENFORCED everywhere", || async {
            let ready = readyz(app).await;
            (ready.body["settings_version"] == enforced && ready.body["settings_stale"] == false)
                .then_some(())
        })
        .await;
    }

    // A steady stream of checks on both instances, every answer checked.
    let stop = Arc::new(AtomicBool::new(false));
    let violations: Violations = Arc::default();
    let mut streams = Vec::new();
    for (name, app) in [("a", a.clone()), ("b", b.clone())] {
        let (stop, violations) = (stop.clone(), violations.clone());
        streams.push(tokio::spawn(async move {
            let mut answers = 0_usize;
            let (alice, bob) = (app.user("alice"), app.user("bob"));
            while !stop.load(Ordering::Acquire) {
                for token in [&alice, &bob] {
                    let response = app
                        .http
                        .post(format!("{}/v1/validate", app.base))
                        .bearer_auth(token)
                        .json(&json!({ "session_id": "s1" }))
                        .send()
                        .await;
                    let Ok(response) = response else { continue };
                    let status = response.status().as_u16();
                    let body = response.json().await.unwrap_or(Value::Null);
                    answers += 1;
                    if let Some(v) = violation(name, status, &body) {
                        violations.lock().unwrap().get_or_insert(v);
                    }
                }
            }
            answers
        }));
    }
    let redis = backend.redis_server().unwrap();

    // FLUSHALL: the record and its history vanish; the connections stay up. (Each loss waits a
    // little first, deliberately: the streams of checks run across it.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _: () = redis::cmd("FLUSHALL")
        .query(&mut redis.client())
        .expect("flush");
    let restore = restored_once(redis, 0, &violations).await;
    assert_eq!(restore["version"], enforced + 1, "{restore}");
    assert_eq!(restore["change"], "restore");
    assert!(
        restore["actor"] == "instance:a" || restore["actor"] == "instance:b",
        "{restore}"
    );
    assert!(
        restore["reason"].as_str().unwrap().contains("vanished"),
        "{restore}"
    );
    assert_eq!(restore["to"]["mode"], "ENFORCED");

    // A Redis restarted empty: the connections drop, the instances come back to an empty store.
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.restart_empty();
    let restore = restored_once(redis, 0, &violations).await;
    assert_eq!(restore["change"], "restore");
    assert_eq!(
        restore["version"],
        enforced + 2,
        "above every version seen: {restore}"
    );
    for app in [&a, &b] {
        eventually(
            Duration::from_secs(10),
            "the restored record everywhere",
            || async {
                let ready = readyz(app).await;
                (ready.status == 200
                    && ready.body["settings_version"] == enforced + 2
                    && ready.body["settings_record"] == "ok")
                    .then_some(())
            },
        )
        .await;
    }
    // Deliberate: the streams keep checking against the restored record for a while.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Release);
    let mut answers = Vec::new();
    for stream in streams {
        answers.push(stream.await.unwrap());
    }
    if let Some(v) = violations.lock().unwrap().as_ref() {
        panic!("an instance answered below ENFORCED: {v}");
    }
    assert!(
        answers.iter().all(|n| *n > 10),
        "a steady stream on each instance: {answers:?}"
    );
    let restores = metric(&a, "gatehouse_settings_restores").await.unwrap()
        + metric(&b, "gatehouse_settings_restores").await.unwrap();
    assert_eq!(
        restores, 3.0,
        "the fresh store's initialisation, then one restore per loss"
    );
    let a = Arc::try_unwrap(a).ok().expect("no other holder");
    let b = Arc::try_unwrap(b).ok().expect("no other holder");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_cannot_be_restored_is_reported_and_the_settings_are_kept() {
    let Some(mut backend) = Backend::redis() else {
        return;
    };
    let app = TestApp::spawn(&backend, &[("GATEHOUSE_INSTANCE", "a")]).await;
    app.claim("s1", "alice").await;
    app.set_mode("ENFORCED").await;
    let redis = backend.redis_server().unwrap();
    let keys = gatehouse::store::KeySchema::default();
    // Writes are refused (no replica to satisfy min-replicas-to-write); reads work.
    let _: () = redis::pipe()
        .atomic()
        .cmd("DEL")
        .arg(keys.settings())
        .ignore()
        .cmd("CONFIG")
        .arg("SET")
        .arg("min-replicas-to-write")
        .arg("1")
        .ignore()
        .query(&mut redis.client())
        .unwrap();
    let ready = eventually(
        Duration::from_secs(10),
        "the missing record seen",
        || async {
            let ready = readyz(&app).await;
            (ready.body["settings_record"] == "missing").then_some(ready)
        },
    )
    .await;
    // Still ready: the instance keeps the right settings and the whole fleet sees the same.
    assert_eq!(ready.status, 200, "{ready:?}");
    assert_eq!(ready.body["settings_version"], 2);
    assert_eq!(
        metric(&app, "gatehouse_settings_record{state=\"missing\"}").await,
        Some(1.0)
    );
    let reply = app
        .validate(&app.user("bob"), json!({ "session_id": "s1" }))
        .await;
    assert_eq!(
        (
            reply.status,
            reply.body["reason"].clone(),
            reply.body["mode"].clone()
        ),
        (403, json!("not_owner"), json!("ENFORCED"))
    );
    // An admin change cannot go below what was seen either: it fails while writes do.
    let reply = app
        .call(
            Method::PUT,
            "/v1/enforcement",
            Some(&app.admin()),
            Some(json!({ "mode": "LOG_ONLY", "reason": "while broken" })),
        )
        .await;
    assert_eq!(reply.status, 503, "{reply:?}");

    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("min-replicas-to-write")
        .arg("0")
        .query(&mut redis.client())
        .unwrap();
    eventually(Duration::from_secs(10), "the record restored", || async {
        (stored_version(redis) == 3).then_some(())
    })
    .await;
    let ready = eventually(Duration::from_secs(10), "the record ok", || async {
        let ready = readyz(&app).await;
        (ready.body["settings_record"] == "ok").then_some(ready)
    })
    .await;
    assert_eq!(ready.body["settings_version"], 3);
    let entries = history(redis);
    assert_eq!(entries[0]["actor"], "instance:a");
    assert_eq!(entries[0]["change"], "restore");
    // And in the audit stream, like an admin's change.
    eventually(Duration::from_secs(10), "the restore audited", || async {
        let reply = app
            .call(
                Method::GET,
                "/v1/audit?limit=100&decision=change",
                Some(&app.admin()),
                None,
            )
            .await;
        reply.body["entries"]
            .as_array()?
            .iter()
            .any(|e| e["reason"] == "restore" && e["user"] == "instance:a")
            .then_some(())
    })
    .await;
    app.stop().await;
}

/// Review (rv-st): Redis pub/sub is not scoped to a database ("publishing on db 10 will be
/// heard by a subscriber on db 1"), but the channels are named from the key prefix only. Two
/// deployments on two databases of one Redis with the default prefix (production on `/0`,
/// staging on `/1`: distinct stores, the snapshot even tells them apart) hear each other's
/// settings. Production applies staging's announcement as soon as its version is higher, and
/// then "restores" it into its own record above every version it has seen: staging switching
/// to DISABLED (or its kill switch) disables production, for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_deployment_on_another_database_never_changes_the_settings() {
    let Some(backend) = Backend::redis() else {
        return;
    };
    let Backend::Redis(redis) = &backend else {
        unreachable!()
    };
    let (prod_url, staging_url) = (format!("{}/0", redis.url()), format!("{}/1", redis.url()));
    let prod = TestApp::spawn(
        &backend,
        &[("REDIS_URL", &prod_url), ("GATEHOUSE_INSTANCE", "prod")],
    )
    .await;
    prod.claim("s1", "alice").await;
    prod.set_mode("ENFORCED").await;
    let staging = TestApp::spawn(
        &backend,
        &[
            ("REDIS_URL", &staging_url),
            ("GATEHOUSE_INSTANCE", "staging"),
        ],
    )
    .await;
    for mode in ["ENFORCED", "LOG_ONLY", "ENFORCED", "DISABLED"] {
        staging.set_mode(mode).await;
    }
    // Several refresh periods (200 ms in tests) for any restore to happen: a fixed wait, since
    // what is checked is that none does.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let mut violations = Vec::new();
    let bob = prod.user("bob");
    let reply = prod.validate(&bob, json!({ "session_id": "s1" })).await;
    if (reply.status, &reply.body["mode"]) != (403, &json!("ENFORCED")) {
        violations.push(format!(
            "production answered bob on alice's session with {} {}",
            reply.status, reply.body
        ));
    }
    let stored: Option<String> = redis::cmd("HGET")
        .arg(gatehouse::store::KeySchema::default().settings())
        .arg("settings")
        .query(&mut redis.client())
        .unwrap();
    let stored: Value = serde_json::from_str(&stored.unwrap_or_default()).unwrap_or(Value::Null);
    if stored["mode"] != "ENFORCED" {
        violations.push(format!("production's own record (db 0) is now {stored}"));
    }
    let history = history(redis);
    let restores: Vec<&Value> = history
        .iter()
        .filter(|e| e["change"] == "restore")
        .collect();
    if !restores.is_empty() {
        violations.push(format!(
            "production's history has restores nobody needed: {restores:?}"
        ));
    }
    assert!(violations.is_empty(), "{violations:#?}");
    staging.stop().await;
    prod.stop().await;
}
