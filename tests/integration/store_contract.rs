//! The store contract: the same assertions against the Redis adapter and the in-memory one.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use gatehouse::audit::{AuditEvent, AuditId, Sequenced, Source};
use gatehouse::backfill::{Counts, Job, JobState};
use gatehouse::decision::{Mode, Reason, Verdict};
use gatehouse::enforcement::{EnforcementSettings, HistoryChange, HistoryEntry};
use gatehouse::session_id::SessionId;
use gatehouse::store::{
    ClaimOutcome, Expected, JobCursor, MemoryStore, OwnerChange, OwnershipStore, RedisOptions,
    RedisStore, SaveOutcome, Store, StoreError, TlsOptions,
};
use gatehouse::timestamp::Timestamp;
use serde_json::json;

use crate::common::{Backend, TestApp, eventually};
use crate::every_store;

every_store!(
    claims_and_compare_and_set,
    paging_is_exact_and_complete,
    settings_are_versioned,
    owner_ttl_is_opt_in,
    counts_owned_sessions,
    audit_appends_are_idempotent_per_writer,
    audit_paging_never_skips_or_repeats,
    concurrent_lookups_each_get_their_own_owner,
    audit_pages_beyond_the_ends_are_empty,
    audit_before_0_0_over_http_is_an_empty_page,
    the_index_follows_every_ownership_write,
    verification_counts_sessions_missing_from_their_index,
    backfill_jobs_are_listed_newest_first,
    decision_counts_add_up_once_per_batch,
    heartbeats_list_the_live_instances,
    the_last_verification_is_kept,
);

/// Decision counts: a batch adds to its minutes and their hour, once (a retry under the same
/// number changes nothing, another writer's batch adds); every endpoint name, `|` included,
/// and the merged "other endpoints" read back; buckets past their retention are gone.
async fn decision_counts_add_up_once_per_batch(backend: Backend) {
    use gatehouse::records::{Cell, MinuteCounts, Resolution, Retention, StatsBatch};
    let store = store(&backend, None);
    let hour = Timestamp::now().unix_millis() / 1000 / 3600 * 3600;
    // The first two minutes of the current hour.
    let (m1, m2) = (hour, hour + 60);
    let cell = |endpoint: Option<&str>, verdict, reason| Cell {
        endpoint: endpoint.map(str::to_owned),
        verdict,
        reason,
    };
    let allow = cell(Some("chat"), Verdict::Allow, Reason::Owner);
    let odd = cell(Some("a|b c"), Verdict::WouldDeny, Reason::NotOwner);
    let other = cell(None, Verdict::Deny, Reason::StoreUnavailable);
    let batch = |writer: &str, seq, minutes: Vec<MinuteCounts>| StatsBatch {
        writer: writer.into(),
        seq,
        minutes,
    };
    let first = batch(
        "w1",
        1,
        vec![
            MinuteCounts {
                minute: m1,
                cells: vec![(allow.clone(), 3), (odd.clone(), 1)],
            },
            MinuteCounts {
                minute: m2,
                cells: vec![(allow.clone(), 2), (other.clone(), 5)],
            },
        ],
    );
    let keep = Retention::default();
    assert!(store.add_decisions(&first, keep).await.unwrap());
    assert!(
        !store.add_decisions(&first, keep).await.unwrap(),
        "a retry is skipped"
    );
    let second = batch(
        "w2",
        1,
        vec![MinuteCounts {
            minute: m2,
            cells: vec![(allow.clone(), 10)],
        }],
    );
    assert!(store.add_decisions(&second, keep).await.unwrap());
    let count_of = |cells: &[(Cell, u64)], wanted: &Cell| {
        cells
            .iter()
            .filter(|(c, _)| c == wanted)
            .map(|(_, n)| n)
            .sum::<u64>()
    };
    let minutes = store
        .decision_buckets(Resolution::Minute, m1, 3)
        .await
        .unwrap();
    assert_eq!(count_of(&minutes[0], &allow), 3);
    assert_eq!(count_of(&minutes[0], &odd), 1);
    assert_eq!(count_of(&minutes[1], &allow), 12);
    assert_eq!(count_of(&minutes[1], &other), 5);
    assert!(minutes[2].is_empty());
    let total: u64 = minutes.iter().flatten().map(|(_, n)| n).sum();
    assert_eq!(total, 21);
    let hours = store
        .decision_buckets(Resolution::Hour, hour, 2)
        .await
        .unwrap();
    assert_eq!(count_of(&hours[0], &allow), 15);
    assert_eq!(count_of(&hours[0], &odd), 1);
    assert_eq!(count_of(&hours[0], &other), 5);
    assert!(hours[1].is_empty(), "the next hour has nothing");
    // A bucket whose retention has passed is not kept.
    let old = m1 - 86_400 * 2;
    let short = Retention {
        minutes: Duration::from_secs(3600),
        hours: Duration::from_secs(86_400),
    };
    let stale = batch(
        "w1",
        2,
        vec![MinuteCounts {
            minute: old,
            cells: vec![(allow.clone(), 7)],
        }],
    );
    store.add_decisions(&stale, short).await.unwrap();
    let gone = store
        .decision_buckets(Resolution::Minute, old, 1)
        .await
        .unwrap();
    assert!(gone[0].is_empty(), "{gone:?}");
}

