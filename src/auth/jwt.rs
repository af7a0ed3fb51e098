//! JWT verification with pinned algorithms, and minting for `gatehouse token`.

use std::time::Duration;

use jsonwebtoken::{
    Algorithm, AlgorithmFamily, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind,
};
use serde::{Deserialize, Serialize};

use super::keys::{KeyError, PublicKey};
use super::{AuthError, Principal};
use crate::session_id::{IdError, check_name};

/// Issuer, audience and algorithm settings shared by verification and minting.
#[derive(Debug, Clone, Default)]
pub struct JwtSettings {
    /// Accepted algorithms; empty means the default of each key's family (HS256, RS256,
    /// ES256, EdDSA). Never taken from the token.
    pub algorithms: Vec<Algorithm>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud`, when set.
    pub audience: Option<String>,
}

struct VerifyingKey {
    kid: Option<String>,
    key: DecodingKey,
    validation: Validation,
}

/// Verifies bearer tokens against the configured keys.
///
/// Verified tokens are remembered (up to `VERIFIED_CAPACITY`, for at most
/// `VERIFIED_TTL` and never past their `exp`): a service sends the same token with every
/// request, and verification (base64, signature, claims) was half of a check's CPU time.
/// Only the exact token string that verified is remembered; anything else is verified.
pub struct JwtVerifier {
    keys: Vec<VerifyingKey>,
    verified:
        moka::sync::Cache<String, std::sync::Arc<(Principal, u64)>, foldhash::fast::RandomState>,
}

/// Verified tokens remembered at most.
pub const VERIFIED_CAPACITY: u64 = 10_000;
/// Longest a verified token is remembered.
pub const VERIFIED_TTL: Duration = Duration::from_secs(300);

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct IncomingClaims {
    sub: String,
    exp: u64,
    #[serde(default)]
    roles: Option<OneOrMany>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    scope: Option<OneOrMany>,
    /// Read to refuse anything but a string: jsonwebtoken accepts an array of issuers.
    #[serde(default)]
    iss: Option<serde_json::Value>,
}

fn default_algorithm(family: AlgorithmFamily) -> Algorithm {
    match family {
        AlgorithmFamily::Hmac => Algorithm::HS256,
        AlgorithmFamily::Rsa => Algorithm::RS256,
        AlgorithmFamily::Ec => Algorithm::ES256,
        AlgorithmFamily::Ed => Algorithm::EdDSA,
    }
}

impl JwtVerifier {
    /// Builds a verifier from an HS256 secret and/or public keys.
    pub fn new(
        secret: Option<&[u8]>,
        public_keys: Vec<PublicKey>,
        settings: &JwtSettings,
    ) -> Result<Self, KeyError> {
        let secret_key = secret.map(|s| PublicKey {
            kid: None,
            key: DecodingKey::from_secret(s),
            source: "GATEHOUSE_JWT_SECRET".into(),
        });
        let keys = secret_key
            .into_iter()
            .chain(public_keys)
            .map(|k| {
                let family = k.key.family();
                let algorithms: Vec<Algorithm> = if settings.algorithms.is_empty() {
                    vec![default_algorithm(family)]
                } else {
                    settings
                        .algorithms
                        .iter()
                        .copied()
                        .filter(|a| a.family() == family)
                        .collect()
                };
                if algorithms.is_empty() {
                    return Err(KeyError::NoAlgorithm {
                        source_name: k.source,
                        family,
                        family_algorithms: format!("{:?}", family.algorithms()),
                    });
                }
                let mut validation = Validation::new(algorithms[0]);
                validation.algorithms = algorithms;
                // jsonwebtoken checks iss/aud only when the token has them: require them.
                let mut required = vec!["exp", "sub"];
                required.extend(settings.issuer.as_ref().map(|_| "iss"));
                required.extend(settings.audience.as_ref().map(|_| "aud"));
                validation.set_required_spec_claims(&required);
                validation.leeway = 30;
                validation.validate_nbf = true;
                validation.validate_aud = settings.audience.is_some();
                if let Some(aud) = &settings.audience {
                    validation.set_audience(&[aud]);
                }
                if let Some(iss) = &settings.issuer {
                    validation.set_issuer(&[iss]);
                }
                Ok(VerifyingKey {
                    kid: k.kid,
                    key: k.key,
                    validation,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(KeyError::NoKeys);
        }
        Ok(Self {
            keys,
            verified: moka::sync::Cache::builder()
                .max_capacity(VERIFIED_CAPACITY)
                .time_to_live(VERIFIED_TTL)
                .build_with_hasher(foldhash::fast::RandomState::default()),
        })
    }

    /// Verifies `token` and reads the principal from its claims.
    ///
    /// A token naming a `kid` is tried against the keys with that `kid` only: a `kid` that
    /// names no configured key is refused, never tried against keys configured without one. A
    /// token without `kid` is tried against every key. The first failure is reported. A `crit`
    /// header is refused: no extension is understood here (RFC 7515 §4.1.11), and `iss` must be
    /// a string (equal to the configured issuer, when there is one), never an array.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if let Some(hit) = self.verified.get(token) {
            if now_secs() < hit.1 {
                return Ok(hit.0.clone());
            }
            self.verified.invalidate(token);
        }
        let header = jsonwebtoken::decode_header(token).map_err(describe)?;
        if header.crit.is_some() {
            return Err(AuthError::Invalid(
                "critical header extensions (crit) are not supported".into(),
            ));
        }
        let mut first_error = None;
        let candidates = self.keys.iter().filter(|k| match (&header.kid, &k.kid) {
            (Some(wanted), Some(kid)) => wanted == kid,
            (Some(_), None) => false,
            (None, _) => true,
        });
        for candidate in candidates {
            match jsonwebtoken::decode::<IncomingClaims>(
                token,
                &candidate.key,
                &candidate.validation,
            ) {
                Ok(data) => {
                    let exp = data.claims.exp;
                    let principal = principal(data.claims)?;
                    self.verified.insert(
                        token.to_owned(),
                        std::sync::Arc::new((principal.clone(), exp)),
                    );
                    return Ok(principal);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.map_or_else(|| AuthError::Invalid("unknown key id".into()), describe))
    }
}

/// Whether a token's `sub` is one the verifier accepts: a user name ([`check_name`]). `gatehouse
/// token` asks the same before it mints one.
pub fn check_sub(sub: &str) -> Result<(), IdError> {
    check_name("sub", sub)
}

fn principal(claims: IncomingClaims) -> Result<Principal, AuthError> {
    if claims
        .iss
        .as_ref()
        .is_some_and(|iss| !iss.is_string() && !iss.is_null())
    {
        return Err(AuthError::Invalid("iss must be a string".into()));
    }
    check_sub(&claims.sub).map_err(|e| AuthError::Invalid(e.to_string()))?;
    let mut roles = match claims.roles {
        Some(OneOrMany::One(r)) => vec![r],
        Some(OneOrMany::Many(r)) => r,
        None => Vec::new(),
    };
    roles.extend(claims.role);
    let scopes = match claims.scope {
        Some(OneOrMany::One(s)) => s.split_whitespace().map(str::to_owned).collect(),
        Some(OneOrMany::Many(s)) => s,
        None => Vec::new(),
    };
    Ok(Principal {
        sub: claims.sub,
        roles,
        scopes,
    })
}

fn describe(e: jsonwebtoken::errors::Error) -> AuthError {
    let reason = match e.kind() {
        ErrorKind::ExpiredSignature => "token expired",
        ErrorKind::ImmatureSignature => "token not valid yet",
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => "algorithm not allowed",
        ErrorKind::InvalidIssuer => "wrong issuer",
        ErrorKind::InvalidAudience => "wrong audience",
        ErrorKind::MissingRequiredClaim(_) => "missing a required claim (exp, sub, iss, aud)",
        _ => "malformed token",
    };
    AuthError::Invalid(reason.into())
}

/// What to put in a minted token.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// The `sub` claim.
    pub sub: String,
    /// Roles (`roles` claim).
    pub roles: Vec<String>,
    /// Scopes (space-joined `scope` claim).
    pub scopes: Vec<String>,
    /// Lifetime.
    pub ttl: Duration,
}

