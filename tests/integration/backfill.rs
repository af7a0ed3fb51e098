//! Backfill over HTTP on a tree shaped like the legacy census: verify, dry run, run, re-run,
//! rollback; pre-owned and reassigned sessions; refused sources.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::both_backends;
use crate::common::census::write_census_tree;
use crate::common::{Backend, TestApp, eventually};

both_backends!(
    census_tree_backfill_verify_and_rollback,
    owners_are_never_overwritten_and_reassigned_sessions_survive_rollback,
    sources_outside_the_roots_are_refused,
    jobs_are_listed_newest_first_in_pages,
);

/// A root with one data directory holding the census tree (3 malformed files).
fn census_root() -> (tempfile::TempDir, String) {
    let root = tempfile::tempdir().unwrap();
    write_census_tree(&root.path().join("data"), 3).unwrap();
    let data = root.path().join("data").display().to_string();
    (root, data)
}

async fn start(app: &TestApp, body: Value) -> Value {
    let reply = app
        .call(Method::POST, "/v1/backfill", Some(&app.admin()), Some(body))
        .await;
    assert_eq!(reply.status, 202, "{reply:?}");
    let job_id = reply.body["job_id"].as_str().unwrap().to_owned();
    assert_eq!(
        reply.headers["location"].to_str().unwrap(),
        format!("/v1/backfill/{job_id}")
    );
    eventually(Duration::from_secs(20), "the job to complete", || async {
        let job = app
            .call(
                Method::GET,
                &format!("/v1/backfill/{job_id}"),
                Some(&app.admin()),
                None,
            )
            .await
            .body;
        (job["state"] == "completed").then_some(job)
    })
    .await
}