/// Heartbeats: the newest record per instance, those older than asked left out.
async fn heartbeats_list_the_live_instances(backend: Backend) {
    use gatehouse::records::InstanceRecord;
    let store = store(&backend, None);
    let record = |name: &str, version, seen_ms| InstanceRecord {
        instance: name.into(),
        build_version: "0.1.0".into(),
        settings_version: version,
        settings_source: "store".into(),
        started_at: Timestamp::from_unix_millis(1_000),
        seen_at: Timestamp::from_unix_millis(seen_ms),
    };
    let now = Timestamp::now().unix_millis();
    store.heartbeat(&record("b", 3, now)).await.unwrap();
    store.heartbeat(&record("a", 2, now - 1_000)).await.unwrap();
    store.heartbeat(&record("a", 4, now)).await.unwrap();
    store
        .heartbeat(&record("gone", 1, now - 60_000))
        .await
        .unwrap();
    let since = Timestamp::from_unix_millis(now - 30_000);
    let live = store.instances(since).await.unwrap();
    assert_eq!(live, [record("a", 4, now), record("b", 3, now)]);
    // Forgotten, not only hidden: listed again only after a heartbeat.
    let all = store
        .instances(Timestamp::from_unix_millis(0))
        .await
        .unwrap();
    assert_eq!(all.len(), 2, "{all:?}");
}

/// The last verification summary replaces the one before.
async fn the_last_verification_is_kept(backend: Backend) {
    use gatehouse::records::VerifySummary;
    let store = store(&backend, None);
    assert_eq!(store.last_verification().await.unwrap(), None);
    let summary = |missing| VerifySummary {
        at: Timestamp::from_unix_millis(1_795_000_000_000),
        by: "root".into(),
        sources: vec!["/data/a".into()],
        expected: 10,
        owned: 10 - missing,
        missing,
        extra: 1,
        unindexed: 0,
        errors: 0,
        complete: missing == 0,
    };
    store.save_verification(&summary(3)).await.unwrap();
    store.save_verification(&summary(0)).await.unwrap();
    assert_eq!(store.last_verification().await.unwrap(), Some(summary(0)));
}

/// A job record created at `millis` (Unix ms).
fn job(id: &str, millis: u64, state: JobState) -> Job {
    let at = Timestamp::from_unix_millis(millis);
    Job {
        job_id: id.into(),
        state,
        dry_run: false,
        default_owner: "admin".into(),
        sources: Vec::new(),
        explicit_ids: 0,
        actor: "root".into(),
        created_at: at,
        updated_at: at,
        finished_at: None,
        counts: Counts::default(),
        errors: Vec::new(),
        rollback: None,
        failure: None,
    }
}

