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

use jsonwebtoken::Algorithm;

use crate::auth::JwtSettings;
use crate::decision::Mode;
use crate::store::KeySchema;

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
pub enum AuthConfig {
    /// JWT bearer tokens. Without a secret and keys: a random key and a printed admin token.
    Jwt {
        /// HS256 secret (`GATEHOUSE_JWT_SECRET`).
        secret: Option<String>,
        /// Public key files (`GATEHOUSE_JWT_PUBLIC_KEYS`: `[kid=]path,...`).
        public_keys: Option<String>,
        /// Algorithms, issuer, audience.
        settings: JwtSettings,
    },
    /// Legacy: every caller is the virtual user `admin` (`GATEHOUSE_AUTH=disabled`).
    Disabled,
}

/// Redis connection settings.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `REDIS_URL`.
    pub url: String,
    /// `GATEHOUSE_REDIS_CONNECTIONS` (default 4): multiplexed connections used round-robin by
    /// everything but owner lookups, which have one more of their own.
    pub connections: usize,
    /// `GATEHOUSE_REDIS_TIMEOUT` (default 500ms).
    pub timeout: Duration,
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
    /// `GATEHOUSE_SESSION_IDS` (`canonical` default, `exact`): whether every spelling of a
    /// UUID session id is one session.
    pub session_ids: crate::session_id::SessionIds,
    /// `GATEHOUSE_CLAIM` (`service` default, `self`): who may claim sessions.
    pub claim: crate::sessions::ClaimPolicy,
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
    problems: Vec<String>,
}

impl Source {
    fn get(&self, name: &str) -> Option<&str> {
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

    fn flag(&mut self, name: &str) -> bool {
        self.parse(name, false, |raw| match raw.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err("expected true or false".into()),
        })
    }
}

