//! Redis Cluster (`GATEHOUSE_REDIS_CLUSTER`): the settings, a slot moved by `redis-cli
//! --cluster reshard` under a stream of checks (no wrong answer, 503s at most), and a
//! `REDIS_URL` pointed at one node of a cluster without the setting, which fails closed for
//! every key that node does not serve (its `MOVED` replies are errors: 503 under ENFORCED,
//! claims not applied), never allows. The whole HTTP suite (`both_backends!`) and the store
//! contract (`every_store!`) run on a shared cluster as well.

use std::process::Command;
use std::time::{Duration, Instant};

use gatehouse::config::Config;
use redis::cluster_routing::Slot;
use serde_json::json;

use crate::common::cluster::RedisCluster;
use crate::common::{Backend, TestApp};

fn config(vars: &[(&str, &str)]) -> Result<Config, gatehouse::config::ConfigError> {
    Config::from_vars(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())))
}

#[test]
fn the_cluster_setting_names_seed_nodes_and_needs_redis_url() {
    let seeds = ("GATEHOUSE_REDIS_CLUSTER", "127.0.0.1:7000, [::1]:7001");
    let c = config(&[("REDIS_URL", "redis://cluster"), seeds]).unwrap();
    assert_eq!(
        c.redis_options().unwrap().cluster.unwrap(),
        [("127.0.0.1".to_owned(), 7000), ("::1".to_owned(), 7001)]
    );
    let problems = |vars: &[(&str, &str)]| config(vars).unwrap_err().0.join("\n");
    assert!(problems(&[seeds]).contains("set REDIS_URL too"));
    let sentinel = [
        ("REDIS_URL", "redis://m"),
        seeds,
        ("GATEHOUSE_REDIS_SENTINELS", "127.0.0.1:26379"),
        ("GATEHOUSE_REDIS_SENTINEL_MASTER", "m"),
    ];
    assert!(problems(&sentinel).contains("choose one"));
    let twice = ("GATEHOUSE_REDIS_CLUSTER", "h:1,h:1");
    assert!(problems(&[("REDIS_URL", "redis://c"), twice]).contains("listed twice"));
    let bad = ("GATEHOUSE_REDIS_CLUSTER", "h");
    assert!(problems(&[("REDIS_URL", "redis://c"), bad]).contains("host:port"));
    // The owner cache is off on a Cluster, and asking for it is refused.
    assert!(c.owner_cache.is_none());
    let url = ("REDIS_URL", "redis://cluster");
    let cache = ("GATEHOUSE_OWNER_CACHE", "on");
    assert!(problems(&[url, seeds, cache]).contains("GATEHOUSE_OWNER_CACHE: not with"));
    assert!(config(&[url, seeds, ("GATEHOUSE_OWNER_CACHE", "off")]).is_ok());
    let tagged = ("GATEHOUSE_OWNER_KEY_PREFIX", "{owners}:");
    assert!(problems(&[url, seeds, tagged]).contains("no hash tag"));
    assert!(
        config(&[("REDIS_URL", "redis://h"), tagged]).is_ok(),
        "one server: fine"
    );
}

/// `n` session ids whose owner keys hash to `slot`.
fn sessions_in_slot(slot: u16, n: usize) -> Vec<String> {
    let slot = Slot::new(slot).unwrap();
    (0..)
        .map(|i| format!("r{i}"))
        .filter(|id| Slot::for_key(format!("chat_session_owner:{id}")) == slot)
        .take(n)
        .collect()
}

