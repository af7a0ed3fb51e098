//! Configuration: environment variables, optionally a TOML file, parsed once into typed values.
//!
//! Every key is an environment variable (`GATEHOUSE_*`, plus `REDIS_URL`). The file named by
//! `GATEHOUSE_CONFIG` may set the same keys, written in lower case without the `GATEHOUSE_`
//! prefix (`listen = "0.0.0.0:8080"`, `redis_url = "redis://..."`); the environment wins. All
//! problems are reported at once.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use self::sections::{
    audit, auth, backfill_roots, connection_limits, forward_auth, host_name, keys, logging,
    owner_cache, read_file, redis, settings_snapshot, stats, toml_key,
};
use crate::auth::JwtSettings;
use crate::decision::Mode;
use crate::store::KeySchema;

mod identity;
mod sections;

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// How callers authenticate.
#[derive(Debug, Clone)]
// One value per process, read at start: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum AuthConfig {
    /// JWT bearer tokens. Without a secret and keys: a random key and a printed admin token.
    Jwt {
        /// HS256 secret (`GATEHOUSE_JWT_SECRET`).
        secret: Option<String>,
        /// The keys of the files `GATEHOUSE_JWT_PUBLIC_KEYS` names (`[kid=]path,...`), read
        /// while parsing, so that a bad file joins the other problems.
        public_keys: Vec<crate::auth::PublicKey>,
        /// The configured keys' algorithms, issuer, audience and claims.
        settings: JwtSettings,
        /// The identity providers: the environment's (`GATEHOUSE_JWT_JWKS_URL` or
        /// `GATEHOUSE_JWT_DISCOVERY`) and the file's `[[jwt_issuers]]`.
        providers: Vec<crate::auth::IdentityProvider>,
        /// How their keys are fetched (`GATEHOUSE_JWT_JWKS_*`, `GATEHOUSE_JWT_WAIT_FOR_KEYS`);
        /// boxed, as the rest of the variant is small beside `Disabled`.
        jwks: Box<crate::auth::JwksSettings>,
    },
    /// Legacy: every caller is the virtual user `admin` (`GATEHOUSE_AUTH=disabled`).
    Disabled,
}

/// Redis connection settings.
#[derive(Clone)]
pub struct RedisConfig {
    /// `REDIS_URL`.
    pub url: String,
    /// For `rediss://`: `GATEHOUSE_REDIS_CA_FILE`, `GATEHOUSE_REDIS_CERT_FILE` +
    /// `GATEHOUSE_REDIS_KEY_FILE` (mTLS), `GATEHOUSE_REDIS_TLS_SKIP_HOSTNAME_CHECK`.
    pub tls: crate::store::TlsOptions,
    /// `GATEHOUSE_REDIS_SENTINELS` (`host:port,...`) and `GATEHOUSE_REDIS_SENTINEL_MASTER`
    /// (+ `_SENTINEL_TLS`, `_SENTINEL_USERNAME`, `_SENTINEL_PASSWORD`): the master is the one
    /// the Sentinels name; `REDIS_URL` then gives the scheme, credentials and database.
    pub sentinel: Option<crate::store::SentinelOptions>,
    /// `GATEHOUSE_REDIS_CLUSTER` (`host:port,...`): seed nodes of a Redis Cluster; `REDIS_URL`
    /// then gives the scheme and credentials.
    pub cluster: Option<Vec<(String, u16)>>,
    /// `GATEHOUSE_REDIS_MIN_REPLICAS` (default none): replicas that must confirm an ownership
    /// write (`WAIT`, within 4/5 of `GATEHOUSE_REDIS_TIMEOUT`) before it is acknowledged.
    pub min_replicas: Option<u32>,
    /// `GATEHOUSE_REDIS_CONNECTIONS` (default 4): multiplexed connections used round-robin by
    /// everything but owner lookups, which have one more of their own.
    pub connections: usize,
    /// `GATEHOUSE_REDIS_TIMEOUT` (default 500ms).
    pub timeout: Duration,
}

