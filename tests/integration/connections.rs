//! Connection hygiene (issue 14, point 7 and acceptance 5): silent and slow-header
//! connections are closed after the header-read timeout, idle keep-alive connections after the
//! idle timeout, connections past the cap at once, and none of them stops other clients from
//! being served. A request whose body trickles in is a 408 problem, not a bare 503.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gatehouse::auth::{JwtSettings, TokenIssuer, TokenRequest};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{Backend, SECRET, TestApp, eventually, free_port};

/// The real binary started under `sh -c 'ulimit -n N; exec gatehouse'`; killed on drop.
struct Limited {
    child: Child,
    addr: String,
}

impl Limited {
    fn start(descriptors: u32, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("ulimit -n {descriptors} && exec \"$0\""))
            .arg(env!("CARGO_BIN_EXE_gatehouse"));
        for (key, _) in std::env::vars() {
            if key.starts_with("GATEHOUSE_") || key == "REDIS_URL" {
                command.env_remove(key);
            }
        }
        command
            .env("GATEHOUSE_LISTEN", format!("127.0.0.1:{port}"))
            .env("GATEHOUSE_JWT_SECRET", SECRET)
            .env("GATEHOUSE_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("the binary starts");
        // Echo the server's log (it says when it hits the descriptor limit).
        let stderr = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("gatehouse: {line}");
            }
        });
        Self {
            child,
            addr: format!("127.0.0.1:{port}"),
        }
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn token(sub: &str) -> String {
    TokenIssuer::new(SECRET.as_bytes(), &JwtSettings::default())
        .mint(&TokenRequest {
            sub: sub.into(),
            roles: Vec::new(),
            scopes: Vec::new(),
            ttl: Duration::from_secs(3600),
        })
        .expect("mint")
}

/// A client that opens a new connection for every request and gives up after a second.
fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(1))
        .build()
        .expect("client")
}

/// Whether the peer closed `stream` (EOF or reset) within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 512];
    let until = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(until, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // A 408 or similar before the close is fine; keep reading to the end.
            Ok(Ok(_)) => {}
        }
    }
}

/// A client that sends a request head a header line at a time, every `every`.
fn slow_header(mut stream: TcpStream, every: Duration) -> tokio::task::JoinHandle<TcpStream> {
    tokio::spawn(async move {
        if stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .is_ok()
        {
            for i in 0..1000 {
                tokio::time::sleep(every).await;
                let line = format!("X-Slow-{i}: y\r\n");
                if stream.write_all(line.as_bytes()).await.is_err() {
                    break;
                }
            }
        }
        stream
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_silent_or_slow_connections_do_not_lock_other_clients_out() {
    let header_read_timeout = Duration::from_secs(2);
    let server = Limited::start(256, &[("GATEHOUSE_HEADER_READ_TIMEOUT", "2s")]);
    let base = format!("http://{}", server.addr);
    let http = fresh_client();
    eventually(Duration::from_secs(20), "the binary to be up", || async {
        let reply = http.get(format!("{base}/healthz")).send().await.ok()?;
        (reply.status() == 200).then_some(())
    })
    .await;

    // 400 connections that say nothing and 100 that send their head a line every 300 ms,
    // far more than the 256 descriptors the server has.
    // (A server that stops accepting leaves connects hanging: stop the flood there and let the
    // clients below find out.)
    let connect = || async {
        match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(&server.addr)).await {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(e)) => {
                eprintln!("flood connect failed: {e}");
                None
            }
            Err(_) => {
                eprintln!("flood connect timed out");
                None
            }
        }
    };
    let mut silent = Vec::new();
    let mut slow = Vec::new();
    for i in 0..500 {
        let Some(stream) = connect().await else {
            break;
        };
        if i % 5 == 4 {
            slow.push(slow_header(stream, Duration::from_millis(300)));
        } else {
            silent.push(stream);
        }
    }
    let flooded = Instant::now();

    // Other clients are served within the header-read timeout (plus slack for a loaded
    // machine): the silent connections holding the cap are closed by then.
    let served_within = header_read_timeout + Duration::from_secs(3);
    let alice = token("alice");
    eventually(
        served_within,
        "healthz and a validate during the flood",
        || {
            let (http, base, alice) = (&http, &base, &alice);
            async move {
                let health = http.get(format!("{base}/healthz")).send().await.ok()?;
                if health.status() != 200 {
                    return None;
                }
                let check = http
                    .post(format!("{base}/v1/validate"))
                    .bearer_auth(alice)
                    .json(&serde_json::json!({ "session_id": "s1" }))
                    .send()
                    .await
                    .ok()?;
                (check.status() == 200).then_some(())
            }
        },
    )
    .await;
    eprintln!("served {:?} after the flood", flooded.elapsed());
    assert_eq!(
        silent.len() + slow.len(),
        500,
        "every flood connection was established (the server kept accepting)"
    );

    // Every silent and slow connection has been closed by the server.
    let close_by = header_read_timeout + Duration::from_secs(5);
    for (i, stream) in silent.iter_mut().enumerate() {
        let left = close_by.saturating_sub(flooded.elapsed());
        assert!(
            closed_within(stream, left).await,
            "silent connection {i} still open {:?} after the flood",
            flooded.elapsed()
        );
    }
    for (i, task) in slow.into_iter().enumerate() {
        let left = close_by.saturating_sub(flooded.elapsed());
        let mut stream = tokio::time::timeout(left, task)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "slow-header connection {i} still accepted header lines {:?} after the flood",
                    flooded.elapsed()
                )
            })
            .expect("writer task");
        assert!(
            closed_within(&mut stream, Duration::from_secs(1)).await,
            "slow-header connection {i} not closed"
        );
    }
    // And the server is still fine afterwards.
    let reply = http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(reply.status(), 200);
}

