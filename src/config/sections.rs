//! One parser per section of the configuration; each reports its problems into the shared
//! [`Source`], so that every problem is reported at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::identity;
use super::{AuditSettings, AuthConfig, LogFormat, OwnerCacheSettings, RedisConfig, Source};
use crate::auth::{JwtSettings, JwtVerifier, load_public_keys};
use crate::store::{ClientCertificate, KeySchema, SentinelOptions, TlsOptions, is_tls_url};

/// The settings that apply to Redis only: refused without `REDIS_URL` (the owner cache is the
/// Redis store's; the embedded one answers from memory).
const REDIS_ONLY_VARS: [&str; 16] = [
    "GATEHOUSE_OWNER_CACHE",
    "GATEHOUSE_OWNER_CACHE_CAPACITY",
    "GATEHOUSE_OWNER_CACHE_TTL",
    "GATEHOUSE_REDIS_CLUSTER",
    "GATEHOUSE_REDIS_CONNECTIONS",
    "GATEHOUSE_REDIS_TIMEOUT",
    "GATEHOUSE_REDIS_MIN_REPLICAS",
    "GATEHOUSE_REDIS_CA_FILE",
    "GATEHOUSE_REDIS_CERT_FILE",
    "GATEHOUSE_REDIS_KEY_FILE",
    "GATEHOUSE_REDIS_TLS_SKIP_HOSTNAME_CHECK",
    "GATEHOUSE_REDIS_SENTINELS",
    "GATEHOUSE_REDIS_SENTINEL_MASTER",
    "GATEHOUSE_REDIS_SENTINEL_TLS",
    "GATEHOUSE_REDIS_SENTINEL_USERNAME",
    "GATEHOUSE_REDIS_SENTINEL_PASSWORD",
];

/// `REDIS_URL`, `GATEHOUSE_REDIS_CONNECTIONS`, `GATEHOUSE_REDIS_TIMEOUT`, the TLS files
/// (`GATEHOUSE_REDIS_CA_FILE`, `GATEHOUSE_REDIS_CERT_FILE`, `GATEHOUSE_REDIS_KEY_FILE`,
/// `GATEHOUSE_REDIS_TLS_SKIP_HOSTNAME_CHECK`; read here, so that a missing or malformed one
/// joins the other problems) and the Sentinels (`GATEHOUSE_REDIS_SENTINEL*`).
pub(super) fn redis(src: &mut Source) -> Option<RedisConfig> {
    let Some(url) = src.get("REDIS_URL").map(str::to_owned) else {
        for name in REDIS_ONLY_VARS {
            if src.get(name).is_some() {
                src.problems.push(format!(
                    "{name}: set REDIS_URL too (it applies to Redis only; with Sentinel, \
                     REDIS_URL=redis://[:password@]{{master name}}[/db])"
                ));
            }
        }
        return None;
    };
    if !(url.starts_with("redis://") || is_tls_url(&url) || url.starts_with("unix://")) {
        src.problems
            .push("REDIS_URL: expected a redis://, rediss:// or unix:// URL".into());
    }
    let tls = redis_tls(src);
    // Builds the client once now: a bad URL, a TLS setting without rediss://, or a PEM that
    // does not parse is reported with the rest.
    if let Err(why) = crate::store::redis_client(&url, &tls) {
        src.problems.push(format!("REDIS_URL: {why}"));
    }
    let sentinel = sentinel(src, &url);
    if sentinel.is_some() && url.starts_with("unix:") {
        src.problems
            .push("GATEHOUSE_REDIS_SENTINELS: REDIS_URL must be redis:// or rediss://".into());
    }
    let cluster = cluster(src, &url);
    if cluster.is_some() && sentinel.is_some() {
        src.problems.push(
            "GATEHOUSE_REDIS_CLUSTER and GATEHOUSE_REDIS_SENTINELS: choose one (a Cluster fails \
             over on its own)"
                .into(),
        );
    }
    let min_replicas = src.parse("GATEHOUSE_REDIS_MIN_REPLICAS", None, |raw| {
        raw.parse::<u32>()
            .ok()
            .filter(|n| (1..=16).contains(n))
            .map(Some)
            .ok_or_else(|| "expected 1-16 replicas".into())
    });
    Some(RedisConfig {
        url,
        tls,
        sentinel,
        cluster,
        min_replicas,
        connections: src.parse("GATEHOUSE_REDIS_CONNECTIONS", 4, |raw| {
            raw.parse::<usize>()
                .ok()
                .filter(|n| (1..=64).contains(n))
                .ok_or_else(|| "expected 1-64".into())
        }),
        timeout: src.duration("GATEHOUSE_REDIS_TIMEOUT", Duration::from_millis(500)),
    })
}