/// The listing of backfill jobs: newest first by creation time, then by id (two jobs of one
/// millisecond); a job saved again is listed once, with its newest record; pages cut anywhere
/// never skip or repeat a job, and the last one says so.
async fn backfill_jobs_are_listed_newest_first(backend: Backend) {
    let store = store(&backend, None);
    let (empty, next) = store.jobs(None, 10).await.unwrap();
    assert!(empty.is_empty() && next.is_none());
    for (id, millis) in [
        ("bf-b", 2_000),
        ("bf-a", 1_000),
        ("bf-d", 3_000),
        ("bf-c", 3_000),
        ("bf-e", 500),
    ] {
        store
            .save_job(&job(id, millis, JobState::Running))
            .await
            .unwrap();
    }
    store
        .save_job(&job("bf-a", 1_000, JobState::Completed))
        .await
        .unwrap();
    let ids = |jobs: &[Job]| jobs.iter().map(|j| j.job_id.clone()).collect::<Vec<_>>();
    let newest_first = ["bf-d", "bf-c", "bf-b", "bf-a", "bf-e"];

    let (all, next) = store.jobs(None, 5).await.unwrap();
    assert_eq!(ids(&all), newest_first);
    assert_eq!(next, None, "exactly a page's worth: no next page");
    assert_eq!(all[3].state, JobState::Completed, "the newest record");
    for limit in 1..=4 {
        let mut seen = Vec::new();
        let mut before: Option<JobCursor> = None;
        loop {
            let (page, next) = store.jobs(before.as_ref(), limit).await.unwrap();
            assert!(page.len() <= limit);
            seen.extend(ids(&page));
            match next {
                Some(next) => {
                    // The cursor goes over the wire as text.
                    before = Some(next.to_string().parse().unwrap());
                }
                None => break,
            }
        }
        assert_eq!(seen, newest_first, "limit {limit}");
    }
    let oldest = JobCursor::of(&job("bf-e", 500, JobState::Running));
    let (past_the_end, next) = store.jobs(Some(&oldest), 10).await.unwrap();
    assert!(past_the_end.is_empty() && next.is_none());
}

/// What the Redis listing cannot use is left out, not a failure of every page: members that
/// are not a job's place (written by hand, not even UTF-8), a record that is not JSON, a listed
/// job without a record. Pages cut anywhere still join up past them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_listing_skips_what_it_cannot_read() {
    let Some(mut backend) = Backend::redis() else {
        return;
    };
    let store = store(&backend, None);
    for (id, millis) in [
        ("bf-a", 1_000),
        ("bf-x", 1_500),
        ("bf-b", 2_000),
        ("bf-c", 3_000),
    ] {
        store
            .save_job(&job(id, millis, JobState::Completed))
            .await
            .unwrap();
    }
    let mut admin = backend.redis_server().unwrap().client();
    let _: () = redis::cmd("ZADD")
        .arg("gatehouse:backfill:jobs")
        // Newest first, these sort first, between the places and last.
        .arg(0)
        .arg(b"\xff\xfe".as_slice())
        .arg(0)
        .arg("zzzz bad member")
        .arg(0)
        .arg("0000000000002500:bad id!")
        .arg(0)
        .arg("0000000000000500:bf-gone")
        .query(&mut admin)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("gatehouse:backfill:job:bf-x")
        .arg("not json")
        .query(&mut admin)
        .unwrap();
    let ids = |jobs: &[Job]| jobs.iter().map(|j| j.job_id.clone()).collect::<Vec<_>>();
    let (all, next) = store.jobs(None, 100).await.unwrap();
    assert_eq!(ids(&all), ["bf-c", "bf-b", "bf-a"]);
    assert_eq!(next, None);
    for limit in 1..=4 {
        let mut seen = Vec::new();
        let mut before: Option<JobCursor> = None;
        loop {
            let (page, next) = store.jobs(before.as_ref(), limit).await.unwrap();
            assert!(page.len() <= limit);
            seen.extend(ids(&page));
            match next {
                Some(next) => before = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, ["bf-c", "bf-b", "bf-a"], "limit {limit}");
    }
}

async fn verification_counts_sessions_missing_from_their_index(backend: Backend) {
    let store = store(&backend, None);
    store.claim(&id("u1"), "alice").await.unwrap();
    store.claim(&id("u2"), "alice").await.unwrap();
    let pair = |s: &str, u: &str| (s.to_owned(), u.to_owned());
    let listed = [pair("u1", "alice"), pair("u2", "alice")];
    assert_eq!(store.unindexed(&listed).await.unwrap(), 0);
    // bob's set does not hold u1: what drift looks like to the verification.
    let drifted = [pair("u1", "alice"), pair("u1", "bob"), pair("u3", "carol")];
    assert_eq!(store.unindexed(&drifted).await.unwrap(), 2);
}

