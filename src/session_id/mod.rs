//! Validated identifiers that reach the store: session ids, user names and endpoint names.
//!
//! Anything that becomes part of a Redis key is checked here first, so a malformed id is a
//! 400 at the edge and never a lookup (DESIGN §2).
//!
//! One session, one spelling: backends read UUID-shaped ids as UUIDs, so `3F2B8C1E-…`,
//! `3f2b8c1e6a4d…` (no hyphens), `{3f2b8c1e-…}` and `urn:uuid:3f2b8c1e-…` name the session
//! `3f2b8c1e-…` there. If gatehouse compared them as strings, each would be a different,
//! claimable session that the backend serves as the same one. [`SessionId::parse`] therefore
//! rewrites every such spelling to the lower-case hyphenated form, and every entry point reads
//! ids through the [`SessionIds`] policy it was built with (`GATEHOUSE_SESSION_IDS`), so that
//! `exact` (compare as written, for backends that do) reaches all of them alike. Recognised:
//!
//! - 8-4-4-4-12 hex digits, or 32 hex digits with no hyphens, in any case;
//! - either of those in braces (`{` and `}` are outside the id grammar and allowed only there)
//!   or after `urn:uuid:` (any case).
//!
//! Near-UUIDs are refused (400), not guessed: whatever a widely used lenient UUID parser reads
//! as a UUID (`uuid::read_leniently`: Python's `uuid.UUID`, Go's `google/uuid`, Java's
//! `UUID.fromString`, .NET's `Guid.Parse`), so hyphens in another layout, `uuid:…` and
//! `urn:…`, `0x` prefixes and `_` between digits, a 38-byte string around a hyphenated UUID,
//! five groups of hex digits of any length (`1-2-3-4-5`, leading zeros); a UUID or
//! near-UUID before a dot (`{uuid}.json`: routers cut format suffixes off before parsing);
//! and a `urn:uuid:` prefix before anything that is not a UUID. Every other id is kept as
//! written (a UUID inside a longer id, `chat-1728201960-{uuid}`, is no parser's UUID).

use std::fmt;

use serde::{Deserialize, Serialize};

#[cfg(test)]
use self::uuid::URN_UUID;
use self::uuid::{Spelling, uuid_spelling};

pub mod schema;
mod uuid;

/// Longest accepted session id, in bytes.
pub const MAX_SESSION_ID_LEN: usize = 256;
/// Longest accepted user or endpoint name, in characters (as JSON Schema's `maxLength`
/// counts them).
pub const MAX_NAME_LEN: usize = 256;

/// Why an identifier was refused; the message is shown to the caller as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The session id is empty, too long, or has a character outside `[A-Za-z0-9._:-]`.
    #[error(
        "session ids are 1-{MAX_SESSION_ID_LEN} characters of A-Z, a-z, 0-9, '.', '_', ':' and '-' (a UUID may also be written in braces); the 32 hex digits of a UUID are grouped 8-4-4-4-12 or not at all"
    )]
    InvalidSessionId,
    /// A user or endpoint name is empty, too long, or holds whitespace, control or invisible
    /// formatting characters.
    #[error(
        "{what} must be 1-{MAX_NAME_LEN} characters with no whitespace, control or invisible formatting characters"
    )]
    InvalidName {
        /// Which name: `user`, `owner`, `endpoint`...
        what: &'static str,
    },
}

/// A chat session id: 1–256 bytes of `[A-Za-z0-9._:-]`; a UUID in its canonical spelling
/// unless it was read with [`SessionIds::Exact`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct SessionId(String);

impl SessionId {
    /// Reads a session id, writing a UUID in any recognised spelling (module docs) as lower
    /// case with hyphens. Entry points read through their [`SessionIds`] instead, so that
    /// `GATEHOUSE_SESSION_IDS=exact` reaches them.
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        match uuid_spelling(raw) {
            Spelling::Uuid(canonical) => Ok(Self(canonical)),
            Spelling::Ambiguous => Err(IdError::InvalidSessionId),
            Spelling::Other => Self::parse_exact(raw),
        }
    }

    /// Checks `raw` against the session id grammar and keeps it as written: for
    /// [`SessionIds::Exact`] and for ids read back from the store, whose keys are what they are.
    pub fn parse_exact(raw: &str) -> Result<Self, IdError> {
        let valid = !raw.is_empty()
            && raw.len() <= MAX_SESSION_ID_LEN
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        if valid {
            Ok(Self(raw.to_owned()))
        } else {
            Err(IdError::InvalidSessionId)
        }
    }

    /// The id as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The canonical spelling of `raw` when it is a UUID written in another one (what
    /// `gatehouse migrate` looks for in existing owner keys); `None` otherwise.
    pub fn canonical_form(raw: &str) -> Option<String> {
        match uuid_spelling(raw) {
            Spelling::Uuid(canonical) if canonical != raw => Some(canonical),
            _ => None,
        }
    }
}