/// A `host:port,...` list (IPv6 hosts in brackets), each entry once.
fn host_ports(src: &mut Source, name: &str) -> Vec<(String, u16)> {
    let list: Vec<(String, u16)> = src.parse(name, Vec::new(), |raw| {
        raw.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|entry| {
                let (host, port) = entry
                    .rsplit_once(':')
                    .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
                    .filter(|(h, _)| !h.is_empty())
                    .ok_or_else(|| format!("{entry:?}: write host:port"))?;
                Ok((host.trim_matches(['[', ']']).to_owned(), port))
            })
            .collect()
    });
    // Refused: a Sentinel listed twice would count twice towards a majority.
    let mut seen = std::collections::HashSet::new();
    if let Some(twice) = list.iter().find(|s| !seen.insert(*s)) {
        src.problems
            .push(format!("{name}: {}:{} is listed twice", twice.0, twice.1));
    }
    list
}

/// `GATEHOUSE_REDIS_CLUSTER`: the seed nodes of a Redis Cluster (`REDIS_URL` then gives the
/// scheme, the credentials and nothing else: a Cluster has one database).
fn cluster(src: &mut Source, url: &str) -> Option<Vec<(String, u16)>> {
    src.get("GATEHOUSE_REDIS_CLUSTER")?;
    let seeds = host_ports(src, "GATEHOUSE_REDIS_CLUSTER");
    if url.starts_with("unix:") {
        src.problems
            .push("GATEHOUSE_REDIS_CLUSTER: REDIS_URL must be redis:// or rediss://".into());
    }
    if seeds.is_empty() {
        src.problems
            .push("GATEHOUSE_REDIS_CLUSTER: name at least one node (host:port,...)".into());
        return None;
    }
    Some(seeds)
}

/// `GATEHOUSE_REDIS_SENTINELS` and the rest of the Sentinel settings.
fn sentinel(src: &mut Source, url: &str) -> Option<SentinelOptions> {
    let sentinels = host_ports(src, "GATEHOUSE_REDIS_SENTINELS");
    let master = src
        .get("GATEHOUSE_REDIS_SENTINEL_MASTER")
        .map(str::to_owned);
    // The Sentinels name the master: over TLS whenever the master is reached over TLS, unless
    // said otherwise.
    let tls = src.flag_or("GATEHOUSE_REDIS_SENTINEL_TLS", is_tls_url(url));
    let username = src
        .get("GATEHOUSE_REDIS_SENTINEL_USERNAME")
        .map(str::to_owned);
    let password = src
        .get("GATEHOUSE_REDIS_SENTINEL_PASSWORD")
        .map(str::to_owned);
    match (sentinels.is_empty(), master) {
        (true, None) => {
            let tls_set = src.get("GATEHOUSE_REDIS_SENTINEL_TLS").is_some();
            if tls_set || username.is_some() || password.is_some() {
                src.problems.push(
                    "GATEHOUSE_REDIS_SENTINEL_*: set GATEHOUSE_REDIS_SENTINELS and GATEHOUSE_REDIS_SENTINEL_MASTER too".into(),
                );
            }
            None
        }
        (false, Some(master)) => Some(SentinelOptions {
            sentinels,
            master,
            tls,
            username,
            password,
        }),
        _ => {
            src.problems.push(
                "GATEHOUSE_REDIS_SENTINELS and GATEHOUSE_REDIS_SENTINEL_MASTER go together".into(),
            );
            None
        }
    }
}

/// Whether `pem` holds at least one certificate, all of them readable.
pub(super) fn has_certificate(pem: &[u8]) -> bool {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let certificates: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
    certificates.is_ok_and(|c| !c.is_empty())
}