impl Config {
    /// The options of the Redis store this configuration names (`None`: the embedded store).
    pub fn redis_options(&self) -> Option<crate::store::RedisOptions> {
        self.redis.as_ref().map(|redis| crate::store::RedisOptions {
            url: redis.url.clone(),
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
        let mut problems = Vec::new();
        if let Some(path) = env.get("GATEHOUSE_CONFIG").filter(|p| !p.trim().is_empty()) {
            match read_file(path) {
                Ok(file) => values.extend(file),
                Err(why) => problems.push(format!("GATEHOUSE_CONFIG={path:?}: {why}")),
            }
        }
        values.extend(env);
        let mut src = Source { values, problems };
        let config = Self::parse(&mut src);
        if src.problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError(src.problems))
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
        let redis = src.get("REDIS_URL").map(str::to_owned).map(|url| {
            // TLS (rediss://), Sentinel and Cluster are not built in yet: refuse them at start
            // rather than fail on the first request.
            if !(url.starts_with("redis://") || url.starts_with("unix://")) {
                src.problems.push(
                    "REDIS_URL: expected a redis:// or unix:// URL (TLS, Sentinel and Cluster are not supported yet)".into(),
                );
            }
            RedisConfig {
                url,
                connections: src.parse("GATEHOUSE_REDIS_CONNECTIONS", 4, |raw| {
                    raw.parse::<usize>()
                        .ok()
                        .filter(|n| (1..=64).contains(n))
                        .ok_or_else(|| "expected 1-64".into())
                }),
                timeout: src.duration("GATEHOUSE_REDIS_TIMEOUT", Duration::from_millis(500)),
            }
        });
        let defaults = KeySchema::default();
        let keys = KeySchema {
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
        };
        let owner_ttl = src
            .get("GATEHOUSE_OWNER_TTL")
            .is_some()
            .then(|| src.duration("GATEHOUSE_OWNER_TTL", Duration::ZERO))
            .filter(|ttl| !ttl.is_zero());
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
            let algorithms = src.parse("GATEHOUSE_JWT_ALGORITHMS", Vec::new(), |raw| {
                raw.split(',')
                    .map(str::trim)
                    .filter(|a| !a.is_empty())
                    .map(|a| {
                        a.parse::<Algorithm>().map_err(|_| {
                            format!("unknown algorithm {a:?} (HS256, RS256, ES256, EdDSA, ...)")
                        })
                    })
                    .collect()
            });
            AuthConfig::Jwt {
                secret: src.get("GATEHOUSE_JWT_SECRET").map(str::to_owned),
                public_keys: src.get("GATEHOUSE_JWT_PUBLIC_KEYS").map(str::to_owned),
                settings: JwtSettings {
                    algorithms,
                    issuer: src.get("GATEHOUSE_JWT_ISSUER").map(str::to_owned),
                    audience: src.get("GATEHOUSE_JWT_AUDIENCE").map(str::to_owned),
                },
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
        let initial_mode = src.parse("GATEHOUSE_INITIAL_MODE", Mode::LogOnly, |raw| raw.parse());
        let settings_refresh = src.duration("GATEHOUSE_SETTINGS_REFRESH", Duration::from_secs(5));
        let request_timeout = src.duration("GATEHOUSE_REQUEST_TIMEOUT", Duration::from_secs(10));
        let connections = connection_limits(src, request_timeout);
        let log_format = src.parse("GATEHOUSE_LOG_FORMAT", LogFormat::Text, |raw| {
            match raw.to_ascii_lowercase().as_str() {
                "text" => Ok(LogFormat::Text),
                "json" => Ok(LogFormat::Json),
                _ => Err("expected text or json".into()),
            }
        });
        let log_filter = src.get("GATEHOUSE_LOG").unwrap_or("info").to_owned();
        let instance = src
            .get("GATEHOUSE_INSTANCE")
            .map(str::to_owned)
            .unwrap_or_else(host_name);
        if let Err(e) = crate::session_id::check_name("instance", &instance) {
            src.problems.push(format!("GATEHOUSE_INSTANCE: {e}"));
        }
        let count = |name: &str, default: usize, src: &mut Source| {
            src.parse(name, default, |raw| {
                raw.replace('_', "")
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| "expected a positive whole number".into())
            })
        };
        let audit = AuditSettings {
            maxlen: count("GATEHOUSE_AUDIT_MAXLEN", 1_000_000, src),
            queue: count("GATEHOUSE_AUDIT_QUEUE", 10_000, src),
            spool: match src.get("GATEHOUSE_AUDIT_SPOOL") {
                Some(off) if off.eq_ignore_ascii_case("off") => None,
                Some(path) => Some(path.into()),
                None => Some("gatehouse-audit.spool".into()),
            },
            spool_max_bytes: count("GATEHOUSE_AUDIT_SPOOL_MAX_MB", 1024, src) as u64 * 1024 * 1024,
        };
        let settings_snapshot = match src.get("GATEHOUSE_SETTINGS_SNAPSHOT") {
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
        };
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
        let forward_auth = crate::forward_auth::ForwardAuth {
            routes,
            unmatched,
            cookie: src.get("GATEHOUSE_FORWARD_AUTH_COOKIE").map(str::to_owned),
            style,
            preflight,
        };
        let trusted_proxies = src.parse(
            "GATEHOUSE_TRUSTED_PROXIES",
            crate::http::TrustedProxies::default(),
            crate::http::TrustedProxies::parse,
        );
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
        let cache_on = src.parse("GATEHOUSE_OWNER_CACHE", true, |raw| {
            match raw.to_ascii_lowercase().as_str() {
                "on" | "true" => Ok(true),
                "off" | "false" => Ok(false),
                _ => Err("expected on or off".into()),
            }
        });
        let cache_capacity = count("GATEHOUSE_OWNER_CACHE_CAPACITY", 100_000, src) as u64;
        let cache_ttl = src.duration("GATEHOUSE_OWNER_CACHE_TTL", Duration::from_secs(60));
        let owner_cache = cache_on.then_some(OwnerCacheSettings {
            capacity: cache_capacity,
            ttl: cache_ttl,
        });
        if settings_refresh.is_zero() {
            src.problems
                .push("GATEHOUSE_SETTINGS_REFRESH: must be above zero".into());
        }
        let session_ids = src.parse("GATEHOUSE_SESSION_IDS", Default::default(), |raw| {
            raw.parse()
        });
        let claim = src.parse("GATEHOUSE_CLAIM", Default::default(), |raw| raw.parse());
        Config {
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
            forward_auth,
            trusted_proxies,
            backfill_roots,
            owner_cache,
        }
    }
}

/// `GATEHOUSE_HEADER_READ_TIMEOUT`, `GATEHOUSE_IDLE_TIMEOUT`, `GATEHOUSE_MAX_CONNECTIONS`.
fn connection_limits(src: &mut Source, request_timeout: Duration) -> crate::http::ConnectionLimits {
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
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "gatehouse".to_owned())
}

