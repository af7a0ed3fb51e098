//! A test whose tool is missing (redis-server, a proxy, Chromium, promtool): under `CI` it
//! fails; elsewhere it skips, and says so once per group on the terminal itself, with the
//! command that would run it. (libtest hides what a passing test prints with `eprintln!`,
//! which would make a skip look like a pass; a write to the stderr handle is not captured.)

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::Mutex;

/// The command that installs everything the tests need and runs them all.
pub const RUN_ALL: &str = "bash tests/run";

/// Skips (returns) or, under `CI`, fails: `group` cannot run because `why`.
pub fn missing(group: &str, why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("CI is set and {group} cannot run: {why} (`{RUN_ALL}` installs what they need)");
    }
    static SAID: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let first = SAID
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(group.to_owned());
    if first {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {group}: {why}; `{RUN_ALL}` installs it and runs them (with CI set, a skip is a failure)"
        );
    }
}