fn redis_tls(src: &mut Source) -> TlsOptions {
    let mut read = |name: &str| {
        let path = src.get(name)?.to_owned();
        std::fs::read(&path)
            .map_err(|e| src.problems.push(format!("{name}={path:?}: {e}")))
            .ok()
    };
    let ca = read("GATEHOUSE_REDIS_CA_FILE");
    let cert = read("GATEHOUSE_REDIS_CERT_FILE");
    let key = read("GATEHOUSE_REDIS_KEY_FILE");
    // An empty trust store or chain is no error to rustls until the handshake fails.
    for (name, pem) in [
        ("GATEHOUSE_REDIS_CA_FILE", &ca),
        ("GATEHOUSE_REDIS_CERT_FILE", &cert),
    ] {
        if let Some(pem) = pem
            && !has_certificate(pem)
        {
            src.problems
                .push(format!("{name}: no PEM certificate in the file"));
        }
    }
    let client = match (cert, key) {
        (Some(cert), Some(key)) => Some(ClientCertificate { cert, key }),
        (None, None) => None,
        _ => {
            src.problems
                .push("GATEHOUSE_REDIS_CERT_FILE and GATEHOUSE_REDIS_KEY_FILE go together".into());
            None
        }
    };
    let skip_hostname_check = src.flag("GATEHOUSE_REDIS_TLS_SKIP_HOSTNAME_CHECK");
    // Against the system's roots, any public certificate for any name would pass.
    if skip_hostname_check && ca.is_none() {
        src.problems.push(
            "GATEHOUSE_REDIS_TLS_SKIP_HOSTNAME_CHECK needs GATEHOUSE_REDIS_CA_FILE (the CA that \
             signed the server's certificate)"
                .into(),
        );
    }
    TlsOptions {
        ca,
        client,
        skip_hostname_check,
    }
}

/// The key names (`GATEHOUSE_*KEY_PREFIX`, `GATEHOUSE_AUDIT_KEY`).
pub(super) fn keys(src: &mut Source) -> KeySchema {
    let defaults = KeySchema::default();
    KeySchema {
        owner_prefix: src
            .get("GATEHOUSE_OWNER_KEY_PREFIX")
            .map_or(defaults.owner_prefix, str::to_owned),
        user_sessions_prefix: src
            .get("GATEHOUSE_USER_SESSIONS_KEY_PREFIX")
            .map_or(defaults.user_sessions_prefix, str::to_owned),
        prefix: src
            .get("GATEHOUSE_KEY_PREFIX")
            .map_or(defaults.prefix, str::to_owned),
        audit: src.get("GATEHOUSE_AUDIT_KEY").map(str::to_owned),
    }
}

/// `GATEHOUSE_AUTH` and the JWT settings; `disabled` is refused off loopback unless allowed.
pub(super) fn auth(src: &mut Source, listen: SocketAddr) -> AuthConfig {
    let auth_disabled = src.parse("GATEHOUSE_AUTH", false, |raw| {
        match raw.to_ascii_lowercase().as_str() {
            "jwt" => Ok(false),
            "disabled" => Ok(true),
            _ => Err("expected jwt or disabled".into()),
        }
    });
    let allow_remote = src.flag("GATEHOUSE_AUTH_DISABLED_ALLOW_REMOTE");
    let auth = if auth_disabled {
        if !listen.ip().is_loopback() && !allow_remote {
            src.problems.push(format!(
                "GATEHOUSE_AUTH=disabled makes every caller an admin; refusing to listen on non-loopback {listen} unless GATEHOUSE_AUTH_DISABLED_ALLOW_REMOTE=true"
            ));
        }
        AuthConfig::Disabled
    } else {
        let raw_algorithms = src.get("GATEHOUSE_JWT_ALGORITHMS").map(str::to_owned);
        let secret = src.get("GATEHOUSE_JWT_SECRET").map(str::to_owned);
        let public_keys = match src.get("GATEHOUSE_JWT_PUBLIC_KEYS") {
            None => Vec::new(),
            Some(spec) => load_public_keys(spec).unwrap_or_else(|e| {
                src.problems.push(format!("GATEHOUSE_JWT_PUBLIC_KEYS: {e}"));
                Vec::new()
            }),
        };
        let env = identity::EnvJwt {
            algorithms: raw_algorithms.clone(),
            issuer: src.get("GATEHOUSE_JWT_ISSUER").map(str::to_owned),
            audience: src.get("GATEHOUSE_JWT_AUDIENCE").map(str::to_owned),
            claims: identity::env_claims(src),
            has_keys: secret.is_some() || src.get("GATEHOUSE_JWT_PUBLIC_KEYS").is_some(),
        };
        let jwks = identity::jwks_settings(src);
        let (providers, env_is_provider) = identity::providers(src, &env);
        // The environment's issuer settings describe the configured keys, unless they
        // describe its identity provider (then there are no configured keys).
        let settings = if env_is_provider {
            JwtSettings::default()
        } else {
            let algorithms = match &raw_algorithms {
                None => Vec::new(),
                Some(raw) => identity::algorithms(raw).unwrap_or_else(|why| {
                    src.problems
                        .push(format!("GATEHOUSE_JWT_ALGORITHMS={raw:?}: {why}"));
                    Vec::new()
                }),
            };
            JwtSettings {
                algorithms,
                issuer: env.issuer.clone(),
                audience: env.audience.clone(),
                claims: env.claims.clone(),
            }
        };
        // A key that none of the pinned algorithms fits is a configuration problem too.
        if !public_keys.is_empty()
            && let Err(e) = JwtVerifier::new(
                secret.as_deref().map(str::as_bytes),
                public_keys.clone(),
                &settings,
            )
        {
            src.problems.push(format!("GATEHOUSE_JWT_PUBLIC_KEYS: {e}"));
        }
        AuthConfig::Jwt {
            secret,
            public_keys,
            settings,
            providers,
            jwks: Box::new(jwks),
        }
    };
    if let AuthConfig::Jwt {
        secret: Some(secret),
        ..
    } = &auth
        && secret.len() < 32
    {
        src.problems
            .push("GATEHOUSE_JWT_SECRET: use at least 32 bytes".into());
    }
    auth
}

