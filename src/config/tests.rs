//! The configuration's parsing, defaults and all-at-once problem reports.

use super::*;

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The problems of a configuration (none when it is valid).
fn problems(pairs: &[(&str, &str)]) -> Vec<String> {
    match Config::from_vars(vars(pairs)) {
        Ok(_) => Vec::new(),
        Err(e) => e.0,
    }
}

/// A `GATEHOUSE_CONFIG` file holding `text`: its directory (kept for the test's length) and
/// its path.
fn config_file(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gatehouse.toml");
    std::fs::write(&path, text).unwrap();
    let path = path.to_string_lossy().into_owned();
    (dir, path)
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
fn redis_tls_settings_need_rediss_and_their_files() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate").unwrap();
    let ca = ca.to_str().unwrap();
    let without_redis = problems(&[("GATEHOUSE_REDIS_CA_FILE", ca)]);
    assert_eq!(without_redis.len(), 1, "{without_redis:?}");
    assert!(
        without_redis[0].contains("set REDIS_URL"),
        "{without_redis:?}"
    );
    let plain = problems(&[
        ("REDIS_URL", "redis://127.0.0.1:6379"),
        ("GATEHOUSE_REDIS_TLS_SKIP_HOSTNAME_CHECK", "true"),
    ]);
    assert!(
        plain.iter().any(|p| p.contains("need a rediss:// URL")),
        "{plain:?}"
    );
    // Against the system's roots, any public certificate for any name would do.
    assert!(
        plain
            .iter()
            .any(|p| p.contains("needs GATEHOUSE_REDIS_CA_FILE")),
        "{plain:?}"
    );
    let unparsable = problems(&[
        ("REDIS_URL", "rediss://localhost:6380"),
        ("GATEHOUSE_REDIS_CA_FILE", ca),
    ]);
    assert_eq!(
        unparsable,
        ["GATEHOUSE_REDIS_CA_FILE: no PEM certificate in the file"]
    );
    let half = problems(&[
        ("REDIS_URL", "rediss://localhost:6380"),
        ("GATEHOUSE_REDIS_CERT_FILE", ca),
        ("GATEHOUSE_REDIS_CA_FILE", "/nonexistent/ca.pem"),
    ]);
    assert_eq!(half.len(), 3, "{half:?}");
    assert!(half.iter().any(|p| p.contains("go together")), "{half:?}");
    assert!(
        half.iter()
            .any(|p| p.starts_with("GATEHOUSE_REDIS_CA_FILE=")),
        "{half:?}"
    );
    let insecure = problems(&[("REDIS_URL", "rediss://localhost:6380/#insecure")]);
    assert!(insecure[0].contains("refused"), "{insecure:?}");
    assert!(problems(&[("REDIS_URL", "rediss://localhost:6380")]).is_empty());
}

#[test]
fn sentinel_settings_go_together_and_need_redis_url() {
    let ok = [
        ("REDIS_URL", "redis://:secret@mymaster/2"),
        ("GATEHOUSE_REDIS_SENTINELS", "10.0.0.1:26379, [::1]:26380"),
        ("GATEHOUSE_REDIS_SENTINEL_MASTER", "mymaster"),
    ];
    assert!(problems(&ok).is_empty());
    let c = Config::from_vars(vars(&ok)).unwrap();
    let sentinel = c.redis_options().unwrap().sentinel.unwrap();
    assert_eq!(
        sentinel.sentinels,
        [("10.0.0.1".to_owned(), 26379), ("::1".to_owned(), 26380)]
    );
    let alone = problems(&[("GATEHOUSE_REDIS_SENTINEL_MASTER", "mymaster")]);
    assert!(alone[0].contains("set REDIS_URL"), "{alone:?}");
    let half = problems(&[ok[0], ok[2]]);
    assert_eq!(half.len(), 1, "{half:?}");
    assert!(half[0].contains("go together"), "{half:?}");
    let twice = problems(&[ok[0], ("GATEHOUSE_REDIS_SENTINELS", "a:1,b:1,a:1"), ok[2]]);
    assert!(twice[0].contains("a:1 is listed twice"), "{twice:?}");
    let bad = problems(&[ok[0], ("GATEHOUSE_REDIS_SENTINELS", "nohost"), ok[2]]);
    assert!(bad[0].contains("write host:port"), "{bad:?}");
    let replicas = problems(&[ok[0], ("GATEHOUSE_REDIS_MIN_REPLICAS", "0")]);
    assert!(replicas[0].contains("expected 1-16"), "{replicas:?}");
}

