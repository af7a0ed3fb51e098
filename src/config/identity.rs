//! The identity providers' settings: the environment's one (`GATEHOUSE_JWT_JWKS_URL` or
//! `GATEHOUSE_JWT_DISCOVERY=on`, with `GATEHOUSE_JWT_ISSUER`, `_AUDIENCE`, `_ALGORITHMS`,
//! `_ROLES_CLAIM`, `_SCOPE_CLAIM`), the `[[jwt_issuers]]` tables of the `GATEHOUSE_CONFIG`
//! file, and how their keys are fetched (`GATEHOUSE_JWT_JWKS_*`, `GATEHOUSE_JWT_CA_FILE`,
//! `GATEHOUSE_JWT_WAIT_FOR_KEYS`).
//!
//! The rules, strict where a guess would be a way in:
//! - discovery only when asked for (`GATEHOUSE_JWT_DISCOVERY=on`, `discovery = true`), never
//!   because keys are missing; a provider has exactly one of a JWKS URL and discovery;
//! - every URL `https://` (discovery: the issuer itself);
//! - an issuer and an audience for every provider (tokens are routed by `iss`; a provider
//!   issues tokens for many applications);
//! - its algorithms pinned, RS256 when none are given, never HS* (a published public key must
//!   never be usable as an HMAC secret);
//! - the environment's `GATEHOUSE_JWT_ISSUER`, `_AUDIENCE` and `_ALGORITHMS` describe one
//!   issuer: with `GATEHOUSE_JWT_JWKS_URL` or discovery, the provider, so no secret or key
//!   file beside them (configured keys then go in the environment and providers in the file);
//! - two issuers never share an `iss` (a token would have two sets of keys).

use jsonwebtoken::{Algorithm, AlgorithmFamily};

use super::Source;
use super::sections::has_certificate;
use crate::auth::{ClaimMapping, ClaimPath, IdentityProvider, JwksSettings, KeysAt};

/// The settings that describe the environment's provider (and, with them, [`FETCH_VARS`]).
pub(super) const PROVIDER_VARS: [&str; 5] = [
    "GATEHOUSE_JWT_JWKS_URL",
    "GATEHOUSE_JWT_USER_PREFIX",
    "GATEHOUSE_JWT_DISCOVERY",
    "GATEHOUSE_JWT_ROLES_CLAIM",
    "GATEHOUSE_JWT_SCOPE_CLAIM",
];

/// The settings that apply to identity providers only (warned about without one).
pub(super) const FETCH_VARS: [&str; 7] = [
    "GATEHOUSE_JWT_CA_FILE",
    "GATEHOUSE_JWT_JWKS_REFRESH",
    "GATEHOUSE_JWT_JWKS_REFRESH_MIN",
    "GATEHOUSE_JWT_JWKS_REFRESH_MAX",
    "GATEHOUSE_JWT_JWKS_REFETCH_INTERVAL",
    "GATEHOUSE_JWT_JWKS_TIMEOUT",
    "GATEHOUSE_JWT_WAIT_FOR_KEYS",
];

/// The keys of a `[[jwt_issuers]]` table.
const ENTRY_KEYS: [&str; 9] = [
    "issuer",
    "user_prefix",
    "jwks_url",
    "discovery",
    "audience",
    "algorithms",
    "roles_claim",
    "scope_claim",
    "ca_file",
];

/// The JWT settings read from the environment (or the file's top-level keys), before the
/// providers are made of them.
pub(super) struct EnvJwt {
    pub algorithms: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub claims: ClaimMapping,
    /// A secret or key files are configured.
    pub has_keys: bool,
}

/// Whether `raw` is an `https://` URL with a host.
fn is_https(raw: &str) -> bool {
    raw.parse::<hyper::Uri>().is_ok_and(|uri| {
        uri.scheme_str() == Some("https") && uri.authority().is_some_and(|a| !a.host().is_empty())
    })
}

/// Algorithms as written (`RS256,ES256`), the names it does not know as problems.
pub(super) fn algorithms(raw: &str) -> Result<Vec<Algorithm>, String> {
    raw.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| {
            a.parse::<Algorithm>()
                .map_err(|_| format!("unknown algorithm {a:?} (HS256, RS256, ES256, EdDSA, ...)"))
        })
        .collect()
}

/// A provider's algorithms: RS256 when none are given; HS* refused.
fn provider_algorithms(raw: Option<&str>) -> Result<Vec<Algorithm>, String> {
    let list = match raw {
        None => return Ok(vec![Algorithm::RS256]),
        Some(raw) => algorithms(raw)?,
    };
    if let Some(hmac) = list.iter().find(|a| a.family() == AlgorithmFamily::Hmac) {
        return Err(format!(
            "{hmac:?} is not for an identity provider's keys (a published public key must \
             never be usable as an HMAC secret); use RS256, PS256, ES256, EdDSA, ..."
        ));
    }
    if list.is_empty() {
        return Err("name at least one algorithm".into());
    }
    Ok(list)
}

