//! The blackout of a Sentinel failover, as a backend sees it: a release gatehouse on a
//! master with one replica and three Sentinels (`down-after-milliseconds 1000`), a client
//! asking `/v1/validate` for alice's session back to back (ENFORCED), and the master killed
//! (SIGKILL). Prints, per round: when the Sentinels switched, how long checks were not
//! answered `owner` (the blackout: 503s, never an allow for anyone else), and how long after
//! the switch the instance answered again.
//!
//! Run: `cargo bench --bench failover` (`BENCH_ROUNDS`, default 3). Needs redis-sentinel
//! (`apt-get install redis-sentinel`; `redis-server --sentinel` is used where it is missing).

#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::sentinel::SentinelSet;
use support::{Client, env_or, start_gatehouse, token};

fn main() {
    let rounds = env_or("BENCH_ROUNDS", 3);
    println!(
        "Sentinel failover, 1 replica, 3 Sentinels, down-after-milliseconds 1000, validate back to back (ENFORCED)"
    );
    println!(
        "{:<6} {:>14} {:>12} {:>16} {:>9} {:>8}",
        "round", "switch (s)", "blackout (s)", "after switch (s)", "checks", "503s"
    );
    for round in 1..=rounds {
        let mut set = SentinelSet::start(1, 3).expect("redis-server and redis-sentinel start");
        let dir = tempfile::tempdir().expect("temporary directory");
        let env = set.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (_gatehouse, base) = start_gatehouse(env!("CARGO_BIN_EXE_gatehouse"), dir.path(), &env);
        let http = Client::new(&base);
        http.claim_for_alice_and_enforce("s1");
        let alice = token("alice", &[]);
        let ask = || http.send("POST", "/v1/validate", &alice, r#"{"session_id":"s1"}"#);
        let owner = |(status, body): &(u16, String)| *status == 200 && body.contains("\"owner\"");
        assert!(owner(&ask()), "alice owns s1 before the kill");
        let old = set.master_addr().expect("a master");

        let killed = Instant::now();
        set.servers[0].crash();
        // The Sentinels are watched beside the checks, so the checks run back to back.
        let switched = std::sync::Arc::new(std::sync::Mutex::new(None::<Instant>));
        let watcher = {
            let (switched, set) = (switched.clone(), &set);
            move || {
                while switched.lock().unwrap().is_none()
                    && killed.elapsed() < Duration::from_secs(60)
                {
                    if set.master_addr().is_some_and(|addr| addr != old) {
                        *switched.lock().unwrap() = Some(Instant::now());
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        };
        let (mut checks, mut unavailable) = (0_u64, 0_u64);
        let mut first_bad = None::<Instant>;
        let back = std::thread::scope(|scope| {
            scope.spawn(watcher);
            loop {
                let answer = ask();
                checks += 1;
                let now = Instant::now();
                if owner(&answer) {
                    if first_bad.is_some() && switched.lock().unwrap().is_some() {
                        break now;
                    }
                } else {
                    assert_eq!(answer.0, 503, "only 503s in between: {answer:?}");
                    unavailable += 1;
                    first_bad.get_or_insert(now);
                }
                assert!(
                    now - killed < Duration::from_secs(60),
                    "no recovery within 60 s"
                );
            }
        });
        let switched = *switched.lock().unwrap();
        let (first_bad, switched) = (first_bad.unwrap(), switched.unwrap());
        println!(
            "{round:<6} {:>14.2} {:>12.2} {:>16.2} {checks:>9} {unavailable:>8}",
            (switched - killed).as_secs_f64(),
            (back - first_bad).as_secs_f64(),
            back.saturating_duration_since(switched).as_secs_f64(),
        );
    }
}