#[test]
fn key_and_route_files_are_read_while_parsing_and_join_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_key = dir.path().join("key.pem");
    std::fs::write(&not_a_key, "not a key").unwrap();
    let missing = dir.path().join("routes.toml");
    let err = Config::from_vars(vars(&[
        ("GATEHOUSE_JWT_PUBLIC_KEYS", not_a_key.to_str().unwrap()),
        ("GATEHOUSE_ROUTES", missing.to_str().unwrap()),
        ("GATEHOUSE_OWNER_TTL", "forever"),
    ]))
    .unwrap_err();
    assert_eq!(err.0.len(), 3, "{err}");
    assert!(
        err.0
            .iter()
            .any(|p| p.starts_with("GATEHOUSE_JWT_PUBLIC_KEYS: ")),
        "{err}"
    );
    assert!(
        err.0.iter().any(|p| p.starts_with("GATEHOUSE_ROUTES=")),
        "{err}"
    );

    // A key no pinned algorithm fits is a problem of the same report.
    let rsa = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/rsa.pub.pem");
    let err = Config::from_vars(vars(&[
        ("GATEHOUSE_JWT_PUBLIC_KEYS", rsa),
        ("GATEHOUSE_JWT_ALGORITHMS", "ES256"),
    ]))
    .unwrap_err();
    assert!(
        err.0[0].contains("matches none of the configured algorithms"),
        "{err}"
    );
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
    let (_dir, path) = config_file(
        "listen = \"127.0.0.1:9000\"\nredis_url = \"redis://127.0.0.1:1\"\nowner_ttl = \"24h\"\nkey_prefix = \"gh:\"\n",
    );
    let c = Config::from_vars(vars(&[
        ("GATEHOUSE_CONFIG", &path),
        ("GATEHOUSE_KEY_PREFIX", "env:"),
    ]))
    .unwrap();
    assert_eq!(c.listen.port(), 9000);
    assert_eq!(c.redis.unwrap().url, "redis://127.0.0.1:1");
    assert_eq!(c.owner_ttl, Some(Duration::from_secs(86_400)));
    assert_eq!(c.keys.prefix, "env:");
}

#[test]
fn metrics_listen_is_an_address_other_than_the_api_one() {
    let c = Config::from_vars(vars(&[("GATEHOUSE_METRICS_LISTEN", "127.0.0.1:9090")])).unwrap();
    assert_eq!(c.metrics_listen, Some("127.0.0.1:9090".parse().unwrap()));
    assert_eq!(Config::from_vars(vars(&[])).unwrap().metrics_listen, None);
    let same = problems(&[
        ("GATEHOUSE_LISTEN", "127.0.0.1:8080"),
        ("GATEHOUSE_METRICS_LISTEN", "127.0.0.1:8080"),
    ]);
    assert!(same[0].contains("must differ"), "{same:?}");
    let bad = problems(&[("GATEHOUSE_METRICS_LISTEN", "nine")]);
    assert!(bad[0].starts_with("GATEHOUSE_METRICS_LISTEN"), "{bad:?}");
}

