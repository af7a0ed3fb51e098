//! Redis Sentinel: the master is found through the Sentinels, and found again after a
//! failover, with no restart; in between, ENFORCED fails closed; with
//! `GATEHOUSE_REDIS_MIN_REPLICAS=1`, no claim acknowledged with 201 is lost. (The store
//! contract suite runs through a Sentinel too: `store_contract`, `redis_sentinel` cases.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::sentinel::SentinelSet;
use crate::common::{Backend, TestApp, eventually};

/// What the streams saw, and when.
#[derive(Default)]
struct Seen {
    /// Bob (not the owner) allowed: must stay empty.
    bob_allowed: Vec<String>,
    /// Alice's answers that were neither allowed-as-owner nor a fail-closed 503.
    alice_odd: Vec<String>,
    /// Claims answered 201, with when the answer came.
    claimed: Vec<(String, Instant)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_is_followed_without_restart_and_no_acknowledged_claim_is_lost() {
    let Some(set) = SentinelSet::start(1, 3) else {
        return;
    };
    let old_master = set.master_addr().expect("a master");
    let backend = Backend::Sentinel(set);
    let extra = [("GATEHOUSE_REDIS_MIN_REPLICAS", "1")];
    let a = Arc::new(TestApp::spawn(&backend, &extra).await);
    let b = Arc::new(TestApp::spawn(&backend, &extra).await);
    a.claim("s0", "alice").await;
    a.set_mode("ENFORCED").await;
    for app in [&a, &b] {
        let alice = app.user("alice");
        eventually(Duration::from_secs(5), "ENFORCED everywhere", || async {
            let reply = app.validate(&alice, json!({ "session_id": "s0" })).await;
            (reply.body["mode"] == "ENFORCED").then_some(())
        })
        .await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(std::sync::Mutex::new(Seen::default()));
    let mut streams = Vec::new();
    for (n, app) in [a.clone(), b.clone()].into_iter().enumerate() {
        let (stop, seen) = (stop.clone(), seen.clone());
        streams.push(tokio::spawn(async move {
            let (alice, bob) = (app.user("alice"), app.user("bob"));
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let reply = app.validate(&bob, json!({ "session_id": "s0" })).await;
                if reply.body["allowed"] == true {
                    seen.lock().unwrap().bob_allowed.push(format!("{reply:?}"));
                }
                let reply = app.validate(&alice, json!({ "session_id": "s0" })).await;
                let owner = reply.status == 200 && reply.body["reason"] == "owner";
                if !owner && reply.status != 503 {
                    seen.lock().unwrap().alice_odd.push(format!("{reply:?}"));
                }
                let session = format!("c{n}-{i}");
                i += 1;
                if app.claim_for(&session, "alice").await.status == 201 {
                    seen.lock().unwrap().claimed.push((session, Instant::now()));
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // The master crashes.
    let mut backend = backend;
    let killed = Instant::now();
    backend.redis_server().unwrap().crash();
    let Backend::Sentinel(set) = &backend else {
        unreachable!()
    };
    let new_master = eventually(
        Duration::from_secs(30),
        "the Sentinels' failover",
        || async { set.master_addr().filter(|addr| *addr != old_master) },
    )
    .await;
    let failed_over = Instant::now();
    // Both instances answer correctly again within 2 s of the Sentinels' switch.
    for app in [&a, &b] {
        let alice = app.user("alice");
        eventually(
            Duration::from_secs(2),
            "correct answers on the new master",
            || async {
                let reply = app.validate(&alice, json!({ "session_id": "s0" })).await;
                (reply.status == 200 && reply.body["reason"] == "owner").then_some(())
            },
        )
        .await;
    }
    let recovered = Instant::now();
    // The new master has no replica: a claim is applied but cannot be confirmed, and says so.
    let unconfirmed = a.claim_for("after-failover", "alice").await;
    assert_eq!(unconfirmed.status, 504, "{unconfirmed:?}");
    assert_eq!(
        unconfirmed.body["type"],
        "urn:gatehouse:problem:write-outcome-unknown"
    );
    stop.store(true, Ordering::Relaxed);
    for stream in streams {
        stream.await.unwrap();
    }
    println!(
        "failover: {old_master} -> {new_master}; Sentinels switched {:?} after the kill, \
         both instances correct {:?} after the switch",
        failed_over - killed,
        recovered - failed_over
    );

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert!(
        seen.bob_allowed.is_empty(),
        "bob allowed: {:?}",
        seen.bob_allowed
    );
    assert!(
        seen.alice_odd.is_empty(),
        "neither owner nor 503: {:?}",
        seen.alice_odd
    );
    let before_kill: Vec<&String> = seen
        .claimed
        .iter()
        .filter(|(_, at)| *at < killed)
        .map(|(session, _)| session)
        .collect();
    assert!(
        before_kill.len() >= 10,
        "claims ran before the kill: {}",
        before_kill.len()
    );
    let (alice, bob) = (a.user("alice"), a.user("bob"));
    for session in seen.claimed.iter().map(|(s, _)| s) {
        let reply = a.validate(&alice, json!({ "session_id": session })).await;
        assert_eq!(reply.body["reason"], "owner", "{session} lost: {reply:?}");
        let reply = a.validate(&bob, json!({ "session_id": session })).await;
        assert_eq!(reply.body["allowed"], false, "{session}: {reply:?}");
    }
}

/// The old master comes back (frozen, not dead, while the Sentinels failed over) still
/// believing it is the master, with the old owner: an instance must not read from it. After a
/// transfer on the new master is acknowledged, the other instance never allows the old owner
/// again (beyond the cache's invalidation delay).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_master_that_comes_back_is_never_read_from() {
    let Some(set) = SentinelSet::start(1, 3) else {
        return;
    };
    let old_master = set.master_addr().expect("a master");
    let mut backend = Backend::Sentinel(set);
    let a = TestApp::spawn(&backend, &[]).await;
    let b = TestApp::spawn(&backend, &[]).await;
    a.claim("s0", "alice").await;
    a.set_mode("ENFORCED").await;
    let alice = b.user("alice");
    eventually(
        Duration::from_secs(5),
        "b allows alice, ENFORCED",
        || async {
            let reply = b.validate(&alice, json!({ "session_id": "s0" })).await;
            (reply.body["mode"] == "ENFORCED" && reply.body["reason"] == "owner").then_some(())
        },
    )
    .await;

    // Frozen: connections stay open, nothing answers; the Sentinels promote the replica.
    backend.redis_server().unwrap().pause();
    let Backend::Sentinel(set) = &backend else {
        unreachable!()
    };
    eventually(
        Duration::from_secs(30),
        "the Sentinels' failover",
        || async { set.master_addr().filter(|addr| *addr != old_master) },
    )
    .await;
    let transferred = eventually(
        Duration::from_secs(10),
        "a transfer on the new master",
        || async {
            let reply = a
                .call(
                    reqwest::Method::PUT,
                    "/v1/sessions/s0/owner",
                    Some(&a.admin()),
                    Some(json!({ "owner": "bob" })),
                )
                .await;
            (reply.status == 200).then(Instant::now)
        },
    )
    .await;
    // The old master thaws with alice still the owner, and says it is a master until the
    // Sentinels turn it into a replica.
    backend.redis_server().unwrap().resume();
    let mut allowed_late = Vec::new();
    while transferred.elapsed() < Duration::from_secs(4) {
        let reply = b.validate(&alice, json!({ "session_id": "s0" })).await;
        if reply.body["allowed"] == true && transferred.elapsed() > Duration::from_millis(250) {
            allowed_late.push(format!("{:?}: {reply:?}", transferred.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        allowed_late.is_empty(),
        "alice allowed after the transfer: {allowed_late:?}"
    );
    let reply = b.validate(&alice, json!({ "session_id": "s0" })).await;
    assert_eq!(reply.body["reason"], "not_owner", "{reply:?}");
}
