//! JWT verification: each token routed to its issuer by its `iss`, then verified with that
//! issuer's keys and rules only, algorithms pinned by configuration.
//!
//! Issuers are of two kinds. The configured keys (`GATEHOUSE_JWT_SECRET`,
//! `GATEHOUSE_JWT_PUBLIC_KEYS`) form one issuer, with `GATEHOUSE_JWT_ISSUER` as its required
//! `iss` when set. Each identity provider (see [`super::provider`]) is another, with its
//! required `iss` and `aud` and the keys it publishes. The `iss` read before the signature is
//! checked only chooses the keys: a token whose `iss` is an identity provider's is verified
//! with that provider's keys, any other with the configured keys (refused when there are
//! none), and the chosen issuer's validation then checks `iss` (and `aud`) again, after the
//! signature. So a token can never reach keys other than its claimed issuer's, and claiming an
//! issuer only gets it that issuer's checks.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Header};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::claims::ClaimMapping;
use super::keys::{KeyError, PublicKey};
use super::keyset::{KeySet, Rules};
use super::provider::{IdentityProvider, JwksSettings, ProviderStatus, RemoteKeys};
use super::{AuthError, Principal};

/// The configured keys' issuer, audience, algorithms and claims, shared by verification and
/// minting.
#[derive(Debug, Clone, Default)]
pub struct JwtSettings {
    /// Accepted algorithms; empty means the default of each key's family (HS256, RS256,
    /// ES256, EdDSA). Never taken from the token.
    pub algorithms: Vec<Algorithm>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud`, when set.
    pub audience: Option<String>,
    /// Where roles and scopes are read (`GATEHOUSE_JWT_ROLES_CLAIM`,
    /// `GATEHOUSE_JWT_SCOPE_CLAIM`).
    pub claims: ClaimMapping,
}

enum Keys {
    /// Configured: they never change.
    Configured(KeySet),
    /// Published by an identity provider.
    Published(Arc<RemoteKeys>),
}

struct Issuer {
    /// The `iss` its tokens must carry (`None`: the configured keys without
    /// `GATEHOUSE_JWT_ISSUER`).
    iss: Option<String>,
    claims: ClaimMapping,
    keys: Keys,
}

/// A token that verified: who, until when, and with which key.
struct Verified {
    principal: Principal,
    exp: u64,
    issuer: usize,
    serial: u64,
}

/// Verifies bearer tokens against the configured keys and the identity providers' keys.
///
/// Verified tokens are remembered (up to `VERIFIED_CAPACITY`, for at most `VERIFIED_TTL` and
/// never past their `exp`): a service sends the same token with every request, and
/// verification (base64, signature, claims) was half of a check's CPU time. Only the exact
/// token string that verified is remembered, with the key that verified it: a remembered token
/// counts only while that key is still in its issuer's set, so a key an identity provider
/// withdraws stops its tokens at the refresh that drops it.
pub struct JwtVerifier {
    issuers: Vec<Issuer>,
    /// The index of the configured keys' issuer.
    configured: Option<usize>,
    verified: moka::sync::Cache<String, Arc<Verified>, foldhash::fast::RandomState>,
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

/// The `iss` of a token, read before any check, to choose its keys.
#[derive(Deserialize)]
struct Unverified {
    #[serde(default)]
    iss: Option<Value>,
}

impl JwtVerifier {
    /// A verifier of the configured keys only: an HS256 secret and/or public keys.
    pub fn new(
        secret: Option<&[u8]>,
        public_keys: Vec<PublicKey>,
        settings: &JwtSettings,
    ) -> Result<Self, KeyError> {
        Self::with_providers(
            secret,
            public_keys,
            settings,
            Vec::new(),
            &JwksSettings::default(),
        )
    }

    /// A verifier of the configured keys (none: no configured issuer) and of `providers`,
    /// whose keys are not fetched yet ([`Self::load_keys`], [`Self::spawn_refresh`]).
    pub fn with_providers(
        secret: Option<&[u8]>,
        public_keys: Vec<PublicKey>,
        settings: &JwtSettings,
        providers: Vec<IdentityProvider>,
        jwks: &JwksSettings,
    ) -> Result<Self, KeyError> {
        let mut issuers = Vec::new();
        let keys: Vec<PublicKey> = secret
            .map(|s| PublicKey {
                kid: None,
                key: DecodingKey::from_secret(s),
                source: "GATEHOUSE_JWT_SECRET".into(),
            })
            .into_iter()
            .chain(public_keys)
            .collect();
        let configured = (!keys.is_empty()).then_some(0);
        if !keys.is_empty() {
            let rules = Rules {
                issuer: settings.issuer.clone(),
                audience: settings.audience.clone(),
            };
            issuers.push(Issuer {
                iss: settings.issuer.clone(),
                claims: settings.claims.clone(),
                keys: Keys::Configured(KeySet::configured(keys, &settings.algorithms, &rules)?),
            });
        }
        for provider in providers {
            let remote =
                RemoteKeys::new(provider.clone(), *jwks).map_err(|message| KeyError::Provider {
                    issuer: provider.issuer.clone(),
                    message,
                })?;
            issuers.push(Issuer {
                iss: Some(provider.issuer.clone()),
                claims: provider.claims,
                keys: Keys::Published(Arc::new(remote)),
            });
        }
        if issuers.is_empty() {
            return Err(KeyError::NoKeys);
        }
        Ok(Self {
            issuers,
            configured,
            verified: moka::sync::Cache::builder()
                .max_capacity(VERIFIED_CAPACITY)
                .time_to_live(VERIFIED_TTL)
                .build_with_hasher(foldhash::fast::RandomState::default()),
        })
    }

    fn remotes(&self) -> impl Iterator<Item = &Arc<RemoteKeys>> {
        self.issuers.iter().filter_map(|i| match &i.keys {
            Keys::Published(remote) => Some(remote),
            Keys::Configured(_) => None,
        })
    }

    /// Fetches every identity provider's keys once, all at once; the error names each one
    /// whose keys could not be had.
    pub async fn load_keys(&self) -> Result<(), KeyError> {
        let fetches = self.remotes().map(|remote| async move {
            remote.fetch().await.map_err(|e| {
                format!(
                    "identity provider {} ({}): {e}",
                    remote.provider().issuer,
                    remote.provider().origin
                )
            })
        });
        let failed: Vec<String> = futures_util::future::join_all(fetches)
            .await
            .into_iter()
            .filter_map(Result::err)
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(KeyError::Unfetched(failed))
        }
    }

    /// Runs each identity provider's refresh as one of `tasks`.
    pub fn spawn_refresh(&self, tasks: &crate::tasks::Tasks) {
        for remote in self.remotes() {
            tasks.spawn(Arc::clone(remote).run(tasks.token()));
        }
    }

    /// Where each identity provider's keys stand.
    pub fn providers(&self) -> Vec<ProviderStatus> {
        self.remotes().map(|remote| remote.status()).collect()
    }

    /// Verifies `token` and reads the principal from its claims.
    ///
    /// The token goes to its issuer (see the module doc). A token naming a `kid` is tried
    /// against that issuer's keys with that `kid` only: a `kid` that names no key is refused,
    /// never tried against keys without one, after one fetch of an identity provider's keys
    /// (coalesced and rate-limited, see [`super::provider`]). A token without `kid` is tried
    /// against every key of its issuer. The first failure is reported. A `crit` header is
    /// refused: no extension is understood here (RFC 7515 §4.1.11), and `iss` must be a string
    /// (equal to the issuer's, when it has one), never an array.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if let Some(hit) = self.verified.get(token) {
            if now_secs() < hit.exp && self.still_holds(&hit) {
                return Ok(hit.principal.clone());
            }
            self.verified.invalidate(token);
        }
        let header = jsonwebtoken::decode_header(token).map_err(describe)?;
        if header.crit.is_some() {
            return Err(AuthError::Invalid(
                "critical header extensions (crit) are not supported".into(),
            ));
        }
        let unverified: Unverified =
            jsonwebtoken::dangerous::insecure_decode_claims(token).map_err(describe)?;
        let iss = match &unverified.iss {
            None | Some(Value::Null) => None,
            Some(Value::String(iss)) => Some(iss.as_str()),
            Some(_) => return Err(AuthError::Invalid("iss must be a string".into())),
        };
        let index = self.route(iss).ok_or_else(|| {
            AuthError::Invalid("wrong issuer (no such issuer is configured)".into())
        })?;
        let issuer = &self.issuers[index];
        match &issuer.keys {
            Keys::Configured(set) => self.verify_with(index, set, token, &header),
            Keys::Published(remote) => {
                let seen = remote.finished();
                let unavailable = || {
                    AuthError::Unavailable(format!(
                        "the keys of identity provider {} are not loaded yet",
                        remote.provider().issuer
                    ))
                };
                let mut set = remote.keys().ok_or_else(unavailable)?;
                if let Some(kid) = &header.kid
                    && !set.knows(kid)
                {
                    remote.refetch(seen).await;
                    set = remote.keys().ok_or_else(unavailable)?;
                }
                self.verify_with(index, &set, token, &header)
            }
        }
    }

    /// The issuer a token claiming `iss` goes to: the identity provider with that issuer, or
    /// else the configured keys.
    fn route(&self, iss: Option<&str>) -> Option<usize> {
        iss.and_then(|iss| {
            self.issuers.iter().position(|issuer| {
                matches!(issuer.keys, Keys::Published(_)) && issuer.iss.as_deref() == Some(iss)
            })
        })
        .or(self.configured)
    }

    /// Whether the key that verified a remembered token is still its issuer's.
    fn still_holds(&self, hit: &Verified) -> bool {
        match self.issuers.get(hit.issuer).map(|i| &i.keys) {
            Some(Keys::Configured(_)) => true,
            Some(Keys::Published(remote)) => remote.keys().is_some_and(|set| set.holds(hit.serial)),
            None => false,
        }
    }

    fn verify_with(
        &self,
        index: usize,
        set: &KeySet,
        token: &str,
        header: &Header,
    ) -> Result<Principal, AuthError> {
        let mut first_error = None;
        for candidate in set.candidates(header.kid.as_deref()) {
            match jsonwebtoken::decode::<Map<String, Value>>(
                token,
                &candidate.key,
                &candidate.validation,
            ) {
                Ok(data) => {
                    let exp = data
                        .claims
                        .get("exp")
                        .and_then(|exp| exp.as_u64().or_else(|| exp.as_f64().map(|f| f as u64)))
                        .ok_or_else(|| AuthError::Invalid("malformed token (exp)".into()))?;
                    let principal = self.issuers[index].claims.principal(&data.claims)?;
                    self.verified.insert(
                        token.to_owned(),
                        Arc::new(Verified {
                            principal: principal.clone(),
                            exp,
                            issuer: index,
                            serial: candidate.serial,
                        }),
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

#[cfg(test)]
mod tests;