#[test]
fn grpc_listen_is_off_unless_set_and_has_an_address_of_its_own() {
    assert_eq!(Config::from_vars(vars(&[])).unwrap().grpc_listen, None);
    let c = Config::from_vars(vars(&[("GATEHOUSE_GRPC_LISTEN", "127.0.0.1:9191")])).unwrap();
    assert_eq!(c.grpc_listen, Some("127.0.0.1:9191".parse().unwrap()));
    for clash in [
        vec![("GATEHOUSE_GRPC_LISTEN", "127.0.0.1:8080")],
        vec![
            ("GATEHOUSE_METRICS_LISTEN", "127.0.0.1:9090"),
            ("GATEHOUSE_GRPC_LISTEN", "127.0.0.1:9090"),
        ],
    ] {
        let same = problems(&clash);
        assert!(same[0].contains("must differ"), "{same:?}");
    }
    let bad = problems(&[("GATEHOUSE_GRPC_LISTEN", "grpc://x")]);
    assert!(bad[0].starts_with("GATEHOUSE_GRPC_LISTEN"), "{bad:?}");
    // Every caller an admin: refused on a non-loopback gRPC address too, unless allowed.
    let open = [
        ("GATEHOUSE_AUTH", "disabled"),
        ("GATEHOUSE_GRPC_LISTEN", "0.0.0.0:9191"),
    ];
    let refused = problems(&open);
    assert!(refused[0].contains("refusing to serve gRPC"), "{refused:?}");
    let allowed = [
        open[0],
        open[1],
        ("GATEHOUSE_AUTH_DISABLED_ALLOW_REMOTE", "true"),
    ];
    assert!(problems(&allowed).is_empty());
    assert!(problems(&[open[0], ("GATEHOUSE_GRPC_LISTEN", "127.0.0.1:9191")]).is_empty());
}

/// Every variable of the README's configuration table, `(name, README line)`.
fn documented() -> Vec<String> {
    include_str!("../../README.md")
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .filter(|name| name.starts_with("GATEHOUSE_") || *name == "REDIS_URL")
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_documented_setting_is_known_in_every_set_up() {
    let names = documented();
    assert!(names.len() > 40, "{names:?}");
    let set_ups: [&[(&str, &str)]; 4] = [
        &[],
        // Nothing reads a token then; the token settings are still known (and warned about).
        &[("GATEHOUSE_AUTH", "disabled")],
        &[("REDIS_URL", "redis://127.0.0.1:6379")],
        &[
            ("REDIS_URL", "redis://cluster"),
            ("GATEHOUSE_REDIS_CLUSTER", "127.0.0.1:7000"),
        ],
    ];
    for set_up in set_ups {
        for name in &names {
            let mut pairs = set_up.to_vec();
            pairs.push((name.as_str(), "x"));
            let unknown = format!("{name}: unknown setting");
            assert!(
                !problems(&pairs).iter().any(|p| p.starts_with(&unknown)),
                "{name} with {set_up:?}: {:?}",
                problems(&pairs)
            );
        }
    }
}

#[test]
fn unknown_settings_are_refused_with_the_closest_name() {
    let typo = problems(&[("GATEHOUSE_REQUEST_TIMEOTU", "5s")]);
    assert_eq!(
        typo,
        ["GATEHOUSE_REQUEST_TIMEOTU: unknown setting (did you mean GATEHOUSE_REQUEST_TIMEOUT?)"]
    );
    let far = problems(&[("GATEHOUSE_ZZZ", "1")]);
    assert_eq!(far, ["GATEHOUSE_ZZZ: unknown setting"]);
    // The admin CLI's own variables are not settings of the service, and not refused.
    assert!(problems(&[("GATEHOUSE_URL", "http://x"), ("GATEHOUSE_TOKEN", "t")]).is_empty());
}

#[test]
fn file_errors_name_the_toml_key() {
    let (_dir, path) = config_file("request_timeout = \"5 parsecs\"\nredis_timout = \"1s\"\n");
    let found = problems(&[("GATEHOUSE_CONFIG", &path)]);
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("GATEHOUSE_CONFIG: request_timeout=\"5 parsecs\"")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("GATEHOUSE_CONFIG: unknown key redis_timout")),
        "{found:?}"
    );
    // The same setting as a variable is named as one.
    let env = problems(&[("GATEHOUSE_REQUEST_TIMEOUT", "5 parsecs")]);
    assert!(env[0].starts_with("GATEHOUSE_REQUEST_TIMEOUT="), "{env:?}");
}