/// The URL without its password.
impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &crate::store::redacted_url(&self.url))
            .field("tls", &self.tls)
            .field("sentinel", &self.sentinel)
            .field("cluster", &self.cluster)
            .field("min_replicas", &self.min_replicas)
            .field("connections", &self.connections)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `GATEHOUSE_LISTEN` (default `127.0.0.1:8080`).
    pub listen: SocketAddr,
    /// `REDIS_URL` and friends; `None` runs on the embedded in-memory store.
    pub redis: Option<RedisConfig>,
    /// Key names (`GATEHOUSE_KEY_PREFIX`, `GATEHOUSE_OWNER_KEY_PREFIX`,
    /// `GATEHOUSE_USER_SESSIONS_KEY_PREFIX`).
    pub keys: KeySchema,
    /// `GATEHOUSE_OWNER_TTL` (default none: ownership is persistent).
    pub owner_ttl: Option<Duration>,
    /// `GATEHOUSE_AUTH` and the JWT settings.
    pub auth: AuthConfig,
    /// `GATEHOUSE_INITIAL_MODE` (default LOG_ONLY): the mode a fresh deployment's first
    /// settings record is initialised with.
    pub initial_mode: Mode,
    /// `GATEHOUSE_SETTINGS_REFRESH` (default 5s): how often settings are re-read.
    pub settings_refresh: Duration,
    /// `GATEHOUSE_SETTINGS_SNAPSHOT` (default `gatehouse-settings.json` beside the audit
    /// spool; `off`: none): the local snapshot of the last settings applied (Redis only).
    pub settings_snapshot: Option<std::path::PathBuf>,
    /// `GATEHOUSE_REQUEST_TIMEOUT` (default 10s): 408 after.
    pub request_timeout: Duration,
    /// `GATEHOUSE_HEADER_READ_TIMEOUT` (5s), `GATEHOUSE_IDLE_TIMEOUT` (75s) and
    /// `GATEHOUSE_MAX_CONNECTIONS` (4096); the shutdown drains for the request timeout + 1s.
    pub connections: crate::http::ConnectionLimits,
    /// `GATEHOUSE_LOG_FORMAT` (default text).
    pub log_format: LogFormat,
    /// `GATEHOUSE_LOG` (default `info`), in `tracing` filter syntax.
    pub log_filter: String,
    /// `GATEHOUSE_INSTANCE` (default: the host name): this instance's name in audit events.
    pub instance: String,
    /// The audit writer's settings.
    pub audit: AuditSettings,
    /// `GATEHOUSE_ROUTES` (the route file; default: the built-in legacy chat routes),
    /// `GATEHOUSE_FORWARD_AUTH_UNMATCHED` (`allow` default, `deny`),
    /// `GATEHOUSE_FORWARD_AUTH_COOKIE`, `GATEHOUSE_FORWARD_AUTH_STYLE` (`auto` default,
    /// `nginx`, `traefik`, `caddy`, `envoy`) and `GATEHOUSE_FORWARD_AUTH_PREFLIGHT` (`check`
    /// default, `allow`, `deny`).
    pub forward_auth: crate::forward_auth::ForwardAuth,
    /// `GATEHOUSE_TRUSTED_PROXIES` (default none): CIDRs whose `X-Forwarded-For` /
    /// `X-Real-IP` is believed for the audit `client_ip`.
    pub trusted_proxies: crate::http::TrustedProxies,
    /// `GATEHOUSE_BACKFILL_ROOTS`: comma-separated directories backfill sources must lie in
    /// (default none: the backfill API refuses every source).
    pub backfill_roots: Vec<std::path::PathBuf>,
    /// `GATEHOUSE_OWNER_CACHE` (`on` default, `off`), `GATEHOUSE_OWNER_CACHE_CAPACITY`
    /// (100,000) and `GATEHOUSE_OWNER_CACHE_TTL` (60s): the owner cache used with Redis.
    pub owner_cache: Option<OwnerCacheSettings>,
    /// `GATEHOUSE_METRICS_LISTEN` (default: unset, `/metrics` on `GATEHOUSE_LISTEN`): serve
    /// `/metrics` on this address only (e.g. a private interface), 404 on the API's.
    pub metrics_listen: Option<SocketAddr>,
    /// `GATEHOUSE_GRPC_LISTEN` (default: unset, no gRPC): serve Envoy's
    /// `envoy.service.auth.v3.Authorization/Check` (plain-text HTTP/2) on this address.
    pub grpc_listen: Option<SocketAddr>,
    /// `GATEHOUSE_SESSION_IDS` (`canonical` default, `exact`): whether every spelling of a
    /// UUID session id is one session.
    pub session_ids: crate::session_id::SessionIds,
    /// `GATEHOUSE_CLAIM` (`service` default, `self`): who may claim sessions.
    pub claim: crate::sessions::ClaimPolicy,
    /// `GATEHOUSE_STATS` (`on` default), `GATEHOUSE_STATS_FLUSH` (1s),
    /// `GATEHOUSE_STATS_MINUTE_RETENTION` (14d), `GATEHOUSE_STATS_HOUR_RETENTION` (90d),
    /// `GATEHOUSE_STATS_ENDPOINTS` (none): the decision time series ([`crate::stats`]).
    pub stats: crate::stats::StatsSettings,
    /// Settings given that have no effect beside the others (`GATEHOUSE_JWT_SECRET` with
    /// `GATEHOUSE_AUTH=disabled`, ...): `serve` logs each at WARN.
    pub warnings: Vec<String>,
}