fn store(backend: &Backend, owner_ttl: Option<Duration>) -> Arc<dyn Store> {
    let options = match backend {
        Backend::Memory => return Arc::new(MemoryStore::new(owner_ttl)),
        Backend::Redis(redis) => RedisOptions::new(redis.url()),
        Backend::RedisTls(redis) => RedisOptions {
            tls: ca_only(),
            ..RedisOptions::new(redis.url())
        },
        Backend::Sentinel(set) => from_env(set.env()),
        Backend::Cluster { env, .. } => from_env(env.clone()),
    };
    Arc::new(
        RedisStore::connect(&RedisOptions {
            connections: 2,
            timeout: Duration::from_secs(2),
            owner_ttl,
            ..options
        })
        .expect("connects lazily"),
    )
}

/// The Redis options the configuration `vars` gives.
fn from_env(vars: Vec<(String, String)>) -> RedisOptions {
    let config = gatehouse::config::Config::from_vars(vars).expect("a valid configuration");
    config.redis_options().expect("Redis options")
}

/// TLS settings trusting the test CA.
fn ca_only() -> TlsOptions {
    TlsOptions {
        ca: Some(std::fs::read(crate::common::tls::certs().ca()).unwrap()),
        ..TlsOptions::default()
    }
}

fn id(raw: &str) -> SessionId {
    SessionId::parse(raw).unwrap()
}

/// The owner [`concurrent_lookups_each_get_their_own_owner`] gives session `c{i}`.
fn expected(i: usize) -> Option<String> {
    i.is_multiple_of(2).then(|| format!("user-{i}"))
}