/// How entry points read the session ids callers send (`GATEHOUSE_SESSION_IDS`).
///
/// Every entry point (validate, batch, forward-auth, the ownership middleware, the sessions
/// API, backfill) takes it from the [`crate::gatekeeper::Gatekeeper`] it was built with, so
/// they cannot disagree on what one session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SessionIds {
    /// A UUID in any recognised spelling is one session, written lower case with hyphens
    /// (the default).
    #[default]
    Canonical,
    /// Ids are compared exactly as written (the behaviour before issue 14), for backends
    /// that do the same.
    Exact,
}

impl SessionIds {
    /// Reads a session id a caller sent.
    pub fn parse(self, raw: &str) -> Result<SessionId, IdError> {
        match self {
            Self::Canonical => SessionId::parse(raw),
            Self::Exact => SessionId::parse_exact(raw),
        }
    }
}

impl std::str::FromStr for SessionIds {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        match raw.to_ascii_lowercase().as_str() {
            "canonical" => Ok(Self::Canonical),
            "exact" => Ok(Self::Exact),
            _ => Err("expected canonical or exact".into()),
        }
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Deserialises like [`SessionId::parse`] (canonical).
impl<'de> Deserialize<'de> for SessionId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// Checks a user or endpoint name: 1–256 characters, no whitespace, no control characters, no
/// invisible formatting characters ([`is_invisible`]).
///
/// User names come from JWT `sub` claims, so they are deliberately broader than session ids
/// (`auth0|42`, `alice@example.com`); they only ever appear as the tail of a Redis key or as a
/// value, where any byte is safe. But they are read by people (audit, dashboards, admin
/// changes): `alice\u{200B}` would be another user that looks like `alice`, and a bidi override
/// makes a name display as a different one, so characters that change how a name looks without
/// being seen are refused.
pub fn check_name(what: &'static str, name: &str) -> Result<(), IdError> {
    let valid = !name.is_empty()
        && name.chars().count() <= MAX_NAME_LEN
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || is_invisible(c));
    if valid {
        Ok(())
    } else {
        Err(IdError::InvalidName { what })
    }
}

/// Whether `c` is an invisible formatting character ([`schema::INVISIBLE`]).
pub fn is_invisible(c: char) -> bool {
    schema::INVISIBLE
        .iter()
        .any(|&(first, last)| (first..=last).contains(&c))
}

/// The schema of a user, owner or endpoint name as the API takes it ([`check_name`]), for the
/// OpenAPI document (`#[schema(value_type = Name)]` on a `String`).
pub struct Name;

impl utoipa::PartialSchema for Name {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        schema::name_schema().into()
    }
}

impl utoipa::ToSchema for Name {}

impl utoipa::PartialSchema for SessionId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        schema::session_id_schema().into()
    }
}

impl utoipa::ToSchema for SessionId {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_the_legacy_shapes() {
        for id in [
            "3f2b8c1e-6a4d-4a43-9d36-2f0e6c1b8a77",
            "session_1234",
            "test-session-abc",
            "chat-1728201960-3f2b8c1e-6a4d-4a43-9d36-2f0e6c1b8a77",
            "a:b.c",
        ] {
            assert!(SessionId::parse(id).is_ok(), "{id}");
        }
    }

    #[test]
    fn refuses_what_could_escape_a_key() {
        let too_long = "a".repeat(MAX_SESSION_ID_LEN + 1);
        for id in [
            "",
            "a b",
            "a*",
            "../x",
            "a/b",
            "é",
            "a\nb",
            "{x}",
            too_long.as_str(),
        ] {
            assert_eq!(
                SessionId::parse(id),
                Err(IdError::InvalidSessionId),
                "{id:?}"
            );
        }
        assert!(SessionId::parse(&"a".repeat(MAX_SESSION_ID_LEN)).is_ok());
    }

    #[test]
    fn names_allow_identity_provider_shapes() {
        assert!(check_name("user", "auth0|42").is_ok());
        assert!(check_name("user", "alice@example.com").is_ok());
        assert!(check_name("user", "").is_err());
        assert!(check_name("user", "a b").is_err());
        assert!(check_name("user", "a\u{0}").is_err());
        assert!(
            check_name("user", "zoë").is_ok(),
            "visible non-ASCII is fine"
        );
    }

