//! From a verified token's claims to a [`Principal`]: `sub`, and the roles and scopes read
//! where each issuer puts them.
//!
//! Identity providers do not agree on where roles live: gatehouse's own tokens and many
//! in-house issuers use `roles` (or `role`), Keycloak puts realm roles in
//! `realm_access.roles` and client roles in `resource_access.<client>.roles`, Auth0 has
//! namespaced custom claims (`https://chat.example.com/roles`), Okta calls its scopes `scp`.
//! So each issuer has a [`ClaimMapping`]: the claim holding roles and the one holding scopes,
//! each named by a [`ClaimPath`] (a top-level claim name taken whole, or an RFC 6901 JSON
//! Pointer when it starts with `/`, as Vault's JWT auth does). Whatever the claim, what it
//! holds must be a string or an array of strings; anything else refuses the token (a shape
//! that is not understood is not read as "no roles").

use serde_json::{Map, Value};

use super::{AuthError, Principal};
use crate::session_id::{IdError, check_name};

/// Where a claim is found in a token's payload.
///
/// A name starting with `/` is a JSON Pointer (`/realm_access/roles`, with `~1` for a `/`
/// and `~0` for a `~` inside a name); any other name is one top-level claim, dots and slashes
/// included (`https://chat.example.com/roles`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath(String);

impl ClaimPath {
    /// A path from its configured text; `None` when empty.
    pub fn new(text: &str) -> Option<Self> {
        let text = text.trim();
        (!text.is_empty() && text != "/").then(|| Self(text.to_owned()))
    }

    /// The path as configured.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The pointer's segments, unescaped (a top-level name: itself).
    fn segments(&self) -> Vec<String> {
        match self.0.strip_prefix('/') {
            None => vec![self.0.clone()],
            Some(pointer) => pointer
                .split('/')
                .map(|s| s.replace("~1", "/").replace("~0", "~"))
                .collect(),
        }
    }

    /// Puts `value` where this path reads it, making the objects on the way (for minting).
    pub(crate) fn place(&self, claims: &mut Map<String, Value>, value: Value) {
        let segments = self.segments();
        let Some((last, path)) = segments.split_last() else {
            return;
        };
        let mut object = claims;
        for segment in path {
            let entry = object
                .entry(segment.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            let Value::Object(inner) = entry else {
                return;
            };
            object = inner;
        }
        object.insert(last.clone(), value);
    }

    fn find<'a>(&self, claims: &'a Map<String, Value>) -> Option<&'a Value> {
        if self.0.starts_with('/') {
            // `Value::pointer` wants a Value; the payload is an object, so look up its first
            // segment here and the rest below it.
            let rest = &self.0[1..];
            let (first, below) = rest.split_once('/').unwrap_or((rest, ""));
            let first = first.replace("~1", "/").replace("~0", "~");
            let top = claims.get(&first)?;
            if below.is_empty() {
                Some(top)
            } else {
                top.pointer(&format!("/{below}"))
            }
        } else {
            claims.get(&self.0)
        }
    }
}

impl std::fmt::Display for ClaimPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which claims hold an issuer's roles and scopes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimMapping {
    /// The roles claim; `None`: `roles` (a string or an array) and `role` (a string), both.
    pub roles: Option<ClaimPath>,
    /// The scopes claim (a space-separated string or an array); `None`: `scope`.
    pub scopes: Option<ClaimPath>,
    /// Put before every `sub` of this issuer to make the user name (`kc:` + `alice` =
    /// `kc:alice`): two issuers' `sub` values are different users even when they are equal.
    /// Required with more than one issuer ([`check_user_prefix`] says what one may be).
    pub user_prefix: Option<String>,
}

