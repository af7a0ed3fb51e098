//! Index integrity (issue 14 point 8, acceptance 4): the user index never drifts from the owner
//! keys, and a 503 `store-unavailable` to a write means the write was not applied.
//!
//! Both tests read Redis directly: every `chat_session_owner:{s}` = `v` must have `s` in
//! `user_chat_sessions:{v}`, and no index set may hold anything else.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use redis::Commands;
use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{Backend, RedisServer, Reply, TestApp, eventually};

/// (session id, user) pairs.
type Pairs = BTreeSet<(String, String)>;

/// (session, user) pairs: from the owner keys, and from the index sets.
fn owners_and_index(redis: &RedisServer) -> (Pairs, Pairs) {
    let mut conn = redis.client();
    let owner_keys: Vec<String> = conn
        .scan_match::<_, String>("chat_session_owner:*")
        .expect("SCAN owner keys")
        .collect::<Result<_, _>>()
        .expect("SCAN owner keys");
    let mut owners = BTreeSet::new();
    for key in owner_keys {
        let owner: String = conn.get(&key).expect("GET owner");
        let session = key.trim_start_matches("chat_session_owner:").to_owned();
        owners.insert((session, owner));
    }
    let index_keys: Vec<String> = conn
        .scan_match::<_, String>("user_chat_sessions:*")
        .expect("SCAN index keys")
        .collect::<Result<_, _>>()
        .expect("SCAN index keys");
    let mut index = BTreeSet::new();
    for key in index_keys {
        let user = key.trim_start_matches("user_chat_sessions:").to_owned();
        let members: Vec<String> = conn.smembers(&key).expect("SMEMBERS");
        index.extend(members.into_iter().map(|s| (s, user.clone())));
    }
    (owners, index)
}

fn assert_index_exact(redis: &RedisServer) {
    let (owners, index) = owners_and_index(redis);
    assert_same(&owners, &index, "");
}

fn assert_same(owners: &Pairs, index: &Pairs, context: &str) {
    let unindexed: Vec<_> = owners.difference(index).collect();
    let stale: Vec<_> = index.difference(owners).collect();
    assert!(
        unindexed.is_empty() && stale.is_empty(),
        "index drifted{context}: owner keys missing from the index {unindexed:?}; index \
         entries without their owner key {stale:?}"
    );
}

/// A small deterministic generator (xorshift64*): reproducible rounds without a crate.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

/// One write of the API, as a client would send it (and send again).
#[derive(Debug, Clone)]
enum Write {
    /// `POST /v1/sessions/{session}/claim` for `user`, by a caller holding `gatehouse:claim`
    /// and named `user` (so it claims for `user` under either claim policy).
    Claim { session: String, user: String },
    /// `PUT /v1/sessions/{session}/owner` as an admin.
    Transfer {
        session: String,
        owner: String,
        expected: Option<String>,
    },
    /// `DELETE /v1/sessions/{session}` as `by` (`None`: an admin).
    Release { session: String, by: Option<String> },
}

impl Write {
    async fn send(&self, app: &TestApp) -> Reply {
        match self {
            Write::Claim { session, user } => {
                let token = app.token(user, &[], &["gatehouse:claim"]);
                app.call(
                    Method::POST,
                    &format!("/v1/sessions/{session}/claim"),
                    Some(&token),
                    Some(json!({ "user": user })),
                )
                .await
            }
            Write::Transfer {
                session,
                owner,
                expected,
            } => {
                let mut body = json!({ "owner": owner });
                if let Some(expected) = expected {
                    body["expected_owner"] = json!(expected);
                }
                app.call(
                    Method::PUT,
                    &format!("/v1/sessions/{session}/owner"),
                    Some(&app.admin()),
                    Some(body),
                )
                .await
            }
            Write::Release { session, by } => {
                let token = by
                    .as_ref()
                    .map_or_else(|| app.admin(), |user| app.user(user));
                app.call(
                    Method::DELETE,
                    &format!("/v1/sessions/{session}"),
                    Some(&token),
                    None,
                )
                .await
            }
        }
    }
}

