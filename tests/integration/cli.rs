//! The command line's manners (issue 17): `--percent` only with ENFORCED, errors that say what
//! failed once, a closed pipe that ends a command quietly, `token` refusing what the server
//! refuses, and `healthcheck` following `/readyz` on both stores, on every address it may
//! have to try; neither `healthcheck` nor a client of a local gatehouse goes through a proxy.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::binary::{Process, cli};
use crate::common::{Backend, SECRET, TestApp, eventually, free_port};
use crate::tests_on;

tests_on!([memory, redis]; healthcheck_follows_readiness);

/// The proxy settings reqwest reads, in both spellings.
const PROXY_VARIABLES: [&str; 8] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// The binary with none of this machine's gatehouse or proxy settings, and `env`.
fn gatehouse(env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    for (key, _) in std::env::vars() {
        if key.starts_with("GATEHOUSE_") || key == "REDIS_URL" || PROXY_VARIABLES.contains(&&*key) {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied());
    command
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A stdout whose reader has gone: every write to it fails with `EPIPE`.
fn closed_stdout() -> Stdio {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    writer.into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn percent_is_refused_with_a_mode_other_than_enforced_before_any_request() {
    let app = TestApp::spawn(&Backend::Memory, &[]).await;
    let admin = app.admin();
    let admin = Some(admin.as_str());
    for mode in ["LOG_ONLY", "disabled"] {
        let (code, body, err) = cli(
            &app,
            admin,
            &["mode", "set", mode, "--percent", "10", "--reason", "x"],
        )
        .await;
        assert_eq!(code, 2, "{err}");
        assert_eq!(body, serde_json::Value::Null, "nothing printed on stdout");
        assert!(
            err.contains("enforce_percent") && err.contains("ENFORCED"),
            "{err}"
        );
        assert!(
            !err.contains("LogOnly") && !err.contains("Disabled"),
            "{err}"
        );
    }
    // Refused before any request: nothing listens there, and it is still a usage error.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let (code, _, err) = cli(
        &app,
        admin,
        &[
            "mode",
            "set",
            "LOG_ONLY",
            "--percent",
            "10",
            "--reason",
            "x",
            "--url",
            &nowhere,
        ],
    )
    .await;
    assert_eq!(code, 2, "{err}");
    let (_, settings, _) = cli(&app, admin, &["mode", "get"]).await;
    assert_eq!(settings["version"], 1, "nothing changed: {settings}");
    let (code, settings, err) = cli(
        &app,
        admin,
        &[
            "mode",
            "set",
            "ENFORCED",
            "--percent",
            "10",
            "--reason",
            "x",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(settings["enforce_percent"], 10);
    // Out of range: said in the API's words, not Rust's range syntax.
    let (code, _, err) = cli(
        &app,
        admin,
        &[
            "mode",
            "set",
            "ENFORCED",
            "--percent",
            "101",
            "--reason",
            "x",
        ],
    )
    .await;
    assert_eq!(code, 2);
    assert!(
        err.contains("enforce_percent") && !err.contains("..="),
        "{err}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_say_what_failed_once() {
    let app = TestApp::spawn(&Backend::Memory, &[]).await;

    // Nothing listening: the URL and "connection refused", in one line.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let (code, _, err) = cli(&app, None, &["mode", "get", "--url", &nowhere]).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&nowhere) && err.contains("connection refused"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        !err.contains("error sending request") && !err.contains("hyper"),
        "{err}"
    );

    // A problem: its status, title and detail, each once, as the server sent them.
    let cases = [(None, 401), (Some(app.user("eve")), 403)];
    for (token, status) in cases {
        let problem = app
            .call(Method::GET, "/v1/enforcement", token.as_deref(), None)
            .await;
        assert_eq!(problem.status, status);
        let (title, detail) = (
            problem.body["title"].as_str().unwrap(),
            problem.body["detail"].as_str().unwrap(),
        );
        let (code, _, err) = cli(&app, token.as_deref(), &["mode", "get"]).await;
        assert_eq!(code, 1, "{err}");
        assert_eq!(err, format!("error: {status} {title}: {detail}\n"));
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_ends_a_command_quietly() {
    let app = TestApp::spawn(&Backend::Memory, &[]).await;
    type Run = (&'static [&'static str], Vec<(&'static str, String)>);
    let runs: [Run; 3] = [
        (&["openapi"], vec![]),
        (
            &["token", "--sub", "alice"],
            vec![("GATEHOUSE_JWT_SECRET", SECRET.to_owned())],
        ),
        (
            &["mode", "history"],
            vec![
                ("GATEHOUSE_URL", app.base.clone()),
                ("GATEHOUSE_TOKEN", app.admin()),
            ],
        ),
    ];
    for (args, env) in runs {
        let output = tokio::task::spawn_blocking(move || {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            gatehouse(&env)
                .args(args)
                .stdout(closed_stdout())
                .output()
                .expect("the binary runs")
        })
        .await
        .unwrap();
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("failed printing"),
            "{args:?}: {err}"
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_refuses_a_sub_the_server_refuses() {
    let app = TestApp::spawn(&Backend::Memory, &[]).await;
    let long = "u".repeat(257);
    for sub in [
        "alice bob",
        "al\u{200B}ice",
        "bob\u{202E}",
        "tab\there",
        "",
        &long,
    ] {
        let output = gatehouse(&[("GATEHOUSE_JWT_SECRET", SECRET)])
            .args(["token", "--sub", sub])
            .output()
            .expect("the binary runs");
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{sub:?}: {err}");
        assert!(output.stdout.is_empty(), "{sub:?}: no token printed");
        assert!(err.contains("sub must be"), "{sub:?}: {err}");
        // ... because the server refuses such a token.
        let minted = app.user(sub);
        let reply = app
            .call(Method::GET, "/v1/rollout", Some(&minted), None)
            .await;
        assert_eq!(reply.status, 401, "{sub:?}: {reply:?}");
    }
    // A sub it takes is one the server takes.
    let output = gatehouse(&[("GATEHOUSE_JWT_SECRET", SECRET)])
        .args([
            "token",
            "--sub",
            "auth0|alice@example.com",
            "--role",
            "admin",
        ])
        .output()
        .expect("the binary runs");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let token = String::from_utf8(output.stdout).unwrap();
    let reply = app
        .call(Method::GET, "/v1/enforcement", Some(token.trim()), None)
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    app.stop().await;
}

/// Runs `gatehouse healthcheck` with the settings `env`: (exit code, stderr). It ends within
/// seconds, whatever answers or does not.
async fn healthcheck(env: Vec<(&'static str, String)>) -> (Option<i32>, String) {
    healthcheck_with(&[], env).await
}

/// [`healthcheck`] with arguments (`--url`).
async fn healthcheck_with(
    args: &[&str],
    env: Vec<(&'static str, String)>,
) -> (Option<i32>, String) {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let started = std::time::Instant::now();
        let output = gatehouse(&env)
            .arg("healthcheck")
            .args(args)
            .output()
            .expect("the binary runs");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "within seconds"
        );
        (output.status.code(), stderr(&output))
    })
    .await
    .unwrap()
}

/// `gatehouse healthcheck` as a container runs it: no arguments, the server's own settings
/// (listening on every address). 0 once `/readyz` is 200; 1 when it is not (Redis gone) or
/// when nothing answers, and never Docker's reserved 2.
async fn healthcheck_follows_readiness(mut backend: Backend) {
    let mut env = vec![("GATEHOUSE_JWT_SECRET", SECRET.to_owned())];
    if let Some(redis) = backend.redis_server() {
        env.push(("REDIS_URL", redis.url()));
    }
    let server = Process::start_on("0.0.0.0", &env);
    let listen = server.listen.clone();
    let mut settings: Vec<(&str, String)> = env.clone();
    settings.push(("GATEHOUSE_LISTEN", listen.clone()));
    let err = eventually(Duration::from_secs(20), "healthcheck to pass", || {
        let settings = settings.clone();
        async move {
            let (code, err) = healthcheck(settings).await;
            assert_ne!(code, Some(2), "{err}");
            (code == Some(0)).then_some(err)
        }
    })
    .await;
    let port = listen.rsplit(':').next().unwrap();
    assert!(
        err.contains(&format!("http://127.0.0.1:{port}/readyz")),
        "{err}"
    );
    // `--url` is a base: its path is kept (nothing is served under /gatehouse/ here).
    let (code, err) = healthcheck_with(&["--url", &server.base], settings.clone()).await;
    assert_eq!(code, Some(0), "{err}");
    let prefixed = format!("{}/gatehouse/", server.base);
    let (code, err) = healthcheck_with(&["--url", &prefixed], settings.clone()).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("{prefixed}readyz: answered 404")),
        "{err}"
    );

    if let Some(redis) = backend.redis_server() {
        redis.stop();
        let err = eventually(Duration::from_secs(20), "healthcheck to fail", || {
            let settings = settings.clone();
            async move {
                let (code, err) = healthcheck(settings).await;
                (code == Some(1)).then_some(err)
            }
        })
        .await;
        assert!(err.contains("503") && err.contains("store"), "{err}");
    }
    drop(server);
    let (code, err) = healthcheck(settings).await;
    assert_eq!(code, Some(1), "nothing listening: {err}");
    assert!(err.contains("connection refused"), "{err}");
    // A configuration the server would refuse: unhealthy, not a usage error.
    let (code, err) = healthcheck(vec![("GATEHOUSE_LISTEN", "nowhere".to_owned())]).await;
    assert_eq!(code, Some(1), "{err}");
}

/// A forward proxy's stand-in on loopback: answers `200 OK` (empty) to anything, and records
/// each request line. Stopped on drop.
struct FakeProxy {
    address: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeProxy {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let address = listener.local_addr().expect("its address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (recorded, stopped) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&head)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                recorded.lock().unwrap().push(line);
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
        });
        Self {
            address,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// `HTTP_PROXY`, `http_proxy` and `ALL_PROXY`, each naming this proxy.
    fn env(&self) -> Vec<(&'static str, String)> {
        let url = format!("http://{}", self.address);
        ["HTTP_PROXY", "http_proxy", "ALL_PROXY"]
            .into_iter()
            .map(|key| (key, url.clone()))
            .collect()
    }

    /// The request lines received so far.
    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for FakeProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accepting thread, which then sees the stop.
        let _ = TcpStream::connect(self.address);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A proxy in the environment (answering 200 to anything) does not make an instance that is
/// not there healthy: the healthcheck never goes through a proxy, `--url` or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_never_goes_through_a_proxy() {
    let proxy = FakeProxy::start();
    let nowhere = format!("127.0.0.1:{}", free_port());
    let mut env = proxy.env();
    env.push(("GATEHOUSE_JWT_SECRET", SECRET.to_owned()));
    env.push(("GATEHOUSE_LISTEN", nowhere.clone()));
    let (code, err) = healthcheck(env.clone()).await;
    assert_eq!(code, Some(1), "nothing listens there: {err}");
    assert!(
        err.contains(&format!("http://{nowhere}/readyz")) && err.contains("connection refused"),
        "{err}"
    );
    let url = format!("http://{nowhere}");
    let (code, err) = healthcheck_with(&["--url", &url], env).await;
    assert_eq!(code, Some(1), "nothing listens there: {err}");
    assert!(err.contains("connection refused"), "{err}");
    assert_eq!(proxy.seen(), Vec::<String>::new(), "the proxy was asked");
}

/// Runs `gatehouse mode get --url URL` with the admin token and `env`: (exit code, stdout as
/// JSON, stderr).
async fn mode_get(
    url: &str,
    token: String,
    env: Vec<(&'static str, String)>,
) -> (i32, Value, String) {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        env.push(("GATEHOUSE_TOKEN", &token));
        let output = gatehouse(&env)
            .args(["mode", "get", "--url", &url])
            .output()
            .expect("the binary runs");
        (
            output.status.code().unwrap_or(-1),
            serde_json::from_slice(&output.stdout).unwrap_or(Value::Null),
            stderr(&output),
        )
    })
    .await
    .unwrap()
}

/// The admin client calls a gatehouse on loopback or `localhost` directly (its bearer token
/// never goes to the proxy), and any other through the proxy the environment names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_client_calls_a_local_gatehouse_directly_and_others_through_the_proxy() {
    let app = TestApp::spawn(&Backend::Memory, &[]).await;
    let proxy = FakeProxy::start();
    let port = app.base.rsplit(':').next().unwrap().to_owned();
    for url in [app.base.clone(), format!("http://localhost:{port}")] {
        let (code, settings, err) = mode_get(&url, app.admin(), proxy.env()).await;
        assert_eq!(code, 0, "{url}: {err}");
        assert_eq!(
            settings["version"], 1,
            "{url}: gatehouse answered: {settings}"
        );
    }
    assert_eq!(proxy.seen(), Vec::<String>::new(), "the proxy was asked");

    // A remote gatehouse: through the proxy, as the environment says.
    let remote = "http://gatehouse.example:8080";
    mode_get(remote, app.admin(), proxy.env()).await;
    assert_eq!(
        proxy.seen(),
        [format!("GET {remote}/v1/enforcement HTTP/1.1")],
        "the proxy was not asked"
    );
    app.stop().await;
}

/// `GATEHOUSE_LISTEN=[::]:port` is asked on 127.0.0.1 first (a `[::]` socket takes IPv4 on
/// Linux, and Docker disables IPv6 by default), then on `[::1]` when 127.0.0.1 refuses; the
/// line says which answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_of_every_ipv6_address_asks_ipv4_loopback_first_then_ipv6() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        crate::common::skip::missing("the IPv6 healthcheck", "this machine has no IPv6 loopback");
        return;
    }
    let env = vec![("GATEHOUSE_JWT_SECRET", SECRET.to_owned())];
    let ready_on = |listen: String| {
        let mut settings = env.clone();
        settings.push(("GATEHOUSE_LISTEN", listen));
        eventually(Duration::from_secs(20), "healthcheck to pass", move || {
            let settings = settings.clone();
            async move {
                let (code, err) = healthcheck(settings).await;
                assert_ne!(code, Some(2), "{err}");
                (code == Some(0)).then_some(err)
            }
        })
    };

    // Every address, dual-stack: IPv4 loopback answers.
    let server = Process::start_on("[::]", &env);
    let port = server.listen.rsplit(':').next().unwrap().to_owned();
    let err = ready_on(format!("[::]:{port}")).await;
    assert!(
        err.starts_with(&format!(
            "ready: http://127.0.0.1:{port}/readyz answered 200"
        )),
        "{err}"
    );
    drop(server);

    // Only IPv6 loopback listens: 127.0.0.1 refuses, [::1] answers.
    let server = Process::start_on("[::1]", &env);
    let port = server.listen.rsplit(':').next().unwrap().to_owned();
    let err = ready_on(format!("[::]:{port}")).await;
    assert!(
        err.starts_with(&format!("ready: http://[::1]:{port}/readyz answered 200")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "http://127.0.0.1:{port}/readyz: connection refused"
        )),
        "{err}"
    );
    drop(server);

    // Neither: both refusals said.
    let (code, err) = healthcheck(vec![
        ("GATEHOUSE_JWT_SECRET", SECRET.to_owned()),
        ("GATEHOUSE_LISTEN", format!("[::]:{port}")),
    ])
    .await;
    assert_eq!(code, Some(1), "{err}");
    for tried in [format!("127.0.0.1:{port}"), format!("[::1]:{port}")] {
        assert!(err.contains(&tried), "{tried}: {err}");
    }
}