/// Reads a TOML file of top-level keys into environment-variable names.
fn read_file(path: &str) -> Result<HashMap<String, String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
    table
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
            Ok((name, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_run_embedded_on_loopback() {
        let c = Config::from_vars(vars(&[])).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        assert!(c.redis.is_none());
        assert!(c.owner_ttl.is_none());
        assert_eq!(c.keys, KeySchema::default());
        assert_eq!(c.initial_mode, Mode::LogOnly);
        assert!(matches!(c.auth, AuthConfig::Jwt { secret: None, .. }));
        assert_eq!(
            c.settings_snapshot,
            Some(std::path::PathBuf::from("gatehouse-settings.json"))
        );
        assert_eq!(c.session_ids, crate::session_id::SessionIds::Canonical);
        assert_eq!(c.claim, crate::sessions::ClaimPolicy::Service);
    }

    #[test]
    fn session_ids_and_claim_policies_are_read() {
        let c = Config::from_vars(vars(&[
            ("GATEHOUSE_SESSION_IDS", "exact"),
            ("GATEHOUSE_CLAIM", "self"),
        ]))
        .unwrap();
        assert_eq!(c.session_ids, crate::session_id::SessionIds::Exact);
        assert_eq!(c.claim, crate::sessions::ClaimPolicy::SelfClaim);
        let err = Config::from_vars(vars(&[
            ("GATEHOUSE_SESSION_IDS", "loose"),
            ("GATEHOUSE_CLAIM", "anyone"),
        ]))
        .unwrap_err();
        assert_eq!(err.0.len(), 2, "{err}");
    }

    #[test]
    fn the_settings_snapshot_sits_beside_the_audit_spool_unless_told() {
        let c = Config::from_vars(vars(&[(
            "GATEHOUSE_AUDIT_SPOOL",
            "/var/lib/gh/audit.spool",
        )]))
        .unwrap();
        assert_eq!(
            c.settings_snapshot,
            Some(std::path::PathBuf::from(
                "/var/lib/gh/gatehouse-settings.json"
            ))
        );
        let c = Config::from_vars(vars(&[("GATEHOUSE_SETTINGS_SNAPSHOT", "off")])).unwrap();
        assert_eq!(c.settings_snapshot, None);
        let c = Config::from_vars(vars(&[("GATEHOUSE_SETTINGS_SNAPSHOT", "/x/s.json")])).unwrap();
        assert_eq!(
            c.settings_snapshot,
            Some(std::path::PathBuf::from("/x/s.json"))
        );
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let err = Config::from_vars(vars(&[
            ("GATEHOUSE_LISTEN", "nowhere"),
            ("GATEHOUSE_INITIAL_MODE", "strict"),
            ("GATEHOUSE_OWNER_TTL", "forever"),
            ("GATEHOUSE_JWT_SECRET", "short"),
        ]))
        .unwrap_err();
        assert_eq!(err.0.len(), 4, "{err}");
    }

    #[test]
    fn auth_disabled_is_refused_off_loopback_unless_allowed() {
        let off = [
            ("GATEHOUSE_AUTH", "disabled"),
            ("GATEHOUSE_LISTEN", "0.0.0.0:8080"),
        ];
        assert!(Config::from_vars(vars(&off)).is_err());
        let mut allowed = off.to_vec();
        allowed.push(("GATEHOUSE_AUTH_DISABLED_ALLOW_REMOTE", "true"));
        assert!(matches!(
            Config::from_vars(vars(&allowed)).unwrap().auth,
            AuthConfig::Disabled
        ));
        let local = [("GATEHOUSE_AUTH", "disabled")];
        assert!(Config::from_vars(vars(&local)).is_ok());
    }

    #[test]
    fn connection_limits_have_defaults_and_refuse_zero() {
        let c = Config::from_vars(vars(&[])).unwrap();
        assert_eq!(c.connections.header_read_timeout, Duration::from_secs(5));
        assert_eq!(c.connections.idle_timeout, Duration::from_secs(75));
        assert_eq!(c.connections.max_connections, 4096);
        let c = Config::from_vars(vars(&[
            ("GATEHOUSE_HEADER_READ_TIMEOUT", "2s"),
            ("GATEHOUSE_IDLE_TIMEOUT", "30s"),
            ("GATEHOUSE_MAX_CONNECTIONS", "100"),
        ]))
        .unwrap();
        assert_eq!(c.connections.header_read_timeout, Duration::from_secs(2));
        assert_eq!(c.connections.idle_timeout, Duration::from_secs(30));
        assert_eq!(c.connections.max_connections, 100);
        let err = Config::from_vars(vars(&[
            ("GATEHOUSE_HEADER_READ_TIMEOUT", "0s"),
            ("GATEHOUSE_IDLE_TIMEOUT", "0s"),
            ("GATEHOUSE_MAX_CONNECTIONS", "0"),
        ]))
        .unwrap_err();
        assert_eq!(err.0.len(), 3, "{err}");
    }

    #[test]
    fn the_file_sets_keys_and_the_environment_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gatehouse.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9000\"\nredis_url = \"redis://127.0.0.1:1\"\nowner_ttl = \"24h\"\nkey_prefix = \"gh:\"\n").unwrap();
        let c = Config::from_vars(vars(&[
            ("GATEHOUSE_CONFIG", path.to_str().unwrap()),
            ("GATEHOUSE_KEY_PREFIX", "env:"),
        ]))
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.redis.unwrap().url, "redis://127.0.0.1:1");
        assert_eq!(c.owner_ttl, Some(Duration::from_secs(86_400)));
        assert_eq!(c.keys.prefix, "env:");
    }
}