/// The warnings of a valid configuration.
fn warnings(pairs: &[(&str, &str)]) -> Vec<String> {
    Config::from_vars(vars(pairs)).unwrap().warnings
}

#[test]
fn contradictory_settings_warn_and_consistent_ones_do_not() {
    let secret = ("GATEHOUSE_JWT_SECRET", "0123456789abcdef0123456789abcdef");
    let disabled = ("GATEHOUSE_AUTH", "disabled");
    // Refused, not warned about: a left-over GATEHOUSE_AUTH=disabled beside real token
    // settings would let every caller in as the admin.
    assert_eq!(
        problems(&[disabled, secret]),
        [
            "GATEHOUSE_JWT_SECRET: not with GATEHOUSE_AUTH=disabled, which reads no token and \
             makes every caller the virtual admin (remove one of the two)"
        ]
    );
    for name in [
        "GATEHOUSE_JWT_ISSUER",
        "GATEHOUSE_JWT_AUDIENCE",
        "GATEHOUSE_FORWARD_AUTH_COOKIE",
    ] {
        let found = problems(&[disabled, (name, "x")]);
        assert!(
            found[0].starts_with(&format!("{name}: not with")),
            "{found:?}"
        );
    }
    assert!(warnings(&[secret]).is_empty());
    assert!(warnings(&[disabled]).is_empty());
    let allow_remote = ("GATEHOUSE_AUTH_DISABLED_ALLOW_REMOTE", "true");
    assert_eq!(
        warnings(&[allow_remote]).len(),
        1,
        "{:?}",
        warnings(&[allow_remote])
    );
    assert!(warnings(&[disabled, allow_remote]).is_empty());

    let redis = ("REDIS_URL", "redis://127.0.0.1:6379");
    let ttl = ("GATEHOUSE_OWNER_CACHE_TTL", "5s");
    assert!(warnings(&[redis, ttl]).is_empty());
    assert_eq!(
        warnings(&[redis, ttl, ("GATEHOUSE_OWNER_CACHE", "off")]),
        ["GATEHOUSE_OWNER_CACHE_TTL: ignored, GATEHOUSE_OWNER_CACHE=off"]
    );
    let cluster = [
        ("REDIS_URL", "redis://cluster"),
        ("GATEHOUSE_REDIS_CLUSTER", "127.0.0.1:7000"),
        ("GATEHOUSE_OWNER_CACHE_CAPACITY", "10"),
    ];
    assert_eq!(
        warnings(&cluster),
        [
            "GATEHOUSE_OWNER_CACHE_CAPACITY: ignored, the owner cache is off with \
          GATEHOUSE_REDIS_CLUSTER"
        ]
    );
    assert_eq!(
        warnings(&[("GATEHOUSE_SETTINGS_SNAPSHOT", "/x/s.json")]).len(),
        1
    );
    // The owner cache is the Redis store's: refused without REDIS_URL, like the other
    // Redis settings.
    assert!(problems(&[ttl])[0].starts_with("GATEHOUSE_OWNER_CACHE_TTL: set REDIS_URL too"));
}

#[test]
fn warnings_and_problems_of_the_file_name_its_toml_key() {
    let (_dir, path) =
        config_file("auth_disabled_allow_remote = true\nsettings_snapshot = \"/x/s.json\"\n");
    let found = warnings(&[("GATEHOUSE_CONFIG", &path)]);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found
            .iter()
            .any(|w| w.starts_with("GATEHOUSE_CONFIG: auth_disabled_allow_remote: ignored")),
        "{found:?}"
    );
    std::fs::write(&path, "auth = \"disabled\"\njwt_audience = \"chat\"\n").unwrap();
    let found = problems(&[("GATEHOUSE_CONFIG", &path)]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("GATEHOUSE_CONFIG: jwt_audience: not with GATEHOUSE_AUTH=disabled"),
        "{found:?}"
    );
}

