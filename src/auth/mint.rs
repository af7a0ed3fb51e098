//! Minting HS256 tokens from the configured secret, for `gatehouse token` and the embedded
//! default's admin token.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use super::JwtSettings;

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
