//! `promtool` (Debian's `prometheus` package), for the tests that ask Prometheus's own tool
//! about what gatehouse exports and about the monitoring examples. Like `redis-server`: a
//! failure when `CI` is set and promtool cannot run, else skipped with a printed line.

use std::io::Write;
use std::process::{Command, Stdio};

/// Runs `promtool args` (with `stdin` on its standard input, if any) and fails the test with
/// promtool's output when it exits non-zero. Returns false when promtool cannot run and the
/// check was skipped (outside CI).
pub fn passes(args: &[&str], stdin: Option<&str>) -> bool {
    let spawned = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            super::skip::missing(
                "the promtool checks",
                &format!("promtool cannot run ({e}; Debian's prometheus package)"),
            );
            return false;
        }
    };
    let mut input = child.stdin.take().expect("stdin was piped");
    if let Some(text) = stdin {
        input
            .write_all(text.as_bytes())
            .expect("promtool reads its input");
    }
    drop(input);
    let out = child.wait_with_output().expect("promtool runs to its end");
    assert!(
        out.status.success(),
        "promtool {} failed ({}):\n{}{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        stdin
            .map(|text| format!("\non the input:\n{text}"))
            .unwrap_or_default()
    );
    true
}