/// A user prefix: letters, digits, `.`, `_` or `-`, then one `:` at its end. So that two
/// distinct prefixes never make one name: the name's first `:` ends the prefix.
pub fn check_user_prefix(prefix: &str) -> Result<(), String> {
    let body = prefix.strip_suffix(':').unwrap_or("");
    let valid = !body.is_empty()
        && body.len() <= 64
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{prefix:?}: 1-64 letters, digits, '.', '_' or '-', ending with ':' (e.g. \"kc:\")"
        ))
    }
}

/// A claim's strings: one string, or an array of strings; absent or `null` is none.
fn strings(name: &str, value: Option<&Value>) -> Result<Vec<String>, AuthError> {
    let wrong = || {
        AuthError::Invalid(format!(
            "claim {name}: expected a string or an array of strings"
        ))
    };
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned).ok_or_else(wrong))
            .collect(),
        Some(_) => Err(wrong()),
    }
}

impl ClaimMapping {
    /// The principal of a verified token's claims (`exp`, `nbf`, `iss`, `aud` and the
    /// signature already checked by the verifier).
    ///
    /// `iss` must be a string when present (jsonwebtoken accepts an array of issuers), `sub`
    /// a valid user name ([`check_sub`]).
    pub fn principal(&self, claims: &Map<String, Value>) -> Result<Principal, AuthError> {
        if claims
            .get("iss")
            .is_some_and(|iss| !iss.is_string() && !iss.is_null())
        {
            return Err(AuthError::Invalid("iss must be a string".into()));
        }
        let sub = match claims.get("sub") {
            Some(Value::String(sub)) => sub.clone(),
            _ => return Err(AuthError::Invalid("sub must be a string".into())),
        };
        check_sub(&sub).map_err(|e| AuthError::Invalid(e.to_string()))?;
        let sub = match &self.user_prefix {
            Some(prefix) => {
                let name = format!("{prefix}{sub}");
                check_sub(&name).map_err(|e| AuthError::Invalid(e.to_string()))?;
                name
            }
            None => sub,
        };
        let roles = match &self.roles {
            None => {
                let mut roles = strings("roles", claims.get("roles"))?;
                match claims.get("role") {
                    None | Some(Value::Null) => {}
                    Some(Value::String(role)) => roles.push(role.clone()),
                    Some(_) => {
                        return Err(AuthError::Invalid("claim role: expected a string".into()));
                    }
                }
                roles
            }
            Some(path) => strings(path.as_str(), path.find(claims))?,
        };
        let (name, value) = match &self.scopes {
            None => ("scope", claims.get("scope")),
            Some(path) => (path.as_str(), path.find(claims)),
        };
        let scopes = match value {
            // The OAuth form (RFC 8693 §4.2): one space-separated string.
            Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
            other => strings(name, other)?,
        };
        Ok(Principal { sub, roles, scopes })
    }
}