const SESSIONS: [&str; 3] = ["race-0", "race-1", "race-2"];
const USERS: [&str; 3] = ["alice", "bob", "carol"];

fn random_write(rng: &mut Rng) -> Write {
    let session = SESSIONS[rng.below(SESSIONS.len())].to_owned();
    let user = USERS[rng.below(USERS.len())].to_owned();
    match rng.below(5) {
        0 | 1 => Write::Claim { session, user },
        2 => Write::Transfer {
            session,
            owner: user,
            expected: None,
        },
        3 => Write::Transfer {
            session,
            owner: user,
            expected: Some(USERS[rng.below(USERS.len())].to_owned()),
        },
        _ => Write::Release {
            session,
            by: (rng.below(2) == 0).then(|| USERS[rng.below(USERS.len())].to_owned()),
        },
    }
}

/// 1,000 rounds of concurrent claims, transfers and releases of a few sessions through two
/// instances on one Redis end with the index exactly equal to the owner keys. Before the
/// writes moved both in one script, a transfer on A racing a release on B left ids in the
/// index with no owner key (the index update was a second round trip).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writes_on_two_instances_keep_the_index_exact() {
    let Some(backend) = Backend::redis() else {
        return;
    };
    let a = TestApp::spawn(&backend, &[]).await;
    let b = TestApp::spawn(&backend, &[]).await;
    let apps = [&a, &b];
    let Backend::Redis(redis) = &backend else {
        unreachable!("a Redis backend")
    };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let started = Instant::now();
    for round in 0..1000 {
        let writes: Vec<Write> = (0..12).map(|_| random_write(&mut rng)).collect();
        let replies = futures_util::future::join_all(
            writes
                .iter()
                .enumerate()
                .map(|(n, write)| write.send(apps[n % 2])),
        )
        .await;
        // Which of them win is up to the race; none may fail (the session tests check the
        // answers themselves).
        for (write, reply) in writes.iter().zip(&replies) {
            assert!(
                (200..500).contains(&reply.status),
                "round {round}: {write:?} -> {reply:?}"
            );
        }
        // Between rounds nothing is in flight: the index must be exact after every round, not
        // only at the end (a later write can hide an earlier drift by repeating its entry).
        let (owners, index) = owners_and_index(redis);
        assert_same(
            &owners,
            &index,
            &format!(" after round {round} ({writes:?})"),
        );
    }
    assert_index_exact(redis);
    eprintln!("1000 rounds in {:?}", started.elapsed());
    a.stop().await;
    b.stop().await;
}

/// Whether Redis answers a PING within 100ms on a fresh connection.
async fn answers(addr: &str) -> bool {
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream.write_all(b"PING\r\n").await.ok()?;
        let mut reply = [0_u8; 7];
        stream.read_exact(&mut reply).await.ok()?;
        Some(())
    };
    tokio::time::timeout(Duration::from_millis(100), probe)
        .await
        .ok()
        .flatten()
        .is_some()
}

/// The owner of `session`, read straight from Redis.
fn owner_in_redis(redis: &RedisServer, session: &str) -> Option<String> {
    redis
        .client()
        .get(format!("chat_session_owner:{session}"))
        .expect("GET owner")
}

