//! What the browser tests need: Debian's Chromium and the Python of the venv with Playwright
//! (`.ci/install-browser`; nothing downloads a browser), or a skip outside CI.

use std::path::PathBuf;

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
