//! The operator tools on a real Redis: `gatehouse migrate` (TTL'd legacy owner keys become
//! persistent, the user index is rebuilt, a second run changes nothing; on one server and on a
//! Redis Cluster, where the steps run in their single-slot forms) and `gatehouse backfill` /
//! `verify` / `rollback` on the census tree.

use std::collections::BTreeSet;
use std::process::Command;

use redis::ConnectionLike;
use serde_json::{Value, json};

use crate::common::Backend;
use crate::common::census::write_census_tree;
use crate::common::cluster::RedisCluster;
use crate::common::processes::RedisServer;

/// A private Redis for `gatehouse migrate`, with the default key names: one server or a
/// 3-primary cluster.
enum Target {
    Server(RedisServer),
    Cluster(RedisCluster),
}

impl Target {
    fn server() -> Option<Self> {
        RedisServer::start().map(Target::Server)
    }

    fn cluster() -> Option<Self> {
        RedisCluster::start(3, 0).map(Target::Cluster)
    }

    /// The settings naming it.
    fn env(&self) -> Vec<(&'static str, String)> {
        match self {
            Target::Server(server) => vec![("REDIS_URL", server.url())],
            Target::Cluster(cluster) => {
                let seeds: Vec<String> = cluster.nodes.iter().map(RedisServer::addr).collect();
                vec![
                    ("REDIS_URL", "redis://cluster".into()),
                    ("GATEHOUSE_REDIS_CLUSTER", seeds.join(",")),
                ]
            }
        }
    }

    /// A connection for seeding and inspecting keys.
    fn conn(&self) -> Box<dyn ConnectionLike> {
        match self {
            Target::Server(server) => Box::new(server.client()),
            Target::Cluster(cluster) => {
                let urls: Vec<String> = cluster.nodes.iter().map(RedisServer::url).collect();
                let client = redis::cluster::ClusterClient::new(urls).unwrap();
                Box::new(client.get_connection().unwrap())
            }
        }
    }
}

/// Runs the binary with `REDIS_URL`: (exit code, stdout as JSON, stderr).
fn gatehouse(redis_url: &str, args: &[&str]) -> (i32, Value, String) {
    gatehouse_on(&[("REDIS_URL", redis_url.to_owned())], args)
}

