//! Local processes shared by the integration tests and the benchmarks (`bench/support`
//! includes this file with `#[path]`): free loopback ports and a private `redis-server`.
//! Std, `redis` and `tempfile` only.

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("the OS hands out a free loopback port")
}

/// A private `redis-server` in a temporary directory, killed on drop: with AOF on for the
/// tests ([`RedisServer::start`]), without persistence for the benchmarks
/// ([`RedisServer::start_volatile`]).
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    aof: bool,
    /// More arguments (TLS ports and files), given again at every restart.
    extra: Vec<String>,
    /// Killed by the kernel when the thread that started it ends (servers shared by a whole
    /// test binary live in statics, which are never dropped).
    die_with_thread: bool,
}

/// Lets local connections use `DEBUG` (tests freeze Redis with `DEBUG SLEEP`): Redis 7
/// refuses it by default, and Redis 6 allows it but does not know the option.
fn debug_command_args() -> &'static [&'static str] {
    static ARGS: std::sync::OnceLock<&'static [&'static str]> = std::sync::OnceLock::new();
    ARGS.get_or_init(|| {
        let version = Command::new("redis-server")
            .arg("--version")
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
            .unwrap_or_default();
        // "Redis server v=7.0.15 sha=..."
        let major: u32 = version
            .split("v=")
            .nth(1)
            .and_then(|v| v.split('.').next())
            .and_then(|major| major.parse().ok())
            .unwrap_or(0);
        if major >= 7 {
            &["--enable-debug-command", "local"]
        } else {
            &[]
        }
    })
}

impl RedisServer {
    /// Starts one with AOF on, or returns `None` (skip) when `redis-server` is unavailable
    /// outside CI.
    pub fn start() -> Option<Self> {
        Self::start_with(Vec::new())
    }

    /// [`Self::start`] with more `redis-server` arguments; `{dir}` in one is replaced by the
    /// server's data directory (for files the arguments name).
    pub fn start_with(extra: Vec<String>) -> Option<Self> {
        Self::start_or_skip(Self::launch(true, extra, false))
    }

    fn start_or_skip(launched: Result<Self, String>) -> Option<Self> {
        match launched {
            Ok(server) => Some(server),
            Err(e) => {
                super::skip::missing(
                    "the tests on Redis",
                    &format!("redis-server cannot be started ({e})"),
                );
                None
            }
        }
    }

    /// Starts one without persistence (no AOF, no snapshots), as the benchmarks run it; panics
    /// when it cannot.
    pub fn start_volatile() -> Self {
        Self::launch(false, Vec::new(), false).unwrap_or_else(|e| {
            panic!("redis-server cannot be started ({e}): apt-get install redis-server")
        })
    }

    /// Tries three free ports.
    fn launch(aof: bool, extra: Vec<String>, die_with_thread: bool) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut server = Self {
            port: 0,
            dir,
            child: None,
            aof,
            extra,
            die_with_thread,
        };
        let mut last = String::new();
        for _ in 0..3 {
            server.port = free_port();
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(e) => {
                    eprintln!("redis-server on port {} did not start: {e}", server.port);
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// [`Self::start_with`], the server killed by the kernel when the calling thread ends
    /// (`PR_SET_PDEATHSIG`): for servers kept in a static.
    pub fn start_tied_to_thread(extra: Vec<String>) -> Option<Self> {
        Self::start_or_skip(Self::launch(true, extra, true))
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut command = Command::new("redis-server");
        if self.die_with_thread {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe, and nothing else runs between fork and exec.
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
        }
        let child = command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(debug_command_args())
            .args(["--save", ""])
            .args(if self.aof {
                ["--appendonly", "yes", "--appendfsync", "everysec"].as_slice()
            } else {
                ["--appendonly", "no"].as_slice()
            })
            .arg("--dir")
            .arg(self.dir.path())
            .args(
                self.extra
                    .iter()
                    .map(|a| a.replace("{dir}", &self.dir.path().to_string_lossy())),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if self.ping() {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(format!("exited with {status}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        Err("no PONG within 10s".into())
    }

    fn ping(&self) -> bool {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    }

    /// `redis://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The data directory.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// `127.0.0.1:{port}`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A synchronous connection for inspecting keys.
    pub fn client(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
            .expect("test redis answers")
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status()
                .expect("kill runs");
            assert!(status.success(), "kill {signal} failed");
        }
    }

    /// Stops the server (SIGTERM: it flushes the AOF) and waits for it to exit.
    pub fn stop(&mut self) {
        self.signal("-TERM");
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// Stops it if it is running, then starts it again on the same port with the same data.
    /// (Spawning beside a running server would leave it running, answering the readiness
    /// ping in the new one's place, and leak it.)
    pub fn restart(&mut self) {
        self.stop();
        self.spawn().expect("redis-server restarts on its port");
    }

    /// Stops it, throws its data away and starts it again on the same port: a Redis without
    /// persistence restarted, or a failover to an empty replica.
    pub fn restart_empty(&mut self) {
        self.stop();
        for entry in std::fs::read_dir(self.dir.path()).expect("the data directory is readable") {
            let path = entry.expect("a directory entry").path();
            let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
        }
        self.spawn().expect("redis-server restarts on its port");
    }

    /// Kills the process at once (SIGKILL: a crash; nothing is flushed) and waits for it.
    pub fn crash(&mut self) {
        self.resume();
        self.kill();
    }

    /// The plain port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Freezes the process (SIGSTOP): connections stay open but nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused server.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.resume();
        self.kill();
    }
}