async fn verify(app: &TestApp, data: &str) -> Value {
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("source", data)
        .finish();
    let reply = app
        .call(
            Method::GET,
            &format!("/v1/backfill/verify?{query}"),
            Some(&app.admin()),
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body
}

async fn rollback(app: &TestApp, job: &Value) -> Value {
    let reply = app
        .call(
            Method::POST,
            &format!("/v1/backfill/{}/rollback", job["job_id"].as_str().unwrap()),
            Some(&app.admin()),
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body
}

async fn census_tree_backfill_verify_and_rollback(backend: Backend) {
    let (root, data) = census_root();
    let roots = root.path().display().to_string();
    let app = TestApp::spawn(&backend, &[("GATEHOUSE_BACKFILL_ROOTS", &roots)]).await;

    let before = verify(&app, &data).await;
    assert_eq!(
        (
            before["expected"].clone(),
            before["missing"].clone(),
            before["complete"].clone()
        ),
        (json!(54), json!(54), json!(false))
    );
    assert_eq!(before["errors"].as_array().unwrap().len(), 3);

    let dry = start(
        &app,
        json!({ "dry_run": true, "default_owner": "admin", "sources": [data] }),
    )
    .await;
    assert_eq!(dry["counts"]["would_assign"], 54, "{dry}");
    assert_eq!(dry["counts"]["assigned"], 0);
    assert_eq!(
        verify(&app, &data).await["missing"],
        54,
        "a dry run writes nothing"
    );

    let first = start(
        &app,
        json!({ "dry_run": false, "default_owner": "admin", "sources": [data] }),
    )
    .await;
    assert_eq!(first["counts"]["found"], 54, "{first}");
    assert_eq!(first["counts"]["assigned"], 54);
    assert_eq!(first["counts"]["skipped_owned"], 0);
    assert_eq!(first["counts"]["errors"], 3);
    let errors = first["errors"].as_array().unwrap();
    assert!(
        errors
            .iter()
            .all(|e| e["path"].as_str().unwrap().contains("broken-"))
    );

    let second = start(
        &app,
        json!({ "dry_run": false, "default_owner": "admin", "sources": [data] }),
    )
    .await;
    assert_eq!(second["counts"]["assigned"], 0, "{second}");
    assert_eq!(second["counts"]["skipped_owned"], 54);

    let after = verify(&app, &data).await;
    assert_eq!(after["complete"], true, "{after}");
    assert_eq!(after["missing"], 0);
    assert_eq!(after["unindexed"], 0, "{after}");
    assert_eq!(after["per_user"], json!({ "admin": 54 }));
    // The rollout report shows the latest verification's counts, and who ran it.
    let rollout = app
        .call(Method::GET, "/v1/rollout", Some(&app.admin()), None)
        .await;
    let last = &rollout.body["ownership"]["last_verify"];
    assert_eq!(last["expected"], after["expected"], "{last}");
    assert_eq!(
        (&last["owned"], &last["missing"]),
        (&after["owned"], &json!(0))
    );
    assert_eq!(
        (&last["complete"], &last["by"]),
        (&json!(true), &json!("root"))
    );
    let page = app
        .call(
            Method::GET,
            "/v1/users/admin/sessions?limit=1000",
            Some(&app.admin()),
            None,
        )
        .await;
    assert_eq!(
        page.body["sessions"].as_array().unwrap().len(),
        54,
        "{page:?}"
    );
    if let Backend::Redis(redis) = &backend {
        let members: usize = redis::cmd("SCARD")
            .arg("user_chat_sessions:admin")
            .query(&mut redis.client())
            .unwrap();
        assert_eq!(members, 54);
    }

    let rolled = rollback(&app, &first).await;
    assert_eq!(rolled["state"], "rolled_back");
    assert_eq!(rolled["rollback"]["released"], 54);
    assert_eq!(
        (
            rolled["released"].clone(),
            rolled["already_rolled_back"].clone()
        ),
        (json!(54), json!(false))
    );
    assert_eq!(rollback(&app, &second).await["rollback"]["released"], 0);
    // Again: 200, nothing more released, and the record (the first rollback's report, its
    // time) left as it was.
    let again = rollback(&app, &first).await;
    assert_eq!(
        (
            again["released"].clone(),
            again["already_rolled_back"].clone()
        ),
        (json!(0), json!(true)),
        "{again}"
    );
    assert_eq!(again["rollback"], rolled["rollback"], "{again}");
    assert_eq!(again["updated_at"], rolled["updated_at"]);
    let back = verify(&app, &data).await;
    assert_eq!(
        (back["missing"].clone(), back["complete"].clone()),
        (json!(54), json!(false))
    );
    // One more job after the repeated rollback: once its events are in the stream, so would
    // be any of that rollback (the writer keeps their order).
    start(
        &app,
        json!({ "dry_run": true, "default_owner": "admin", "sources": [data] }),
    )
    .await;

    let audit = eventually(Duration::from_secs(5), "backfill audit events", || async {
        let reply = app
            .call(
                Method::GET,
                "/v1/audit?source=admin&limit=100",
                Some(&app.admin()),
                None,
            )
            .await;
        let reasons: Vec<String> = reply.body["entries"]
            .as_array()?
            .iter()
            .map(|e| e["reason"].as_str().unwrap_or("").to_owned())
            .collect();
        (reasons
            .iter()
            .filter(|r| r.starts_with("backfill:"))
            .count()
            >= 10)
            .then_some(reasons)
    })
    .await;
    assert!(audit.contains(&"backfill:rollback".to_owned()), "{audit:?}");
    // Four starts, four finishes, two rollbacks: the one that changed nothing is no event.
    let events = |what: &str| audit.iter().filter(|r| *r == what).count();
    assert_eq!(events("backfill:rollback"), 2, "{audit:?}");
    app.stop().await;
}

async fn list(app: &TestApp, query: &str, token: &str) -> crate::common::Reply {
    app.call(
        Method::GET,
        &format!("/v1/backfill{query}"),
        Some(token),
        None,
    )
    .await
}

/// `GET /v1/backfill`: every job, newest first, in pages of `limit` joined by `next_before`;
/// admins only; a bad query is a 400 problem.
async fn jobs_are_listed_newest_first_in_pages(backend: Backend) {
    let app = TestApp::spawn(&backend, &[]).await;
    let admin = app.admin();
    let reply = list(&app, "", &admin).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, json!({ "jobs": [] }));
    // Each started once the one before has completed: three creation times, in order.
    let mut started = Vec::new();
    for n in 0..3 {
        let job = start(
            &app,
            json!({ "dry_run": n == 1, "default_owner": "admin", "session_ids": [format!("l{n}")] }),
        )
        .await;
        started.push(job["job_id"].as_str().unwrap().to_owned());
    }
    let newest_first: Vec<String> = started.iter().rev().cloned().collect();
    let ids = |reply: &crate::common::Reply| -> Vec<String> {
        reply.body["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["job_id"].as_str().unwrap().to_owned())
            .collect()
    };

    let all = list(&app, "", &admin).await;
    assert_eq!(ids(&all), newest_first, "{all:?}");
    assert!(all.body.get("next_before").is_none(), "{all:?}");
    assert_eq!(all.body["jobs"][0]["state"], "completed");
    assert_eq!(all.body["jobs"][1]["dry_run"], true);
    // A summary of each: counts and how many sources, not the record's lists.
    let newest = &all.body["jobs"][0];
    let record = app
        .call(
            Method::GET,
            &format!("/v1/backfill/{}", newest_first[0]),
            Some(&admin),
            None,
        )
        .await
        .body;
    let mut keys: Vec<&str> = newest
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "actor",
            "counts",
            "created_at",
            "default_owner",
            "dry_run",
            "explicit_ids",
            "finished_at",
            "job_id",
            "source_count",
            "state",
            "updated_at",
        ],
        "{newest}"
    );
    assert_eq!(newest["source_count"], 0);
    assert_eq!(newest["explicit_ids"], 1);
    for key in ["counts", "created_at", "updated_at", "finished_at", "actor"] {
        assert_eq!(newest[key], record[key], "{key}");
    }

    let first = list(&app, "?limit=2", &admin).await;
    assert_eq!(ids(&first), newest_first[..2]);
    let before = first.body["next_before"].as_str().unwrap().to_owned();
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("limit", "2")
        .append_pair("before", &before)
        .finish();
    let rest = list(&app, &format!("?{query}"), &admin).await;
    assert_eq!(ids(&rest), newest_first[2..], "{rest:?}");
    assert!(rest.body.get("next_before").is_none(), "{rest:?}");

    for bad in [
        "?limit=0",
        "?limit=1001",
        "?limit=ten",
        "?before=bf-1",
        "?page=2",
    ] {
        list(&app, bad, &admin)
            .await
            .assert_problem(400, "invalid-request");
    }
    list(&app, "", &app.user("eve"))
        .await
        .assert_problem(403, "forbidden");
    let anonymous = app.call(Method::GET, "/v1/backfill", None, None).await;
    anonymous.assert_problem(401, "unauthorized");
    app.stop().await;
}