/// Writes sent while Redis is frozen (`DEBUG SLEEP`, longer than the store timeout): a 503
/// `store-unavailable` answer means the write was not applied (checked after the thaw); a
/// 504 `write-outcome-unknown` may have been applied, and repeating the request is safe (it
/// succeeds with the answer an applied write gets, and the state is the one asked for).
/// Before, a timeout after sending was a 503, and Redis applied the write after the thaw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_never_leaves_an_applied_write_answered_503() {
    let Some(backend) = Backend::redis() else {
        return;
    };
    let app = TestApp::spawn(&backend, &[("GATEHOUSE_REDIS_TIMEOUT", "300ms")]).await;
    let Backend::Redis(redis) = &backend else {
        unreachable!("a Redis backend")
    };
    let mut writes = Vec::new();
    for i in 0..4 {
        let (claimed, moved, released) =
            (format!("fz-c{i}"), format!("fz-t{i}"), format!("fz-r{i}"));
        for session in [&moved, &released] {
            let setup = Write::Claim {
                session: session.clone(),
                user: "alice".into(),
            };
            assert_eq!(setup.send(&app).await.status, 201);
        }
        writes.push((
            Write::Claim {
                session: claimed.clone(),
                user: "bob".into(),
            },
            claimed,
            None,
            Some("bob"),
        ));
        writes.push((
            Write::Transfer {
                session: moved.clone(),
                owner: "bob".into(),
                expected: Some("alice".into()),
            },
            moved,
            Some("alice"),
            Some("bob"),
        ));
        writes.push((
            Write::Release {
                session: released.clone(),
                by: Some("alice".into()),
            },
            released,
            Some("alice"),
            None,
        ));
    }
    // Loads the transfer and release scripts too (the claims above loaded theirs), so that
    // Redis runs each write below as soon as it reads it, rather than answering NOSCRIPT.
    for write in [
        Write::Transfer {
            session: "fz-scratch".into(),
            owner: "alice".into(),
            expected: None,
        },
        Write::Release {
            session: "fz-scratch".into(),
            by: None,
        },
    ] {
        assert!(write.send(&app).await.status < 300);
    }
    assert_index_exact(redis);

    // Freeze Redis from a connection of its own for longer than the store timeout.
    let url = redis.url();
    let freeze = tokio::task::spawn_blocking(move || {
        let mut conn = redis::Client::open(url)
            .and_then(|c| c.get_connection())
            .expect("a connection to freeze Redis with");
        redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg("2")
            .query::<()>(&mut conn)
            .expect("DEBUG SLEEP (enable-debug-command local)");
    });
    let addr = redis.addr();
    eventually(Duration::from_secs(5), "Redis to freeze", || async {
        (!answers(&addr).await).then_some(())
    })
    .await;
    let replies = futures_util::future::join_all(writes.iter().map(|(w, ..)| w.send(&app))).await;
    assert!(
        !freeze.is_finished(),
        "Redis thawed before the writes were answered"
    );
    freeze.await.expect("DEBUG SLEEP returns");

    // First the retries (HTTP round trips through the thawed Redis, which by then has run
    // whatever was queued in its sockets during the freeze), then the 503s are checked.
    let mut unknown = 0;
    for ((write, session, _, after), reply) in writes.iter().zip(&replies) {
        let after = after.map(str::to_owned);
        match reply.status {
            503 => reply.assert_problem(503, "store-unavailable"),
            504 => {
                reply.assert_problem(504, "write-outcome-unknown");
                unknown += 1;
                // Repeating the same request is safe and answers as an applied write does.
                let retry = write.send(&app).await;
                let ok = match write {
                    Write::Claim { .. } => {
                        matches!(retry.status, 200 | 201) && retry.body["owner"] == "bob"
                    }
                    Write::Transfer { .. } => retry.status == 200 && retry.body["owner"] == "bob",
                    Write::Release { .. } => retry.status == 204,
                };
                assert!(ok, "retry of {write:?} after {reply:?}: {retry:?}");
                assert_eq!(owner_in_redis(redis, session), after, "{write:?}");
            }
            _ => {
                // Answered before the freeze took hold or after it: applied.
                assert!(reply.status < 300, "{write:?}: {reply:?}");
                assert_eq!(owner_in_redis(redis, session), after, "{write:?}");
            }
        }
    }
    for ((write, session, before, _), reply) in writes.iter().zip(&replies) {
        if reply.status == 503 {
            assert_eq!(
                owner_in_redis(redis, session),
                before.map(str::to_owned),
                "{write:?} was answered 503 store-unavailable but applied: {reply:?}"
            );
        }
    }
    assert!(
        unknown > 0,
        "no write met the freeze (the test proves nothing): {replies:?}"
    );
    assert_index_exact(redis);
    app.stop().await;
}