/// The settings that read tokens: no effect with `GATEHOUSE_AUTH=disabled` (nor do the
/// identity providers' [`identity::PROVIDER_VARS`] and [`identity::FETCH_VARS`]).
const TOKEN_VARS: [&str; 6] = [
    "GATEHOUSE_JWT_SECRET",
    "GATEHOUSE_JWT_PUBLIC_KEYS",
    "GATEHOUSE_JWT_ALGORITHMS",
    "GATEHOUSE_JWT_ISSUER",
    "GATEHOUSE_JWT_AUDIENCE",
    "GATEHOUSE_FORWARD_AUTH_COOKIE",
];

/// Warns about settings that another one makes pointless (kept apart from the problems: the
/// service runs as configured, only not as the operator may think), and refuses the token
/// settings beside `GATEHOUSE_AUTH=disabled`, which would fail open.
pub(super) fn contradictions(
    src: &mut Source,
    auth: &AuthConfig,
    redis: Option<&RedisConfig>,
    owner_cache: bool,
) {
    if matches!(auth, AuthConfig::Disabled) {
        // Refused, not warned about: a left-over GATEHOUSE_AUTH=disabled beside a real token
        // configuration would make every caller an admin.
        const WHY: &str = "not with GATEHOUSE_AUTH=disabled, which reads no token and makes \
                           every caller the virtual admin (remove one of the two)";
        let provider_vars = identity::PROVIDER_VARS
            .into_iter()
            .chain(identity::FETCH_VARS);
        for name in TOKEN_VARS.into_iter().chain(provider_vars) {
            if src.get(name).is_some() {
                src.problems.push(format!("{name}: {WHY}"));
            }
        }
        if !src.issuers.is_empty() {
            src.problems
                .push(format!("GATEHOUSE_CONFIG: jwt_issuers: {WHY}"));
        }
    } else {
        if let AuthConfig::Jwt { providers, .. } = auth
            && providers.is_empty()
        {
            for name in identity::FETCH_VARS {
                src.ignored(name, "no identity provider is configured");
            }
        }
        src.ignored(
            "GATEHOUSE_AUTH_DISABLED_ALLOW_REMOTE",
            "it applies to GATEHOUSE_AUTH=disabled only",
        );
    }
    match redis {
        None => src.ignored(
            "GATEHOUSE_SETTINGS_SNAPSHOT",
            "the embedded store keeps no snapshot (set REDIS_URL)",
        ),
        Some(redis) if !owner_cache => {
            let because = if redis.cluster.is_some() {
                "the owner cache is off with GATEHOUSE_REDIS_CLUSTER"
            } else {
                "GATEHOUSE_OWNER_CACHE=off"
            };
            src.ignored("GATEHOUSE_OWNER_CACHE_CAPACITY", because);
            src.ignored("GATEHOUSE_OWNER_CACHE_TTL", because);
        }
        Some(_) => {}
    }
}