/// The owner cache's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnerCacheSettings {
    /// Entries at most.
    pub capacity: u64,
    /// Longest an entry is kept.
    pub ttl: Duration,
}

/// `GATEHOUSE_AUDIT_*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    /// `GATEHOUSE_AUDIT_MAXLEN` (default 1,000,000): approximate bound of the stream.
    pub maxlen: usize,
    /// `GATEHOUSE_AUDIT_QUEUE` (default 10,000): events held in memory before spooling.
    pub queue: usize,
    /// `GATEHOUSE_AUDIT_SPOOL` (default `gatehouse-audit.spool`; `off`: none): the spool file
    /// used with Redis.
    pub spool: Option<std::path::PathBuf>,
    /// `GATEHOUSE_AUDIT_SPOOL_MAX_MB` (default 1024): the spool's largest size.
    pub spool_max_bytes: u64,
}

/// Everything wrong with a configuration, one problem per line.
#[derive(Debug)]
pub struct ConfigError(pub Vec<String>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration:")?;
        for problem in &self.0 {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Reads raw values by environment-variable name.
struct Source {
    values: HashMap<String, String>,
    /// The TOML key of each value that came from the `GATEHOUSE_CONFIG` file.
    file_keys: HashMap<String, String>,
    /// Every name a section asked for (read or not): the names gatehouse knows.
    asked: std::cell::RefCell<std::collections::HashSet<String>>,
    problems: Vec<String>,
    /// Settings given that have no effect beside others (logged at start, not refused).
    warnings: Vec<String>,
    /// The file's `[[jwt_issuers]]` tables.
    issuers: Vec<toml::Table>,
}

/// Names that are no service setting but are gatehouse's: the file's own name, and what the
/// admin CLI reads (`gatehouse mode ...` and friends).
const NOT_SETTINGS: [&str; 3] = ["GATEHOUSE_CONFIG", "GATEHOUSE_URL", "GATEHOUSE_TOKEN"];

impl Source {
    /// Reports every given name no section asked for, with the closest known one: a typo
    /// (`GATEHOUSE_REDIS_TIMEOTU`) must not silently leave the default in force.
    fn report_unknown(&mut self) {
        let asked = self.asked.borrow();
        let mut unknown: Vec<&String> = self
            .values
            .keys()
            .filter(|name| !asked.contains(*name) && !NOT_SETTINGS.contains(&name.as_str()))
            .collect();
        unknown.sort();
        // Compared without the prefix every name shares.
        let bare = |name: &str| name.strip_prefix("GATEHOUSE_").unwrap_or(name).to_owned();
        let closest = |name: &str| {
            asked
                .iter()
                .map(|known| {
                    (
                        strsim::normalized_damerau_levenshtein(&bare(name), &bare(known)),
                        known,
                    )
                })
                .filter(|(score, _)| *score >= 0.7)
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(_, known)| known.to_owned())
        };
        let mut problems = Vec::new();
        for name in unknown {
            let problem = match self.file_keys.get(name) {
                Some(key) => {
                    let hint = closest(name)
                        .map(|known: String| format!(" (did you mean {}?)", toml_key(&known)))
                        .unwrap_or_default();
                    format!("GATEHOUSE_CONFIG: unknown key {key}{hint}")
                }
                None => {
                    let hint = closest(name)
                        .map(|known| format!(" (did you mean {known}?)"))
                        .unwrap_or_default();
                    format!("{name}: unknown setting{hint}")
                }
            };
            problems.push(problem);
        }
        drop(asked);
        self.problems.extend(problems);
    }

    /// `lines` (problems or warnings), those of a value from the file named by its TOML key
    /// (`GATEHOUSE_CONFIG: redis_timeout="5 parsecs": ...`), the others by their variable.
    fn in_file_terms(&self, lines: &[String]) -> Vec<String> {
        lines
            .iter()
            .map(|problem| {
                let from_file = self.file_keys.iter().find(|(name, _)| {
                    problem
                        .strip_prefix(name.as_str())
                        .is_some_and(|rest| rest.starts_with(['=', ':']))
                });
                match from_file {
                    Some((name, key)) => {
                        format!("GATEHOUSE_CONFIG: {key}{}", &problem[name.len()..])
                    }
                    None => problem.clone(),
                }
            })
            .collect()
    }

    /// A known setting that has no effect `because` of another: a warning if it is given.
    fn ignored(&mut self, name: &str, because: &str) {
        if self.get(name).is_some() {
            self.warnings.push(format!("{name}: ignored, {because}"));
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.asked.borrow_mut().insert(name.to_owned());
        self.values
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    fn parse<T>(
        &mut self,
        name: &str,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> T {
        match self.get(name).map(str::to_owned) {
            None => default,
            Some(raw) => parse(&raw).unwrap_or_else(|why| {
                self.problems.push(format!("{name}={raw:?}: {why}"));
                default
            }),
        }
    }

    fn duration(&mut self, name: &str, default: Duration) -> Duration {
        self.parse(name, default, |raw| {
            humantime::parse_duration(raw).map_err(|e| format!("{e} (write e.g. 500ms, 5s, 24h)"))
        })
    }

    /// A positive whole number (`_` separators allowed).
    fn count(&mut self, name: &str, default: usize) -> usize {
        self.parse(name, default, |raw| {
            raw.replace('_', "")
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| "expected a positive whole number".into())
        })
    }

    fn flag(&mut self, name: &str) -> bool {
        self.flag_or(name, false)
    }

    /// A boolean variable, `default` when unset.
    fn flag_or(&mut self, name: &str, default: bool) -> bool {
        self.parse(name, default, |raw| {
            match raw.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" => Ok(false),
                _ => Err("expected true or false".into()),
            }
        })
    }
}

impl Config {
    /// The audit writer's settings for this instance. The embedded store cannot be
    /// unreachable: it needs no spool.
    pub fn audit_config(&self) -> crate::audit::AuditConfig {
        crate::audit::AuditConfig {
            instance: self.instance.clone(),
            queue: self.audit.queue,
            batch: 500,
            spool: self.redis.as_ref().and(self.audit.spool.clone()),
            spool_max_bytes: self.audit.spool_max_bytes,
        }
    }

    /// The options of the Redis store this configuration names (`None`: the embedded store).
    pub fn redis_options(&self) -> Option<crate::store::RedisOptions> {
        self.redis.as_ref().map(|redis| crate::store::RedisOptions {
            url: redis.url.clone(),
            tls: redis.tls.clone(),
            sentinel: redis.sentinel.clone(),
            cluster: redis.cluster.clone(),
            min_replicas: redis.min_replicas,
            connections: redis.connections,
            timeout: redis.timeout,
            owner_ttl: self.owner_ttl,
            keys: self.keys.clone(),
            audit_maxlen: self.audit.maxlen,
        })
    }

    /// Reads the process environment (and the file it names).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// Reads configuration from `(name, value)` pairs, as the environment would give them.
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let env: HashMap<String, String> = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with("GATEHOUSE_") || k == "REDIS_URL")
            .collect();
        let mut values = HashMap::new();
        let mut file_keys = HashMap::new();
        let mut problems = Vec::new();
        let mut issuers = Vec::new();
        if let Some(path) = env.get("GATEHOUSE_CONFIG").filter(|p| !p.trim().is_empty()) {
            match read_file(path) {
                Ok(file) => {
                    for (name, (key, value)) in file.values {
                        file_keys.insert(name.clone(), key);
                        values.insert(name, value);
                    }
                    issuers = file.issuers;
                }
                Err(why) => problems.push(format!("GATEHOUSE_CONFIG={path:?}: {why}")),
            }
        }
        // A variable overrides the file: its errors name the variable.
        for name in env.keys() {
            file_keys.remove(name);
        }
        values.extend(env);
        let mut src = Source {
            values,
            file_keys,
            asked: Default::default(),
            problems,
            warnings: Vec::new(),
            issuers,
        };
        let mut config = Self::parse(&mut src);
        src.report_unknown();
        if src.problems.is_empty() {
            config.warnings = src.in_file_terms(&src.warnings);
            Ok(config)
        } else {
            Err(ConfigError(src.in_file_terms(&src.problems)))
        }
    }

    fn parse(src: &mut Source) -> Self {
        let listen = src.parse(
            "GATEHOUSE_LISTEN",
            SocketAddr::from(([127, 0, 0, 1], 8080)),
            |raw| {
                raw.parse()
                    .map_err(|e| format!("{e} (write e.g. 127.0.0.1:8080)"))
            },
        );
        let redis = redis(src);
        let metrics_listen = src.get("GATEHOUSE_METRICS_LISTEN").is_some().then(|| {
            src.parse("GATEHOUSE_METRICS_LISTEN", listen, |raw| {
                raw.parse::<SocketAddr>()
                    .map_err(|e| format!("{e} (write e.g. 127.0.0.1:9090)"))
            })
        });
        if metrics_listen == Some(listen) {
            src.problems.push(
                "GATEHOUSE_METRICS_LISTEN: must differ from GATEHOUSE_LISTEN (leave it unset to \
                 serve /metrics there)"
                    .into(),
            );
        }
        let grpc_listen = src.get("GATEHOUSE_GRPC_LISTEN").is_some().then(|| {
            src.parse("GATEHOUSE_GRPC_LISTEN", listen, |raw| {
                raw.parse::<SocketAddr>()
                    .map_err(|e| format!("{e} (write e.g. 127.0.0.1:9191)"))
            })
        });
        if grpc_listen.is_some() && (grpc_listen == Some(listen) || grpc_listen == metrics_listen) {
            src.problems.push(
                "GATEHOUSE_GRPC_LISTEN: must differ from GATEHOUSE_LISTEN and \
                 GATEHOUSE_METRICS_LISTEN (gRPC has a listener of its own)"
                    .into(),
            );
        }
        let keys = keys(src);
        let owner_ttl = src
            .get("GATEHOUSE_OWNER_TTL")
            .is_some()
            .then(|| src.duration("GATEHOUSE_OWNER_TTL", Duration::ZERO))
            .filter(|ttl| !ttl.is_zero());
        let auth = auth(src, listen);
        // The gRPC check authenticates like the HTTP one: the same rule for its address.
        if let Some(grpc) = grpc_listen.filter(|addr| !addr.ip().is_loopback())
            && matches!(auth, AuthConfig::Disabled)
            && !src.flag("GATEHOUSE_AUTH_DISABLED_ALLOW_REMOTE")
        {
            src.problems.push(format!(
                "GATEHOUSE_AUTH=disabled makes every caller an admin; refusing to serve gRPC on non-loopback {grpc} unless GATEHOUSE_AUTH_DISABLED_ALLOW_REMOTE=true"
            ));
        }
        let initial_mode = src.parse("GATEHOUSE_INITIAL_MODE", Mode::LogOnly, |raw| raw.parse());
        let settings_refresh = src.duration("GATEHOUSE_SETTINGS_REFRESH", Duration::from_secs(5));
        let request_timeout = src.duration("GATEHOUSE_REQUEST_TIMEOUT", Duration::from_secs(10));
        let connections = connection_limits(src, request_timeout);
        let (log_format, log_filter) = logging(src);
        let instance = src
            .get("GATEHOUSE_INSTANCE")
            .map(str::to_owned)
            .unwrap_or_else(host_name);
        if let Err(e) = crate::session_id::check_name("instance", &instance) {
            src.problems.push(format!("GATEHOUSE_INSTANCE: {e}"));
        }
        let audit = audit(src);
        let stats = stats(src);
        let settings_snapshot = settings_snapshot(src, &audit);
        let forward_auth = forward_auth(src);
        let trusted_proxies = src.parse(
            "GATEHOUSE_TRUSTED_PROXIES",
            crate::http::TrustedProxies::default(),
            crate::http::TrustedProxies::parse,
        );
        let backfill_roots = backfill_roots(src);
        let cluster = redis.as_ref().is_some_and(|r| r.cluster.is_some());
        if cluster && keys.owner_keys_are_tagged() {
            src.problems.push(
                "GATEHOUSE_OWNER_KEY_PREFIX: no hash tag ({...}) with GATEHOUSE_REDIS_CLUSTER \
                 (the legacy owner keys have none; each owner key has its own slot)"
                    .into(),
            );
        }
        if cluster && keys.prefix_has_braces() {
            src.problems.push(
                "GATEHOUSE_KEY_PREFIX: no braces with GATEHOUSE_REDIS_CLUSTER (gatehouse tags                  its keys after the prefix, {enforcement} and {stats}, so that each script                  stays in one slot; a brace in the prefix would change which slot)"
                    .into(),
            );
        }
        let owner_cache = owner_cache(src, cluster);
        if settings_refresh.is_zero() {
            src.problems
                .push("GATEHOUSE_SETTINGS_REFRESH: must be above zero".into());
        }
        let session_ids = src.parse("GATEHOUSE_SESSION_IDS", Default::default(), |raw| {
            raw.parse()
        });
        let claim = src.parse("GATEHOUSE_CLAIM", Default::default(), |raw| raw.parse());
        sections::contradictions(src, &auth, redis.as_ref(), owner_cache.is_some());
        Config {
            warnings: Vec::new(),
            session_ids,
            claim,
            listen,
            redis,
            keys,
            owner_ttl,
            auth,
            initial_mode,
            settings_refresh,
            settings_snapshot,
            request_timeout,
            connections,
            log_format,
            log_filter,
            instance,
            audit,
            stats,
            forward_auth,
            trusted_proxies,
            backfill_roots,
            owner_cache,
            metrics_listen,
            grpc_listen,
        }
    }
}

#[cfg(test)]
mod tests;
