//! `examples/chat_api.rs`, run as a process next to a gatehouse instance on one Redis: its
//! OwnershipLayer follows gatehouse's settings and records denials in gatehouse's audit stream.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::Method;

use crate::common::{Backend, SECRET, TestApp, eventually, free_port};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The example's binary, built by `cargo test` next to this test binary.
fn example_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.parent()?.join("examples").join("chat_api");
    if path.exists() {
        return Some(path);
    }
    crate::common::skip::missing(
        "the chat_api example test",
        &format!(
            "{} is not built (a whole `cargo test` builds the examples)",
            path.display()
        ),
    );
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_api_example_is_protected_and_audited() {
    let Some(binary) = example_binary() else {
        return;
    };
    let Some(mut backend) = Backend::redis() else {
        return;
    };
    let gatehouse = TestApp::spawn(&backend, &[]).await;
    let port = free_port();
    let _chat = Killed(
        Command::new(binary)
            .env("REDIS_URL", backend.redis_server().unwrap().url())
            .env("GATEHOUSE_JWT_SECRET", SECRET)
            .env("CHAT_LISTEN", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the example starts"),
    );
    let chat = format!("http://127.0.0.1:{port}/api/chat/sessions/c1/messages");
    let http = reqwest::Client::new();
    let (alice, bob) = (gatehouse.user("alice"), gatehouse.user("bob"));
    gatehouse.claim("c1", "alice").await;

    // LOG_ONLY at first: bob gets through (would deny); then gatehouse enforces, and the
    // example follows through pub/sub.
    let first = eventually(Duration::from_secs(10), "the example listening", || async {
        http.get(&chat).bearer_auth(&bob).send().await.ok()
    })
    .await;
    assert_eq!(first.status(), 200);
    gatehouse.set_mode("ENFORCED").await;
    eventually(
        Duration::from_secs(5),
        "ENFORCED applied by the example",
        || async {
            let status = http
                .get(&chat)
                .bearer_auth(&bob)
                .send()
                .await
                .ok()?
                .status();
            (status == 403).then_some(())
        },
    )
    .await;

    let posted = http
        .post(&chat)
        .bearer_auth(&alice)
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 201);
    let read = http.get(&chat).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(read.text().await.unwrap(), "alice: hello");
    let denied = http.get(&chat).bearer_auth(&bob).send().await.unwrap();
    assert_eq!(denied.status(), 403);
    assert_eq!(denied.headers()["content-type"], "application/problem+json");
    let unauthenticated = http.get(&chat).send().await.unwrap();
    assert_eq!(unauthenticated.status(), 401);

    let entry = eventually(
        Duration::from_secs(5),
        "the example's denial audited",
        || async {
            let reply = gatehouse
                .call(
                    Method::GET,
                    "/v1/audit?source=middleware&decision=deny&user=bob&limit=1",
                    Some(&gatehouse.admin()),
                    None,
                )
                .await;
            reply.body["entries"].as_array()?.first().cloned()
        },
    )
    .await;
    assert_eq!(entry["instance"], "chat-api");
    assert_eq!(entry["endpoint"], "chat.messages");
    assert_eq!(entry["path"], "/api/chat/sessions/c1/messages");
    assert_eq!(entry["session_id"], "c1");
    gatehouse.stop().await;
}
