//! What the browser tests need: Debian's Chromium and the Python of the venv with Playwright
//! (`.ci/install-browser`; nothing downloads a browser), or a skip outside CI; and the
//! Playwright driver of the `/dashboard` tests (`tests/browser/dashboard.py`), started once per
//! test binary and lent to one test at a time, with the checks every page report must pass.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

/// Chromium (`$CHROMIUM`, default `/usr/bin/chromium`) and the venv's Python
/// (`$BROWSER_VENV`, default `.venv-browser/`), or `None` after [`super::skip::missing`]
/// (which fails under CI) for `group`.
pub fn chromium_and_playwright(group: &str) -> Option<(PathBuf, PathBuf)> {
    let chromium = PathBuf::from(std::env::var("CHROMIUM").unwrap_or("/usr/bin/chromium".into()));
    let venv = std::env::var("BROWSER_VENV")
        .unwrap_or(concat!(env!("CARGO_MANIFEST_DIR"), "/.venv-browser").into());
    let python = PathBuf::from(venv).join("bin/python");
    if chromium.exists() && python.exists() {
        return Some((chromium, python));
    }
    super::skip::missing(
        group,
        &format!(
            "{} or {} is missing (Chromium, Playwright)",
            chromium.display(),
            python.display()
        ),
    );
    None
}

/// How long one scenario may take in the browser.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(120);

/// The running driver: `tests/browser/dashboard.py` with its browser.
struct Driver {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    log: PathBuf,
    /// A command was sent and its last line not read (a test failed halfway): the next test
    /// starts a fresh driver rather than read the rest of that one's answer.
    pending: bool,
}

static DRIVER: tokio::sync::Mutex<Option<Driver>> = tokio::sync::Mutex::const_new(None);

/// The browser, lent to one test at a time (the others wait for it).
pub struct Browser {
    guard: tokio::sync::MutexGuard<'static, Option<Driver>>,
}

impl Browser {
    /// The shared driver, started on first use with its log at `log` (check
    /// [`chromium_and_playwright`] first).
    pub async fn get(log: &Path) -> Self {
        let mut guard = DRIVER.lock().await;
        if guard.as_ref().is_some_and(|d| d.pending) {
            let mut stale = guard.take().expect("a driver");
            let _ = stale.child.kill();
            let _ = stale.child.wait();
        }
        if guard.is_none() {
            *guard = Some(tokio::task::block_in_place(|| start_driver(log)));
        }
        Self { guard }
    }

    fn driver(&mut self) -> &mut Driver {
        self.guard.as_mut().expect("a driver")
    }

    fn send(&mut self, message: &Value) {
        let driver = self.driver();
        let line = format!("{message}\n");
        if driver
            .stdin
            .write_all(line.as_bytes())
            .and_then(|()| driver.stdin.flush())
            .is_err()
        {
            panic!(
                "the browser driver is gone; its log:\n{}",
                log_tail(&driver.log)
            );
        }
    }

    fn next(&mut self) -> Value {
        let driver = self.driver();
        let line = tokio::task::block_in_place(|| driver.lines.recv_timeout(SCENARIO_TIMEOUT));
        match line {
            Ok(line) => serde_json::from_str(&line).expect("the driver writes JSON lines"),
            Err(e) => panic!(
                "no answer from the browser driver ({e}); its log:\n{}",
                log_tail(&driver.log)
            ),
        }
    }

    /// Runs `scenario` with `args` (`base` and `out` among them). `on_event` answers the
    /// scenario's pauses (it acts behind the page's back, then the page goes on). Returns the
    /// scenario's report; fails the test with the driver's traceback when the scenario failed.
    pub async fn run<F>(mut self, args: Value, mut on_event: F) -> Value
    where
        F: AsyncFnMut(&Value),
    {
        self.driver().pending = true;
        self.send(&args);
        loop {
            let message = self.next();
            if let Some(event) = message.get("event") {
                let event = json!({ "event": event, "detail": message });
                on_event(&event).await;
                self.send(&json!({ "go": true }));
                continue;
            }
            self.driver().pending = false;
            if let Some(report) = message.get("done") {
                return report.clone();
            }
            panic!(
                "the {} scenario failed in the browser:\n{}\nreport: {}",
                args["scenario"],
                message["failed"].as_str().unwrap_or("?"),
                message["report"]
            );
        }
    }
}

fn start_driver(log: &Path) -> Driver {
    let (chromium, python) =
        chromium_and_playwright("the browser tests").expect("checked before the first test");
    let log = log.to_owned();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/dashboard.py");
    let mut child = Command::new(python)
        .arg(script)
        .arg(&chromium)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("the driver's log"))
        .spawn()
        .expect("python starts");
    let stdin = child.stdin.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let ready = lines
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|e| {
            panic!(
                "the browser driver did not start ({e}); its log:\n{}",
                log_tail(&log)
            )
        });
    assert!(ready.contains("\"ready\""), "{ready}\n{}", log_tail(&log));
    Driver {
        child,
        stdin,
        lines,
        log,
        pending: false,
    }
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// No request left the instance, nothing broke the policy, no script failed, and the only
/// console errors are Chromium's lines about answers with a status the test expects
/// (`(status, path)`; Chromium logs a failed fetch as a console error).
pub fn assert_clean(report: &Value, base: &str, expected_failures: &[(u16, &str)]) {
    assert_eq!(
        report["foreign"],
        json!([]),
        "requests beyond the instance: {report}"
    );
    assert_eq!(
        report["csp"],
        json!([]),
        "Content-Security-Policy violations: {report}"
    );
    assert_eq!(report["page_errors"], json!([]), "script errors: {report}");
    for request in report["requests"].as_array().expect("requests") {
        let url = request["url"].as_str().unwrap_or("");
        assert!(
            url.starts_with(&format!("{base}/")),
            "a request beyond {base}: {url}"
        );
    }
    for error in report["console_errors"].as_array().expect("console errors") {
        let text = error["text"].as_str().unwrap_or("");
        let url = error["url"].as_str().unwrap_or("");
        let expected = expected_failures.iter().any(|(status, path)| {
            text.starts_with(&format!(
                "Failed to load resource: the server responded with a status of {status} "
            )) && url
                .strip_prefix(base)
                .is_some_and(|p| p.split('?').next() == Some(path))
        });
        assert!(expected, "a console error: {error}\nreport: {report}");
    }
    for response in report["responses"].as_array().expect("responses") {
        let status = response["status"].as_u64().unwrap_or(0) as u16;
        let path = response["path"].as_str().unwrap_or("");
        let plain = path.split('?').next().unwrap_or("");
        assert!(
            status < 400 || expected_failures.contains(&(status, plain)),
            "an unexpected {status} for {path}: {report}"
        );
    }
}