    #[test]
    fn names_refuse_invisible_formatting_characters() {
        for c in [
            '\u{200B}',
            '\u{200C}',
            '\u{200D}',
            '\u{200E}',
            '\u{200F}',
            '\u{202A}',
            '\u{202B}',
            '\u{202C}',
            '\u{202D}',
            '\u{202E}',
            '\u{2060}',
            '\u{2066}',
            '\u{2067}',
            '\u{2068}',
            '\u{2069}',
            '\u{FEFF}',
            '\u{00AD}',
            '\u{061C}',
            '\u{180E}',
            '\u{FE0F}',
            '\u{E0041}',
            '\u{3164}',
        ] {
            for name in [
                format!("alice{c}"),
                format!("{c}alice"),
                format!("al{c}ice"),
            ] {
                assert_eq!(
                    check_name("user", &name),
                    Err(IdError::InvalidName { what: "user" }),
                    "U+{:04X}",
                    c as u32
                );
            }
        }
    }

    const CANONICAL: &str = "3f2b8c1e-6a4d-4a43-9d36-2f0e6c1b8a77";

    #[test]
    fn every_common_spelling_of_a_uuid_is_one_id() {
        for raw in [
            CANONICAL,
            "3F2B8C1E-6A4D-4A43-9D36-2F0E6C1B8A77",
            "3f2B8c1E-6a4D-4a43-9D36-2f0E6c1B8a77",
            "3f2b8c1e6a4d4a439d362f0e6c1b8a77",
            "3F2B8C1E6A4D4A439D362F0E6C1B8A77",
            "{3f2b8c1e-6a4d-4a43-9d36-2f0e6c1b8a77}",
            "{3F2B8C1E6A4D4A439D362F0E6C1B8A77}",
            "urn:uuid:3f2b8c1e-6a4d-4a43-9d36-2f0e6c1b8a77",
            "URN:UUID:3F2B8C1E-6A4D-4A43-9D36-2F0E6C1B8A77",
            "Urn:Uuid:3f2b8c1e6a4d4a439d362f0e6c1b8a77",
        ] {
            assert_eq!(SessionId::parse(raw).unwrap().as_str(), CANONICAL, "{raw}");
            assert_eq!(
                SessionIds::Canonical.parse(raw).unwrap().as_str(),
                CANONICAL
            );
        }
        assert_eq!(SessionId::canonical_form(CANONICAL), None);
        assert_eq!(
            SessionId::canonical_form("3F2B8C1E-6A4D-4A43-9D36-2F0E6C1B8A77").as_deref(),
            Some(CANONICAL)
        );
    }

    #[test]
    fn exact_keeps_todays_behaviour() {
        let upper = "3F2B8C1E-6A4D-4A43-9D36-2F0E6C1B8A77";
        assert_eq!(SessionIds::Exact.parse(upper).unwrap().as_str(), upper);
        let urn = "urn:uuid:3f2b8c1e-6a4d-4a43-9d36-2f0e6c1b8a77";
        assert_eq!(SessionIds::Exact.parse(urn).unwrap().as_str(), urn);
        assert!(
            SessionIds::Exact
                .parse("{3f2b8c1e-6a4d-4a43-9d36-2f0e6c1b8a77}")
                .is_err()
        );
        assert_eq!("exact".parse(), Ok(SessionIds::Exact));
        assert_eq!("Canonical".parse(), Ok(SessionIds::Canonical));
        assert!("loose".parse::<SessionIds>().is_err());
    }

