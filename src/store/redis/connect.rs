//! From options to a [`redis::Client`]: the URL and, for `rediss://`, the CA bundle, the
//! client certificate and key (mTLS), and the one relaxation allowed, skipping the check of
//! the server's name (never of its certificate chain), only when asked for by name.

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, TlsCertificates};

/// TLS material for `rediss://` URLs, read from files by the configuration.
#[derive(Clone, Default)]
pub struct TlsOptions {
    /// A PEM CA bundle, trusted instead of the system's roots.
    pub ca: Option<Vec<u8>>,
    /// A PEM client certificate chain and its key (mTLS).
    pub client: Option<ClientCertificate>,
    /// Accept a server certificate issued for another name (the chain is still verified
    /// against the CA): `GATEHOUSE_REDIS_TLS_SKIP_HOSTNAME_CHECK=true` only.
    pub skip_hostname_check: bool,
}

/// A client certificate chain and key, PEM.
#[derive(Clone)]
pub struct ClientCertificate {
    /// The certificate chain.
    pub cert: Vec<u8>,
    /// The private key.
    pub key: Vec<u8>,
}

/// Says what is set, never the material.
impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field("ca", &self.ca.as_ref().map(|_| "<set>"))
            .field("client", &self.client.as_ref().map(|_| "<set>"))
            .field("skip_hostname_check", &self.skip_hostname_check)
            .finish()
    }
}

impl TlsOptions {
    /// Whether anything is set (it then needs a `rediss://` URL).
    pub fn is_set(&self) -> bool {
        self.ca.is_some() || self.client.is_some() || self.skip_hostname_check
    }
}

