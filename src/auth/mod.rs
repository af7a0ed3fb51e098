//! Who is calling: JWT bearer authentication (DESIGN §1).
//!
//! [`Authenticator`] turns request headers into a [`Principal`]; handlers take a `Principal`
//! argument (it implements `FromRequestParts`) and get a 401 problem when there is none. The
//! explicit legacy mode [`Authenticator::Disabled`] makes every caller the virtual user `admin`.
//!
//! Keys are configured (`keys`: an HS256 secret, PEM and JWKS files) or published by identity
//! providers (`provider`: a JWKS URL or OpenID Connect discovery, fetched over HTTPS by
//! `fetch` and kept fresh); `keyset` holds one issuer's keys, `jwt` routes each token to its
//! issuer and verifies it, `claims` reads the principal, `mint` signs `gatehouse token`'s.

mod claims;
mod fetch;
mod jwt;
mod keys;
mod keyset;
mod mint;
mod provider;

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::{HeaderMap, header, request::Parts};

pub use self::claims::{ClaimMapping, ClaimPath, check_sub, check_user_prefix};
pub use self::fetch::MAX_BODY as MAX_KEYS_DOCUMENT;
pub use self::jwt::{JwtSettings, JwtVerifier};
pub use self::keys::{KeyError, PublicKey, load_public_keys};
pub use self::mint::{TokenIssuer, TokenRequest};
pub use self::provider::{FetchCounts, IdentityProvider, JwksSettings, KeysAt, ProviderStatus};

/// Scope that lets a service name another user in a check.
pub const SCOPE_VALIDATE: &str = "gatehouse:validate";
/// Scope that grants the admin API.
pub const SCOPE_ADMIN: &str = "gatehouse:admin";
/// Scope that lets a service (the chat backend creating a session) claim it for a user.
pub const SCOPE_CLAIM: &str = "gatehouse:claim";
/// Role that grants admin.
pub const ROLE_ADMIN: &str = "admin";
/// The virtual user every caller becomes when authentication is disabled.
pub const LEGACY_USER: &str = "admin";

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user (or service) name, from `sub`.
    pub sub: String,
    /// Roles from `roles` or `role`.
    pub roles: Vec<String>,
    /// Scopes from the space-separated `scope`.
    pub scopes: Vec<String>,
}

impl Principal {
    /// Whether the principal has the role `admin`: the decision rule allows it on every
    /// session (DESIGN §2).
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == ROLE_ADMIN)
    }

    /// Whether the principal may use the admin API: role `admin` or scope `gatehouse:admin`.
    /// The scope alone does not open chat sessions (services get it to manage, not to read).
    pub fn may_administer(&self) -> bool {
        self.is_admin() || self.has_scope(SCOPE_ADMIN)
    }

    /// Whether the principal holds `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// Whether the principal may ask about another user (scope `gatehouse:validate`, or admin).
    pub fn may_check_others(&self) -> bool {
        self.has_scope(SCOPE_VALIDATE) || self.may_administer()
    }

    /// The legacy virtual admin of `GATEHOUSE_AUTH=disabled`.
    pub fn legacy_admin() -> Self {
        Self {
            sub: LEGACY_USER.into(),
            roles: vec![ROLE_ADMIN.into()],
            scopes: Vec::new(),
        }
    }
}

/// Why a request carries no usable credentials. The message is safe to show (it never echoes
/// the token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header (nor configured cookie).
    #[error("missing bearer token")]
    Missing,
    /// The token failed verification.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The token's issuer is an identity provider whose keys have not been fetched yet
    /// (`GATEHOUSE_JWT_WAIT_FOR_KEYS=on`): it can be neither accepted nor called bad (a 503).
    #[error("cannot verify the token yet: {0}")]
    Unavailable(String),
}

impl AuthError {
    /// The reason as a metric label: `missing`, `expired`, `not_yet_valid`, `bad_signature`,
    /// `unknown_key`, `algorithm`, `issuer`, `audience`, `claims`, `malformed` or
    /// `keys_unavailable`.
    pub fn reason(&self) -> &'static str {
        let why = match self {
            AuthError::Missing => return "missing",
            AuthError::Unavailable(_) => return "keys_unavailable",
            AuthError::Invalid(why) => why,
        };
        // The texts made in `jwt.rs`, `claims.rs` and here.
        const KNOWN: [(&str, &str); 10] = [
            ("token expired", "expired"),
            ("token not valid yet", "not_yet_valid"),
            ("bad signature", "bad_signature"),
            ("unknown key id", "unknown_key"),
            ("algorithm not allowed", "algorithm"),
            ("wrong issuer", "issuer"),
            ("wrong audience", "audience"),
            ("missing a required claim", "claims"),
            ("iss must be", "claims"),
            ("claim ", "claims"),
        ];
        KNOWN.iter().find(|(text, _)| why.starts_with(text)).map_or(
            if why.starts_with("sub") {
                "claims"
            } else {
                "malformed"
            },
            |(_, reason)| reason,
        )
    }
}