    #[test]
    fn near_uuids_and_braces_around_other_ids_are_refused() {
        for raw in [
            "3f2b8c1e6a4d-4a43-9d36-2f0e6c1b8a77",
            "3f2b-8c1e-6a4d-4a43-9d36-2f0e-6c1b-8a77",
            "-3f2b8c1e6a4d4a439d362f0e6c1b8a77",
            "urn:uuid:session_1234",
            "urn:uuid:",
            "urn:uuid:{3f2b8c1e-6a4d-4a43-9d36-2f0e6c1b8a77}",
            "{urn:uuid:3f2b8c1e-6a4d-4a43-9d36-2f0e6c1b8a77}",
            "{session_1234}",
            "{3f2b8c1e-6a4d-4a43-9d36-2f0e6c1b8a7}",
            "{}",
            "{3f2b8c1e-6a4d-4a43-9d36-2f0e6c1b8a77",
            // lenient parsers (review rv-fa): Go's 38 bytes, Python's prefixes, Java's groups
            "_3f2b8c1e-6a4d-4a43-9d36-2f0e6c1b8a77_",
            "03f2b8c1e-6a4d-4a43-9d36-2f0e6c1b8a770",
            ":3f2b8c1e-6a4d-4a43-9d36-2f0e6c1b8a77:",
            "uuid:3f2b8c1e-6a4d-4a43-9d36-2f0e6c1b8a77",
            "UUID:3f2b8c1e6a4d4a439d362f0e6c1b8a77",
            "urn:3f2b8c1e6a4d4a439d362f0e6c1b8a77",
            "3f2burn:8c1e6a4d4a439d362f0e6c1b8a77",
            "1-2-3-4-5",
            "dead-beef-cafe-babe-face",
            "3F2B8C1E-6A4D-4A43-9D36-2F0E6C1B8A7",
            // integer readings (review rv-r2): Python's int(_, 16), JDK 8, .NET's 0x groups
            "0x3f2b8c6a4d4a439d362f0e6c1b8a77",
            "0_3f2b8c6a4d4a439d362f0e6c1b8a77",
            "03f2b8c1e-6a4d-4a43-9d36-2f0e6c1b8a77",
            "3f2b8c1e-6a4d-4a43-9d36-00002f0e6c1b8a77",
            "0x3f2b8c-6a4d-4a43-9d36-2f0e6c1b8a77",
            "3f2b8c1e-6a4d-4a43-9d36-2f0e6c1b8a77--",
            // format suffixes
            "3f2b8c1e-6a4d-4a43-9d36-2f0e6c1b8a77.json",
            "3F2B8C1E6A4D4A439D362F0E6C1B8A77.tar.gz",
            "1-2-3-4-5.xml",
        ] {
            assert_eq!(
                SessionId::parse(raw),
                Err(IdError::InvalidSessionId),
                "{raw}"
            );
        }
    }

    #[test]
    fn other_ids_are_kept_as_written() {
        for raw in [
            "Session_1234",
            "chat-1728201960-3F2B8C1E-6A4D-4A43-9D36-2F0E6C1B8A77",
            "3F2B8C1E",
            "1-2-3-4",
            "v1.3f2b8c1e",
            "uuid:3F2B8C1E-6A4D-4A43-9D36-2F0E6C1B8A77x",
        ] {
            assert_eq!(SessionId::parse(raw).unwrap().as_str(), raw);
        }
    }

    /// Every recognised spelling of the UUID `bytes`, cases chosen by `mask`.
    fn spellings(bytes: [u8; 16], mask: u64) -> Vec<String> {
        let simple: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let hyphenated = format!(
            "{}-{}-{}-{}-{}",
            &simple[..8],
            &simple[8..12],
            &simple[12..16],
            &simple[16..20],
            &simple[20..]
        );
        let mixed = |s: &str| -> String {
            s.chars()
                .enumerate()
                .map(|(i, c)| {
                    if mask >> (i % 64) & 1 == 1 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect()
        };
        let mut out = Vec::new();
        for body in [&simple, &hyphenated] {
            out.push(body.clone());
            out.push(body.to_ascii_uppercase());
            out.push(mixed(body));
            out.push(format!("{{{}}}", mixed(body)));
            out.push(mixed(&format!("urn:uuid:{body}")));
        }
        out
    }

    proptest! {
        #[test]
        fn all_spellings_of_a_uuid_give_its_canonical_id(bytes in any::<[u8; 16]>(), mask in any::<u64>()) {
            let canonical = ::uuid::Uuid::from_bytes(bytes).hyphenated().to_string();
            for raw in spellings(bytes, mask) {
                prop_assert_eq!(SessionId::parse(&raw).map(|id| id.0), Ok(canonical.clone()), "{}", raw);
            }
        }

        #[test]
        fn canonicalising_is_idempotent(raw in "[{]?[A-Za-z0-9._:-]{0,40}[}]?") {
            if let Ok(id) = SessionId::parse(&raw) {
                prop_assert_eq!(SessionId::parse(id.as_str()), Ok(id.clone()));
                prop_assert_eq!(SessionId::canonical_form(id.as_str()), None);
            }
        }

        #[test]
        fn ids_that_are_not_uuids_are_untouched(raw in "[g-zG-Z._:][A-Za-z0-9._:-]{0,60}") {
            prop_assume!(!raw.to_ascii_lowercase().starts_with(URN_UUID));
            prop_assert_eq!(SessionId::parse(&raw), SessionId::parse_exact(&raw));
        }

        #[test]
        fn parse_never_panics_and_accepts_only_the_grammar(raw in ".{0,300}") {
            for parsed in [SessionId::parse(&raw), SessionId::parse_exact(&raw)] {
                let Ok(id) = parsed else { continue };
                prop_assert!(id.as_str().len() <= MAX_SESSION_ID_LEN);
                prop_assert!(id.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b".:_-".contains(&b)));
            }
        }
    }
}