/// What a provider is made of, wherever it was written.
struct Parts<'a> {
    origin: String,
    issuer: Option<&'a str>,
    jwks_url: Option<&'a str>,
    discovery: bool,
    audience: Option<&'a str>,
    algorithms: Option<&'a str>,
    claims: ClaimMapping,
    ca: Option<Vec<u8>>,
    /// How each part is named in messages.
    names: [&'a str; 4],
}

/// A provider, or its problems (prefixed with its origin).
fn provider(parts: Parts<'_>) -> Result<IdentityProvider, Vec<String>> {
    let [issuer_name, jwks_name, discovery_name, audience_name] = parts.names;
    let origin = &parts.origin;
    let mut problems = Vec::new();
    let keys_at = match (parts.jwks_url, parts.discovery) {
        (Some(_), true) => {
            problems.push(format!(
                "{origin}: {jwks_name} and {discovery_name}: choose one"
            ));
            None
        }
        (Some(url), false) if !is_https(url) => {
            problems.push(format!(
                "{origin}: {jwks_name}={url:?}: must be an https:// URL"
            ));
            None
        }
        (Some(url), false) => Some(KeysAt::JwksUrl(url.to_owned())),
        (None, true) => Some(KeysAt::Discovery),
        (None, false) => None,
    };
    let issuer = match parts.issuer {
        None => {
            problems.push(format!(
                "{origin}: {issuer_name} is required (the iss of its tokens, exactly: tokens \
                 are routed to their keys by it)"
            ));
            None
        }
        Some(issuer) if parts.discovery && !is_https(issuer) => {
            problems.push(format!(
                "{origin}: {issuer_name}={issuer:?}: discovery needs an https:// issuer URL"
            ));
            None
        }
        Some(issuer) => Some(issuer.to_owned()),
    };
    let audience = parts.audience.map(str::to_owned);
    if audience.is_none() {
        problems.push(format!(
            "{origin}: {audience_name} is required (an identity provider issues tokens for \
             many applications: name the audience of gatehouse's)"
        ));
    }
    let algorithms = provider_algorithms(parts.algorithms)
        .map_err(|why| problems.push(format!("{origin}: algorithms: {why}")))
        .ok();
    match (issuer, keys_at, audience, algorithms) {
        (Some(issuer), Some(keys_at), Some(audience), Some(algorithms)) if problems.is_empty() => {
            Ok(IdentityProvider {
                issuer,
                keys_at,
                audience,
                algorithms,
                claims: parts.claims,
                ca: parts.ca,
                origin: parts.origin,
            })
        }
        _ => Err(problems),
    }
}

/// A PEM CA bundle from `path`, for `name`.
fn ca_file(src: &mut Source, name: &str, path: &str) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(pem) if has_certificate(&pem) => Some(pem),
        Ok(_) => {
            src.problems
                .push(format!("{name}: no PEM certificate in the file"));
            None
        }
        Err(e) => {
            src.problems.push(format!("{name}={path:?}: {e}"));
            None
        }
    }
}

/// A claim path setting (`None` when unset).
fn claim_path(src: &mut Source, name: &str) -> Option<ClaimPath> {
    let raw = src.get(name)?.to_owned();
    let path = ClaimPath::new(&raw);
    if path.is_none() {
        src.problems
            .push(format!("{name}={raw:?}: name a claim (or a /json/pointer)"));
    }
    path
}

/// `GATEHOUSE_JWT_ROLES_CLAIM` and `GATEHOUSE_JWT_SCOPE_CLAIM`.
pub(super) fn env_claims(src: &mut Source) -> ClaimMapping {
    ClaimMapping {
        roles: claim_path(src, "GATEHOUSE_JWT_ROLES_CLAIM"),
        scopes: claim_path(src, "GATEHOUSE_JWT_SCOPE_CLAIM"),
        user_prefix: user_prefix(
            src,
            "GATEHOUSE_JWT_USER_PREFIX",
            src.get("GATEHOUSE_JWT_USER_PREFIX").map(str::to_owned),
        ),
    }
}

/// A user prefix given as `name`, checked ([`check_user_prefix`]).
fn user_prefix(src: &mut Source, name: &str, raw: Option<String>) -> Option<String> {
    let raw = raw?;
    match crate::auth::check_user_prefix(&raw) {
        Ok(()) => Some(raw),
        Err(why) => {
            src.problems.push(format!("{name}: {why}"));
            None
        }
    }
}