/// `GATEHOUSE_LOG_FORMAT` and `GATEHOUSE_LOG`.
pub(super) fn logging(src: &mut Source) -> (LogFormat, String) {
    let log_format = src.parse("GATEHOUSE_LOG_FORMAT", LogFormat::Text, |raw| {
        match raw.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err("expected text or json".into()),
        }
    });
    let log_filter = src.get("GATEHOUSE_LOG").unwrap_or("info").to_owned();
    (log_format, log_filter)
}

/// `GATEHOUSE_AUDIT_*`.
pub(super) fn audit(src: &mut Source) -> AuditSettings {
    AuditSettings {
        maxlen: src.count("GATEHOUSE_AUDIT_MAXLEN", 1_000_000),
        queue: src.count("GATEHOUSE_AUDIT_QUEUE", 10_000),
        spool: match src.get("GATEHOUSE_AUDIT_SPOOL") {
            Some(off) if off.eq_ignore_ascii_case("off") => None,
            Some(path) => Some(path.into()),
            None => Some("gatehouse-audit.spool".into()),
        },
        spool_max_bytes: src.count("GATEHOUSE_AUDIT_SPOOL_MAX_MB", 1024) as u64 * 1024 * 1024,
    }
}

/// `GATEHOUSE_STATS`, `GATEHOUSE_STATS_FLUSH`, `GATEHOUSE_STATS_MINUTE_RETENTION` and
/// `GATEHOUSE_STATS_HOUR_RETENTION`: the decision time series.
pub(super) fn stats(src: &mut Source) -> crate::stats::StatsSettings {
    let defaults = crate::stats::StatsSettings::default();
    let enabled = src.flag_or("GATEHOUSE_STATS", defaults.enabled);
    let flush = src.duration("GATEHOUSE_STATS_FLUSH", defaults.flush);
    let minutes = src.duration(
        "GATEHOUSE_STATS_MINUTE_RETENTION",
        defaults.retention.minutes,
    );
    let hours = src.duration("GATEHOUSE_STATS_HOUR_RETENTION", defaults.retention.hours);
    if !(Duration::from_millis(10)..=Duration::from_secs(60)).contains(&flush) {
        src.problems
            .push("GATEHOUSE_STATS_FLUSH: must be 10ms to 60s".into());
    }
    if minutes < Duration::from_secs(3600) {
        src.problems
            .push("GATEHOUSE_STATS_MINUTE_RETENTION: must be at least 1h".into());
    }
    if hours < minutes.max(Duration::from_secs(86_400)) {
        src.problems.push(
            "GATEHOUSE_STATS_HOUR_RETENTION: must be at least 1d and at least GATEHOUSE_STATS_MINUTE_RETENTION"
                .into(),
        );
    }
    if !enabled {
        for name in ["GATEHOUSE_STATS_FLUSH", "GATEHOUSE_STATS_ENDPOINTS"] {
            src.ignored(
                name,
                "GATEHOUSE_STATS=off: this instance counts no decisions",
            );
        }
    }
    if minutes > Duration::from_secs(366 * 86_400) {
        src.problems
            .push("GATEHOUSE_STATS_MINUTE_RETENTION: at most 366d".into());
    }
    if hours > Duration::from_secs(10 * 366 * 86_400) {
        src.problems
            .push("GATEHOUSE_STATS_HOUR_RETENTION: at most 3660d".into());
    }
    let endpoints: Vec<String> = src
        .get("GATEHOUSE_STATS_ENDPOINTS")
        .map(|raw| {
            raw.split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    for name in &endpoints {
        if let Err(e) = crate::session_id::check_name("endpoint", name) {
            src.problems
                .push(format!("GATEHOUSE_STATS_ENDPOINTS: {name:?}: {e}"));
        }
    }
    if endpoints.len() > 1000 {
        src.problems
            .push("GATEHOUSE_STATS_ENDPOINTS: at most 1000 names".into());
    }
    crate::stats::StatsSettings {
        enabled,
        flush,
        retention: crate::records::Retention { minutes, hours },
        endpoints,
    }
}

/// `GATEHOUSE_SETTINGS_SNAPSHOT`, beside the audit spool by default.
pub(super) fn settings_snapshot(
    src: &mut Source,
    audit: &AuditSettings,
) -> Option<std::path::PathBuf> {
    match src.get("GATEHOUSE_SETTINGS_SNAPSHOT") {
        Some(off) if off.eq_ignore_ascii_case("off") => None,
        Some(path) => Some(path.into()),
        None => Some(
            audit
                .spool
                .as_deref()
                .and_then(std::path::Path::parent)
                .unwrap_or_else(|| std::path::Path::new(""))
                .join("gatehouse-settings.json"),
        ),
    }
}

/// `GATEHOUSE_ROUTES` (the file is read here, so its problems join the others) and
/// `GATEHOUSE_FORWARD_AUTH_*`.
pub(super) fn forward_auth(src: &mut Source) -> crate::forward_auth::ForwardAuth {
    let routes = match src.get("GATEHOUSE_ROUTES").map(str::to_owned) {
        None => crate::forward_auth::DEFAULT_ROUTES.to_owned(),
        Some(path) => std::fs::read_to_string(&path).unwrap_or_else(|e| {
            src.problems.push(format!("GATEHOUSE_ROUTES={path:?}: {e}"));
            String::new()
        }),
    };
    let routes = crate::forward_auth::RouteTable::parse(&routes).unwrap_or_else(|problems| {
        src.problems.extend(
            problems
                .into_iter()
                .map(|p| format!("GATEHOUSE_ROUTES: {p}")),
        );
        crate::forward_auth::RouteTable::parse("").unwrap_or_else(|_| unreachable!())
    });
    let unmatched = src.parse(
        "GATEHOUSE_FORWARD_AUTH_UNMATCHED",
        crate::forward_auth::Unmatched::Allow,
        |raw| match raw.to_ascii_lowercase().as_str() {
            "allow" => Ok(crate::forward_auth::Unmatched::Allow),
            "deny" => Ok(crate::forward_auth::Unmatched::Deny),
            _ => Err("expected allow or deny".into()),
        },
    );
    let style = src.parse(
        "GATEHOUSE_FORWARD_AUTH_STYLE",
        crate::forward_auth::Style::Auto,
        |raw| raw.parse(),
    );
    let preflight = src.parse(
        "GATEHOUSE_FORWARD_AUTH_PREFLIGHT",
        crate::forward_auth::Preflight::Check,
        |raw| match raw.to_ascii_lowercase().as_str() {
            "check" => Ok(crate::forward_auth::Preflight::Check),
            "allow" => Ok(crate::forward_auth::Preflight::Allow),
            "deny" => Ok(crate::forward_auth::Preflight::Deny),
            _ => Err("expected check, allow or deny".into()),
        },
    );
    crate::forward_auth::ForwardAuth {
        routes,
        unmatched,
        cookie: src.get("GATEHOUSE_FORWARD_AUTH_COOKIE").map(str::to_owned),
        style,
        preflight,
    }
}

/// `GATEHOUSE_BACKFILL_ROOTS`: each must be a directory.
pub(super) fn backfill_roots(src: &mut Source) -> Vec<std::path::PathBuf> {
    let backfill_roots: Vec<std::path::PathBuf> = src
        .get("GATEHOUSE_BACKFILL_ROOTS")
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(std::path::PathBuf::from)
        .collect();
    for root in &backfill_roots {
        if !root.is_dir() {
            src.problems.push(format!(
                "GATEHOUSE_BACKFILL_ROOTS: {} is not a directory",
                root.display()
            ));
        }
    }
    backfill_roots
}

/// `GATEHOUSE_OWNER_CACHE*`.
///
/// On a Redis Cluster the cache is off, and asking for it is refused: its invalidations are
/// published on the primary of each session's owner key and reach the subscribed node over the
/// cluster bus, which drops them when a link between two nodes is down, while the heartbeat,
/// published on one primary, may still arrive; so the heartbeat would not prove the cache
/// current (an old owner could be allowed for the cache's TTL).
pub(super) fn owner_cache(src: &mut Source, cluster: bool) -> Option<OwnerCacheSettings> {
    // Read (and so checked) on a Cluster too, where the cache is off.
    let cache_on = src.parse("GATEHOUSE_OWNER_CACHE", !cluster, |raw| {
        match raw.to_ascii_lowercase().as_str() {
            "on" | "true" => Ok(true),
            "off" | "false" => Ok(false),
            _ => Err("expected on or off".into()),
        }
    });
    let cache_capacity = src.count("GATEHOUSE_OWNER_CACHE_CAPACITY", 100_000) as u64;
    let cache_ttl = src.duration("GATEHOUSE_OWNER_CACHE_TTL", Duration::from_secs(60));
    if cluster {
        if cache_on {
            src.problems.push(
                "GATEHOUSE_OWNER_CACHE: not with GATEHOUSE_REDIS_CLUSTER (a Cluster can lose \
                 invalidations between nodes while the heartbeat still arrives; README, \
                 Production Redis)"
                    .into(),
            );
        }
        return None;
    }
    cache_on.then_some(OwnerCacheSettings {
        capacity: cache_capacity,
        ttl: cache_ttl,
    })
}

/// `GATEHOUSE_HEADER_READ_TIMEOUT`, `GATEHOUSE_IDLE_TIMEOUT`, `GATEHOUSE_MAX_CONNECTIONS`.
pub(super) fn connection_limits(
    src: &mut Source,
    request_timeout: Duration,
) -> crate::http::ConnectionLimits {
    let defaults = crate::http::ConnectionLimits::default();
    let header_read_timeout = src.duration(
        "GATEHOUSE_HEADER_READ_TIMEOUT",
        defaults.header_read_timeout,
    );
    let idle_timeout = src.duration("GATEHOUSE_IDLE_TIMEOUT", defaults.idle_timeout);
    for (name, value) in [
        ("GATEHOUSE_HEADER_READ_TIMEOUT", header_read_timeout),
        ("GATEHOUSE_IDLE_TIMEOUT", idle_timeout),
        ("GATEHOUSE_REQUEST_TIMEOUT", request_timeout),
    ] {
        if value.is_zero() {
            src.problems.push(format!("{name}: must be above zero"));
        }
    }
    let max_connections = src.parse(
        "GATEHOUSE_MAX_CONNECTIONS",
        defaults.max_connections,
        |raw| {
            raw.replace('_', "")
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| "expected a positive whole number".into())
        },
    );
    crate::http::ConnectionLimits {
        header_read_timeout,
        idle_timeout,
        max_connections,
        drain_timeout: request_timeout + Duration::from_secs(1),
    }
}

/// The host name, for naming this instance (`gatehouse` when it cannot be read).
pub(super) fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "gatehouse".to_owned())
}