/// `url` without its password (`redis://user:***@host`), for logs and `Debug`.
pub fn redacted(url: &str) -> String {
    // unix:// URLs carry it as a query parameter.
    if let Some((path, query)) = url.split_once('?') {
        let query: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if name == "pass" || name == "password" => format!("{name}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        return format!("{}?{}", redacted(path), query.join("&"));
    }
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Whether `url` asks for TLS (`rediss://`).
pub fn is_tls_url(url: &str) -> bool {
    url.get(..9)
        .is_some_and(|s| s.eq_ignore_ascii_case("rediss://"))
}

/// The client for `url` with `tls` applied. Refused: TLS settings with a plain URL (they would
/// silently not apply), and a URL that turns certificate checks off (`#insecure`).
pub fn client(url: &str, tls: &TlsOptions) -> Result<redis::Client, String> {
    client_for(parse(url)?, tls)
}

/// The client for the server at `host:port`, with the scheme, credentials and database of
/// `url` (a Sentinel deployment's `REDIS_URL`, whose host is the master's name) and `tls`.
pub fn client_at(
    url: &str,
    host: &str,
    port: u16,
    tls: &TlsOptions,
) -> Result<redis::Client, String> {
    client_for(info_at(url, host, port)?, tls)
}

/// `url` pointed at `host:port` (its scheme, credentials and database kept).
fn info_at(url: &str, host: &str, port: u16) -> Result<ConnectionInfo, String> {
    let info = parse(url)?;
    let addr = match info.addr() {
        ConnectionAddr::Tcp(..) => ConnectionAddr::Tcp(host.to_owned(), port),
        ConnectionAddr::TcpTls { insecure, .. } => ConnectionAddr::TcpTls {
            host: host.to_owned(),
            port,
            insecure: *insecure,
            tls_params: None,
        },
        _ => return Err("Sentinel and Cluster need a redis:// or rediss:// URL".into()),
    };
    Ok(info.set_addr(addr))
}

/// The client of a Redis Cluster reached through `seeds`, with the scheme and credentials of
/// `url` (its host is not used) and `tls`: the same refusals as [`client`].
pub fn cluster_client(
    url: &str,
    seeds: &[(String, u16)],
    tls: &TlsOptions,
    timeout: std::time::Duration,
) -> Result<redis::cluster::ClusterClient, String> {
    // Checks the URL and the TLS material as for one server (same errors).
    client(url, tls)?;
    let nodes = seeds
        .iter()
        .map(|(host, port)| info_at(url, host, *port))
        .collect::<Result<Vec<_>, _>>()?;
    let secure = is_tls_url(url);
    let mut builder = redis::cluster::ClusterClientBuilder::new(nodes)
        .connection_timeout(timeout)
        // Our own timeout bounds every call; a redirect (MOVED, ASK during a reshard) is
        // followed at once, a refused node retried briefly.
        .retries(3)
        .min_retry_wait(5)
        .max_retry_wait(50);
    if secure {
        builder = builder.certs(certificates(tls));
        if tls.skip_hostname_check {
            builder = builder.danger_accept_invalid_hostnames(true);
        }
    }
    builder
        .build()
        .map_err(|e| format!("cluster settings: {e}"))
}

fn certificates(tls: &TlsOptions) -> TlsCertificates {
    TlsCertificates {
        client_tls: tls.client.as_ref().map(|c| redis::ClientTlsConfig {
            client_cert: c.cert.clone(),
            client_key: c.key.clone(),
        }),
        root_cert: tls.ca.clone(),
    }
}

/// The client for a Sentinel at `host:port`: TLS (with `tls`) when `secure`, and the
/// Sentinel's own credentials.
pub fn sentinel_client(
    host: &str,
    port: u16,
    secure: bool,
    credentials: (Option<&str>, Option<&str>),
    tls: &TlsOptions,
) -> Result<redis::Client, String> {
    let scheme = if secure { "rediss" } else { "redis" };
    // An IPv6 address goes in brackets in a URL.
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let mut info = parse(&format!("{scheme}://{host}:{port}"))?;
    let mut settings = info.redis_settings().clone();
    if let Some(username) = credentials.0 {
        settings = settings.set_username(username);
    }
    if let Some(password) = credentials.1 {
        settings = settings.set_password(password);
    }
    info = info.set_redis_settings(settings);
    let tls = if secure {
        tls.clone()
    } else {
        TlsOptions::default()
    };
    client_for(info, &tls)
}

fn parse(url: &str) -> Result<ConnectionInfo, String> {
    url.into_connection_info()
        .map_err(|e| format!("invalid Redis URL: {e}"))
}

fn client_for(info: ConnectionInfo, tls: &TlsOptions) -> Result<redis::Client, String> {
    let ConnectionAddr::TcpTls { insecure, .. } = info.addr() else {
        if tls.is_set() {
            return Err(
                "TLS settings (GATEHOUSE_REDIS_CA_FILE, _CERT_FILE, _KEY_FILE, \
                 _TLS_SKIP_HOSTNAME_CHECK) need a rediss:// URL"
                    .into(),
            );
        }
        return redis::Client::open(info).map_err(|e| format!("invalid Redis URL: {e}"));
    };
    if *insecure {
        return Err("the URL's #insecure turns every certificate check off: refused (a \
                    certificate issued for another name: GATEHOUSE_REDIS_TLS_SKIP_HOSTNAME_CHECK=true)"
            .into());
    }
    // The process's TLS crypto: ring (an error only says one is installed already).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = redis::Client::build_with_tls(info, certificates(tls))
        .map_err(|e| format!("TLS settings: {e}"))?;
    if !tls.skip_hostname_check {
        return Ok(client);
    }
    let info = client.get_connection_info().clone();
    let mut addr = info.addr().clone();
    addr.set_danger_accept_invalid_hostnames(true);
    redis::Client::open(info.set_addr(addr)).map_err(|e| format!("TLS settings: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_settings_need_a_tls_url_and_insecure_urls_are_refused() {
        let ca = TlsOptions {
            ca: Some(b"-".to_vec()),
            ..TlsOptions::default()
        };
        assert!(client("redis://127.0.0.1:6379", &TlsOptions::default()).is_ok());
        let plain = client("redis://127.0.0.1:6379", &ca).unwrap_err();
        assert!(plain.contains("need a rediss:// URL"), "{plain}");
        let insecure = client("rediss://127.0.0.1:6379/#insecure", &TlsOptions::default());
        assert!(insecure.unwrap_err().contains("refused"));
        assert!(client("rediss://127.0.0.1:6379", &TlsOptions::default()).is_ok());
        assert!(is_tls_url("REDISS://x") && !is_tls_url("redis://x"));
        assert_eq!(redacted("redis://:s3cret@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(redacted("rediss://u:p@h"), "rediss://u:***@h");
        assert_eq!(redacted("redis://h:1"), "redis://h:1");
        assert_eq!(
            redacted("unix:///run/redis.sock?db=1&pass=s3cret"),
            "unix:///run/redis.sock?db=1&pass=***"
        );
    }
}