/// `GATEHOUSE_JWT_JWKS_*` and `GATEHOUSE_JWT_WAIT_FOR_KEYS`.
pub(super) fn jwks_settings(src: &mut Source) -> JwksSettings {
    let d = JwksSettings::default();
    let settings = JwksSettings {
        refresh: src.duration("GATEHOUSE_JWT_JWKS_REFRESH", d.refresh),
        refresh_min: src.duration("GATEHOUSE_JWT_JWKS_REFRESH_MIN", d.refresh_min),
        refresh_max: src.duration("GATEHOUSE_JWT_JWKS_REFRESH_MAX", d.refresh_max),
        refetch_interval: src.duration("GATEHOUSE_JWT_JWKS_REFETCH_INTERVAL", d.refetch_interval),
        timeout: src.duration("GATEHOUSE_JWT_JWKS_TIMEOUT", d.timeout),
        wait_for_keys: src.flag("GATEHOUSE_JWT_WAIT_FOR_KEYS"),
    };
    for (name, value) in [
        ("GATEHOUSE_JWT_JWKS_REFRESH_MIN", settings.refresh_min),
        (
            "GATEHOUSE_JWT_JWKS_REFETCH_INTERVAL",
            settings.refetch_interval,
        ),
        ("GATEHOUSE_JWT_JWKS_TIMEOUT", settings.timeout),
    ] {
        if value.is_zero() {
            src.problems.push(format!("{name}: must be above zero"));
        }
    }
    if !(settings.refresh_min <= settings.refresh && settings.refresh <= settings.refresh_max) {
        src.problems.push(format!(
            "GATEHOUSE_JWT_JWKS_REFRESH: {:?} must lie within GATEHOUSE_JWT_JWKS_REFRESH_MIN \
             ({:?}) and GATEHOUSE_JWT_JWKS_REFRESH_MAX ({:?})",
            settings.refresh, settings.refresh_min, settings.refresh_max
        ));
    }
    settings
}

/// A string value of a `[[jwt_issuers]]` table (`algorithms` may be an array of them).
fn entry_text(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.trim().to_owned()).filter(|s| !s.is_empty()),
        toml::Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .map(|all| all.join(",")),
        _ => None,
    }
}

