//! Redis Cluster is not supported yet (issue 16): `GATEHOUSE_REDIS_CLUSTER` is refused at
//! start, and a `REDIS_URL` pointed at one node of a cluster fails closed for every key that
//! node does not serve (its `MOVED` replies are errors: 503 under ENFORCED, claims not
//! applied), never allows.

use gatehouse::config::Config;
use serde_json::json;

use crate::common::cluster::RedisCluster;
use crate::common::{Backend, TestApp};

#[test]
fn the_cluster_setting_is_refused_until_it_is_supported() {
    let vars = [("GATEHOUSE_REDIS_CLUSTER", "127.0.0.1:7000,127.0.0.1:7001")];
    let err = Config::from_vars(vars.map(|(k, v)| (k.to_owned(), v.to_owned()))).unwrap_err();
    assert!(err.0[0].contains("not supported yet"), "{err}");
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