/// One raw HTTP/1.1 request on `stream`; returns the response head and body as text.
async fn exchange(stream: &mut TcpStream, request: &str) -> String {
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("a response within 5s")
            .expect("read");
        assert!(n > 0, "closed before a response: {response:?}");
        response.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&response);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if body.len() >= length {
                return text.into_owned();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let app = TestApp::spawn(
        &Backend::Memory,
        &[
            ("GATEHOUSE_HEADER_READ_TIMEOUT", "10s"),
            ("GATEHOUSE_IDLE_TIMEOUT", "1s"),
        ],
    )
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    let request = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    // Kept alive: a second request on the same connection is answered.
    assert!(
        exchange(&mut stream, request)
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert!(
        exchange(&mut stream, request)
            .await
            .starts_with("HTTP/1.1 200")
    );
    let idle = Instant::now();
    assert!(
        closed_within(&mut stream, Duration::from_secs(4)).await,
        "an idle connection is closed after GATEHOUSE_IDLE_TIMEOUT"
    );
    assert!(
        idle.elapsed() >= Duration::from_millis(900),
        "not before the idle timeout: {:?}",
        idle.elapsed()
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_closed_at_once_and_served_again_later() {
    let app = TestApp::spawn(
        &Backend::Memory,
        &[
            ("GATEHOUSE_MAX_CONNECTIONS", "4"),
            ("GATEHOUSE_HEADER_READ_TIMEOUT", "1s"),
        ],
    )
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(&addr).await.expect("connect"));
    }
    // Let the server accept the four before the fifth arrives (nothing outside the server
    // shows that it has, and a probe would take a slot).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fifth = TcpStream::connect(&addr).await.expect("connect");
    let started = Instant::now();
    assert!(closed_within(&mut fifth, Duration::from_millis(800)).await);
    assert!(started.elapsed() < Duration::from_millis(800));
    // Once the silent four time out, clients are served again.
    let http = fresh_client();
    eventually(
        Duration::from_secs(5),
        "healthz after the cap frees",
        || async {
            let reply = http
                .get(format!("{}/healthz", app.base))
                .send()
                .await
                .ok()?;
            (reply.status() == 200).then_some(())
        },
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_slower_than_the_request_timeout_is_a_408_problem() {
    let app = TestApp::spawn(&Backend::Memory, &[("GATEHOUSE_REQUEST_TIMEOUT", "500ms")]).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let stream = TcpStream::connect(&addr).await.expect("connect");
    let body = br#"{"session_id": "s1"}"#;
    let head = format!(
        "POST /v1/validate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        app.user("alice"),
        body.len()
    );
    let (mut reader, mut writer) = stream.into_split();
    writer.write_all(head.as_bytes()).await.expect("head");
    // One byte every 200 ms: the body would take 4 s.
    let trickle = tokio::spawn(async move {
        for byte in body {
            if writer.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut response = Vec::new();
    let started = Instant::now();
    let _ = tokio::time::timeout(Duration::from_secs(3), reader.read_to_end(&mut response)).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the connection is closed after the 408"
    );
    trickle.abort();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let lower = text.to_ascii_lowercase();
    assert!(
        lower.contains("content-type: application/problem+json"),
        "{text}"
    );
    let (_, body) = text.split_once("\r\n\r\n").expect("a body");
    let problem: Value = serde_json::from_str(body).expect("problem JSON");
    assert_eq!(problem["type"], "urn:gatehouse:problem:request-timeout");
    assert_eq!(problem["status"], 408);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting_finishes_requests_in_flight_and_closes_silent_ones() {
    let app = TestApp::spawn(&Backend::Memory, &[]).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut silent = TcpStream::connect(&addr).await.expect("connect");
    // A request in flight: its head is in, half of its body.
    let body = br#"{"session_id": "s1"}"#;
    let head = format!(
        "POST /v1/validate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        app.user("alice"),
        body.len()
    );
    let mut in_flight = TcpStream::connect(&addr).await.expect("connect");
    in_flight.write_all(head.as_bytes()).await.expect("head");
    in_flight.write_all(&body[..5]).await.expect("half a body");
    // Let the server read the head (nothing outside the server shows that it has).
    tokio::time::sleep(Duration::from_millis(100)).await;

    let started = Instant::now();
    let stopping = tokio::spawn(app.stop());
    eventually(Duration::from_secs(5), "the listener to close", || async {
        TcpStream::connect(&addr).await.is_err().then_some(())
    })
    .await;
    // The silent connection is closed at once, not after the header-read timeout (5 s).
    assert!(closed_within(&mut silent, Duration::from_secs(2)).await);
    // The request in flight is finished and answered.
    in_flight
        .write_all(&body[5..])
        .await
        .expect("rest of the body");
    let mut response = Vec::new();
    let _ =
        tokio::time::timeout(Duration::from_secs(5), in_flight.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("the server stops once its requests are done")
        .expect("stop");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_over_64_kib_is_a_431() {
    let app = TestApp::spawn(&Backend::Memory, &[]).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    let fits = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nCookie: c={}\r\n\r\n",
        "a".repeat(32 * 1024)
    );
    assert!(
        exchange(&mut stream, &fits)
            .await
            .starts_with("HTTP/1.1 200")
    );
    let too_large = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nCookie: c={}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    let _ = stream.write_all(too_large.as_bytes()).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_is_bounded_by_the_idle_timeout_and_a_started_head_by_the_header_timeout() {
    let app = TestApp::spawn(
        &Backend::Memory,
        &[
            ("GATEHOUSE_HEADER_READ_TIMEOUT", "1s"),
            ("GATEHOUSE_IDLE_TIMEOUT", "10s"),
        ],
    )
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    let request = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    assert!(
        exchange(&mut stream, request)
            .await
            .starts_with("HTTP/1.1 200")
    );
    // Idle for longer than the header-read timeout: still open (hyper's own header timeout
    // would have closed it here).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        exchange(&mut stream, request)
            .await
            .starts_with("HTTP/1.1 200")
    );
    // A head that starts and stalls is closed after the header-read timeout, long before the
    // idle timeout.
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    assert!(closed_within(&mut stream, Duration::from_secs(5)).await);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    app.stop().await;
}