/// The `GATEHOUSE_CONFIG` file: each top-level key as variable name -> (its TOML key, the
/// value as text), and the `[[jwt_issuers]]` tables.
pub(super) struct FileSettings {
    pub values: HashMap<String, (String, String)>,
    pub issuers: Vec<toml::Table>,
}

/// Reads a TOML file of top-level keys into environment-variable names, and its
/// `[[jwt_issuers]]` tables.
pub(super) fn read_file(path: &str) -> Result<FileSettings, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
    let issuers = match table.remove("jwt_issuers") {
        None => Vec::new(),
        Some(toml::Value::Array(entries)) => entries
            .into_iter()
            .map(|entry| match entry {
                toml::Value::Table(entry) => Ok(entry),
                _ => Err("jwt_issuers: write [[jwt_issuers]] tables".to_owned()),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("jwt_issuers: write [[jwt_issuers]] tables".into()),
    };
    let values = table
        .into_iter()
        .map(|(key, value)| {
            let name = if key.eq_ignore_ascii_case("redis_url") {
                "REDIS_URL".to_owned()
            } else {
                format!("GATEHOUSE_{}", key.to_ascii_uppercase())
            };
            let value = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(_) | toml::Value::Boolean(_) | toml::Value::Float(_) => {
                    value.to_string()
                }
                _ => return Err(format!("{key}: expected a string, number or boolean")),
            };
            Ok((name, (key, value)))
        })
        .collect::<Result<_, String>>()?;
    Ok(FileSettings { values, issuers })
}

/// The TOML key of variable `name` (`GATEHOUSE_REDIS_TIMEOUT` -> `redis_timeout`).
pub(super) fn toml_key(name: &str) -> String {
    if name == "REDIS_URL" {
        return "redis_url".into();
    }
    name.strip_prefix("GATEHOUSE_")
        .unwrap_or(name)
        .to_ascii_lowercase()
}
