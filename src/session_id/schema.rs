//! The identifier rules of this module as JSON Schema, for the OpenAPI document.
//!
//! The published document must say what the server enforces (`.ci/fuzz-api` holds it to that
//! with a fuzzer), so the schemas of session ids and names are written here, beside the code
//! they describe: the name pattern is built from the same character tables that
//! [`check_name`](super::check_name) refuses ([`WHITESPACE`], [`CONTROL`], [`INVISIBLE`]), and
//! the tests at the bottom check that each pattern accepts exactly what the code accepts.
//!
//! Patterns use only what ECMA-262 (with `u`), Python's `re` and Rust's `regex` read alike:
//! ASCII classes, `\uXXXX` for code points of the Basic Multilingual Plane, and the character
//! itself above it (no escape is spelled the same in all three).

use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::schema::SchemaType;
use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Schema, Type};

use super::{MAX_NAME_LEN, MAX_SESSION_ID_LEN};

/// Unicode's White_Space characters (what `char::is_whitespace` is true for).
pub const WHITESPACE: &[(char, char)] = &[
    ('\u{0009}', '\u{000D}'),
    ('\u{0020}', '\u{0020}'),
    ('\u{0085}', '\u{0085}'),
    ('\u{00A0}', '\u{00A0}'),
    ('\u{1680}', '\u{1680}'),
    ('\u{2000}', '\u{200A}'),
    ('\u{2028}', '\u{2029}'),
    ('\u{202F}', '\u{202F}'),
    ('\u{205F}', '\u{205F}'),
    ('\u{3000}', '\u{3000}'),
];

/// Unicode's control characters, general category Cc (what `char::is_control` is true for).
pub const CONTROL: &[(char, char)] = &[('\u{0000}', '\u{001F}'), ('\u{007F}', '\u{009F}')];

/// Invisible formatting characters: Unicode's format characters (general category Cf, Unicode
/// 16: bidi controls, zero-width spaces and joiners, word joiner, BOM, tag characters...) and
/// the other default-ignorable code points (variation selectors, Hangul fillers, the combining
/// grapheme joiner). [`super::is_invisible`] reads this table.
pub const INVISIBLE: &[(char, char)] = &[
    ('\u{00AD}', '\u{00AD}'),
    ('\u{034F}', '\u{034F}'),
    ('\u{0600}', '\u{0605}'),
    ('\u{061C}', '\u{061C}'),
    ('\u{06DD}', '\u{06DD}'),
    ('\u{070F}', '\u{070F}'),
    ('\u{0890}', '\u{0891}'),
    ('\u{08E2}', '\u{08E2}'),
    ('\u{115F}', '\u{1160}'),
    ('\u{17B4}', '\u{17B5}'),
    ('\u{180B}', '\u{180F}'),
    ('\u{200B}', '\u{200F}'),
    ('\u{202A}', '\u{202E}'),
    ('\u{2060}', '\u{206F}'),
    ('\u{3164}', '\u{3164}'),
    ('\u{FE00}', '\u{FE0F}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFA0}', '\u{FFA0}'),
    ('\u{FFF0}', '\u{FFFB}'),
    ('\u{110BD}', '\u{110BD}'),
    ('\u{110CD}', '\u{110CD}'),
    ('\u{13430}', '\u{1343F}'),
    ('\u{1BCA0}', '\u{1BCA3}'),
    ('\u{1D173}', '\u{1D17A}'),
    ('\u{E0000}', '\u{E0FFF}'),
];

