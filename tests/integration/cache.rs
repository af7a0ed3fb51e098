//! The owner cache across instances: a transfer or release through A is never answered from
//! B's cache once acknowledged plus the propagation bound, and B stops using its cache while
//! it cannot receive invalidations, even when nothing tells it the subscription is gone.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{Backend, TcpProxy, TestApp, eventually};

/// How long after an acknowledged change B may still answer from its cache. Generous next to
/// the measured bound (p99 in the low milliseconds, see `bench/`): CI shares
/// 2 cores between every test.
const BOUND: Duration = Duration::from_millis(150);

async fn cache_state(app: &TestApp) -> Value {
    app.call(Method::GET, "/readyz", None, None).await.body
}

async fn live(app: &TestApp) {
    eventually(Duration::from_secs(10), "owner cache live", || async {
        (cache_state(app).await["owner_cache"] == "live").then_some(())
    })
    .await;
}

/// What `app` answers about `session` for `user`: (reason, owner).
async fn ask(app: &TestApp, user: &str, session: &str) -> (Value, Value) {
    let service = app.token("chat-backend", &[], &["gatehouse:validate"]);
    let reply = app
        .validate(&service, json!({ "session_id": session, "user": user }))
        .await;
    (reply.body["reason"].clone(), reply.body["owner"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_and_releases_through_a_are_never_stale_on_b() {
    let Some(backend) = Backend::redis() else {
        return;
    };
    let a = TestApp::spawn(&backend, &[]).await;
    let b = TestApp::spawn(&backend, &[]).await;
    live(&b).await;
    a.claim("s1", "user-0").await;
    let admin = a.admin();
    let mut owner = "user-0".to_owned();
    for round in 1..=30 {
        // Warm B's cache with the current owner (twice: the second is a hit).
        for _ in 0..2 {
            assert_eq!(ask(&b, &owner, "s1").await, (json!("owner"), json!(owner)));
        }
        let next = format!("user-{round}");
        let reply = a
            .call(
                Method::PUT,
                "/v1/sessions/s1/owner",
                Some(&admin),
                Some(json!({ "owner": next, "expected_owner": owner })),
            )
            .await;
        assert_eq!(reply.status, 200, "{reply:?}");
        eventually(
            BOUND,
            &format!("round {round}: B to answer the new owner, not its stale cache"),
            || async {
                (ask(&b, &next, "s1").await == (json!("owner"), json!(next))).then_some(())
            },
        )
        .await;
        owner = next;
    }
    let reply = a
        .call(Method::DELETE, "/v1/sessions/s1", Some(&admin), None)
        .await;
    assert_eq!(reply.status, 204);
    eventually(BOUND, "B to see the release", || async {
        (ask(&b, &owner, "s1").await.0 == json!("no_owner")).then_some(())
    })
    .await;
    // ...and a claim after that is seen too (a cached "no owner" is dropped).
    a.claim("s1", "zoe").await;
    eventually(BOUND, "B to see zoe's claim", || async {
        (ask(&b, "zoe", "s1").await.0 == json!("owner")).then_some(())
    })
    .await;

    let state = cache_state(&b).await;
    assert!(
        state["owner_cache_hits"].as_u64().unwrap() >= 30,
        "the cache was used: {state}"
    );
    a.stop().await;
    b.stop().await;
}

/// An admin transfers `s1` to bob through `a`.
async fn transfer_s1_to_bob(a: &TestApp) {
    let reply = a
        .call(
            Method::PUT,
            "/v1/sessions/s1/owner",
            Some(&a.admin()),
            Some(json!({ "owner": "bob" })),
        )
        .await;
    assert_eq!(reply.status, 200);
}

/// A on Redis, B on the same Redis through a [`TcpProxy`], B's cache live, and `s1` claimed by
/// alice through A. `None` when Redis cannot be started (outside CI).
async fn a_and_b_behind_a_proxy() -> Option<(Backend, TcpProxy, TestApp, TestApp)> {
    let mut backend = Backend::redis()?;
    let proxy = TcpProxy::start(backend.redis_server().unwrap().addr()).await;
    let a = TestApp::spawn(&backend, &[]).await;
    let via_proxy = proxy.redis_url();
    let b = TestApp::spawn(&backend, &[("REDIS_URL", &via_proxy)]).await;
    live(&b).await;
    a.claim("s1", "alice").await;
    Some((backend, proxy, a, b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_cut_off_from_invalidations_stops_using_its_cache() {
    let Some((_backend, proxy, a, b)) = a_and_b_behind_a_proxy().await else {
        return;
    };
    for _ in 0..3 {
        assert_eq!(ask(&b, "alice", "s1").await.0, json!("owner"));
    }

    proxy.cut();
    eventually(Duration::from_secs(5), "B bypasses its cache", || async {
        (cache_state(&b).await["owner_cache"] == "bypassed").then_some(())
    })
    .await;
    // Cut off, B does not answer from what it cached: it cannot know, and says so.
    assert_eq!(ask(&b, "alice", "s1").await.0, json!("store_unavailable"));
    transfer_s1_to_bob(&a).await;

    proxy.restore();
    live(&b).await;
    assert_eq!(ask(&b, "bob", "s1").await, (json!("owner"), json!("bob")));
    a.stop().await;
    b.stop().await;
}

/// A silent partition: B's connections to Redis stay open but carry nothing, so no error ever
/// arrives. B must notice by its missing heartbeats and stop answering from its cache, while A
/// (still connected) transfers the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silently_stalled_subscription_stops_the_cache_within_the_heartbeat_deadline() {
    let Some((_backend, proxy, a, b)) = a_and_b_behind_a_proxy().await else {
        return;
    };
    // The claim's own announcement may reach B after B first reads the owner (and drop that
    // entry): wait until B answers from its cache.
    let hits = |state: Value| state["owner_cache_hits"].as_u64().unwrap();
    eventually(
        Duration::from_secs(5),
        "B answers from its cache",
        || async {
            let before = hits(cache_state(&b).await);
            for _ in 0..3 {
                assert_eq!(ask(&b, "alice", "s1").await.0, json!("owner"));
            }
            (hits(cache_state(&b).await) >= before + 2).then_some(())
        },
    )
    .await;

    proxy.stall().await;
    transfer_s1_to_bob(&a).await;
    let acknowledged = std::time::Instant::now();
    // B heard nothing of the transfer. Until the deadline it may still answer from its cache;
    // after it, never: it takes the subscription for lost and cannot reach Redis either.
    let deadline = gatehouse::store::HEARTBEAT_DEADLINE + Duration::from_secs(1);
    loop {
        let (reason, owner) = ask(&b, "alice", "s1").await;
        if reason != json!("owner") {
            assert_eq!(reason, json!("store_unavailable"), "owner {owner}");
            break;
        }
        assert!(
            acknowledged.elapsed() < deadline,
            "B still answers the old owner from its cache {:?} after the transfer",
            acknowledged.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(cache_state(&b).await["owner_cache"], "bypassed");

    proxy.restore();
    live(&b).await;
    assert_eq!(ask(&b, "bob", "s1").await, (json!("owner"), json!("bob")));
    a.stop().await;
    b.stop().await;
}