/// A loopback proxy to Redis that reports when a client has sent bytes containing `needle`,
/// and drops every connection on `cut` (tests of a connection lost mid-call).
struct WatchingProxy {
    port: u16,
    seen: std::sync::Arc<tokio::sync::Notify>,
    cut: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl WatchingProxy {
    async fn start(target: String, needle: &'static [u8]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let port = listener.local_addr().expect("bound address").port();
        let seen = std::sync::Arc::new(tokio::sync::Notify::new());
        let cut = tokio_util::sync::CancellationToken::new();
        let (notify, cancel) = (seen.clone(), cut.clone());
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else {
                    continue;
                };
                let (notify, cancel) = (notify.clone(), cancel.clone());
                tokio::spawn(async move {
                    let (mut from_client, mut to_client) = inbound.into_split();
                    let (mut from_server, mut to_server) = outbound.into_split();
                    let upstream = async {
                        let mut buf = vec![0_u8; 64 * 1024];
                        loop {
                            let n = match from_client.read(&mut buf).await {
                                Ok(n) if n > 0 => n,
                                _ => break,
                            };
                            if to_server.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                            if buf[..n].windows(needle.len()).any(|w| w == needle) {
                                notify.notify_one();
                            }
                        }
                    };
                    let downstream = tokio::io::copy(&mut from_server, &mut to_client);
                    tokio::select! {
                        _ = upstream => {}
                        _ = downstream => {}
                        () = cancel.cancelled() => {}
                    }
                });
            }
        });
        Self {
            port,
            seen,
            cut,
            task,
        }
    }

    fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for WatchingProxy {
    fn drop(&mut self) {
        self.cut.cancel();
        self.task.abort();
    }
}

/// A connection that drops while a write waits for its answer is an unknown outcome, not a
/// 503: Redis (frozen here, so the write is surely waiting) still runs what it had read once
/// it thaws. Before, the dropped connection was a 503 `store-unavailable` for an applied write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_mid_write_is_an_unknown_outcome() {
    let Some(backend) = Backend::redis() else {
        return;
    };
    let Backend::Redis(redis) = &backend else {
        unreachable!("a Redis backend")
    };
    let proxy = WatchingProxy::start(redis.addr(), b"cut-1").await;
    let via_proxy = proxy.redis_url();
    let app = TestApp::spawn(
        &backend,
        &[("REDIS_URL", &via_proxy), ("GATEHOUSE_REDIS_TIMEOUT", "5s")],
    )
    .await;
    // Loads the claim script, so that the claim below runs as soon as Redis reads it.
    let setup = Write::Claim {
        session: "cut-0".into(),
        user: "bob".into(),
    };
    assert_eq!(setup.send(&app).await.status, 201);
    let claim = Write::Claim {
        session: "cut-1".into(),
        user: "bob".into(),
    };

    let url = redis.url();
    let freeze = tokio::task::spawn_blocking(move || {
        let mut conn = redis::Client::open(url)
            .and_then(|c| c.get_connection())
            .expect("a connection to freeze Redis with");
        redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg("2")
            .query::<()>(&mut conn)
            .expect("DEBUG SLEEP (enable-debug-command local)");
    });
    let addr = redis.addr();
    eventually(Duration::from_secs(5), "Redis to freeze", || async {
        (!answers(&addr).await).then_some(())
    })
    .await;
    let sent = claim.send(&app);
    let cut = async {
        // Once the claim has reached Redis's socket (it waits there until the thaw), drop
        // every connection under it.
        proxy.seen.notified().await;
        proxy.cut.cancel();
    };
    let (reply, ()) = tokio::join!(sent, cut);
    reply.assert_problem(504, "write-outcome-unknown");
    assert!(!freeze.is_finished(), "Redis thawed before the cut");
    freeze.await.expect("DEBUG SLEEP returns");

    // Applied after all, by the thawed Redis; the retry is the idempotent 200.
    eventually(
        Duration::from_secs(5),
        "the claim to be applied",
        || async { (owner_in_redis(redis, "cut-1").as_deref() == Some("bob")).then_some(()) },
    )
    .await;
    // The client repeats it, here through an instance with a working link (this one's link
    // stays cut): the idempotent 200.
    let direct = TestApp::spawn(&backend, &[]).await;
    let retry = claim.send(&direct).await;
    assert_eq!((retry.status, &retry.body["owner"]), (200, &json!("bob")));
    assert_index_exact(redis);
    direct.stop().await;
    app.stop().await;
}
