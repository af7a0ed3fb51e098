//! Validated identifiers that reach the store: session ids, user names and endpoint names.
//!
//! Anything that becomes part of a Redis key is checked here first, so a malformed id is a
//! 400 at the edge and never a lookup (DESIGN §2).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest accepted session id, in bytes.
pub const MAX_SESSION_ID_LEN: usize = 256;
/// Longest accepted user or endpoint name, in bytes.
pub const MAX_NAME_LEN: usize = 256;

/// Why an identifier was refused; the message is shown to the caller as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The session id is empty, too long, or has a character outside `[A-Za-z0-9._:-]`.
    #[error(
        "session ids are 1-{MAX_SESSION_ID_LEN} characters of A-Z, a-z, 0-9, '.', '_', ':' and '-'"
    )]
    InvalidSessionId,
    /// A user or endpoint name is empty, too long, or holds whitespace, control or invisible
    /// formatting characters.
    #[error(
        "{what} must be 1-{MAX_NAME_LEN} bytes with no whitespace, control or invisible formatting characters"
    )]
    InvalidName {
        /// Which name: `user`, `owner`, `endpoint`...
        what: &'static str,
    },
}

/// A chat session id: 1–256 bytes of `[A-Za-z0-9._:-]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct SessionId(String);

impl SessionId {
    /// Checks `raw` against the session id grammar.
    pub fn parse(raw: &str) -> Result<Self, IdError> {
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
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SessionId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// Checks a user or endpoint name: 1–256 bytes, no whitespace, no control characters, no
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
        && name.len() <= MAX_NAME_LEN
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || is_invisible(c));
    if valid {
        Ok(())
    } else {
        Err(IdError::InvalidName { what })
    }
}

/// Whether `c` is an invisible formatting character: Unicode's format characters (general
/// category Cf, Unicode 16: bidi controls, zero-width spaces and joiners, word joiner, BOM, tag
/// characters...) and the other default-ignorable code points (variation selectors, Hangul
/// fillers, the combining grapheme joiner).
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

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

    proptest! {
        #[test]
        fn parse_never_panics_and_accepts_only_the_grammar(raw in ".{0,300}") {
            if let Ok(id) = SessionId::parse(&raw) {
                prop_assert!(id.as_str().len() <= MAX_SESSION_ID_LEN);
                prop_assert!(id.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b".:_-".contains(&b)));
            }
        }
    }
}