async fn owners_are_never_overwritten_and_reassigned_sessions_survive_rollback(backend: Backend) {
    let app = TestApp::spawn(&backend, &[]).await;
    app.claim("keep-1", "carol").await;
    // An invalid explicit id refuses the request (400) before any job starts.
    let reply = app
        .call(
            Method::POST,
            "/v1/backfill",
            Some(&app.admin()),
            Some(json!({ "dry_run": false, "default_owner": "admin",
                         "session_ids": ["new-1", "bad id!"] })),
        )
        .await;
    reply.assert_problem(400, "invalid-request");
    let job = start(
        &app,
        json!({ "dry_run": false, "default_owner": "admin",
                "session_ids": ["keep-1", "new-1", "moved-1"] }),
    )
    .await;
    assert_eq!(job["counts"]["assigned"], 2, "{job}");
    assert_eq!(job["counts"]["skipped_owned"], 1);
    assert_eq!(job["counts"]["errors"], 0);

    // moved-1 changes hands after the backfill.
    let reply = app
        .call(
            Method::PUT,
            "/v1/sessions/moved-1/owner",
            Some(&app.admin()),
            Some(json!({ "owner": "dave", "expected_owner": "admin" })),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");

    let rolled = rollback(&app, &job).await;
    assert_eq!(rolled["rollback"]["released"], 1, "{rolled}");
    assert_eq!(rolled["rollback"]["kept"], 1);
    assert_eq!(rolled["rollback"]["kept_sample"], json!(["moved-1"]));
    for (session, owner) in [
        ("keep-1", json!("carol")),
        ("moved-1", json!("dave")),
        ("new-1", Value::Null),
    ] {
        let reply = app
            .call(
                Method::GET,
                &format!("/v1/sessions/{session}"),
                Some(&app.admin()),
                None,
            )
            .await;
        assert_eq!(reply.body["owner"], owner, "{session}: {reply:?}");
    }
    app.stop().await;
}

/// Sources outside the roots, more than 100 of them, or one named twice: 400, nothing started.
async fn sources_outside_the_roots_are_refused(backend: Backend) {
    let (root, data) = census_root();
    let outside = tempfile::tempdir().unwrap();
    write_census_tree(outside.path(), 0).unwrap();
    let roots = root.path().display().to_string();
    let app = TestApp::spawn(&backend, &[("GATEHOUSE_BACKFILL_ROOTS", &roots)]).await;
    let admin = app.admin();
    let post = |body: Value| app.call(Method::POST, "/v1/backfill", Some(&admin), Some(body));
    for source in [
        outside.path().display().to_string(),
        format!(
            "{data}/../../{}",
            outside.path().file_name().unwrap().to_str().unwrap()
        ),
        "/etc".to_owned(),
        root.path().display().to_string(),
    ] {
        let reply =
            post(json!({ "dry_run": true, "default_owner": "admin", "sources": [source] })).await;
        reply.assert_problem(400, "invalid-request");
    }
    let reply =
        post(json!({ "dry_run": true, "default_owner": "has space", "sources": [data] })).await;
    assert_eq!(reply.status, 400);
    let reply = post(json!({ "dry_run": true, "default_owner": "admin" })).await;
    reply.assert_problem(400, "invalid-request");
    // Up to 100 sources, each named once (as resolved).
    for (sources, says) in [
        (vec![data.clone(); 101], "at most 100"),
        (
            vec![data.clone(), data.clone()],
            "sources[1] is sources[0] again",
        ),
        (
            vec![data.clone(), format!("{data}/./chats/..")],
            "sources[1] is sources[0] again",
        ),
    ] {
        let reply =
            post(json!({ "dry_run": true, "default_owner": "admin", "sources": sources })).await;
        reply.assert_problem(400, "invalid-request");
        let detail = reply.body["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{detail}");
    }
    let reply = post(json!({ "default_owner": "admin", "sources": [data] })).await;
    reply.assert_problem(400, "invalid-request");
    let reply = app
        .call(
            Method::POST,
            "/v1/backfill",
            Some(&app.user("eve")),
            Some(json!({ "dry_run": true, "default_owner": "eve", "sources": [data] })),
        )
        .await;
    reply.assert_problem(403, "forbidden");
    let reply = app
        .call(
            Method::GET,
            "/v1/backfill/bf-nope",
            Some(&app.admin()),
            None,
        )
        .await;
    reply.assert_problem(404, "not-found");
    let job = start(
        &app,
        json!({ "dry_run": true, "default_owner": "admin", "sources": [data] }),
    )
    .await;
    let id = job["job_id"].as_str().unwrap();
    for action in ["resume", "rollback"] {
        let reply = app
            .call(
                Method::POST,
                &format!("/v1/backfill/{id}/{action}"),
                Some(&app.admin()),
                None,
            )
            .await;
        reply.assert_problem(409, "job-state");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_job_is_resumed_where_the_store_left_it() {
    let Some(backend) = Backend::redis() else {
        return;
    };
    let Backend::Redis(server) = &backend else {
        unreachable!()
    };
    let (root, data) = census_root();
    let roots = root.path().display().to_string();
    let app = TestApp::spawn(&backend, &[("GATEHOUSE_BACKFILL_ROOTS", &roots)]).await;

    // A job whose process died after its first two assignments: its record says running,
    // last moved a minute ago; its assigned set and owner keys hold what it did.
    let template = start(
        &app,
        json!({ "dry_run": true, "default_owner": "admin", "sources": [data] }),
    )
    .await;
    let mut record = template.clone();
    let minute_ago = gatehouse::timestamp::Timestamp::from_unix_millis(
        gatehouse::timestamp::Timestamp::now().unix_millis() - 60_000,
    );
    record["job_id"] = json!("bf-crashed");
    record["dry_run"] = json!(false);
    record["state"] = json!("running");
    record["updated_at"] = json!(minute_ago.to_string());
    record.as_object_mut().unwrap().remove("finished_at");
    let mut redis = server.client();
    let done = ["session_1003", "test-session-0001"];
    redis::pipe()
        .cmd("SET")
        .arg("gatehouse:backfill:job:bf-crashed")
        .arg(record.to_string())
        .cmd("SADD")
        .arg("gatehouse:backfill:job:bf-crashed:assigned")
        .arg(&done)
        .cmd("SET")
        .arg(format!("chat_session_owner:{}", done[0]))
        .arg("admin")
        .cmd("SET")
        .arg(format!("chat_session_owner:{}", done[1]))
        .arg("admin")
        .query::<()>(&mut redis)
        .unwrap();

    let job = app
        .call(
            Method::GET,
            "/v1/backfill/bf-crashed",
            Some(&app.admin()),
            None,
        )
        .await;
    assert_eq!(job.body["state"], "interrupted", "{job:?}");
    let reply = app
        .call(
            Method::POST,
            "/v1/backfill/bf-crashed/resume",
            Some(&app.admin()),
            None,
        )
        .await;
    assert_eq!(reply.status, 202, "{reply:?}");
    let job = eventually(
        Duration::from_secs(20),
        "the resumed job to complete",
        || async {
            let job = app
                .call(
                    Method::GET,
                    "/v1/backfill/bf-crashed",
                    Some(&app.admin()),
                    None,
                )
                .await
                .body;
            (job["state"] == "completed").then_some(job)
        },
    )
    .await;
    assert_eq!(
        job["counts"]["assigned"], 54,
        "what it did before counts: {job}"
    );
    assert_eq!(job["counts"]["skipped_owned"], 0);
    assert_eq!(verify(&app, &data).await["complete"], true);
    assert_eq!(rollback(&app, &job).await["rollback"]["released"], 54);
    // Its record was written without the listing (as by a version before it): listed since
    // the resume saved it.
    let listed = list(&app, "", &app.admin()).await;
    let listed: Vec<&str> = listed.body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap())
        .collect();
    assert!(listed.contains(&"bf-crashed"), "{listed:?}");
    app.stop().await;
}

/// A member of the Redis listing that is not a job's place (`ZADD` by hand) is skipped with a
/// WARN: `GET /v1/backfill` still lists every job (it answered 500).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_member_of_the_listing_does_not_fail_the_listing() {
    let Some(backend) = Backend::redis() else {
        return;
    };
    let Backend::Redis(server) = &backend else {
        unreachable!()
    };
    let app = TestApp::spawn(&backend, &[]).await;
    let job = start(
        &app,
        json!({ "dry_run": true, "default_owner": "admin", "session_ids": ["m1"] }),
    )
    .await;
    let _: () = redis::cmd("ZADD")
        .arg("gatehouse:backfill:jobs")
        .arg(0)
        .arg("zzzz bad member")
        .query(&mut server.client())
        .unwrap();
    let listed = list(&app, "", &app.admin()).await;
    assert_eq!(listed.status, 200, "{listed:?}");
    assert_eq!(
        listed.body["jobs"][0]["job_id"], job["job_id"],
        "{listed:?}"
    );
    assert_eq!(
        listed.body["jobs"].as_array().unwrap().len(),
        1,
        "{listed:?}"
    );
    app.stop().await;
}