/// How callers are authenticated.
pub enum Authenticator {
    /// Verify JWT bearer tokens.
    Jwt(JwtVerifier),
    /// Legacy behaviour: every caller is the virtual user `admin`. Insecure by design.
    Disabled,
}

impl Authenticator {
    /// Authenticates a request from its headers. Waits only when the token names a key its
    /// identity provider has not published yet: for one fetch of the provider's keys, shared
    /// and rate-limited (see `provider`).
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, AuthError> {
        match self {
            Authenticator::Disabled => Ok(Principal::legacy_admin()),
            Authenticator::Jwt(verifier) => {
                let token = bearer_token(headers)?.ok_or(AuthError::Missing)?;
                verifier.verify(token).await
            }
        }
    }

    /// Where each identity provider's keys stand (none without providers).
    pub fn identity_providers(&self) -> Vec<ProviderStatus> {
        match self {
            Authenticator::Disabled => Vec::new(),
            Authenticator::Jwt(verifier) => verifier.providers(),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive), `None`
/// when there is none.
///
/// A request with more than one `Authorization` header is refused: which one counts would be
/// up to each hop (a proxy may check the last, gatehouse the first), so none does.
pub fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, AuthError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(AuthError::Invalid(
            "more than one Authorization header".into(),
        ));
    }
    let token = value
        .to_str()
        .ok()
        .and_then(|value| value.split_once(' '))
        .map(|(scheme, token)| (scheme, token.trim()))
        .filter(|(scheme, token)| scheme.eq_ignore_ascii_case("bearer") && !token.is_empty())
        .map(|(_, token)| token);
    Ok(token)
}

impl<S> FromRequestParts<S> for Principal
where
    S: Send + Sync,
    Arc<Authenticator>: FromRef<S>,
{
    /// Rendered as a 401 problem by the web layer (`http/error.rs`), so `auth` needs no part of it.
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // The ownership layer authenticates before the handler runs; reuse its result.
        if let Some(principal) = parts.extensions.get::<Principal>() {
            return Ok(principal.clone());
        }
        let authenticator = Arc::<Authenticator>::from_ref(state);
        authenticator.authenticate(&parts.headers).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_needs_a_token() {
        assert_eq!(bearer_token(&headers("Bearer abc")), Ok(Some("abc")));
        assert_eq!(bearer_token(&headers("bearer abc")), Ok(Some("abc")));
        assert_eq!(bearer_token(&headers("Bearer ")), Ok(None));
        assert_eq!(bearer_token(&headers("Basic abc")), Ok(None));
        assert_eq!(bearer_token(&HeaderMap::new()), Ok(None));
    }

    #[tokio::test]
    async fn two_authorization_headers_are_refused_not_first_wins() {
        let mut h = headers("Bearer abc");
        h.append(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer def"),
        );
        assert!(matches!(bearer_token(&h), Err(AuthError::Invalid(_))));
        h = headers("Basic abc");
        h.append(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer def"),
        );
        assert!(bearer_token(&h).is_err());
        let authenticator = Authenticator::Jwt(
            JwtVerifier::new(
                Some(b"0123456789abcdef0123456789abcdef"),
                vec![],
                &JwtSettings::default(),
            )
            .unwrap(),
        );
        assert!(matches!(
            authenticator.authenticate(&h).await,
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn admin_comes_from_role_or_admin_scope() {
        let mut p = Principal {
            sub: "svc".into(),
            roles: vec![],
            scopes: vec![SCOPE_VALIDATE.into()],
        };
        assert!(!p.is_admin());
        assert!(p.may_check_others());
        p.scopes = vec![SCOPE_ADMIN.into()];
        assert!(p.may_administer());
        assert!(!p.is_admin(), "the admin scope does not open sessions");
        assert!(Principal::legacy_admin().is_admin());
    }
}
