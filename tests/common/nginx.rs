//! Running Debian's nginx on loopback with the shipped recipe: shared by the nginx tests and
//! the benchmarks (`bench/support` includes this file with `#[path]`), so std only.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Debian's nginx binary (on `PATH` or `/usr/sbin`), or `None` when it is not installed.
pub fn binary() -> Option<PathBuf> {
    ["nginx", "/usr/sbin/nginx"]
        .into_iter()
        .map(PathBuf::from)
        .find(|candidate| {
            Command::new(candidate)
                .arg("-v")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
}

/// The recipe `examples/proxies/nginx.conf` with its addresses replaced: gatehouse at
/// `gatehouse` (`host:port`, or a base URL), the chat backend at `upstream`, and the proxy
/// listening on `127.0.0.1:{port}`.
pub fn recipe_site(gatehouse: &str, upstream: SocketAddr, port: u16) -> String {
    let recipe = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/proxies/nginx.conf"
    ))
    .expect("the shipped recipe");
    let gatehouse = gatehouse.trim_start_matches("http://");
    let site = recipe
        .replace("server 127.0.0.1:8080;", &format!("server {gatehouse};"))
        .replace("server 127.0.0.1:8000;", &format!("server {upstream};"))
        .replace("listen 8088;", &format!("listen 127.0.0.1:{port};"));
    assert_ne!(site, recipe, "the recipe's addresses were substituted");
    site
}

/// Writes `sites` (`server` blocks) and a main configuration around them into `dir`, and
/// starts `binary` on it, logging to `dir/error.log`. One process, no master and no daemon,
/// so that killing the child stops all of nginx (a killed master leaves its worker serving).
pub fn spawn(binary: &Path, dir: &Path, sites: &str) -> Child {
    let d = dir.display();
    std::fs::write(dir.join("site.conf"), sites).unwrap();
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
             include {d}/site.conf;\n}}\n"
        ),
    )
    .unwrap();
    Command::new(binary)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx starts")
}