// Pieces of the session id patterns (macros, so that the patterns are `&'static str`
// constants assembled with `concat!`).
macro_rules! hex {
    () => {
        "[0-9A-Fa-f]"
    };
}
macro_rules! hyphenated {
    () => {
        concat!(
            hex!(),
            "{8}-",
            hex!(),
            "{4}-",
            hex!(),
            "{4}-",
            hex!(),
            "{4}-",
            hex!(),
            "{12}"
        )
    };
}
/// 8-4-4-4-12 or 32 hex digits ([`super::uuid`]'s `uuid_body`).
macro_rules! uuid_body {
    () => {
        concat!("(?:", hyphenated!(), "|", hex!(), "{32})")
    };
}
macro_rules! urn_uuid {
    () => {
        "[Uu][Rr][Nn]:[Uu][Uu][Ii][Dd]:"
    };
}
/// What Python's `uuid.UUID` removes before reading digits: hyphens, `urn:`, and `uuid:`
/// (removed after every `urn:`, so also with `urn:`s inside it: `uuurn:id:` is one).
macro_rules! python_noise {
    () => {
        concat!(
            "(?:-|[Uu][Rr][Nn]:|[Uu](?:[Uu][Rr][Nn]:)*[Uu](?:[Uu][Rr][Nn]:)*",
            "[Ii](?:[Uu][Rr][Nn]:)*[Dd](?:[Uu][Rr][Nn]:)*:)"
        )
    };
}
macro_rules! python_digit {
    () => {
        concat!("[0-9A-Fa-f_]", python_noise!(), "*")
    };
}
/// Python's reading: 32 digits (hex or `_`, the first two perhaps `0x`) among the noise.
macro_rules! python {
    () => {
        concat!(
            python_noise!(),
            "*(?:0",
            python_noise!(),
            "*[Xx]",
            python_noise!(),
            "*(?:",
            python_digit!(),
            "){30}|(?:",
            python_digit!(),
            "){32})"
        )
    };
}
/// Java's and .NET's reading: five groups of hex digits, each perhaps after `0x`, trailing
/// hyphens ignored.
macro_rules! five_groups {
    () => {
        concat!("(?:(?:0[Xx])?", hex!(), "+-){4}(?:0[Xx])?", hex!(), "+-*")
    };
}
macro_rules! id_char {
    () => {
        "[A-Za-z0-9._:-]"
    };
}
macro_rules! id_char_but_dot {
    () => {
        "[A-Za-z0-9_:-]"
    };
}

/// The session id grammar (without the UUID rules): 1–256 characters of `[A-Za-z0-9._:-]`.
pub const SESSION_ID_GRAMMAR: &str = "^[A-Za-z0-9._:-]{1,256}$";

/// The spellings of a UUID that are read as one ([`super::SessionId::parse`]): in braces,
/// after `urn:uuid:`, or bare; 8-4-4-4-12 or 32 hex digits, any case.
pub const UUID_SPELLINGS: &str = concat!(
    "^(?:\\{",
    uuid_body!(),
    "\\}|(?:",
    urn_uuid!(),
    ")?",
    uuid_body!(),
    ")$"
);

/// The near-UUIDs refused although they fit [`SESSION_ID_GRAMMAR`] (see [`super`]'s module
/// docs): matching any of these (and not [`UUID_SPELLINGS`]) is a 400.
pub const NEAR_UUIDS: [&str; 6] = [
    // `urn:uuid:` before something that is not a UUID.
    concat!("^", urn_uuid!()),
    // Python's `uuid.UUID`.
    concat!("^", python!(), "$"),
    // Go's `uuid.Parse`: 38 bytes around a hyphenated UUID.
    concat!("^", id_char!(), hyphenated!(), id_char!(), "$"),
    // Java's `UUID.fromString`, .NET's `Guid.Parse`.
    concat!("^", five_groups!(), "$"),
    // Any of those, or a UUID, before the first dot (a format suffix)...
    concat!(
        "^(?:(?:",
        urn_uuid!(),
        ")?",
        uuid_body!(),
        "|",
        python!(),
        "|",
        id_char_but_dot!(),
        hyphenated!(),
        id_char_but_dot!(),
        "|",
        five_groups!(),
        ")\\."
    ),
    // ...or before the last one (only Go's reading can hold a dot: at either end).
    concat!("^", id_char!(), hyphenated!(), id_char!(), "\\.[^.]*$"),
];

/// A regex character class body (without the brackets) of `ranges`.
fn class(ranges: &[&[(char, char)]]) -> String {
    let escaped = |c: char| {
        if u32::from(c) <= 0xFFFF {
            format!("\\u{:04X}", u32::from(c))
        } else {
            c.to_string()
        }
    };
    let mut out = String::new();
    for &(first, last) in ranges.iter().copied().flatten() {
        out.push_str(&escaped(first));
        if last != first {
            out.push('-');
            out.push_str(&escaped(last));
        }
    }
    out
}