/// Lookups in flight together (the Redis adapter sends them as shared pipelines): each answer
/// goes to its own asker, absent sessions included.
async fn concurrent_lookups_each_get_their_own_owner(backend: Backend) {
    let store = store(&backend, None);
    for i in (0..600).step_by(2) {
        let claimed = store
            .claim(&id(&format!("c{i}")), &format!("user-{i}"))
            .await;
        assert_eq!(claimed.unwrap(), ClaimOutcome::Claimed);
    }
    // Every session three times, interleaved, from one task and from several.
    let asked: Vec<usize> = (0..3).flat_map(|_| (0..600).rev()).collect();
    let sessions: Vec<SessionId> = asked.iter().map(|i| id(&format!("c{i}"))).collect();
    let owners = futures_util::future::join_all(sessions.iter().map(|s| store.owner(s))).await;
    for (i, owner) in asked.iter().zip(owners) {
        assert_eq!(owner.unwrap(), expected(*i), "session c{i}");
    }
    // Askers that give up while queued (a cancelled request) do not disturb the others.
    let store_ref = &store;
    let answers = futures_util::future::join_all(sessions.iter().enumerate().map(
        |(n, session)| async move {
            if n % 2 == 1 {
                let _ = tokio::time::timeout(Duration::ZERO, store_ref.owner(session)).await;
                None
            } else {
                Some(store_ref.owner(session).await)
            }
        },
    ))
    .await;
    for ((i, answer), n) in asked.iter().zip(answers).zip(0..) {
        if let Some(owner) = answer {
            assert_eq!(owner.unwrap(), expected(*i), "session c{i}, lookup {n}");
        }
    }
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for i in (t..600).step_by(8) {
                    let owner = store.owner(&id(&format!("c{i}"))).await.unwrap();
                    assert_eq!(owner, expected(i), "c{i}");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

async fn claims_and_compare_and_set(backend: Backend) {
    let store = store(&backend, None);
    let s1 = id("s1");
    assert_eq!(store.owner(&s1).await.unwrap(), None);
    assert_eq!(
        store.claim(&s1, "alice").await.unwrap(),
        ClaimOutcome::Claimed
    );
    assert_eq!(
        store.claim(&s1, "alice").await.unwrap(),
        ClaimOutcome::AlreadyOwned
    );
    assert_eq!(
        store.claim(&s1, "bob").await.unwrap(),
        ClaimOutcome::OwnedByOther("alice".into())
    );
    assert_eq!(store.owner(&s1).await.unwrap().as_deref(), Some("alice"));

    let owners = store
        .owners(&[id("s1"), id("nope"), id("s1")])
        .await
        .unwrap();
    assert_eq!(
        owners,
        vec![Some("alice".into()), None, Some("alice".into())]
    );
    assert_eq!(
        store.owners(&[]).await.unwrap(),
        Vec::<Option<String>>::new()
    );

    let mismatch = store
        .set_owner(&s1, "bob", &Expected::Owner("carol".into()))
        .await
        .unwrap();
    assert_eq!(
        mismatch,
        OwnerChange::Mismatch {
            actual: Some("alice".into())
        }
    );
    let done = store
        .set_owner(&s1, "bob", &Expected::Owner("alice".into()))
        .await
        .unwrap();
    assert_eq!(
        done,
        OwnerChange::Done {
            previous: Some("alice".into())
        }
    );
    let page = store.user_sessions("alice", None, 10).await.unwrap();
    assert!(page.sessions.is_empty());
    assert_eq!(
        store.user_sessions("bob", None, 10).await.unwrap().sessions,
        vec!["s1"]
    );

    let unowned = store
        .set_owner(&id("s2"), "bob", &Expected::Owner("bob".into()))
        .await
        .unwrap();
    assert_eq!(unowned, OwnerChange::Mismatch { actual: None });
    let any = store
        .set_owner(&id("s2"), "bob", &Expected::Any)
        .await
        .unwrap();
    assert_eq!(any, OwnerChange::Done { previous: None });

    let refused = store
        .release(&s1, &Expected::Owner("alice".into()))
        .await
        .unwrap();
    assert_eq!(
        refused,
        OwnerChange::Mismatch {
            actual: Some("bob".into())
        }
    );
    let released = store
        .release(&s1, &Expected::Owner("bob".into()))
        .await
        .unwrap();
    assert_eq!(
        released,
        OwnerChange::Done {
            previous: Some("bob".into())
        }
    );
    assert_eq!(
        store.release(&s1, &Expected::Any).await.unwrap(),
        OwnerChange::Done { previous: None }
    );
    assert_eq!(store.owner(&s1).await.unwrap(), None);
    assert_eq!(
        store.user_sessions("bob", None, 10).await.unwrap().sessions,
        vec!["s2"]
    );
    store.ping().await.unwrap();
}

async fn paging_is_exact_and_complete(backend: Backend) {
    let store = store(&backend, None);
    assert!(
        store
            .user_sessions("nobody", None, 5)
            .await
            .unwrap()
            .sessions
            .is_empty()
    );
    // Small (one SSCAN batch in Redis) and large (many batches) sets.
    for (user, count) in [("small", 7usize), ("large", 1000)] {
        for i in 0..count {
            store
                .claim(&id(&format!("{user}-{i}")), user)
                .await
                .unwrap();
        }
        for limit in [1usize, 3, 100] {
            let mut seen = Vec::new();
            let mut cursor = None;
            loop {
                let page = store
                    .user_sessions(user, cursor.as_deref(), limit)
                    .await
                    .unwrap();
                assert!(page.sessions.len() <= limit, "{user} limit {limit}");
                seen.extend(page.sessions);
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
                assert!(seen.len() <= count * 2, "paging does not end");
            }
            let unique: HashSet<_> = seen.iter().collect();
            assert_eq!(unique.len(), seen.len(), "{user} limit {limit}: repeats");
            assert_eq!(unique.len(), count, "{user} limit {limit}: missing");
        }
    }
    assert!(matches!(
        store.user_sessions("large", Some("garbage"), 5).await,
        Err(StoreError::InvalidCursor)
    ));
}

fn entry(version: u64) -> HistoryEntry {
    HistoryEntry {
        version,
        at: Timestamp::now(),
        actor: "root".into(),
        change: HistoryChange::Global,
        from: json!("LOG_ONLY"),
        to: json!("ENFORCED"),
        reason: format!("change {version}"),
    }
}

fn settings(version: u64, mode: Mode) -> EnforcementSettings {
    EnforcementSettings {
        version,
        updated_at: Some(Timestamp::now()),
        updated_by: Some("root".into()),
        ..EnforcementSettings::initial(mode)
    }
}

async fn settings_are_versioned(backend: Backend) {
    let store = store(&backend, None);
    assert_eq!(store.load_settings().await.unwrap(), None);
    assert!(store.history(None, 10).await.unwrap().is_empty());
    let v1 = settings(1, Mode::Enforced);
    assert_eq!(
        store.save_settings(0, &v1, &entry(1)).await.unwrap(),
        SaveOutcome::Saved
    );
    assert_eq!(
        store
            .save_settings(0, &settings(1, Mode::Disabled), &entry(1))
            .await
            .unwrap(),
        SaveOutcome::VersionConflict { current: 1 }
    );
    assert_eq!(
        store
            .save_settings(2, &settings(3, Mode::Disabled), &entry(3))
            .await
            .unwrap(),
        SaveOutcome::VersionConflict { current: 1 }
    );
    assert_eq!(store.load_settings().await.unwrap(), Some(v1));
    for v in 2..=5 {
        assert_eq!(
            store
                .save_settings(v - 1, &settings(v, Mode::LogOnly), &entry(v))
                .await
                .unwrap(),
            SaveOutcome::Saved
        );
    }
    // A restore jumps versions: still a compare-and-set on the stored one, and never down or
    // sideways.
    let cas = |expected, version| {
        let store = store.clone();
        async move {
            store
                .save_settings(
                    expected,
                    &settings(version, Mode::Enforced),
                    &entry(version),
                )
                .await
                .unwrap()
        }
    };
    assert_eq!(cas(5, 5).await, SaveOutcome::VersionConflict { current: 5 });
    assert_eq!(cas(4, 9).await, SaveOutcome::VersionConflict { current: 5 });
    assert_eq!(cas(5, 9).await, SaveOutcome::Saved);
    assert_eq!(
        cas(5, 10).await,
        SaveOutcome::VersionConflict { current: 9 }
    );
    assert_eq!(store.load_settings().await.unwrap().unwrap().version, 9);
    let versions =
        |entries: Vec<HistoryEntry>| entries.iter().map(|e| e.version).collect::<Vec<_>>();
    assert_eq!(
        versions(store.history(None, 10).await.unwrap()),
        [9, 5, 4, 3, 2, 1]
    );
    assert_eq!(versions(store.history(Some(4), 2).await.unwrap()), [3, 2]);
    assert_eq!(
        versions(store.history(Some(1), 10).await.unwrap()),
        Vec::<u64>::new()
    );
}

async fn owner_ttl_is_opt_in(mut backend: Backend) {
    let persistent = store(&backend, None);
    persistent.claim(&id("kept"), "alice").await.unwrap();
    persistent
        .set_owner(&id("moved"), "bob", &Expected::Any)
        .await
        .unwrap();
    let expiring = store(&backend, Some(Duration::from_millis(300)));
    expiring.claim(&id("brief"), "alice").await.unwrap();
    if let Some(redis) = backend.redis_server() {
        let mut conn = redis.client();
        for key in ["chat_session_owner:kept", "chat_session_owner:moved"] {
            let ttl: i64 = redis::cmd("PTTL").arg(key).query(&mut conn).unwrap();
            assert_eq!(ttl, -1, "{key} must not expire");
        }
        let ttl: i64 = redis::cmd("PTTL")
            .arg("chat_session_owner:brief")
            .query(&mut conn)
            .unwrap();
        assert!(ttl > 0 && ttl <= 300, "brief has a TTL: {ttl}");
    }
    eventually(
        Duration::from_secs(5),
        "the TTL'd owner to expire",
        || async {
            expiring
                .owner(&id("brief"))
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        persistent.owner(&id("kept")).await.unwrap().as_deref(),
        Some("alice")
    );
}

async fn counts_owned_sessions(backend: Backend) {
    let store = store(&backend, None);
    assert_eq!(store.count_owned().await.unwrap(), 0);
    // More than one SCAN batch (1000), claimed concurrently.
    let claims = (0..2500).map(|i| {
        let store = Arc::clone(&store);
        async move { store.claim(&id(&format!("count-{i}")), "alice").await }
    });
    for outcome in futures_util::future::join_all(claims).await {
        assert_eq!(outcome.unwrap(), ClaimOutcome::Claimed);
    }
    store
        .release(&id("count-7"), &Expected::Owner("alice".into()))
        .await
        .unwrap();
    assert_eq!(store.count_owned().await.unwrap(), 2499);
}

fn audit_event(user: &str, session: &str) -> AuditEvent {
    let mut event = AuditEvent::decision(
        Verdict::Deny,
        Reason::NotOwner,
        Mode::Enforced,
        Source::Validate,
        "contract",
    );
    event.user = user.into();
    event.session_id = Some(session.into());
    event.endpoint = Some("chat".into());
    event
}

fn sequenced(range: std::ops::RangeInclusive<u64>) -> Vec<Sequenced> {
    range
        .map(|seq| Sequenced {
            seq,
            event: audit_event("bob", &format!("s{seq}")),
        })
        .collect()
}

async fn audit_appends_are_idempotent_per_writer(backend: Backend) {
    let store = store(&backend, None);
    assert_eq!(
        store.append_audit("w1", &sequenced(1..=3)).await.unwrap(),
        3
    );
    // A retried batch, and one overlapping it: only the new events are appended.
    assert_eq!(
        store.append_audit("w1", &sequenced(1..=3)).await.unwrap(),
        0
    );
    assert_eq!(
        store.append_audit("w1", &sequenced(2..=5)).await.unwrap(),
        2
    );
    // Another writer numbers independently.
    let w2 = sequenced(1..=2);
    assert_eq!(store.append_audit("w2", &w2).await.unwrap(), 2);
    let all = store.audit_before(None, 100).await.unwrap();
    let sessions: Vec<String> = all
        .iter()
        .rev()
        .map(|e| e.event.session_id.clone().unwrap())
        .collect();
    assert_eq!(sessions, ["s1", "s2", "s3", "s4", "s5", "s1", "s2"]);
    assert_eq!(all[0].event, w2[1].event, "fields round-trip");
    let ids: Vec<AuditId> = all.iter().map(|e| e.id).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
}

/// A spool written before the writers hash moved into the stream's slot, replayed after the
/// upgrade: what the old hash records as appended is not appended again, and the new hash
/// takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_in_the_writers_hash_of_earlier_versions_is_not_appended_twice() {
    let Some(mut backend) = Backend::redis() else {
        return;
    };
    let mut admin = backend.redis_server().unwrap().client();
    let _: () = redis::cmd("HSET")
        .arg("gatehouse:audit:writers")
        .arg("w1")
        .arg(2)
        .query(&mut admin)
        .unwrap();
    let store = store(&backend, None);
    assert_eq!(
        store.append_audit("w1", &sequenced(1..=3)).await.unwrap(),
        1
    );
    let recorded: Option<u64> = redis::cmd("HGET")
        .arg("{gatehouse:audit}:writers")
        .arg("w1")
        .query(&mut admin)
        .unwrap();
    assert_eq!(recorded, Some(3));
    assert_eq!(
        store.append_audit("w1", &sequenced(1..=3)).await.unwrap(),
        0
    );
}

/// `before=0-0` (nothing is older) and `after` the largest id (nothing is newer) are empty
/// pages on both backends; Redis refuses those exclusive bounds, so its adapter must not send
/// them (it answered 503 `store-unavailable` for `GET /v1/audit?before=0-0`).
async fn audit_pages_beyond_the_ends_are_empty(backend: Backend) {
    let store = store(&backend, None);
    assert_eq!(store.append_audit("w", &sequenced(1..=3)).await.unwrap(), 3);
    let smallest = AuditId { millis: 0, seq: 0 };
    let largest = AuditId {
        millis: u64::MAX,
        seq: u64::MAX,
    };
    assert!(
        store
            .audit_before(Some(smallest), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .audit_after(Some(largest), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.audit_after(Some(smallest), 10).await.unwrap().len(),
        3
    );
    assert_eq!(
        store.audit_before(Some(largest), 10).await.unwrap().len(),
        3
    );
}

/// The same through the API: `GET /v1/audit?before=0-0` was a 503 on Redis, 200 in memory.
async fn audit_before_0_0_over_http_is_an_empty_page(backend: Backend) {
    let app = TestApp::spawn(&backend, &[]).await;
    app.set_mode("ENFORCED").await;
    let reply = app
        .call(
            reqwest::Method::GET,
            "/v1/audit?before=0-0",
            Some(&app.admin()),
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, json!({ "entries": [] }));
    app.stop().await;
}

/// Every session in exactly the index of its owner, after each kind of write.
async fn the_index_follows_every_ownership_write(backend: Backend) {
    let store = store(&backend, None);
    let index = |user: &'static str| {
        let store = &store;
        async move {
            let mut page = store.user_sessions(user, None, 100).await.unwrap().sessions;
            page.sort();
            page
        }
    };
    let (s1, s2) = (id("ix1"), id("ix2"));
    assert_eq!(
        store.claim(&s1, "alice").await.unwrap(),
        ClaimOutcome::Claimed
    );
    assert_eq!(
        store.claim(&s2, "alice").await.unwrap(),
        ClaimOutcome::Claimed
    );
    assert_eq!(index("alice").await, ["ix1", "ix2"]);
    // A lost claim and a failed compare-and-set leave the index alone.
    assert_eq!(
        store.claim(&s1, "bob").await.unwrap(),
        ClaimOutcome::OwnedByOther("alice".into())
    );
    let wrong = Expected::Owner("carol".into());
    assert!(matches!(
        store.set_owner(&s1, "bob", &wrong).await.unwrap(),
        OwnerChange::Mismatch { .. }
    ));
    assert!(matches!(
        store.release(&s1, &wrong).await.unwrap(),
        OwnerChange::Mismatch { .. }
    ));
    assert_eq!(index("bob").await, Vec::<String>::new());
    // A transfer moves it; a transfer to the same owner keeps it once; a release removes it.
    store.set_owner(&s1, "bob", &Expected::Any).await.unwrap();
    store.set_owner(&s1, "bob", &Expected::Any).await.unwrap();
    assert_eq!(index("alice").await, ["ix2"]);
    assert_eq!(index("bob").await, ["ix1"]);
    store.release(&s1, &Expected::Any).await.unwrap();
    store
        .release(&s2, &Expected::Owner("alice".into()))
        .await
        .unwrap();
    assert_eq!(index("alice").await, Vec::<String>::new());
    assert_eq!(index("bob").await, Vec::<String>::new());
}

async fn audit_paging_never_skips_or_repeats(backend: Backend) {
    let store = store(&backend, None);
    for batch in 0..12_u64 {
        let events = sequenced(batch * 100 + 1..=batch * 100 + 100);
        assert_eq!(store.append_audit("w", &events).await.unwrap(), 100);
    }
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = store.audit_before(before, 7).await.unwrap();
        if page.is_empty() {
            break;
        }
        before = Some(page.last().unwrap().id);
        seen.extend(page.into_iter().map(|e| e.event.session_id.unwrap()));
    }
    let expected: Vec<String> = (1..=1200).rev().map(|i| format!("s{i}")).collect();
    assert_eq!(seen, expected);

    let mut forward = Vec::new();
    let mut after = None;
    loop {
        let page = store.audit_after(after, 500).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = Some(page.last().unwrap().id);
        forward.extend(page.into_iter().map(|e| e.id));
    }
    assert_eq!(forward.len(), 1200);
    assert!(forward.windows(2).all(|w| w[0] < w[1]));
}

/// A batch that fails answers every lookup in it and every lookup queued behind it (never
/// sent into the same outage, nothing hangs), and lookups go through again once Redis answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_fails_every_queued_lookup_then_recovers() {
    let Some(mut backend) = Backend::redis() else {
        return;
    };
    let Backend::Redis(redis) = &backend else {
        unreachable!()
    };
    let url = redis.url();
    let store = RedisStore::connect(&RedisOptions {
        connections: 1,
        timeout: Duration::from_millis(300),
        audit_maxlen: 1000,
        ..RedisOptions::new(&url)
    })
    .unwrap();
    let mut admin = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let s1 = id("s1");
    store.claim(&s1, "alice").await.unwrap();
    // Connects the lookup connection (it is lazy), so lookups are written to the frozen Redis.
    assert_eq!(store.owner(&s1).await.unwrap().as_deref(), Some("alice"));
    let () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut admin)
        .await
        .unwrap();
    backend.redis_server().unwrap().pause();
    let started = std::time::Instant::now();
    // 50 lookups, then 50 more while the first ones wait on the frozen Redis.
    let early: Vec<SessionId> = (0..50).map(|i| id(&format!("f{i}"))).collect();
    let late: Vec<SessionId> = (50..100).map(|i| id(&format!("f{i}"))).collect();
    let (early, late) = tokio::join!(
        futures_util::future::join_all(early.iter().map(|s| store.owner(s))),
        async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            futures_util::future::join_all(late.iter().map(|s| store.owner(s))).await
        }
    );
    let waited = started.elapsed();
    for owner in early.iter().chain(&late) {
        assert!(
            matches!(owner, Err(StoreError::Unavailable(_))),
            "{owner:?}"
        );
    }
    assert!(waited < Duration::from_secs(3), "waited {waited:?}");
    backend.redis_server().unwrap().resume();
    // What was written to the frozen Redis is served once it thaws: the first lookups only,
    // since the late ones failed with the batch they queued behind. (A fixed wait: what is
    // checked is that nothing more arrives.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut admin)
        .await
        .unwrap();
    let gets: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_get:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(gets <= 50, "{gets} GETs reached Redis");
    eventually(Duration::from_secs(10), "lookups after thaw", || async {
        (store.owner(&s1).await.ok()? == Some("alice".into())).then_some(())
    })
    .await;
}