/// The providers and fetch settings of a valid configuration.
fn providers(
    pairs: &[(&str, &str)],
) -> (
    Vec<crate::auth::IdentityProvider>,
    crate::auth::JwksSettings,
    JwtSettings,
) {
    match Config::from_vars(vars(pairs)).unwrap().auth {
        AuthConfig::Jwt {
            providers,
            jwks,
            settings,
            ..
        } => (providers, *jwks, settings),
        AuthConfig::Disabled => unreachable!("jwt"),
    }
}

#[test]
fn the_environment_describes_one_identity_provider_when_asked_to() {
    use crate::auth::KeysAt;
    let issuer = ("GATEHOUSE_JWT_ISSUER", "https://kc.example.com/realms/chat");
    let audience = ("GATEHOUSE_JWT_AUDIENCE", "gatehouse");
    let (found, jwks, settings) = providers(&[
        issuer,
        audience,
        ("GATEHOUSE_JWT_DISCOVERY", "on"),
        ("GATEHOUSE_JWT_ROLES_CLAIM", "/realm_access/roles"),
    ]);
    assert_eq!(found.len(), 1);
    let p = &found[0];
    assert_eq!(p.issuer, issuer.1);
    assert_eq!(p.keys_at, KeysAt::Discovery);
    assert_eq!(p.audience, "gatehouse");
    assert_eq!(
        p.algorithms,
        [jsonwebtoken::Algorithm::RS256],
        "RS256 unless told"
    );
    assert_eq!(
        p.claims.roles.as_ref().map(|r| r.as_str()),
        Some("/realm_access/roles")
    );
    assert_eq!(jwks, crate::auth::JwksSettings::default());
    // The environment's issuer settings were the provider's: no configured keys use them.
    assert!(settings.issuer.is_none() && settings.audience.is_none());

    let (found, _, _) = providers(&[
        issuer,
        audience,
        (
            "GATEHOUSE_JWT_JWKS_URL",
            "https://kc.example.com/realms/chat/protocol/openid-connect/certs",
        ),
        ("GATEHOUSE_JWT_ALGORITHMS", "RS256,PS256,ES256"),
    ]);
    assert!(matches!(&found[0].keys_at, KeysAt::JwksUrl(u) if u.ends_with("/certs")));
    assert_eq!(found[0].algorithms.len(), 3);

    // An issuer given as a URL is only the iss pin of the configured keys: no discovery.
    let (found, _, settings) = providers(&[
        issuer,
        ("GATEHOUSE_JWT_SECRET", "0123456789abcdef0123456789abcdef"),
    ]);
    assert!(found.is_empty());
    assert_eq!(settings.issuer.as_deref(), Some(issuer.1));
}