/// The providers: the environment's (when `GATEHOUSE_JWT_JWKS_URL` or discovery is set) and
/// the file's `[[jwt_issuers]]`; `env` describes the environment's issuer. The second value
/// says whether it is a provider.
pub(super) fn providers(src: &mut Source, env: &EnvJwt) -> (Vec<IdentityProvider>, bool) {
    let default_ca = src
        .get("GATEHOUSE_JWT_CA_FILE")
        .map(str::to_owned)
        .and_then(|path| ca_file(src, "GATEHOUSE_JWT_CA_FILE", &path));
    let jwks_url = src.get("GATEHOUSE_JWT_JWKS_URL").map(str::to_owned);
    let discovery = src.flag("GATEHOUSE_JWT_DISCOVERY");
    let mut providers = Vec::new();
    if jwks_url.is_some() || discovery {
        let which = if discovery {
            "GATEHOUSE_JWT_DISCOVERY"
        } else {
            "GATEHOUSE_JWT_JWKS_URL"
        };
        if env.has_keys {
            src.problems.push(format!(
                "{which}: not with GATEHOUSE_JWT_SECRET or GATEHOUSE_JWT_PUBLIC_KEYS \
                 (GATEHOUSE_JWT_ISSUER, _AUDIENCE and _ALGORITHMS would describe both); put \
                 the identity provider in a [[jwt_issuers]] table of GATEHOUSE_CONFIG"
            ));
        }
        let parts = Parts {
            origin: which.to_owned(),
            issuer: env.issuer.as_deref(),
            jwks_url: jwks_url.as_deref(),
            discovery,
            audience: env.audience.as_deref(),
            algorithms: env.algorithms.as_deref(),
            claims: env.claims.clone(),
            ca: default_ca.clone(),
            names: [
                "GATEHOUSE_JWT_ISSUER",
                "GATEHOUSE_JWT_JWKS_URL",
                "GATEHOUSE_JWT_DISCOVERY",
                "GATEHOUSE_JWT_AUDIENCE",
            ],
        };
        match provider(parts) {
            Ok(p) => providers.push(p),
            Err(problems) => src.problems.extend(problems),
        }
    }
    let entries = std::mem::take(&mut src.issuers);
    for (i, entry) in entries.iter().enumerate() {
        let origin = format!("GATEHOUSE_CONFIG: jwt_issuers[{}]", i + 1);
        for key in entry.keys() {
            if !ENTRY_KEYS.contains(&key.as_str()) {
                let hint = ENTRY_KEYS
                    .iter()
                    .map(|known| (strsim::normalized_damerau_levenshtein(key, known), known))
                    .filter(|(score, _)| *score >= 0.6)
                    .max_by(|a, b| a.0.total_cmp(&b.0))
                    .map(|(_, known)| format!(" (did you mean {known}?)"))
                    .unwrap_or_default();
                src.problems
                    .push(format!("{origin}: unknown key {key}{hint}"));
            }
        }
        let text = |key: &str| entry.get(key).and_then(entry_text);
        for key in ENTRY_KEYS.iter().filter(|k| **k != "discovery") {
            if entry.get(*key).is_some() && text(key).is_none() {
                src.problems
                    .push(format!("{origin}: {key}: expected a non-empty string"));
            }
        }
        let discovery = match entry.get("discovery") {
            None => false,
            Some(toml::Value::Boolean(on)) => *on,
            Some(_) => {
                src.problems
                    .push(format!("{origin}: discovery: expected true or false"));
                false
            }
        };
        let ca = match text("ca_file") {
            Some(path) => ca_file(src, &format!("{origin}: ca_file"), &path),
            None => default_ca.clone(),
        };
        let mut claims = ClaimMapping::default();
        for (key, slot) in [
            ("roles_claim", &mut claims.roles),
            ("scope_claim", &mut claims.scopes),
        ] {
            if let Some(raw) = text(key) {
                *slot = ClaimPath::new(&raw);
            }
        }
        claims.user_prefix =
            user_prefix(src, &format!("{origin}: user_prefix"), text("user_prefix"));
        let (issuer, jwks_url, audience, algorithms) = (
            text("issuer"),
            text("jwks_url"),
            text("audience"),
            text("algorithms"),
        );
        let parts = Parts {
            origin,
            issuer: issuer.as_deref(),
            jwks_url: jwks_url.as_deref(),
            discovery,
            audience: audience.as_deref(),
            algorithms: algorithms.as_deref(),
            claims,
            ca,
            names: ["issuer", "jwks_url", "discovery", "audience"],
        };
        match provider(parts) {
            Ok(p) => providers.push(p),
            Err(problems) => src.problems.extend(problems),
        }
    }
    let env_is_provider = jwks_url.is_some() || discovery;
    if env.has_keys && !env_is_provider {
        // The configured keys' own iss must not be a provider's.
        if let Some(iss) = &env.issuer
            && let Some(p) = providers.iter().find(|p| p.issuer == *iss)
        {
            src.problems.push(format!(
                "GATEHOUSE_JWT_ISSUER={iss:?}: also the issuer of {}: an issuer has one \
                 set of keys",
                p.origin
            ));
        }
    }
    if !env.has_keys && !env_is_provider && !providers.is_empty() {
        for name in [
            "GATEHOUSE_JWT_ISSUER",
            "GATEHOUSE_JWT_AUDIENCE",
            "GATEHOUSE_JWT_ALGORITHMS",
            "GATEHOUSE_JWT_ROLES_CLAIM",
            "GATEHOUSE_JWT_SCOPE_CLAIM",
        ] {
            src.ignored(
                name,
                "it describes the configured keys (GATEHOUSE_JWT_SECRET, \
                 GATEHOUSE_JWT_PUBLIC_KEYS) and there are none; each [[jwt_issuers]] table has \
                 its own",
            );
        }
    }
    // Several issuers: each one's users are its own (review: a second issuer's `sub` named
    // the first one's user and was given that user's sessions).
    let static_keys = env.has_keys && !env_is_provider;
    if providers.len() + usize::from(static_keys) > 1 {
        let mut prefixes = std::collections::HashSet::new();
        if static_keys && let Some(prefix) = &env.claims.user_prefix {
            prefixes.insert(prefix.clone());
        }
        for p in &providers {
            match &p.claims.user_prefix {
                None => src.problems.push(format!(
                    "{}: user_prefix: required with more than one issuer (their `sub` values \
                     name different users, who must not share sessions), e.g. \"kc:\"",
                    p.origin
                )),
                Some(prefix) if !prefixes.insert(prefix.clone()) => src.problems.push(format!(
                    "{}: user_prefix {prefix:?} is another issuer's too",
                    p.origin
                )),
                Some(_) => {}
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    for p in &providers {
        if !seen.insert(p.issuer.as_str()) {
            src.problems.push(format!(
                "{}: issuer {:?} is configured twice: an issuer has one set of keys",
                p.origin, p.issuer
            ));
        }
    }
    (providers, env_is_provider)
}
