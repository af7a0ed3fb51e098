//! The real `gatehouse` binary: the embedded default prints a working admin token, and with
//! `REDIS_URL` ownership survives a restart, without TTLs.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{Backend, SECRET, TestApp, eventually, free_port};

/// A running `gatehouse` process; killed on drop.
pub(crate) struct Process {
    child: Child,
    /// `http://127.0.0.1:{port}`.
    pub(crate) base: String,
    /// Its `GATEHOUSE_LISTEN`.
    pub(crate) listen: String,
    stderr: mpsc::Receiver<String>,
    /// The log lines.
    stdout: mpsc::Receiver<String>,
    _spool_dir: tempfile::TempDir,
}

impl Process {
    pub(crate) fn start(env: &[(&str, String)]) -> Self {
        Self::start_on("127.0.0.1", env)
    }

    /// Listening on `host` (e.g. `0.0.0.0`), on a free port.
    pub(crate) fn start_on(host: &str, env: &[(&str, String)]) -> Self {
        let port = free_port();
        let listen = format!("{host}:{port}");
        let mut command = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
        for (key, _) in std::env::vars() {
            if key.starts_with("GATEHOUSE_") || key == "REDIS_URL" {
                command.env_remove(key);
            }
        }
        let spool_dir = tempfile::tempdir().expect("temporary directory");
        command
            .env(
                "GATEHOUSE_AUDIT_SPOOL",
                spool_dir.path().join("audit.spool"),
            )
            .env("GATEHOUSE_LISTEN", &listen)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("the binary starts");
        let stderr = lines(child.stderr.take().expect("piped stderr"));
        let stdout = lines(child.stdout.take().expect("piped stdout"));
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            listen,
            stderr,
            stdout,
            _spool_dir: spool_dir,
        }
    }

    /// The first stderr line that looks like a JWT.
    fn printed_token(&self) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.starts_with("ey") && line.split('.').count() == 3 => return line,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("no admin token printed on stderr within 20s");
    }

    pub(crate) async fn wait_ready(&self, http: &reqwest::Client) {
        eventually(
            Duration::from_secs(20),
            "the binary to be ready",
            || async {
                let reply = http
                    .get(format!("{}/readyz", self.base))
                    .send()
                    .await
                    .ok()?;
                (reply.status() == 200).then_some(())
            },
        )
        .await;
    }

    /// SIGTERM; the exit status and the log lines not read yet.
    fn terminate_keeping_logs(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().expect("the binary exits");
        // The reader thread ends at the end of the stream.
        let lines =
            std::iter::from_fn(|| self.stdout.recv_timeout(Duration::from_secs(5)).ok()).collect();
        (status, lines)
    }

    /// SIGTERM, and the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("the binary exits")
    }
}