#[test]
fn identity_provider_settings_are_strict_and_reported_together() {
    let found = problems(&[
        ("GATEHOUSE_JWT_DISCOVERY", "on"),
        ("GATEHOUSE_JWT_JWKS_URL", "http://kc.example.com/certs"),
        ("GATEHOUSE_JWT_ALGORITHMS", "RS256,HS256"),
        ("GATEHOUSE_JWT_SECRET", "0123456789abcdef0123456789abcdef"),
    ]);
    for expected in [
        "GATEHOUSE_JWT_DISCOVERY: not with GATEHOUSE_JWT_SECRET",
        "GATEHOUSE_JWT_JWKS_URL and GATEHOUSE_JWT_DISCOVERY: choose one",
        "GATEHOUSE_JWT_ISSUER is required",
        "GATEHOUSE_JWT_AUDIENCE is required",
        "HS256 is not for an identity provider's keys",
    ] {
        assert!(
            found.iter().any(|p| p.contains(expected)),
            "{expected}: {found:?}"
        );
    }
    assert_eq!(found.len(), 5, "{found:?}");
    let plain = problems(&[
        ("GATEHOUSE_JWT_JWKS_URL", "http://kc.example.com/certs"),
        ("GATEHOUSE_JWT_ISSUER", "kc"),
        ("GATEHOUSE_JWT_AUDIENCE", "gatehouse"),
    ]);
    assert_eq!(plain.len(), 1, "{plain:?}");
    assert!(plain[0].contains("must be an https:// URL"), "{plain:?}");
    let not_a_url = problems(&[
        ("GATEHOUSE_JWT_DISCOVERY", "on"),
        ("GATEHOUSE_JWT_ISSUER", "kc"),
        ("GATEHOUSE_JWT_AUDIENCE", "gatehouse"),
    ]);
    assert!(
        not_a_url[0].contains("discovery needs an https:// issuer URL"),
        "{not_a_url:?}"
    );
    let bounds = problems(&[
        ("GATEHOUSE_JWT_JWKS_REFRESH", "10s"),
        ("GATEHOUSE_JWT_JWKS_REFETCH_INTERVAL", "0s"),
    ]);
    assert_eq!(bounds.len(), 2, "{bounds:?}");
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("ca.pem");
    std::fs::write(&empty, "no certificate here").unwrap();
    let ca = problems(&[("GATEHOUSE_JWT_CA_FILE", empty.to_str().unwrap())]);
    assert_eq!(
        ca,
        ["GATEHOUSE_JWT_CA_FILE: no PEM certificate in the file"]
    );
}

#[test]
fn the_file_lists_identity_providers_with_their_own_settings() {
    use crate::auth::KeysAt;
    let (_dir, file) = config_file(
        r#"
jwt_issuer = "gatehouse-cli"

[[jwt_issuers]]
issuer = "https://kc.example.com/realms/chat"
user_prefix = "kc:"
discovery = true
audience = "gatehouse"
roles_claim = "/resource_access/gatehouse/roles"

[[jwt_issuers]]
issuer = "https://tenant.eu.auth0.com/"
user_prefix = "auth0:"
jwks_url = "https://tenant.eu.auth0.com/.well-known/jwks.json"
audience = "https://gatehouse.example.com"
algorithms = ["RS256", "PS256"]
roles_claim = "https://gatehouse.example.com/roles"
scope_claim = "permissions"
"#,
    );
    let secret = ("GATEHOUSE_JWT_SECRET", "0123456789abcdef0123456789abcdef");
    let (found, _, settings) = providers(&[("GATEHOUSE_CONFIG", &file), secret]);
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].keys_at, KeysAt::Discovery);
    assert_eq!(found[0].origin, "GATEHOUSE_CONFIG: jwt_issuers[1]");
    assert_eq!(found[1].algorithms.len(), 2);
    assert_eq!(
        found[1].claims.scopes.as_ref().map(|s| s.as_str()),
        Some("permissions")
    );
    assert_eq!(settings.issuer.as_deref(), Some("gatehouse-cli"));
    assert_eq!(found[0].claims.user_prefix.as_deref(), Some("kc:"));
    // Several issuers: each needs a prefix of its own.
    let unprefixed = std::fs::read_to_string(&file)
        .unwrap()
        .replace("user_prefix = \"auth0:\"\n", "");
    std::fs::write(&file, &unprefixed).unwrap();
    let found = problems(&[("GATEHOUSE_CONFIG", &file), secret]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("GATEHOUSE_CONFIG: jwt_issuers[2]: user_prefix: required"),
        "{found:?}"
    );
    std::fs::write(
        &file,
        unprefixed.replace(
            "issuer = \"https://tenant.eu.auth0.com/\"\n",
            "issuer = \"https://tenant.eu.auth0.com/\"\nuser_prefix = \"kc:\"\n",
        ),
    )
    .unwrap();
    let found = problems(&[("GATEHOUSE_CONFIG", &file), secret]);
    assert!(found[0].contains("is another issuer's too"), "{found:?}");
    std::fs::write(
        &file,
        unprefixed.replace("user_prefix = \"kc:\"", "user_prefix = \"kc\""),
    )
    .unwrap();
    let found = problems(&[("GATEHOUSE_CONFIG", &file), secret]);
    assert!(
        found
            .iter()
            .any(|p| p.contains("user_prefix: \"kc\": 1-64 letters")),
        "{found:?}"
    );

    std::fs::write(
        &file,
        r#"
jwt_issuer = "https://kc.example.com/realms/chat"

[[jwt_issuers]]
issuer = "https://kc.example.com/realms/chat"
discovery = "yes"
audiance = "gatehouse"

[[jwt_issuers]]
issuer = "https://kc.example.com/realms/chat"
jwks_url = "https://kc.example.com/certs"
audience = "gatehouse"
algorithms = 256
"#,
    )
    .unwrap();
    let found = problems(&[("GATEHOUSE_CONFIG", &file), secret]);
    for expected in [
        "GATEHOUSE_CONFIG: jwt_issuers[1]: unknown key audiance (did you mean audience?)",
        "GATEHOUSE_CONFIG: jwt_issuers[1]: discovery: expected true or false",
        "GATEHOUSE_CONFIG: jwt_issuers[1]: audience is required",
        "GATEHOUSE_CONFIG: jwt_issuers[2]: algorithms: expected a non-empty string",
    ] {
        assert!(
            found.iter().any(|p| p.starts_with(expected)),
            "{expected}: {found:?}"
        );
    }
    // Fixed those, the issuer is still configured twice, and is the secret's too.
    std::fs::write(
        &file,
        r#"
jwt_issuer = "https://kc.example.com/realms/chat"

[[jwt_issuers]]
issuer = "https://kc.example.com/realms/chat"
user_prefix = "a:"
discovery = true
audience = "gatehouse"

[[jwt_issuers]]
issuer = "https://kc.example.com/realms/chat"
user_prefix = "b:"
jwks_url = "https://kc.example.com/certs"
audience = "gatehouse"
"#,
    )
    .unwrap();
    let found = problems(&[("GATEHOUSE_CONFIG", &file), secret]);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found.iter().any(|p| p.contains("configured twice")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("GATEHOUSE_CONFIG: jwt_issuer=")
                && p.contains("an issuer has one set of keys")),
        "{found:?}"
    );
}

