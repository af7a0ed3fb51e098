//! The operator tools on a real Redis: `gatehouse migrate` (TTL'd legacy owner keys become
//! persistent, the user index is rebuilt, a second run changes nothing) and `gatehouse
//! backfill` / `verify` / `rollback` on the census tree.

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::{Value, json};

use crate::common::Backend;
use gatehouse::backfill::sources::write_census_tree;

/// Runs the binary with `REDIS_URL`: (exit code, stdout as JSON, stderr).
fn gatehouse(redis_url: &str, args: &[&str]) -> (i32, Value, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    for (key, _) in std::env::vars() {
        if key.starts_with("GATEHOUSE_") {
            command.env_remove(key);
        }
    }
    let output = command
        .env("REDIS_URL", redis_url)
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

fn members(redis: &mut redis::Connection, key: &str) -> BTreeSet<String> {
    redis::cmd("SMEMBERS").arg(key).query(redis).unwrap()
}

fn ttl(redis: &mut redis::Connection, key: &str) -> i64 {
    redis::cmd("TTL").arg(key).query(redis).unwrap()
}

#[test]
fn migrations_persist_legacy_keys_rebuild_the_index_and_are_idempotent() {
    let Some(mut backend) = Backend::redis() else {
        return;
    };
    let server = backend.redis_server().unwrap();
    let url = server.url();
    let mut redis = server.client();
    let set = |redis: &mut redis::Connection, args: &[&str]| {
        redis::cmd(args[0])
            .arg(&args[1..])
            .query::<()>(redis)
            .unwrap();
    };
    // Legacy state: three owner keys with the 24 h TTL, one persistent; an index missing l1
    // and l3, holding a session that has no owner any more and one that is bob's now.
    for (id, owner) in [("l1", "alice"), ("l2", "bob"), ("l3", "alice")] {
        set(
            &mut redis,
            &[
                "SET",
                &format!("chat_session_owner:{id}"),
                owner,
                "EX",
                "86400",
            ],
        );
    }
    set(&mut redis, &["SET", "chat_session_owner:p1", "alice"]);
    set(
        &mut redis,
        &["SADD", "user_chat_sessions:alice", "p1", "gone-1", "l2"],
    );
    set(&mut redis, &["SET", "unrelated:key", "x", "EX", "100"]);

    let (code, dry, err) = gatehouse(&url, &["migrate", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(dry[0]["changed"], json!([3]), "{dry}");
    assert_eq!(dry[1]["changed"], json!([3, 2]), "{dry}");
    assert!(
        ttl(&mut redis, "chat_session_owner:l1") > 0,
        "a dry run changes nothing"
    );

    let (code, applied, err) = gatehouse(&url, &["migrate"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(applied[0]["changed"], json!([3]));
    assert_eq!(applied[1]["changed"], json!([3, 2]));
    for id in ["l1", "l2", "l3", "p1"] {
        assert_eq!(
            ttl(&mut redis, &format!("chat_session_owner:{id}")),
            -1,
            "{id}"
        );
    }
    assert!(
        ttl(&mut redis, "unrelated:key") > 0,
        "only owner keys are touched"
    );
    let expected = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        members(&mut redis, "user_chat_sessions:alice"),
        expected(&["l1", "l3", "p1"])
    );
    assert_eq!(
        members(&mut redis, "user_chat_sessions:bob"),
        expected(&["l2"])
    );

    // Twice: recorded migrations are skipped; forced, they change nothing.
    let (_, again, _) = gatehouse(&url, &["migrate"]);
    assert_eq!(again[0]["skipped"], true);
    assert_eq!(again[1]["skipped"], true);
    let (_, forced, _) = gatehouse(&url, &["migrate", "--force"]);
    assert_eq!(forced[0]["changed"], json!([0]), "{forced}");
    assert_eq!(forced[1]["changed"], json!([0, 0]), "{forced}");
    assert_eq!(
        members(&mut redis, "user_chat_sessions:alice"),
        expected(&["l1", "l3", "p1"])
    );
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

    let (code, rolled, err) = gatehouse(&url, &["rollback", job["job_id"].as_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(rolled["rollback"]["released"], 54);
    let (_, report, _) = gatehouse(&url, &["verify", "--data-dir", data]);
    assert_eq!(report["missing"], 54);

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
