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
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("the binary starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            listen,
            stderr: rx,
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

    /// SIGTERM, and the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("the binary exits")
    }
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