#[derive(Serialize)]
struct OutgoingClaims<'a> {
    sub: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    roles: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// Mints HS256 tokens from the configured secret (for `gatehouse token` and the embedded
/// default's admin token).
pub struct TokenIssuer {
    key: EncodingKey,
    issuer: Option<String>,
    audience: Option<String>,
}

impl TokenIssuer {
    /// An issuer signing with `secret`, adding `iss`/`aud` when configured.
    pub fn new(secret: &[u8], settings: &JwtSettings) -> Self {
        Self {
            key: EncodingKey::from_secret(secret),
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
        }
    }

    /// Signs a token for `request`.
    pub fn mint(&self, request: &TokenRequest) -> Result<String, jsonwebtoken::errors::Error> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = OutgoingClaims {
            sub: &request.sub,
            roles: &request.roles,
            scope: (!request.scopes.is_empty()).then(|| request.scopes.join(" ")),
            iat: now,
            exp: now.saturating_add(request.ttl.as_secs()),
            iss: self.issuer.as_deref(),
            aud: self.audience.as_deref(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"test-secret-test-secret-test-secret";

    fn request(sub: &str, ttl: u64) -> TokenRequest {
        TokenRequest {
            sub: sub.into(),
            roles: vec!["admin".into()],
            scopes: vec!["gatehouse:validate".into(), "x".into()],
            ttl: Duration::from_secs(ttl),
        }
    }

    #[test]
    fn minted_tokens_verify_with_their_claims() {
        let settings = JwtSettings::default();
        let verifier = JwtVerifier::new(Some(SECRET), vec![], &settings).unwrap();
        let token = TokenIssuer::new(SECRET, &settings)
            .mint(&request("alice", 60))
            .unwrap();
        let p = verifier.verify(&token).unwrap();
        assert_eq!(p.sub, "alice");
        assert_eq!(p.roles, vec!["admin"]);
        assert_eq!(p.scopes, vec!["gatehouse:validate", "x"]);
    }

    #[test]
    fn verified_tokens_are_remembered_only_until_they_expire() {
        let settings = JwtSettings::default();
        let verifier = JwtVerifier::new(Some(SECRET), vec![], &settings).unwrap();
        let token = TokenIssuer::new(SECRET, &settings)
            .mint(&request("alice", 60))
            .unwrap();
        verifier.verify(&token).unwrap();
        let (cached, exp) = (*verifier.verified.get(&token).unwrap()).clone();
        assert_eq!(cached.sub, "alice");
        assert!(exp > now_secs());
        // Only the exact string: a tampered token is verified, and refused.
        let tampered = format!("{token}x");
        assert!(verifier.verify(&tampered).is_err());
        assert!(verifier.verified.get(&tampered).is_none());
        // A remembered entry past its exp is not used: the token is verified again.
        let principal = cached.clone();
        verifier.verified.insert(
            "not.a.token".into(),
            std::sync::Arc::new((principal.clone(), now_secs() + 60)),
        );
        assert_eq!(
            verifier.verify("not.a.token").unwrap().sub,
            "alice",
            "a hit"
        );
        verifier.verified.insert(
            "not.a.token".into(),
            std::sync::Arc::new((principal, now_secs() - 1)),
        );
        assert!(
            verifier.verify("not.a.token").is_err(),
            "expired: verified, refused"
        );
        assert!(verifier.verified.get("not.a.token").is_none());
    }

    #[test]
    fn issuer_and_audience_are_enforced_when_configured() {
        let strict = JwtSettings {
            issuer: Some("gh".into()),
            audience: Some("chat".into()),
            ..JwtSettings::default()
        };
        let verifier = JwtVerifier::new(Some(SECRET), vec![], &strict).unwrap();
        let plain = TokenIssuer::new(SECRET, &JwtSettings::default())
            .mint(&request("alice", 60))
            .unwrap();
        assert!(verifier.verify(&plain).is_err());
        let good = TokenIssuer::new(SECRET, &strict)
            .mint(&request("alice", 60))
            .unwrap();
        assert!(verifier.verify(&good).is_ok());
    }

    fn signed(header: Header, claims: serde_json::Value) -> String {
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(SECRET)).unwrap()
    }

    fn claims(sub: &str) -> serde_json::Value {
        serde_json::json!({ "sub": sub, "exp": now_secs() + 60 })
    }

    #[test]
    fn an_unknown_crit_header_is_refused() {
        let verifier = JwtVerifier::new(Some(SECRET), vec![], &JwtSettings::default()).unwrap();
        let mut header = Header::new(Algorithm::HS256);
        assert!(
            verifier
                .verify(&signed(header.clone(), claims("alice")))
                .is_ok()
        );
        header.crit = Some(vec!["x-must-understand".into()]);
        let token = signed(header, claims("alice"));
        assert!(
            matches!(verifier.verify(&token), Err(AuthError::Invalid(e)) if e.contains("crit"))
        );
    }

    #[test]
    fn iss_must_be_the_configured_string_never_an_array() {
        let settings = JwtSettings {
            issuer: Some("gh".into()),
            ..JwtSettings::default()
        };
        let verifier = JwtVerifier::new(Some(SECRET), vec![], &settings).unwrap();
        let header = Header::new(Algorithm::HS256);
        let with_iss = |iss: serde_json::Value| {
            let mut c = claims("alice");
            c["iss"] = iss;
            signed(header.clone(), c)
        };
        assert!(verifier.verify(&with_iss("gh".into())).is_ok());
        assert!(verifier.verify(&with_iss("other".into())).is_err());
        assert!(
            verifier
                .verify(&with_iss(serde_json::json!(["gh"])))
                .is_err()
        );
        assert!(
            verifier
                .verify(&with_iss(serde_json::json!(["gh", "other"])))
                .is_err()
        );
        // Without a configured issuer an array is still refused.
        let open = JwtVerifier::new(Some(SECRET), vec![], &JwtSettings::default()).unwrap();
        assert!(open.verify(&with_iss(serde_json::json!(["gh"]))).is_err());
        assert!(open.verify(&with_iss("anyone".into())).is_ok());
    }

    #[test]
    fn a_kid_that_names_no_configured_key_is_refused() {
        // The secret is configured without a kid: a token naming a kid is not tried on it.
        let verifier = JwtVerifier::new(Some(SECRET), vec![], &JwtSettings::default()).unwrap();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rotated-2026".into());
        let token = signed(header, claims("alice"));
        assert_eq!(
            verifier.verify(&token),
            Err(AuthError::Invalid("unknown key id".into()))
        );
        // A key configured with that kid is used.
        let with_kid = JwtVerifier::new(
            None,
            vec![PublicKey {
                kid: Some("rotated-2026".into()),
                key: DecodingKey::from_secret(SECRET),
                source: "test".into(),
            }],
            &JwtSettings::default(),
        )
        .unwrap();
        assert!(with_kid.verify(&token).is_ok());
    }

    #[test]
    fn sub_with_invisible_formatting_characters_is_refused() {
        let verifier = JwtVerifier::new(Some(SECRET), vec![], &JwtSettings::default()).unwrap();
        for sub in [
            "alice\u{200B}",
            "\u{202E}ecila",
            "ali\u{2066}ce",
            "\u{FEFF}alice",
        ] {
            let token = signed(Header::new(Algorithm::HS256), claims(sub));
            assert!(verifier.verify(&token).is_err(), "{sub:?}");
        }
    }

    #[test]
    fn a_secret_with_only_rsa_algorithms_is_a_config_error() {
        let settings = JwtSettings {
            algorithms: vec![Algorithm::RS256],
            ..JwtSettings::default()
        };
        assert!(matches!(
            JwtVerifier::new(Some(SECRET), vec![], &settings),
            Err(KeyError::NoAlgorithm { .. })
        ));
    }
}