/// The pattern of a user, owner or endpoint name ([`super::check_name`]): no whitespace,
/// control or invisible formatting character. The length (1–256 characters) is the schema's
/// `minLength` and `maxLength`.
pub fn name_pattern() -> String {
    format!("^[^{}]+$", class(&[WHITESPACE, CONTROL, INVISIBLE]))
}

/// The pattern of a text that is not blank: it holds a character that is not whitespace (the
/// whitespace `str::trim` removes).
pub fn not_blank_pattern() -> String {
    format!("[^{}]", class(&[WHITESPACE]))
}

fn string_schema(pattern: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::String))
        .pattern(Some(pattern))
}

/// The schema of a name (the `Name` component).
pub fn name_schema() -> Schema {
    string_schema(&name_pattern())
        .min_length(Some(1))
        .max_length(Some(MAX_NAME_LEN))
        .description(Some(format!(
            "A user, owner or endpoint name: 1-{MAX_NAME_LEN} characters, none of them \
             whitespace, a control character or an invisible formatting character."
        )))
        .into()
}

/// The schema of a session id (the `SessionId` component): a UUID spelling, or the grammar
/// without the near-UUIDs.
pub fn session_id_schema() -> Schema {
    let near_uuids = NEAR_UUIDS.iter().fold(AnyOfBuilder::new(), |any, pattern| {
        any.item(string_schema(pattern))
    });
    // utoipa has no `not`; JSON Schema reads it wherever it stands in the object.
    let not_near_uuid =
        serde_json::to_value(Schema::from(near_uuids.build())).expect("a schema serialises");
    let not_near_uuid: Extensions = [("not", not_near_uuid)].into_iter().collect();
    let grammar = string_schema(SESSION_ID_GRAMMAR).extensions(Some(not_near_uuid));
    AnyOfBuilder::new()
        .item(string_schema(UUID_SPELLINGS))
        .item(grammar)
        .schema_type(SchemaType::new(Type::String))
        .description(Some(format!(
            "A session id: 1-{MAX_SESSION_ID_LEN} characters of `[A-Za-z0-9._:-]`. A UUID is \
             one session in every common spelling (upper case, no hyphens, in braces, after \
             `urn:uuid:`), answered lower case with hyphens; what a lenient UUID parser would \
             read as a UUID without being one of those spellings is refused (hyphens \
             elsewhere, `uuid:`, `0x`, `_` among 32 hex digits, five groups of hex digits, 38 \
             characters around a UUID, `urn:uuid:` before anything else, and any of these or \
             a UUID before a dot). Under `GATEHOUSE_SESSION_IDS=exact` ids are the grammar \
             alone, compared as written."
        )))
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session_id::{SessionId, check_name};
    use proptest::prelude::*;
    use regex::Regex;

    fn in_table(table: &[(char, char)], c: char) -> bool {
        table
            .iter()
            .any(|&(first, last)| (first..=last).contains(&c))
    }

    #[test]
    fn the_tables_are_the_standard_library_predicates() {
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            assert_eq!(
                in_table(WHITESPACE, c),
                c.is_whitespace(),
                "U+{:04X}",
                c as u32
            );
            assert_eq!(in_table(CONTROL, c), c.is_control(), "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn the_name_pattern_accepts_every_character_check_name_does() {
        let pattern = Regex::new(&name_pattern()).unwrap();
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            let one = c.to_string();
            assert_eq!(
                pattern.is_match(&one),
                check_name("user", &one).is_ok(),
                "U+{:04X}",
                c as u32
            );
        }
        // The length is counted in characters, as JSON Schema counts it.
        assert!(check_name("user", &"é".repeat(MAX_NAME_LEN)).is_ok());
        assert!(check_name("user", &"é".repeat(MAX_NAME_LEN + 1)).is_err());
        assert!(check_name("user", "").is_err());
    }

    #[test]
    fn the_not_blank_pattern_is_what_trim_leaves() {
        let pattern = Regex::new(&not_blank_pattern()).unwrap();
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            let text = format!(" {c}\t");
            assert_eq!(
                pattern.is_match(&text),
                !text.trim().is_empty(),
                "U+{:04X}",
                c as u32
            );
        }
    }

    struct Compiled {
        spellings: Regex,
        grammar: Regex,
        near: Vec<Regex>,
    }

    impl Compiled {
        fn new() -> &'static Self {
            static COMPILED: std::sync::LazyLock<Compiled> =
                std::sync::LazyLock::new(|| Compiled {
                    spellings: Regex::new(UUID_SPELLINGS).unwrap(),
                    grammar: Regex::new(SESSION_ID_GRAMMAR).unwrap(),
                    near: NEAR_UUIDS.iter().map(|p| Regex::new(p).unwrap()).collect(),
                });
            &COMPILED
        }

        /// What the published schema says of `raw`.
        fn accepts(&self, raw: &str) -> bool {
            self.spellings.is_match(raw)
                || (self.grammar.is_match(raw) && !self.near.iter().any(|r| r.is_match(raw)))
        }
    }

    fn agree(compiled: &Compiled, raw: &str) -> Result<(), String> {
        let server = SessionId::parse(raw).is_ok();
        if compiled.accepts(raw) == server {
            Ok(())
        } else {
            Err(format!(
                "{raw:?}: server accepts: {server}, schema accepts: {}",
                !server
            ))
        }
    }

    #[test]
    fn the_session_id_schema_agrees_on_the_examples() {
        let compiled = Compiled::new();
        for raw in [
            "s1",
            "session_1234",
            "3f2b8c1e-6a4d-4a43-9d36-2f0e6c1b8a77",
            "{3F2B8C1E6A4D4A439D362F0E6C1B8A77}",
            "URN:UUID:3f2b8c1e-6a4d-4a43-9d36-2f0e6c1b8a77",
            "urn:uuid:session_1234",
            "urn:uuid:",
            "uuid:3f2b8c1e-6a4d-4a43-9d36-2f0e6c1b8a77",
            "uuurn:id:3f2b8c1e6a4d4a439d362f0e6c1b8a77",
            "urnurn::3f2b8c1e6a4d4a439d362f0e6c1b8a77",
            "0x3f2b8c6a4d4a439d362f0e6c1b8a77",
            "0_3f2b8c6a4d4a439d362f0e6c1b8a77",
            "________________________________",
            "0x______________________________",
            "1-2-3-4-5",
            "1-2-3-4-5--",
            "1-2-3-4--5",
            "0x-0x1-2-3-4",
            "dead-beef-cafe-babe-face",
            "_3f2b8c1e-6a4d-4a43-9d36-2f0e6c1b8a77_",
            "3f2b8c1e-6a4d-4a43-9d36-2f0e6c1b8a77.json",
            "..3f2b8c1e-6a4d-4a43-9d36-2f0e6c1b8a77..x",
            ".3f2b8c1e-6a4d-4a43-9d36-2f0e6c1b8a77..x",
            "x.1-2-3-4-5.y",
            "1-2-3-4-5.x.y",
            "chat-1728201960-3f2b8c1e-6a4d-4a43-9d36-2f0e6c1b8a77",
            "a:b.c",
            "é",
            "",
            &"a".repeat(MAX_SESSION_ID_LEN),
            &"a".repeat(MAX_SESSION_ID_LEN + 1),
        ] {
            agree(compiled, raw).unwrap();
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn the_session_id_schema_agrees_on_uuid_like_ids(
            raw in "(urn:|uuid:|URN:UUID:|u|-|_|0x|0X|[0-9a-fA-F]{1,12}|\\.|[g-z:]|\\{|\\}){0,14}"
        ) {
            let compiled = Compiled::new();
            prop_assert!(agree(compiled, &raw).is_ok(), "{}", agree(compiled, &raw).unwrap_err());
        }

        #[test]
        fn the_session_id_schema_agrees_around_uuids(
            before in "[A-Za-z0-9._:{-]{0,2}",
            uuid in "[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9A-F]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}",
            after in "[A-Za-z0-9._:}-]{0,6}",
        ) {
            let compiled = Compiled::new();
            let raw = format!("{before}{uuid}{after}");
            prop_assert!(agree(compiled, &raw).is_ok(), "{}", agree(compiled, &raw).unwrap_err());
        }

        #[test]
        fn the_session_id_schema_agrees_on_any_id(raw in "[A-Za-z0-9._:{}-]{0,40}|.{0,300}") {
            let compiled = Compiled::new();
            prop_assert!(agree(compiled, &raw).is_ok(), "{}", agree(compiled, &raw).unwrap_err());
        }
    }
}
