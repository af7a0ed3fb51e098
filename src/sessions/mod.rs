//! `/v1/sessions` and `/v1/users/{user}/sessions`: claiming, reading, transferring and
//! releasing session ownership.
//!
//! Reads of one session go through the [`OwnershipLayer`], pinned to ENFORCED: rollout modes
//! govern chat traffic, never gatehouse's own ownership API (a LOG_ONLY switch must not let
//! anyone release someone else's session and claim it). A release checks ownership itself,
//! in the same atomic compare-and-delete that releases (no mode applies to it either), so
//! that it is idempotent: a release repeated after it was applied finds no owner and answers
//! the same 204 as the first.
//!
//! Every write here is safe to repeat after an unknown outcome (504 `write-outcome-unknown`):
//! a claim already applied answers 200 (already the caller's), a transfer already applied
//! answers 200 (the owner is already the requested one, even when `expected_owner` no longer
//! matches), a release already applied answers 204.
//!
//! Claiming ([`ClaimPolicy`], `GATEHOUSE_CLAIM`). Under the default `service`, only a caller
//! with the scope `gatehouse:claim` (the chat backend, when it creates a session) claims, and
//! it names the user who becomes the owner. End users cannot claim at all, so they cannot
//! squat a legacy session id before (or while) the backfill assigns it, and the `no_owner`
//! answer of a check tells them nothing they could act on. The admin role does not claim
//! either (admins set owners with `PUT /v1/sessions/{id}/owner`, which is audited in the log
//! with the actor). Under `self` (the behaviour before issue 14) a user claims an unowned
//! session for themselves, and a `gatehouse:claim` service may still claim for a user.

mod routes;

use crate::auth::{Principal, SCOPE_CLAIM};
use crate::session_id::{IdError, check_name};

pub use self::routes::{
    ClaimRequest, OwnerTransferred, PageQuery, PutOwner, SessionOwner, UserSessions, guard,
    owner_routes, routes,
};

/// Endpoint name under which the session API's own checks are logged.
pub const SESSIONS_ENDPOINT: &str = "gatehouse.sessions";

/// Why a claim is refused.
#[derive(Debug, thiserror::Error)]
pub enum ClaimRefused {
    /// The caller may not claim so (403).
    #[error("{0}")]
    Forbidden(String),
    /// The request does not say who becomes the owner (400).
    #[error("{0}")]
    Incomplete(String),
    /// The user named is not a valid user name (400).
    #[error(transparent)]
    InvalidUser(IdError),
}

/// Who may claim sessions (`GATEHOUSE_CLAIM`; module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClaimPolicy {
    /// Only callers with the scope `gatehouse:claim`, naming the user (the default).
    #[default]
    Service,
    /// A user claims an unowned session for themselves (`self`); services may still claim
    /// for a user.
    SelfClaim,
}

impl std::str::FromStr for ClaimPolicy {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        match raw.to_ascii_lowercase().as_str() {
            "service" => Ok(Self::Service),
            "self" => Ok(Self::SelfClaim),
            _ => Err("expected service or self".into()),
        }
    }
}

impl ClaimPolicy {
    /// Who becomes the owner when `principal` claims naming `user` (or nobody), or why not.
    pub fn owner_for(
        self,
        principal: &Principal,
        user: Option<String>,
    ) -> Result<String, ClaimRefused> {
        let service = principal.has_scope(SCOPE_CLAIM);
        let owner = match (self, user) {
            (Self::Service, _) if !service => {
                return Err(ClaimRefused::Forbidden(format!(
                    "sessions are claimed by the service that creates them (GATEHOUSE_CLAIM=service): the caller needs the scope {SCOPE_CLAIM} and names the owner in the body, {{\"user\": \"...\"}}"
                )));
            }
            (Self::Service, None) => {
                return Err(ClaimRefused::Incomplete(
                    "name the user who becomes the owner: {\"user\": \"...\"}".into(),
                ));
            }
            (Self::SelfClaim, None) => principal.sub.clone(),
            (Self::SelfClaim, Some(user)) if user != principal.sub && !service => {
                return Err(ClaimRefused::Forbidden(format!(
                    "claiming a session for another user needs the scope {SCOPE_CLAIM}"
                )));
            }
            (_, Some(user)) => user,
        };
        check_name("user", &owner).map_err(ClaimRefused::InvalidUser)?;
        Ok(owner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(sub: &str, scopes: &[&str], roles: &[&str]) -> Principal {
        Principal {
            sub: sub.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn who_becomes_the_owner_under_each_policy() {
        let user = principal("alice", &[], &[]);
        let admin = principal("root", &[crate::auth::SCOPE_ADMIN], &["admin"]);
        let service = principal("chat-backend", &[SCOPE_CLAIM], &[]);
        let named = |u: &str| Some(u.to_owned());
        use ClaimPolicy::{SelfClaim, Service};
        let forbidden =
            |r: Result<String, ClaimRefused>| matches!(r, Err(ClaimRefused::Forbidden(_)));
        assert!(forbidden(Service.owner_for(&user, None)));
        assert!(forbidden(Service.owner_for(&user, named("alice"))));
        assert!(forbidden(Service.owner_for(&admin, named("bob"))));
        assert!(matches!(
            Service.owner_for(&service, None),
            Err(ClaimRefused::Incomplete(_))
        ));
        assert_eq!(Service.owner_for(&service, named("bob")).unwrap(), "bob");
        assert!(matches!(
            Service.owner_for(&service, named("a b")),
            Err(ClaimRefused::InvalidUser(_))
        ));
        assert_eq!(SelfClaim.owner_for(&user, None).unwrap(), "alice");
        assert_eq!(SelfClaim.owner_for(&user, named("alice")).unwrap(), "alice");
        assert!(forbidden(SelfClaim.owner_for(&user, named("bob"))));
        assert_eq!(SelfClaim.owner_for(&service, named("bob")).unwrap(), "bob");
        assert_eq!("self".parse(), Ok(SelfClaim));
        assert_eq!("SERVICE".parse(), Ok(Service));
        assert!("anyone".parse::<ClaimPolicy>().is_err());
    }
}
