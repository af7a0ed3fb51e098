//! Minting HS256 tokens from the configured secret, for `gatehouse token` and the embedded
//! default's admin token.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value, json};

use super::{ClaimMapping, ClaimPath, JwtSettings};

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

/// Mints HS256 tokens from the configured secret (for `gatehouse token` and the embedded
/// default's admin token), with roles and scopes where the configured keys' claim mapping
/// (`GATEHOUSE_JWT_ROLES_CLAIM`, `GATEHOUSE_JWT_SCOPE_CLAIM`) reads them.
pub struct TokenIssuer {
    key: EncodingKey,
    issuer: Option<String>,
    audience: Option<String>,
    claims: ClaimMapping,
}

impl TokenIssuer {
    /// An issuer signing with `secret`, adding `iss`/`aud` when configured.
    pub fn new(secret: &[u8], settings: &JwtSettings) -> Self {
        Self {
            key: EncodingKey::from_secret(secret),
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            claims: settings.claims.clone(),
        }
    }

    /// Signs a token for `request`.
    pub fn mint(&self, request: &TokenRequest) -> Result<String, jsonwebtoken::errors::Error> {
        let now = jsonwebtoken::get_current_timestamp();
        let mut claims = Map::new();
        claims.insert("sub".into(), json!(request.sub));
        claims.insert("iat".into(), json!(now));
        claims.insert(
            "exp".into(),
            json!(now.saturating_add(request.ttl.as_secs())),
        );
        if let Some(iss) = &self.issuer {
            claims.insert("iss".into(), json!(iss));
        }
        if let Some(aud) = &self.audience {
            claims.insert("aud".into(), json!(aud));
        }
        if !request.roles.is_empty() {
            let at = self
                .claims
                .roles
                .clone()
                .or_else(|| ClaimPath::new("roles"));
            if let Some(at) = at {
                at.place(&mut claims, json!(request.roles));
            }
        }
        if !request.scopes.is_empty() {
            let at = self
                .claims
                .scopes
                .clone()
                .or_else(|| ClaimPath::new("scope"));
            if let Some(at) = at {
                at.place(&mut claims, json!(request.scopes.join(" ")));
            }
        }
        let claims = Value::Object(claims);
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)
    }
}