/// Runs the binary with the settings `env`.
fn gatehouse_on(env: &[(&str, String)], args: &[&str]) -> (i32, Value, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    for (key, _) in std::env::vars() {
        if key.starts_with("GATEHOUSE_") {
            command.env_remove(key);
        }
    }
    let output = command
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("GATEHOUSE_JWT_SECRET", crate::common::SECRET)
        .args(args)
        .output()
        .expect("the binary runs");
    (
        output.status.code().unwrap_or(-1),
        serde_json::from_slice(&output.stdout).unwrap_or(Value::Null),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

type Conn = dyn ConnectionLike;

fn members(redis: &mut Conn, key: &str) -> BTreeSet<String> {
    redis::cmd("SMEMBERS").arg(key).query(redis).unwrap()
}

fn ttl(redis: &mut Conn, key: &str) -> i64 {
    redis::cmd("TTL").arg(key).query(redis).unwrap()
}

#[test]
fn migrations_persist_legacy_keys_rebuild_the_index_and_are_idempotent() {
    if let Some(target) = Target::server() {
        persist_and_rebuild(&target);
    }
}

#[test]
fn migrations_persist_legacy_keys_rebuild_the_index_and_are_idempotent_on_a_cluster() {
    if let Some(target) = Target::cluster() {
        persist_and_rebuild(&target);
    }
}

fn persist_and_rebuild(target: &Target) {
    let env = target.env();
    let mut conn = target.conn();
    let redis = conn.as_mut();
    let set = |redis: &mut Conn, args: &[&str]| {
        redis::cmd(args[0])
            .arg(&args[1..])
            .query::<()>(redis)
            .unwrap();
    };
    // Legacy state: three owner keys with the 24 h TTL, one persistent; an index missing l1
    // and l3, holding a session that has no owner any more and one that is bob's now.
    for (id, owner) in [("l1", "alice"), ("l2", "bob"), ("l3", "alice")] {
        set(
            redis,
            &[
                "SET",
                &format!("chat_session_owner:{id}"),
                owner,
                "EX",
                "86400",
            ],
        );
    }
    set(redis, &["SET", "chat_session_owner:p1", "alice"]);
    set(
        redis,
        &["SADD", "user_chat_sessions:alice", "p1", "gone-1", "l2"],
    );
    set(redis, &["SET", "unrelated:key", "x", "EX", "100"]);

    let (code, dry, err) = gatehouse_on(&env, &["migrate", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(dry[0]["changed"], json!([3]), "{dry}");
    assert_eq!(dry[1]["changed"], json!([3, 2]), "{dry}");
    assert!(
        ttl(redis, "chat_session_owner:l1") > 0,
        "a dry run changes nothing"
    );

    let (code, applied, err) = gatehouse_on(&env, &["migrate"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(applied[0]["changed"], json!([3]));
    assert_eq!(applied[1]["changed"], json!([3, 2]));
    for id in ["l1", "l2", "l3", "p1"] {
        assert_eq!(ttl(redis, &format!("chat_session_owner:{id}")), -1, "{id}");
    }
    assert!(
        ttl(redis, "unrelated:key") > 0,
        "only owner keys are touched"
    );
    let expected = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        members(redis, "user_chat_sessions:alice"),
        expected(&["l1", "l3", "p1"])
    );
    assert_eq!(members(redis, "user_chat_sessions:bob"), expected(&["l2"]));

    // Twice: recorded migrations are skipped; forced, they change nothing.
    let (_, again, _) = gatehouse_on(&env, &["migrate"]);
    assert_eq!(again[0]["skipped"], true);
    assert_eq!(again[1]["skipped"], true);
    let (_, forced, _) = gatehouse_on(&env, &["migrate", "--force"]);
    assert_eq!(forced[0]["changed"], json!([0]), "{forced}");
    assert_eq!(forced[1]["changed"], json!([0, 0]), "{forced}");
    assert_eq!(
        members(redis, "user_chat_sessions:alice"),
        expected(&["l1", "l3", "p1"])
    );
}

fn owner(redis: &mut Conn, id: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(format!("chat_session_owner:{id}"))
        .query(redis)
        .unwrap()
}

fn findings(report: &Value) -> String {
    report["findings"]
        .as_array()
        .map(|lines| {
            lines
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// Issue 14, point 4: owner keys of UUIDs in another spelling are reported, moved to the
/// canonical id only with `--rewrite-session-ids` (key and index, idempotently), and
/// collisions (two spellings, two owners) are reported and never resolved.
#[test]
fn canonical_ids_migration_reports_rewrites_and_leaves_collisions() {
    if let Some(target) = Target::server() {
        canonical_ids(&target);
    }
}

#[test]
fn canonical_ids_migration_reports_rewrites_and_leaves_collisions_on_a_cluster() {
    if let Some(target) = Target::cluster() {
        canonical_ids(&target);
    }
}

fn canonical_ids(target: &Target) {
    let env = target.env();
    let mut conn = target.conn();
    let redis = conn.as_mut();
    let legacy = [
        // Moved: one spelling, no canonical key.
        ("3F2B8C1E-6A4D-4A43-9D36-2F0E6C1B8A77", "alice"),
        ("urn:uuid:0a1b2c3d-0000-4000-8000-00000000abcd", "bob"),
        // Merged: the canonical key has the same owner.
        ("cccccccc-0000-4000-8000-000000000003", "gina"),
        ("CCCCCCCC000040008000000000000003", "gina"),
        // Collisions: two spellings, two owners (with and without the canonical key).
        ("AAAAAAAA-0000-4000-8000-000000000001", "carol"),
        ("aaaaaaaa000040008000000000000001", "dave"),
        ("bbbbbbbb-0000-4000-8000-000000000002", "erin"),
        ("BBBBBBBB-0000-4000-8000-000000000002", "frank"),
        // Untouched: not a UUID; nearly one (reported: checks of it are refused now).
        ("Session_ABC", "alice"),
        ("3f2b8c1e6a4d-4a43-9d36-2f0e6c1b8a77", "zed"),
    ];
    for (id, user) in legacy {
        // Two commands: on a Cluster the keys live in different slots.
        redis::cmd("SET")
            .arg(format!("chat_session_owner:{id}"))
            .arg(user)
            .query::<()>(redis)
            .unwrap();
        redis::cmd("SADD")
            .arg(format!("user_chat_sessions:{user}"))
            .arg(id)
            .query::<()>(redis)
            .unwrap();
    }
    let snapshot = |redis: &mut Conn| {
        legacy
            .iter()
            .map(|(id, _)| owner(redis, id))
            .collect::<Vec<_>>()
    };
    let before = snapshot(redis);

    // Without the flag: a report, nothing changed, not recorded; collisions fail the run.
    let (code, reports, err) = gatehouse_on(&env, &["migrate"]);
    assert_eq!(code, 1, "collisions are an exit code: {err}");
    let report = &reports[2];
    assert_eq!(report["id"], "0003_canonical_session_ids", "{reports}");
    assert_eq!(report["report_only"], true);
    assert_eq!(report["changed"], json!([3]), "{report}");
    assert_eq!(report["collisions"], 2);
    let text = findings(report);
    assert!(text.contains("--rewrite-session-ids"), "{text}");
    assert!(
        text.contains("collision: aaaaaaaa-0000-4000-8000-000000000001"),
        "{text}"
    );
    assert!(
        text.contains("collision: bbbbbbbb-0000-4000-8000-000000000002"),
        "{text}"
    );
    assert!(text.contains("refused spelling"), "{text}");
    assert_eq!(snapshot(redis), before, "a report changes nothing");

    // With the flag: moved and merged; collisions left exactly as they were.
    let (code, reports, err) = gatehouse_on(&env, &["migrate", "--rewrite-session-ids"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(reports[2]["report_only"], false);
    assert_eq!(reports[2]["changed"], json!([3]), "{}", reports[2]);
    assert_eq!(reports[2]["collisions"], 2);
    let expected = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    for (id, user) in [
        ("3f2b8c1e-6a4d-4a43-9d36-2f0e6c1b8a77", Some("alice")),
        ("3F2B8C1E-6A4D-4A43-9D36-2F0E6C1B8A77", None),
        ("0a1b2c3d-0000-4000-8000-00000000abcd", Some("bob")),
        ("urn:uuid:0a1b2c3d-0000-4000-8000-00000000abcd", None),
        ("cccccccc-0000-4000-8000-000000000003", Some("gina")),
        ("CCCCCCCC000040008000000000000003", None),
        ("AAAAAAAA-0000-4000-8000-000000000001", Some("carol")),
        ("aaaaaaaa000040008000000000000001", Some("dave")),
        ("aaaaaaaa-0000-4000-8000-000000000001", None),
        ("bbbbbbbb-0000-4000-8000-000000000002", Some("erin")),
        ("BBBBBBBB-0000-4000-8000-000000000002", Some("frank")),
        ("Session_ABC", Some("alice")),
        ("3f2b8c1e6a4d-4a43-9d36-2f0e6c1b8a77", Some("zed")),
    ] {
        assert_eq!(owner(redis, id).as_deref(), user, "{id}");
    }
    assert_eq!(
        members(redis, "user_chat_sessions:alice"),
        expected(&["3f2b8c1e-6a4d-4a43-9d36-2f0e6c1b8a77", "Session_ABC"])
    );
    assert_eq!(
        members(redis, "user_chat_sessions:bob"),
        expected(&["0a1b2c3d-0000-4000-8000-00000000abcd"])
    );
    assert_eq!(
        members(redis, "user_chat_sessions:gina"),
        expected(&["cccccccc-0000-4000-8000-000000000003"])
    );
    assert_eq!(
        members(redis, "user_chat_sessions:dave"),
        expected(&["aaaaaaaa000040008000000000000001"])
    );
    let recorded: Option<String> = redis::cmd("HGET")
        .arg("gatehouse:migrations")
        .arg("0003_canonical_session_ids")
        .query(redis)
        .unwrap();
    assert!(recorded.is_none(), "not recorded while collisions remain");

    // Idempotent: again, nothing moves.
    let (_, reports, _) = gatehouse_on(&env, &["migrate", "--rewrite-session-ids"]);
    assert_eq!(reports[2]["changed"], json!([0]), "{}", reports[2]);
    assert_eq!(reports[2]["collisions"], 2);

    // An admin resolves the collisions; then the rest moves and the migration is recorded.
    for id in [
        "aaaaaaaa000040008000000000000001",
        "BBBBBBBB-0000-4000-8000-000000000002",
    ] {
        redis::cmd("DEL")
            .arg(format!("chat_session_owner:{id}"))
            .query::<()>(redis)
            .unwrap();
    }
    let (code, reports, err) = gatehouse_on(&env, &["migrate", "--rewrite-session-ids"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(reports[2]["changed"], json!([1]), "{}", reports[2]);
    assert_eq!(
        owner(redis, "aaaaaaaa-0000-4000-8000-000000000001").as_deref(),
        Some("carol")
    );
    let (_, reports, _) = gatehouse_on(&env, &["migrate", "--rewrite-session-ids"]);
    assert_eq!(reports[2]["skipped"], true, "{}", reports[2]);
}

#[test]
fn backfill_verify_and_rollback_from_the_command_line() {
    let Some(mut backend) = Backend::redis() else {
        return;
    };
    let url = backend.redis_server().unwrap().url();
    let dir = tempfile::tempdir().unwrap();
    write_census_tree(dir.path(), 2).unwrap();
    let data = dir.path().to_str().unwrap();

    let (code, report, _) = gatehouse(&url, &["verify", "--data-dir", data]);
    assert_eq!((code, report["missing"].clone()), (1, json!(54)));
    // A data directory named twice is refused, as over HTTP.
    let (code, _, err) = gatehouse(
        &url,
        &[
            "backfill",
            "--data-dir",
            data,
            "--data-dir",
            data,
            "--default-owner",
            "admin",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("sources[1] is sources[0] again"), "{err}");
    let (code, job, err) = gatehouse(
        &url,
        &["backfill", "--data-dir", data, "--default-owner", "admin"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(job["counts"]["assigned"], 54, "{job}");
    assert_eq!(job["counts"]["errors"], 2);
    let (code, report, _) = gatehouse(&url, &["verify", "--data-dir", data]);
    assert_eq!((code, report["complete"].clone()), (0, json!(true)));
    assert_eq!(report["per_user"], json!({ "admin": 54 }));
    let (code, again, _) = gatehouse(
        &url,
        &["backfill", "--data-dir", data, "--default-owner", "admin"],
    );
    assert_eq!(code, 0);
    assert_eq!(again["counts"]["skipped_owned"], 54);

    // The jobs, newest first, in pages.
    let job_id = job["job_id"].as_str().unwrap();
    let ids = |page: &Value| -> Vec<String> {
        page["jobs"]
            .as_array()
            .map(|jobs| jobs.iter().map(|j| j["job_id"].to_string()).collect())
            .unwrap_or_default()
    };
    let (code, page, err) = gatehouse(&url, &["backfill", "jobs"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        ids(&page),
        [again["job_id"].to_string(), job["job_id"].to_string()]
    );
    assert_eq!(page["jobs"][1]["counts"]["assigned"], 54, "{page}");
    // Summaries, as GET /v1/backfill lists them: how many sources and errors, not the lists.
    assert_eq!(page["jobs"][1]["source_count"], 1, "{page}");
    assert_eq!(page["jobs"][1]["counts"]["errors"], 2, "{page}");
    for list in ["sources", "errors"] {
        assert!(page["jobs"][1].get(list).is_none(), "{list}: {page}");
    }
    assert!(page.get("next_before").is_none(), "{page}");
    let (_, first, _) = gatehouse(&url, &["backfill", "jobs", "--limit", "1"]);
    assert_eq!(ids(&first), [again["job_id"].to_string()]);
    let before = first["next_before"].as_str().unwrap();
    let (_, rest, _) = gatehouse(
        &url,
        &["backfill", "jobs", "--limit", "1", "--before", before],
    );
    assert_eq!(ids(&rest), [job["job_id"].to_string()], "{rest}");
    assert!(rest.get("next_before").is_none(), "{rest}");
    // A reader that stops early (`| head -1`): the listing ends quietly.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .env("REDIS_URL", &url)
        .args(["backfill", "jobs"])
        .stdout(writer)
        .output()
        .unwrap();
    let quiet = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{quiet}");
    assert!(!quiet.contains("panicked"), "{quiet}");
    let (code, _, err) = gatehouse(&url, &["backfill", "jobs", "--before", "bf-1"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--before") && err.contains("next_before"),
        "{err}"
    );

    let (code, rolled, err) = gatehouse(&url, &["rollback", job_id]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(rolled["rollback"]["released"], 54);
    assert_eq!(rolled["released"], 54);
    assert!(err.contains("released 54"), "{err}");
    let (_, report, _) = gatehouse(&url, &["verify", "--data-dir", data]);
    assert_eq!(report["missing"], 54);

    // Twice: nothing more released, and said so; the record as the first rollback left it.
    let (code, twice, err) = gatehouse(&url, &["rollback", job_id]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        (
            twice["released"].clone(),
            twice["already_rolled_back"].clone()
        ),
        (json!(0), json!(true)),
        "{twice}"
    );
    assert_eq!(twice["rollback"], rolled["rollback"]);
    let at = rolled["rollback"]["at"].as_str().unwrap();
    assert!(
        err.contains(&format!(
            "nothing more was released: job {job_id} was already rolled back at {at}"
        )),
        "{err}"
    );

    let (code, _, err) = gatehouse(
        &url,
        &[
            "backfill",
            "--data-dir",
            "/nonexistent",
            "--default-owner",
            "admin",
        ],
    );
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = gatehouse("", &["migrate"]);
    assert_eq!(code, 2, "no REDIS_URL: {err}");
}
