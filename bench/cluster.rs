//! What Redis Cluster costs `/v1/validate`: the same load, with the owner cache off so every
//! check is an owner lookup, against a release gatehouse on a standalone redis-server and
//! against one on a 3-primary Redis Cluster (one replica each), on the same machine in one
//! run, and the ratio cluster / standalone.
//!
//! Both instances run side by side (ENFORCED), each with 1,000 sessions claimed for alice
//! beforehand; wrk (`-t2 -c{BENCH_CONNECTIONS}`) sends alice's checks of sessions picked at
//! random among them, so the cluster's lookups spread over all three primaries. Each topology
//! is warmed up for 1 s, then measured once per round, interleaved. Non-2xx answers and
//! socket errors are counted and printed.
//!
//! Then the answers are checked under concurrency: a service asks, 32 checks at a time, about
//! alice and sessions owned by alice or by bob; every answer must name that session and its
//! owner, and allow exactly alice's. A wrong answer fails the run (exit status 1).
//!
//! Run: `cargo bench --bench cluster`. Knobs: `BENCH_SECONDS` (8), `BENCH_CONNECTIONS` (32),
//! `BENCH_ROUNDS` (2), `BENCH_CHECK_SECONDS` (3).

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use support::cluster::RedisCluster;
use support::{Client, Load, RedisServer, Run, env_or, headers, token, token_with_scope};

/// Sessions alice owns (the load picks among them).
const ALICE_SESSIONS: usize = 1000;
/// Sessions bob owns (only the answer check asks about them).
const BOB_SESSIONS: usize = 200;
/// Checks in flight during the answer check.
const CHECKERS: u64 = 32;

fn session(owner: &str, n: usize) -> String {
    format!("bench-{owner}-{n}")
}

/// Claims every session for its owner, then turns ENFORCED on.
fn claim_sessions(base: &str) {
    let http = Client::new(base);
    let backend = token_with_scope("chat-backend", "gatehouse:claim");
    for (owner, count) in [("alice", ALICE_SESSIONS), ("bob", BOB_SESSIONS)] {
        let body = format!(r#"{{"user":"{owner}"}}"#);
        for n in 0..count {
            let claim = format!("/v1/sessions/{}/claim", session(owner, n));
            let (status, answer) = http.send("POST", &claim, &backend, &body);
            assert_eq!(status, 201, "claim {claim}: {answer}");
        }
    }
    let enforce = r#"{"mode":"ENFORCED","reason":"benchmark"}"#;
    let admin = token("root", &["admin"]);
    assert_eq!(http.send("PUT", "/v1/enforcement", &admin, enforce).0, 200);
}

/// What the answer check saw.
#[derive(Default)]
struct Checked {
    checks: u64,
    /// Answers other than 200, by status.
    by_status: BTreeMap<u16, u64>,
    /// 200s that contradict the ownership: the first few, described.
    wrong: Vec<String>,
    wrong_count: u64,
    /// Of those, allows of a session alice does not own.
    wrong_allows: u64,
}

/// A service asks about alice and random sessions of alice's and bob's, `CHECKERS` at a time,
/// for `seconds`; each 200 is compared with the session's owner.
fn check_answers(base: &str, seconds: u64) -> Checked {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let service = token_with_scope("chat-backend", "gatehouse:validate");
    let http = reqwest::Client::new();
    let url = format!("{base}/v1/validate");
    let until = Instant::now() + Duration::from_secs(seconds);
    runtime.block_on(async {
        let tasks: Vec<_> = (0..CHECKERS)
            .map(|seed| {
                let (http, url, service) = (http.clone(), url.clone(), service.clone());
                tokio::spawn(async move {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
                    let mut seen = Checked::default();
                    while Instant::now() < until {
                        let n = rng.gen_range(0..ALICE_SESSIONS + BOB_SESSIONS);
                        let (owner, id) = if n < ALICE_SESSIONS {
                            ("alice", session("alice", n))
                        } else {
                            ("bob", session("bob", n - ALICE_SESSIONS))
                        };
                        let body = serde_json::json!({"session_id": id, "user": "alice"});
                        let answer = http.post(&url).bearer_auth(&service).json(&body).send();
                        let (status, json) = match answer.await {
                            Ok(r) => {
                                let status = r.status().as_u16();
                                (status, r.json::<serde_json::Value>().await.ok())
                            }
                            Err(_) => (0, None),
                        };
                        seen.checks += 1;
                        if status != 200 {
                            *seen.by_status.entry(status).or_default() += 1;
                            continue;
                        }
                        let json = json.unwrap_or_default();
                        let allowed = json["allowed"].as_bool();
                        let right = json["session_id"] == id.as_str()
                            && json["owner"] == owner
                            && allowed == Some(owner == "alice");
                        if !right {
                            seen.wrong_count += 1;
                            if owner != "alice" && allowed == Some(true) {
                                seen.wrong_allows += 1;
                            }
                            if seen.wrong.len() < 5 {
                                seen.wrong.push(format!("{id} (owner {owner}): {json}"));
                            }
                        }
                    }
                    seen
                })
            })
            .collect();
        let mut all = Checked::default();
        for task in tasks {
            let seen = task.await.expect("a checker finishes");
            all.checks += seen.checks;
            for (status, n) in seen.by_status {
                *all.by_status.entry(status).or_default() += n;
            }
            all.wrong_count += seen.wrong_count;
            all.wrong_allows += seen.wrong_allows;
            all.wrong.extend(seen.wrong);
        }
        all.wrong.truncate(5);
        all
    })
}

/// How many of alice's sessions each primary serves.
fn sessions_per_primary(cluster: &RedisCluster) -> BTreeMap<String, usize> {
    let mut per = BTreeMap::new();
    for n in 0..ALICE_SESSIONS {
        let key = format!("chat_session_owner:{}", session("alice", n));
        *per.entry(cluster.node_of(&key)).or_default() += 1;
    }
    per
}

/// `total_commands_processed` of `server` (INFO stats).
fn commands_processed(server: &RedisServer) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query(&mut server.client())
        .expect("INFO stats");
    info.lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("INFO stats has total_commands_processed")
}