/// The lines of `stream`, read on a thread of their own.
fn lines(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn embedded_default_prints_a_working_admin_token() {
    let process = Process::start(&[]);
    let token = process.printed_token();
    let http = reqwest::Client::new();
    process.wait_ready(&http).await;
    let reply = http
        .get(format!("{}/v1/enforcement", process.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    // The admin token sets owners; claiming is the chat backend's (scope gatehouse:claim).
    let claim = http
        .post(format!("{}/v1/sessions/s1/claim", process.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(claim.status(), 403);
    let owner = http
        .put(format!("{}/v1/sessions/s1/owner", process.base))
        .bearer_auth(&token)
        .json(&json!({ "owner": "alice" }))
        .send()
        .await
        .unwrap();
    assert_eq!(owner.status(), 200);
    let status = process.terminate();
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
}

#[tokio::test]
async fn auth_disabled_is_refused_on_a_public_address() {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    let output = command
        .env("GATEHOUSE_AUTH", "disabled")
        .env("GATEHOUSE_LISTEN", "0.0.0.0:0")
        .env_remove("GATEHOUSE_AUTH_DISABLED_ALLOW_REMOTE")
        .output()
        .expect("the binary runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("GATEHOUSE_AUTH_DISABLED_ALLOW_REMOTE"),
        "{stderr}"
    );
}

#[tokio::test]
async fn with_redis_owners_survive_a_restart_and_never_expire() {
    let Some(mut backend) = Backend::redis() else {
        return;
    };
    let url = backend.redis_server().unwrap().url();
    let env = [
        ("REDIS_URL", url),
        ("GATEHOUSE_JWT_SECRET", SECRET.to_owned()),
    ];
    let http = reqwest::Client::new();
    let issuer = gatehouse::auth::TokenIssuer::new(SECRET.as_bytes(), &Default::default());
    let mint = |sub: &str, scopes: &[&str]| {
        issuer
            .mint(&gatehouse::auth::TokenRequest {
                sub: sub.into(),
                roles: vec![],
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                ttl: Duration::from_secs(600),
            })
            .unwrap()
    };
    let token = |sub: &str| mint(sub, &[]);
    let backend_token = mint("chat-backend", &["gatehouse:claim"]);

    let first = Process::start(&env);
    first.wait_ready(&http).await;
    for (session, user) in [("s1", "alice"), ("s2", "bob"), ("s3", "alice")] {
        let reply = http
            .request(
                Method::POST,
                format!("{}/v1/sessions/{session}/claim", first.base),
            )
            .bearer_auth(&backend_token)
            .json(&json!({ "user": user }))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 201);
    }
    assert!(first.terminate().success());

    let second = Process::start(&env);
    second.wait_ready(&http).await;
    for (session, user) in [("s1", "alice"), ("s2", "bob"), ("s3", "alice")] {
        let reply = http
            .post(format!("{}/v1/validate", second.base))
            .bearer_auth(token(user))
            .json(&json!({ "session_id": session }))
            .send()
            .await
            .unwrap();
        let body: serde_json::Value = reply.json().await.unwrap();
        assert_eq!(body["reason"], "owner", "{session}: {body}");
    }
    let mut redis = backend.redis_server().unwrap().client();
    for session in ["s1", "s2", "s3"] {
        let ttl: i64 = redis::cmd("TTL")
            .arg(format!("chat_session_owner:{session}"))
            .query(&mut redis)
            .unwrap();
        assert_eq!(ttl, -1, "{session} must be persistent");
    }
    let members: Vec<String> = redis::cmd("SMEMBERS")
        .arg("user_chat_sessions:alice")
        .query(&mut redis)
        .unwrap();
    let mut members = members;
    members.sort();
    assert_eq!(members, ["s1", "s3"]);
    drop(second);
}

/// Runs `gatehouse args...` against `app` as an admin: (exit code, stdout JSON, stderr).
pub(crate) async fn cli(app: &TestApp, token: Option<&str>, args: &[&str]) -> (i32, Value, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    command
        .env_remove("GATEHOUSE_TOKEN")
        .env("GATEHOUSE_URL", &app.base);
    if let Some(token) = token {
        command.env("GATEHOUSE_TOKEN", token);
    }
    let output = command.args(args).output().await.expect("the binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    (
        output.status.code().unwrap_or(-1),
        serde_json::from_str(&stdout).unwrap_or(Value::Null),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode_cli_drives_the_rest_api() {
    let app = TestApp::spawn(&Backend::Memory, &[]).await;
    let admin = app.admin();
    let admin = Some(admin.as_str());

    let (code, body, _) = cli(&app, admin, &["mode", "get"]).await;
    // The fresh store's first record (the initial mode), written at start.
    assert_eq!((code, body["version"].clone()), (0, json!(1)));
    let (code, body, err) = cli(
        &app,
        admin,
        &[
            "mode",
            "set",
            "enforced",
            "--percent",
            "25",
            "--reason",
            "step 1",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(body["mode"], "ENFORCED");
    assert_eq!(body["enforce_percent"], 25);
    let (_, body, _) = cli(
        &app,
        admin,
        &[
            "mode",
            "endpoint",
            "chat/export",
            "DISABLED",
            "--reason",
            "pilot",
        ],
    )
    .await;
    assert_eq!(
        body["endpoints"]["chat/export"], "DISABLED",
        "a name with / stays one path segment"
    );
    let (_, body, _) = cli(
        &app,
        admin,
        &["mode", "kill-switch", "on", "--reason", "incident"],
    )
    .await;
    assert_eq!(body["kill_switch"], true);
    let (_, body, _) = cli(
        &app,
        admin,
        &[
            "mode",
            "endpoint",
            "chat/export",
            "global",
            "--reason",
            "pilot over",
        ],
    )
    .await;
    assert_eq!(body["endpoints"], json!({}));
    let (_, body, _) = cli(&app, admin, &["mode", "history", "--limit", "2"]).await;
    let changes: Vec<&str> = body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["change"].as_str().unwrap())
        .collect();
    assert_eq!(changes, ["endpoint:chat/export", "kill_switch"]);
    let (code, body, _) = cli(&app, admin, &["rollout"]).await;
    assert_eq!((code, body["phase"].clone()), (0, json!("killed")));

    // Errors: readable on stderr, non-zero exit, nothing changed.
    let (code, _, err) = cli(&app, None, &["mode", "set", "DISABLED", "--reason", "x"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("401"), "{err}");
    let (code, _, err) = cli(&app, admin, &["mode", "set", "DISABLED"]).await;
    assert_eq!(code, 2, "clap refuses a change without --reason: {err}");
    let (code, _, err) = cli(
        &app,
        admin,
        &[
            "mode",
            "set",
            "ENFORCED",
            "--reason",
            "x",
            "--expected-version",
            "1",
        ],
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("409") && err.contains("version"), "{err}");
    let (code, _, err) = cli(&app, admin, &["mode", "set", "STRICT", "--reason", "x"]).await;
    assert_eq!(code, 2, "{err}");
    let (_, body, _) = cli(&app, admin, &["mode", "get"]).await;
    assert_eq!(body["version"], 5);
    app.stop().await;
}

/// Waits for the log line whose `message` is `message`; returns every line read so far.
fn log_lines_until(process: &Process, message: &str) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        let Ok(line) = process.stdout.recv_timeout(left) else {
            break;
        };
        assert!(
            !line.contains('\u{1b}'),
            "no ANSI escapes in a pipe: {line:?}"
        );
        let parsed: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("a JSON log line, got {line:?}: {e}"));
        let done = parsed["message"] == message;
        seen.push(parsed);
        if done {
            return seen;
        }
    }
    panic!("no log line {message:?} within 20 s; read: {seen:#?}");
}

#[tokio::test]
async fn json_logs_use_the_api_vocabulary_and_numbers() {
    let process = Process::start(&[
        ("GATEHOUSE_JWT_SECRET", SECRET.to_owned()),
        ("GATEHOUSE_LOG_FORMAT", "json".to_owned()),
        // No effect with token authentication: started, and warned about.
        ("GATEHOUSE_AUTH_DISABLED_ALLOW_REMOTE", "true".to_owned()),
    ]);
    let http = reqwest::Client::new();
    process.wait_ready(&http).await;
    let issuer = gatehouse::auth::TokenIssuer::new(SECRET.as_bytes(), &Default::default());
    let mint = |sub: &str, roles: &[&str]| {
        issuer
            .mint(&gatehouse::auth::TokenRequest {
                sub: sub.into(),
                roles: roles.iter().map(|r| r.to_string()).collect(),
                scopes: vec![],
                ttl: Duration::from_secs(600),
            })
            .unwrap()
    };
    let admin = mint("ops", &["admin"]);
    let bob = mint("bob", &[]);
    let reply = http
        .put(format!("{}/v1/sessions/s1/owner", process.base))
        .bearer_auth(&admin)
        .json(&json!({ "owner": "alice" }))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    // The fresh store starts in LOG_ONLY: bob is allowed, and logged as a would-deny.
    let reply = http
        .post(format!("{}/v1/validate", process.base))
        .bearer_auth(&bob)
        .json(&json!({ "session_id": "s1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let lines = log_lines_until(&process, "would deny");
    let warning = lines
        .iter()
        .find(|l| l["message"] == "setting has no effect")
        .unwrap_or_else(|| panic!("the ineffective setting is warned about: {lines:#?}"));
    assert_eq!(warning["level"], "WARN");
    assert!(
        warning["setting"]
            .as_str()
            .unwrap()
            .starts_with("GATEHOUSE_AUTH_DISABLED_ALLOW_REMOTE: ignored"),
        "{warning}"
    );
    let line = lines.last().unwrap();
    assert_eq!(line["decision"], "would_deny", "{line}");
    assert_eq!(line["reason"], "not_owner", "{line}");
    assert_eq!(line["mode"], "LOG_ONLY", "{line}");
    assert_eq!(line["user"], "bob", "{line}");
    assert_eq!(line["owner"], "alice", "{line}");
    // The request's span is a nested object, not a string.
    assert_eq!(line["span"]["path"], "/v1/validate", "{line}");

    let reply = http
        .put(format!("{}/v1/enforcement", process.base))
        .bearer_auth(&admin)
        .json(&json!({ "mode": "ENFORCED", "reason": "log test", "expected_version": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let lines = log_lines_until(&process, "enforcement settings changed");
    let line = lines.last().unwrap();
    assert_eq!(line["version"], 2, "a number, not a string: {line}");
    // The values before and after as JSON, not as a string of JSON.
    assert_eq!(line["from"]["mode"], "LOG_ONLY", "{line}");
    assert_eq!(line["to"]["mode"], "ENFORCED", "{line}");
    // A refused credential: logged with its reason, never the token.
    let forged = crate::common::forged(&bob);
    let reply = http
        .post(format!("{}/v1/validate", process.base))
        .bearer_auth(&forged)
        .json(&json!({ "session_id": "s1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 401);
    let lines = log_lines_until(&process, "authentication failed");
    let line = lines.last().unwrap();
    assert_eq!(line["level"], "INFO", "{line}");
    assert!(line["reason"].is_string(), "{line}");
    for line in &lines {
        let text = line.to_string();
        assert!(
            !text.contains(&bob[bob.len() - 20..]) && !text.contains(&admin[admin.len() - 20..]),
            "a token in the logs: {text}"
        );
    }
}

#[tokio::test]
async fn readiness_503s_of_an_outage_are_not_error_lines() {
    // Nothing listens on the Redis port: the store is down from the start.
    let process = Process::start(&[
        ("REDIS_URL", format!("redis://127.0.0.1:{}", free_port())),
        ("GATEHOUSE_JWT_SECRET", SECRET.to_owned()),
        ("GATEHOUSE_LOG_FORMAT", "json".to_owned()),
        ("GATEHOUSE_LOG", "info".to_owned()),
    ]);
    log_lines_until(&process, "gatehouse listening");
    let http = reqwest::Client::new();
    for _ in 0..20 {
        let reply = http
            .get(format!("{}/readyz", process.base))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 503);
    }
    // Everything the requests logged comes before "stopped".
    let (_, lines) = process.terminate_keeping_logs();
    let lines: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["message"] == "stopped"),
        "{lines:#?}"
    );
    let errors: Vec<_> = lines.iter().filter(|l| l["level"] == "ERROR").collect();
    assert!(
        errors.is_empty(),
        "20 readiness 503s logged ERROR lines: {errors:#?}"
    );
    let per_request = lines
        .iter()
        .filter(|l| l["span"]["path"] == "/readyz")
        .count();
    assert!(
        per_request < 5,
        "{per_request} lines for 20 readiness probes: {lines:#?}"
    );
}