fn node_id(node: &crate::common::processes::RedisServer) -> String {
    redis::cmd("CLUSTER")
        .arg("MYID")
        .query(&mut node.client())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_moved_under_a_stream_of_checks_gives_no_wrong_answer() {
    let Some(cluster) = RedisCluster::start(3, 1) else {
        return;
    };
    let seeds: Vec<String> = cluster.nodes[..3].iter().map(|n| n.addr()).collect();
    let seeds = seeds.join(",");
    let app = TestApp::spawn(
        &Backend::Memory,
        &[
            ("REDIS_URL", "redis://cluster"),
            ("GATEHOUSE_REDIS_CLUSTER", &seeds),
            ("GATEHOUSE_INITIAL_MODE", "ENFORCED"),
            ("GATEHOUSE_OWNER_CACHE", "off"),
        ],
    )
    .await;
    // Slot 0 is the first primary's first slot: `reshard --cluster-slots 1` moves it.
    let sessions = sessions_in_slot(0, 12);
    for session in &sessions {
        app.claim(session, "alice").await;
    }
    let before = cluster.node_of(&format!("chat_session_owner:{}", sessions[0]));
    let (alice, bob) = (app.user("alice"), app.user("bob"));
    let checks = async {
        let (mut answers, mut unavailable) = (0, 0);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(6) {
            for session in &sessions {
                let as_alice = app.validate(&alice, json!({ "session_id": session })).await;
                let as_bob = app.validate(&bob, json!({ "session_id": session })).await;
                assert_eq!(as_bob.body["allowed"], false, "{session}: {as_bob:?}");
                match as_alice.status {
                    200 => assert_eq!(as_alice.body["reason"], "owner", "{as_alice:?}"),
                    503 => unavailable += 1,
                    _ => panic!("{session}: {as_alice:?}"),
                }
                answers += 2;
            }
        }
        (answers, unavailable)
    };
    let (from, to) = (node_id(&cluster.nodes[0]), node_id(&cluster.nodes[1]));
    let entry = cluster.nodes[0].addr();
    let reshard = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_millis(500));
        Command::new("redis-cli")
            .args(["--cluster", "reshard", &entry])
            .args(["--cluster-from", &from, "--cluster-to", &to])
            .args(["--cluster-slots", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli runs")
    });
    let ((answers, unavailable), resharded) = tokio::join!(checks, reshard);
    let resharded = resharded.unwrap();
    assert!(
        resharded.status.success(),
        "reshard: {}",
        String::from_utf8_lossy(&resharded.stdout)
    );
    let after = cluster.node_of(&format!("chat_session_owner:{}", sessions[0]));
    assert_ne!(before, after, "the slot moved");
    println!(
        "{answers} answers while slot 0 moved from {before} to {after}: {unavailable} were 503"
    );
    // And after the move every check is answered from the new node.
    for session in &sessions {
        let reply = app.validate(&alice, json!({ "session_id": session })).await;
        assert_eq!(reply.body["reason"], "owner", "{reply:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_of_a_cluster_as_redis_url_fails_closed_for_the_slots_it_does_not_serve() {
    let Some(cluster) = RedisCluster::start(3, 0) else {
        return;
    };
    let node = cluster.nodes[0].addr();
    let url = cluster.nodes[0].url();
    let app = TestApp::spawn(
        &Backend::Memory,
        &[("REDIS_URL", &url), ("GATEHOUSE_INITIAL_MODE", "ENFORCED")],
    )
    .await;
    let (alice, bob) = (app.user("alice"), app.user("bob"));
    let (mut here, mut elsewhere) = (0, 0);
    for i in 0..30 {
        let session = format!("c{i}");
        let on_this_node = cluster.node_of(&format!("chat_session_owner:{session}")) == node;
        let claim = app.claim_for(&session, "alice").await;
        let (as_alice, as_bob) = (
            app.validate(&alice, json!({ "session_id": session })).await,
            app.validate(&bob, json!({ "session_id": session })).await,
        );
        assert_eq!(as_bob.body["allowed"], false, "{session}: {as_bob:?}");
        if on_this_node {
            here += 1;
        } else {
            elsewhere += 1;
            assert_eq!(claim.status, 503, "{session}: {claim:?}");
            assert_eq!(as_alice.status, 503, "{session}: {as_alice:?}");
            assert_eq!(as_alice.body["allowed"], false, "{session}: {as_alice:?}");
        }
    }
    assert!(
        here > 0 && elsewhere > 0,
        "{here} here, {elsewhere} elsewhere"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_wait_for_a_replica_of_their_own_primary() {
    let Some(Backend::Cluster { env, .. }) = Backend::cluster() else {
        return;
    };
    let mut vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    vars.push(("GATEHOUSE_REDIS_MIN_REPLICAS", "1"));
    vars.push(("GATEHOUSE_INITIAL_MODE", "ENFORCED"));
    let app = TestApp::spawn(&Backend::Memory, &vars).await;
    // Sessions on every primary: each claim's WAIT runs on the primary of its owner key.
    for i in 0..20 {
        let session = format!("w{i}");
        let claim = app.claim_for(&session, "alice").await;
        assert_eq!(claim.status, 201, "{session}: {claim:?}");
        let reply = app
            .validate(&app.user("alice"), json!({ "session_id": session }))
            .await;
        assert_eq!(reply.body["reason"], "owner", "{reply:?}");
    }
    let replicas = ("GATEHOUSE_REDIS_MIN_REPLICAS", "2");
    vars.retain(|(k, _)| *k != "GATEHOUSE_REDIS_MIN_REPLICAS");
    vars.push(replicas);
    let strict = TestApp::spawn(&Backend::Memory, &vars).await;
    // Each primary has one replica: two cannot confirm, so the claim is not acknowledged.
    let claim = strict.claim_for("w-unconfirmed", "alice").await;
    assert_eq!(claim.status, 504, "{claim:?}");
}

/// `INFO replication` of `node`.
fn replication(node: &crate::common::processes::RedisServer) -> String {
    redis::cmd("INFO")
        .arg("replication")
        .query::<String>(&mut node.client())
        .unwrap_or_default()
}

/// A primary killed (SIGKILL) under a stream of checks: answers are the owner's or 503 (never
/// an allow for anyone else) until the cluster promotes its replica, and correct within 2 s
/// of that; with `GATEHOUSE_REDIS_MIN_REPLICAS=1` every claim acknowledged before the kill is
/// owned after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_failing_over_gives_no_wrong_answer_and_keeps_acknowledged_claims() {
    let Some(mut cluster) = RedisCluster::start(3, 1) else {
        return;
    };
    let seeds: Vec<String> = cluster.nodes.iter().map(|n| n.addr()).collect();
    let seeds = seeds.join(",");
    let app = TestApp::spawn(
        &Backend::Memory,
        &[
            ("REDIS_URL", "redis://cluster"),
            ("GATEHOUSE_REDIS_CLUSTER", &seeds),
            ("GATEHOUSE_REDIS_MIN_REPLICAS", "1"),
            ("GATEHOUSE_INITIAL_MODE", "ENFORCED"),
            ("GATEHOUSE_OWNER_CACHE", "off"),
        ],
    )
    .await;
    let sessions: Vec<String> = (0..30).map(|i| format!("f{i}")).collect();
    for session in &sessions {
        let claim = app.claim_for(session, "alice").await;
        assert_eq!(claim.status, 201, "{session}: {claim:?}");
    }
    let victim = cluster.nodes[0].addr();
    let on_victim = sessions
        .iter()
        .filter(|s| cluster.node_of(&format!("chat_session_owner:{s}")) == victim)
        .count();
    assert!(
        on_victim > 0,
        "some sessions live on the primary that is killed"
    );
    let (alice, bob) = (app.user("alice"), app.user("bob"));
    let victim_port = format!("master_port:{}", victim.rsplit(':').next().unwrap());
    let replica = (3..6)
        .find(|i| replication(&cluster.nodes[*i]).contains(&victim_port))
        .expect("the killed primary has a replica");
    cluster.nodes[0].crash();
    let killed = Instant::now();
    let (mut switched, mut correct_again, mut unavailable) = (None, None, 0);
    while killed.elapsed() < Duration::from_secs(20) && correct_again.is_none() {
        if switched.is_none() && replication(&cluster.nodes[replica]).contains("role:master") {
            switched = Some(killed.elapsed());
        }
        let mut all_correct = true;
        for session in &sessions {
            let as_bob = app.validate(&bob, json!({ "session_id": session })).await;
            assert_eq!(as_bob.body["allowed"], false, "{session}: {as_bob:?}");
            let as_alice = app.validate(&alice, json!({ "session_id": session })).await;
            match as_alice.status {
                200 => assert_eq!(as_alice.body["reason"], "owner", "{as_alice:?}"),
                503 => {
                    unavailable += 1;
                    all_correct = false;
                }
                _ => panic!("{session}: {as_alice:?}"),
            }
        }
        if all_correct && switched.is_some() {
            correct_again = Some(killed.elapsed());
        }
    }
    let switched = switched.expect("the cluster promoted the replica");
    // Until the promotion and 2 s after it, answers may be 503s; never later.
    let correct_again = correct_again.expect("every check answered correctly again");
    println!(
        "primary killed: its replica promoted after {switched:?}, every check correct after \
         {correct_again:?}, {unavailable} checks answered 503 ({on_victim} of 30 sessions on it)"
    );
    assert!(
        correct_again <= switched + Duration::from_secs(2),
        "{correct_again:?} after the kill, {switched:?} the switch"
    );
}

/// A batch of lookups on one primary while one of its slots is half-migrated (the key moved,
/// the slot not yet handed over): the moved key answers `ASK`, redis-rs sends the pipeline
/// again whole to the other node, where the other key answers `MOVED`; each key is then asked
/// on its own, and both owners come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_batched_across_a_half_migrated_slot_get_every_owner() {
    use gatehouse::session_id::SessionId;
    use gatehouse::store::{OwnershipStore, RedisStore};
    let Some(cluster) = RedisCluster::start(3, 0) else {
        return;
    };
    let seeds: Vec<String> = cluster.nodes.iter().map(|n| n.addr()).collect();
    let config = config(&[
        ("REDIS_URL", "redis://cluster"),
        ("GATEHOUSE_REDIS_CLUSTER", &seeds.join(",")),
    ])
    .unwrap();
    let store = RedisStore::connect(&config.redis_options().unwrap()).unwrap();
    // Two sessions on the first primary, in slots 0 and 1.
    let (moved, stays) = (
        sessions_in_slot(0, 1).remove(0),
        sessions_in_slot(1, 1).remove(0),
    );
    let id = |s: &str| SessionId::parse(s).unwrap();
    store.claim(&id(&moved), "alice").await.unwrap();
    store.claim(&id(&stays), "bob").await.unwrap();
    let (source, target) = (&cluster.nodes[0], &cluster.nodes[1]);
    let (source_id, target_id) = (node_id(source), node_id(target));
    let setslot = |node: &crate::common::processes::RedisServer, args: &[&str]| {
        redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(args)
            .query::<()>(&mut node.client())
            .unwrap();
    };
    setslot(target, &["0", "IMPORTING", &source_id]);
    setslot(source, &["0", "MIGRATING", &target_id]);
    let key = format!("chat_session_owner:{moved}");
    redis::cmd("MIGRATE")
        .arg("127.0.0.1")
        .arg(target.port())
        .arg(&key)
        .arg(0)
        .arg(5000)
        .query::<()>(&mut source.client())
        .unwrap();
    for _ in 0..3 {
        let owners = store.owners(&[id(&moved), id(&stays)]).await;
        assert_eq!(
            owners.unwrap(),
            [Some("alice".to_owned()), Some("bob".to_owned())]
        );
    }
    for node in &cluster.nodes {
        setslot(node, &["0", "NODE", &target_id]);
    }
}

/// Backfill on a Cluster: a session whose owner key holds something else (a hash) is skipped
/// as owned, the rest of the batch is assigned, and the rollback releases exactly what the job
/// assigned (not a session the same owner got another way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_batches_on_a_cluster_roll_back_exactly() {
    use gatehouse::session_id::SessionId;
    use gatehouse::store::{BackfillStore, OwnershipStore, RedisStore};
    let Some(Backend::Cluster { cluster, env }) = Backend::cluster() else {
        return;
    };
    let options = Config::from_vars(env.clone())
        .unwrap()
        .redis_options()
        .unwrap();
    let store = RedisStore::connect(&options).unwrap();
    let prefix = &options.keys.owner_prefix;
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.url()).collect();
    let mut raw = redis::cluster::ClusterClient::new(urls)
        .unwrap()
        .get_connection()
        .unwrap();
    redis::cmd("HSET")
        .arg(format!("{prefix}b2"))
        .arg("f")
        .arg("v")
        .query::<()>(&mut raw)
        .unwrap();
    let id = |s: &str| SessionId::parse(s).unwrap();
    store.claim(&id("b4"), "legacy").await.unwrap();
    let batch: Vec<String> = ["b1", "b2", "b3", "b4"].map(String::from).to_vec();
    assert_eq!(store.assign("job-1", "legacy", &batch).await.unwrap(), 2);
    // Sent again (as after a failure): the same two, counted again by the retry.
    assert_eq!(store.assign("job-1", "legacy", &batch).await.unwrap(), 2);
    assert_eq!(store.assigned_count("job-1").await.unwrap(), 2);
    let released = store
        .release_assigned("job-1", "legacy", &batch)
        .await
        .unwrap();
    assert_eq!(released.released, 2, "{:?}", released.kept);
    assert_eq!(released.kept, ["b2", "b4"]);
    assert_eq!(store.owner(&id("b1")).await.unwrap(), None);
    assert_eq!(
        store.owner(&id("b4")).await.unwrap().as_deref(),
        Some("legacy")
    );
}