fn main() {
    let load = Load {
        rounds: env_or("BENCH_ROUNDS", 2).max(1),
        ..Load::from_env()
    };
    let check_seconds = env_or("BENCH_CHECK_SECONDS", 3);
    let binary = env!("CARGO_BIN_EXE_gatehouse");
    let dir = tempfile::tempdir().expect("temporary directory");
    let spools: Vec<_> = (0..2)
        .map(|_| tempfile::tempdir().expect("temporary directory"))
        .collect();

    let standalone = RedisServer::start_volatile();
    let (_standalone_gatehouse, standalone_base) = support::start_gatehouse(
        binary,
        spools[0].path(),
        &[
            ("REDIS_URL", &standalone.url()),
            ("GATEHOUSE_OWNER_CACHE", "off"),
        ],
    );
    let cluster = RedisCluster::start(3, 1).expect("redis-server starts cluster nodes");
    let seeds: Vec<String> = cluster.nodes[..3].iter().map(RedisServer::addr).collect();
    let seeds = seeds.join(",");
    let (_cluster_gatehouse, cluster_base) = support::start_gatehouse(
        binary,
        spools[1].path(),
        &[
            ("REDIS_URL", "redis://cluster"),
            ("GATEHOUSE_REDIS_CLUSTER", &seeds),
            ("GATEHOUSE_OWNER_CACHE", "off"),
        ],
    );
    claim_sessions(&standalone_base);
    claim_sessions(&cluster_base);
    let spread = sessions_per_primary(&cluster);

    let script = dir.path().join("validate.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\n\
             wrk.headers[\"Content-Type\"] = \"application/json\"\n\
             local bodies = {{}}\n\
             for i = 0, {last} do bodies[i + 1] = '{{\"session_id\":\"bench-alice-' .. i .. '\"}}' end\n\
             request = function() return wrk.format(nil, nil, nil, bodies[math.random({ALICE_SESSIONS})]) end\n",
            last = ALICE_SESSIONS - 1,
        ),
    )
    .expect("the wrk script is written");
    let mut args = vec!["-s".to_owned(), script.display().to_string()];
    args.extend(headers(&[(
        "Authorization",
        &format!("Bearer {}", token("alice", &[])),
    )]));
    let cases: Vec<(&str, String, Vec<String>)> = vec![
        (
            "standalone",
            format!("{standalone_base}/v1/validate"),
            args.clone(),
        ),
        ("cluster 3+3", format!("{cluster_base}/v1/validate"), args),
    ];
    // Commands each Redis processed during the load (warm-up included): the lookups reached
    // Redis (the cache is off) and spread over the primaries.
    let servers: Vec<&RedisServer> = std::iter::once(&standalone)
        .chain(&cluster.nodes[..3])
        .collect();
    let before: Vec<u64> = servers.iter().map(|s| commands_processed(s)).collect();
    let runs = load.interleaved(&cases);
    let commands: Vec<u64> = servers
        .iter()
        .zip(&before)
        .map(|(s, before)| commands_processed(s) - before)
        .collect();
    let checked: Vec<Checked> = [&standalone_base, &cluster_base]
        .into_iter()
        .map(|base| check_answers(base, check_seconds))
        .collect();

    let Load {
        seconds,
        connections,
        rounds,
    } = load;
    println!();
    println!(
        "/v1/validate, owner cache off, ENFORCED, alice's token, {ALICE_SESSIONS} sessions of alice's picked at random: \
         wrk -t2 -c{connections} -d{seconds}s, {rounds} rounds interleaved, one machine ({} cores shared by everything)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "cluster: 3 primaries with 1 replica each; alice's sessions per primary: {}",
        spread
            .iter()
            .map(|(node, n)| format!("{node} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "{:<12} {:>6} {:>10} {:>8} {:>8} {:>9} {:>9} {:>8}",
        "topology", "round", "req/s", "p50 ms", "p99 ms", "requests", "non-2xx", "sock err"
    );
    let row = |name: &str, round: &str, run: &Run| {
        println!(
            "{name:<12} {round:>6} {:>10.0} {:>8.2} {:>8.2} {:>9} {:>9} {:>8}",
            run.rps, run.p50, run.p99, run.requests, run.non_2xx, run.socket_errors
        );
    };
    for round in 0..rounds as usize {
        for ((name, _, _), case) in cases.iter().zip(&runs) {
            row(name, &(round + 1).to_string(), &case[round]);
        }
    }
    // The mean throughput, the worst p99 and the sums over the rounds.
    let summary = |case: &[Run]| Run {
        rps: case.iter().map(|r| r.rps).sum::<f64>() / case.len() as f64,
        p50: case.iter().map(|r| r.p50).fold(0.0, f64::max),
        p99: case.iter().map(|r| r.p99).fold(0.0, f64::max),
        requests: case.iter().map(|r| r.requests).sum(),
        non_2xx: case.iter().map(|r| r.non_2xx).sum(),
        socket_errors: case.iter().map(|r| r.socket_errors).sum(),
    };
    let (standalone_all, cluster_all) = (summary(&runs[0]), summary(&runs[1]));
    row("standalone", "all", &standalone_all);
    row("cluster 3+3", "all", &cluster_all);
    println!("(all: mean req/s, worst p50 and p99, sums)");
    let per_round: Vec<String> = runs[0]
        .iter()
        .zip(&runs[1])
        .map(|(s, c)| format!("{:.2}", c.rps / s.rps))
        .collect();
    println!(
        "ratio cluster / standalone, req/s: {:.2} (per round: {})",
        cluster_all.rps / standalone_all.rps,
        per_round.join(", ")
    );
    // The warm-up's requests are not in wrk's counts: 1 s of each at about the mean rate.
    let checks = |all: &Run| all.requests as f64 + all.rps;
    let primaries: Vec<String> = commands[1..].iter().map(u64::to_string).collect();
    println!(
        "Redis commands during the load (warm-up included): standalone {} (~{:.2} per check); cluster primaries {} (~{:.2} per check)",
        commands[0],
        commands[0] as f64 / checks(&standalone_all),
        primaries.join(" + "),
        commands[1..].iter().sum::<u64>() as f64 / checks(&cluster_all),
    );

    println!();
    println!(
        "answers checked, {CHECKERS} in flight for {check_seconds}s: a service asks about alice and sessions of alice's ({ALICE_SESSIONS}) or bob's ({BOB_SESSIONS})"
    );
    let mut failed = false;
    for ((name, _, _), seen) in cases.iter().zip(&checked) {
        let others: Vec<String> = seen
            .by_status
            .iter()
            .map(|(status, n)| match status {
                0 => format!("{n} unanswered"),
                _ => format!("{n} x {status}"),
            })
            .collect();
        println!(
            "{name:<12} {:>7} checks, {} wrong, non-200: {}",
            seen.checks,
            seen.wrong_count,
            if others.is_empty() {
                "none".to_owned()
            } else {
                others.join(", ")
            }
        );
        if seen.wrong_count > 0 {
            failed = true;
            println!(
                "!!! WRONG ANSWERS on {name}: {} ({} allows of sessions alice does not own); first ones:",
                seen.wrong_count, seen.wrong_allows
            );
            for wrong in &seen.wrong {
                println!("!!!   {wrong}");
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}
