//! Backfill throughput: 1,000,000 sessions from explicit ids and 100,000 from legacy files,
//! on a private redis-server, through the same [`Backfill`] code the API and CLI run.
//!
//! Prints sessions per second, wall time and this process's peak memory (VmHWM) after each
//! run, then checks the result (every session owned by the default owner, the job's assigned
//! set complete) and times the rollback of the 1M job.
//!
//! Run: `cargo bench --bench backfill` (`BENCH_IDS`, `BENCH_FILES` to change the sizes).
//! Target (issue 6): 1M in under 60 s.

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse::audit::Audit;
use gatehouse::backfill::sources::Roots;
use gatehouse::backfill::{Backfill, JobRequest};
use gatehouse::store::{BackfillStore, RedisOptions, RedisStore};

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn write_files(dir: &std::path::Path, count: u64) {
    let transcripts = dir.join("conversation_transcripts");
    std::fs::create_dir_all(&transcripts).unwrap();
    for i in 0..count {
        let body = format!(r#"{{"session_id": "file-session-{i:07}", "messages": []}}"#);
        std::fs::write(transcripts.join(format!("t{i:07}.json")), body).unwrap();
    }
}

async fn run(backfill: &Backfill, request: JobRequest, label: &str) -> (String, f64) {
    let started = Instant::now();
    let job = backfill.create(&request).await.expect("job created");
    let job = backfill.run(job, request, |_, _| {}).await;
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(
        job.state,
        gatehouse::backfill::JobState::Completed,
        "{job:?}"
    );
    println!(
        "{label:<34} {:>9} {:>9} {:>8.2} {:>12.0} {:>9.1}",
        job.counts.found,
        job.counts.assigned,
        seconds,
        job.counts.assigned as f64 / seconds,
        peak_rss_mb()
    );
    (job.job_id, seconds)
}

#[tokio::main]
async fn main() {
    let ids = support::env_or("BENCH_IDS", 1_000_000);
    let files = support::env_or("BENCH_FILES", 100_000);
    let redis = support::RedisServer::start_volatile();
    let url = redis.url();
    let store = Arc::new(
        RedisStore::connect(&RedisOptions {
            connections: 2,
            timeout: Duration::from_secs(10),
            audit_maxlen: 1_000,
            ..RedisOptions::new(url.clone())
        })
        .unwrap(),
    );
    let backfill = Backfill::new(store.clone(), Roots::default(), Audit::disabled("bench"));
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    write_files(dir.path(), files);
    let wrote = started.elapsed();

    println!();
    println!("backfill on a private redis-server (batches of 1000, one Lua step each)");
    println!(
        "{:<34} {:>9} {:>9} {:>8} {:>12} {:>9}",
        "run", "found", "assigned", "seconds", "sessions/s", "peak MB"
    );
    let explicit: Vec<String> = (0..ids).map(|i| format!("session-{i:08}")).collect();
    let (job, _) = run(
        &backfill,
        JobRequest {
            dry_run: false,
            default_owner: "admin".into(),
            sources: Vec::new(),
            session_ids: explicit,
            actor: "bench".into(),
        },
        &format!("{ids} explicit ids"),
    )
    .await;
    run(
        &backfill,
        JobRequest {
            dry_run: false,
            default_owner: "admin".into(),
            sources: vec![dir.path().to_owned()],
            session_ids: Vec::new(),
            actor: "bench".into(),
        },
        &format!("{files} transcript files"),
    )
    .await;
    println!(
        "(writing the {files} files took {:.1} s, not counted)",
        wrote.as_secs_f64()
    );

    assert_eq!(store.assigned_count(&job).await.unwrap(), ids);
    let mut redis = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let indexed: u64 = redis::cmd("SCARD")
        .arg("user_chat_sessions:admin")
        .query(&mut redis)
        .unwrap();
    assert_eq!(indexed, ids + files, "every session indexed");

    let started = Instant::now();
    let rolled = backfill.rollback(&job, "bench").await.unwrap();
    let report = rolled.job.rollback.unwrap();
    assert_eq!(report.released, ids);
    println!(
        "rollback of the {ids}-id job: {:.2} s ({:.0} sessions/s)",
        started.elapsed().as_secs_f64(),
        ids as f64 / started.elapsed().as_secs_f64()
    );
}