#[test]
fn identity_provider_settings_without_one_warn() {
    assert_eq!(
        warnings(&[("GATEHOUSE_JWT_JWKS_TIMEOUT", "2s")]),
        ["GATEHOUSE_JWT_JWKS_TIMEOUT: ignored, no identity provider is configured"]
    );
    let disabled = problems(&[
        ("GATEHOUSE_AUTH", "disabled"),
        ("GATEHOUSE_JWT_JWKS_URL", "https://kc.example.com/certs"),
    ]);
    assert_eq!(disabled.len(), 1, "{disabled:?}");
    assert!(disabled[0].starts_with("GATEHOUSE_JWT_JWKS_URL: not with GATEHOUSE_AUTH=disabled"));
}

/// Every name in the first column of the README's configuration table (a row may name two).
fn documented_all() -> std::collections::HashSet<String> {
    include_str!("../../README.md")
        .lines()
        .filter(|line| line.starts_with("| `"))
        .filter_map(|line| line.split('|').nth(1))
        .flat_map(|cell| cell.split('`').skip(1).step_by(2))
        .filter(|name| name.starts_with("GATEHOUSE_") || *name == "REDIS_URL")
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_setting_is_in_the_readme_table() {
    let documented = documented_all();
    let set_ups: [&[(&str, &str)]; 5] = [
        &[],
        &[("GATEHOUSE_AUTH", "disabled")],
        &[("REDIS_URL", "redis://127.0.0.1:6379")],
        &[
            ("REDIS_URL", "redis://cluster"),
            ("GATEHOUSE_REDIS_CLUSTER", "127.0.0.1:7000"),
        ],
        &[
            ("GATEHOUSE_JWT_DISCOVERY", "on"),
            ("GATEHOUSE_JWT_ISSUER", "https://kc.example.com/realms/chat"),
            ("GATEHOUSE_JWT_AUDIENCE", "gatehouse"),
        ],
    ];
    for set_up in set_ups {
        let mut src = Source {
            values: vars(set_up).into_iter().collect(),
            file_keys: HashMap::new(),
            asked: Default::default(),
            problems: Vec::new(),
            warnings: Vec::new(),
            issuers: Vec::new(),
        };
        let _ = Config::parse(&mut src);
        let asked = src.asked.borrow();
        let mut missing: Vec<&String> = asked.iter().filter(|n| !documented.contains(*n)).collect();
        missing.sort();
        assert!(
            missing.is_empty(),
            "not in the README's table ({set_up:?}): {missing:?}"
        );
    }
}

#[test]
fn owner_cache_values_are_checked_on_a_cluster_too() {
    let cluster = [
        ("REDIS_URL", "redis://cluster"),
        ("GATEHOUSE_REDIS_CLUSTER", "127.0.0.1:7000"),
    ];
    for bad in [
        ("GATEHOUSE_OWNER_CACHE", "banana"),
        ("GATEHOUSE_OWNER_CACHE_TTL", "5 parsecs"),
        ("GATEHOUSE_OWNER_CACHE_CAPACITY", "many"),
    ] {
        let mut pairs = cluster.to_vec();
        pairs.push(bad);
        let found = problems(&pairs);
        assert!(found[0].starts_with(bad.0), "{bad:?}: {found:?}");
    }
    let mut off = cluster.to_vec();
    off.push(("GATEHOUSE_OWNER_CACHE", "off"));
    assert!(problems(&off).is_empty());
}

#[test]
fn stats_settings_are_bounded_and_named_endpoints_checked() {
    let config = Config::from_vars(vars(&[
        ("GATEHOUSE_STATS_ENDPOINTS", "chat.read, chat.write,"),
        ("GATEHOUSE_STATS_FLUSH", "250ms"),
    ]))
    .unwrap();
    assert_eq!(config.stats.endpoints, ["chat.read", "chat.write"]);
    assert_eq!(config.stats.flush, Duration::from_millis(250));
    for (name, value, says) in [
        ("GATEHOUSE_STATS_FLUSH", "0s", "10ms to 60s"),
        ("GATEHOUSE_STATS_FLUSH", "2m", "10ms to 60s"),
        ("GATEHOUSE_STATS_MINUTE_RETENTION", "10m", "at least 1h"),
        ("GATEHOUSE_STATS_MINUTE_RETENTION", "400d", "at most 366d"),
        ("GATEHOUSE_STATS_HOUR_RETENTION", "1h", "at least 1d"),
        ("GATEHOUSE_STATS_HOUR_RETENTION", "4000d", "at most 3660d"),
        (
            "GATEHOUSE_STATS_ENDPOINTS",
            "ok,\u{200b}hidden",
            "endpoint must be",
        ),
    ] {
        let found = problems(&[(name, value)]);
        assert!(
            found
                .iter()
                .any(|p| p.starts_with(name) && p.contains(says)),
            "{name}={value}: {found:?}"
        );
    }
    // A brace in the prefix would move gatehouse's tagged keys between Cluster slots.
    let cluster = [
        ("REDIS_URL", "redis://cluster"),
        ("GATEHOUSE_REDIS_CLUSTER", "127.0.0.1:7000"),
    ];
    for prefix in ["a{}:", "app:{x}:"] {
        let mut pairs = cluster.to_vec();
        pairs.push(("GATEHOUSE_KEY_PREFIX", prefix));
        let found = problems(&pairs);
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("GATEHOUSE_KEY_PREFIX: no braces")),
            "{prefix}: {found:?}"
        );
    }
    let mut plain = cluster.to_vec();
    plain.push(("GATEHOUSE_KEY_PREFIX", "app:"));
    assert!(problems(&plain).is_empty(), "{:?}", problems(&plain));
}