/// Whether a token's `sub` is one the verifier accepts: a user name ([`check_name`]). `gatehouse
/// token` asks the same before it mints one.
pub fn check_sub(sub: &str) -> Result<(), IdError> {
    check_name("sub", sub)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("an object"),
        }
    }

    #[test]
    fn the_default_reads_roles_role_and_scope() {
        let p = ClaimMapping::default()
            .principal(&claims(json!({
                "sub": "alice", "roles": ["a", "b"], "role": "admin", "scope": "x  y"
            })))
            .unwrap();
        assert_eq!(p.roles, ["a", "b", "admin"]);
        assert_eq!(p.scopes, ["x", "y"]);
        let p = ClaimMapping::default()
            .principal(&claims(
                json!({ "sub": "svc", "roles": "admin", "scope": ["s1"] }),
            ))
            .unwrap();
        assert_eq!(
            (p.roles, p.scopes),
            (vec!["admin".into()], vec!["s1".into()])
        );
    }

    #[test]
    fn keycloak_and_auth0_shapes_are_read_where_configured() {
        let keycloak = ClaimMapping {
            roles: ClaimPath::new("/resource_access/gatehouse/roles"),
            scopes: None,
            user_prefix: None,
        };
        let token = claims(json!({
            "sub": "8d9f-4e1b",
            "realm_access": { "roles": ["offline_access"] },
            "resource_access": { "gatehouse": { "roles": ["admin"] } },
            "roles": ["ignored: another claim is configured"],
            "scope": "openid gatehouse:validate"
        }));
        let p = keycloak.principal(&token).unwrap();
        assert_eq!(p.roles, ["admin"]);
        assert_eq!(p.scopes, ["openid", "gatehouse:validate"]);
        assert!(p.is_admin());

        let auth0 = ClaimMapping {
            roles: ClaimPath::new("https://chat.example.com/roles"),
            scopes: ClaimPath::new("permissions"),
            user_prefix: None,
        };
        let token = claims(json!({
            "sub": "auth0|42",
            "https://chat.example.com/roles": ["admin"],
            "permissions": ["gatehouse:claim"],
            "scope": "openid"
        }));
        let p = auth0.principal(&token).unwrap();
        assert_eq!(
            (p.roles, p.scopes),
            (vec!["admin".into()], vec!["gatehouse:claim".into()])
        );
        // A pointer segment naming a claim with slashes in it.
        let escaped = ClaimMapping {
            roles: ClaimPath::new("/https:~1~1chat.example.com~1roles"),
            scopes: None,
            user_prefix: None,
        };
        assert_eq!(escaped.principal(&token).unwrap().roles, ["admin"]);
    }

    #[test]
    fn a_value_placed_at_a_path_is_read_back_from_it() {
        for path in [
            "/resource_access/gatehouse/roles",
            "https://x.example/roles",
            "/a~1b",
        ] {
            let path = ClaimPath::new(path).unwrap();
            let mut claims = Map::new();
            claims.insert("sub".into(), json!("alice"));
            path.place(&mut claims, json!(["admin"]));
            let mapping = ClaimMapping {
                roles: Some(path.clone()),
                scopes: None,
                user_prefix: None,
            };
            assert_eq!(
                mapping.principal(&claims).unwrap().roles,
                ["admin"],
                "{path}"
            );
        }
    }

    #[test]
    fn a_claim_of_another_shape_refuses_the_token() {
        let mapping = ClaimMapping {
            roles: ClaimPath::new("/realm_access/roles"),
            scopes: None,
            user_prefix: None,
        };
        for bad in [
            json!({ "sub": "a", "realm_access": { "roles": [1] } }),
            json!({ "sub": "a", "realm_access": { "roles": { "admin": true } } }),
            json!({ "sub": "a", "scope": 7 }),
            json!({ "sub": 7 }),
            json!({ "sub": "a", "iss": ["x"] }),
        ] {
            let refused = mapping.principal(&claims(bad.clone())).unwrap_err();
            assert_eq!(refused.reason(), "claims", "{bad}: {refused}");
        }
        // Absent is no roles, not a refusal.
        let p = mapping.principal(&claims(json!({ "sub": "a" }))).unwrap();
        assert!(p.roles.is_empty());
        assert!(ClaimPath::new("  ").is_none());
    }

    #[test]
    fn a_user_prefix_makes_the_issuers_users_its_own() {
        let token = claims(json!({ "sub": "user-42" }));
        let prefixed = ClaimMapping {
            user_prefix: Some("kc:".into()),
            ..ClaimMapping::default()
        };
        assert_eq!(prefixed.principal(&token).unwrap().sub, "kc:user-42");
        assert_eq!(
            ClaimMapping::default().principal(&token).unwrap().sub,
            "user-42"
        );
        for good in ["kc:", "auth0.partner-1:", "a_b:"] {
            assert!(check_user_prefix(good).is_ok(), "{good}");
        }
        // One ':' and only at the end: else "a:" + "b:c" and "a:b:" + "c" would both be a:b:c.
        for bad in ["", ":", "kc", "a:b:", "k c:", "kc::", "é:"] {
            assert!(check_user_prefix(bad).is_err(), "{bad}");
        }
    }
}
