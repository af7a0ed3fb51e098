//! The differential property test of the strict path rules (issue 14, acceptance 2).
//!
//! gatehouse decides on its reading of a raw URI; the backend behind the proxy serves its own
//! reading of the same bytes. Each backend below is a small model of a real router family,
//! mapping a method and a raw URI to the session it would serve (or none). Over generated raw
//! URIs (case changes, `;params`, dot segments raw and encoded, percent-encodings and double
//! encodings, extra slashes, look-alike characters, format suffixes, HEAD, POST (method
//! overrides) and other methods), every URI must be
//! refused by gatehouse, or decided on exactly the session every backend that routes it serves,
//! so a caller is never allowed a session it does not own.

use axum::http::Method;
use percent_encoding::percent_decode_str;
use proptest::prelude::*;

use super::matcher::{RouteTable, normalize};

/// gatehouse's table for the backends' two routes.
const ROUTES: &str = "\
chat.messages GET /api/chat/sessions/{session_id}/messages
chat.files    *   /api/chat/sessions/{session_id}/files/*
";

/// The caller owns `s1`; `s2` is someone else's.
const CALLER_OWNS: &str = "s1";

/// How a model backend reads a path before routing it.
#[derive(Debug, Clone, Copy)]
struct Backend {
    name: &'static str,
    /// Static segments compared ignoring case, as Java's `equalsIgnoreCase` does (each
    /// character upper-cased, then lower-cased), so `ſ` matches `s`.
    fold_case: bool,
    /// `;params` cut from each raw segment before decoding (Tomcat, Spring).
    strip_params: bool,
    /// `.` and `..` resolved after decoding (Tomcat, a normalising front proxy); otherwise
    /// they are literal segments (`{id}/*` routers).
    resolve_dots: bool,
    /// Empty segments merged (`merge_slashes`).
    merge_slashes: bool,
    /// Percent-decoded twice (a decoding hop in front of a decoding router).
    decode_twice: bool,
    /// `\` read as `/` (some Windows-rooted servers).
    backslash_is_slash: bool,
    /// The last segment cut at its first dot (Rails `(.:format)`: `messages.json`, `s2.json`).
    format_suffix: bool,
    /// `POST` run as `GET` (a method override: a header, `?_method=` or a form field).
    post_as_get: bool,
}

const BACKENDS: [Backend; 7] = [
    Backend {
        name: "case-insensitive router",
        fold_case: true,
        strip_params: false,
        resolve_dots: false,
        merge_slashes: false,
        decode_twice: false,
        backslash_is_slash: false,
        format_suffix: false,
        post_as_get: false,
    },
    Backend {
        name: "Tomcat/Spring (;params stripped, dots resolved)",
        fold_case: false,
        strip_params: true,
        resolve_dots: true,
        merge_slashes: false,
        decode_twice: false,
        backslash_is_slash: false,
        format_suffix: false,
        post_as_get: false,
    },
    Backend {
        name: "{id}/* router, dots literal",
        fold_case: false,
        strip_params: false,
        resolve_dots: false,
        merge_slashes: false,
        decode_twice: false,
        backslash_is_slash: false,
        format_suffix: false,
        post_as_get: false,
    },
    Backend {
        name: "normalising front (slashes merged, dots resolved)",
        fold_case: false,
        strip_params: false,
        resolve_dots: true,
        merge_slashes: true,
        decode_twice: false,
        backslash_is_slash: false,
        format_suffix: false,
        post_as_get: false,
    },
    Backend {
        name: "double decoding, case-insensitive",
        fold_case: true,
        strip_params: true,
        resolve_dots: true,
        merge_slashes: true,
        decode_twice: true,
        backslash_is_slash: false,
        format_suffix: false,
        post_as_get: false,
    },
    Backend {
        name: "backslash as slash",
        fold_case: false,
        strip_params: false,
        resolve_dots: true,
        merge_slashes: false,
        decode_twice: false,
        backslash_is_slash: true,
        format_suffix: false,
        post_as_get: false,
    },
    Backend {
        name: "Rails (format suffixes, method overrides)",
        fold_case: false,
        strip_params: false,
        resolve_dots: false,
        merge_slashes: false,
        decode_twice: false,
        backslash_is_slash: false,
        format_suffix: true,
        post_as_get: true,
    },
];

fn decode(raw: &str) -> Option<String> {
    percent_decode_str(raw)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

fn same_static(backend: &Backend, segment: &str, word: &str) -> bool {
    if backend.fold_case {
        let fold = |s: &str| -> String {
            s.chars()
                .flat_map(char::to_uppercase)
                .flat_map(char::to_lowercase)
                .collect()
        };
        fold(segment) == fold(word)
    } else {
        segment == word
    }
}

impl Backend {
    /// The session this backend serves for `method` and the raw `uri`, if it routes it.
    fn serves(&self, method: &Method, uri: &str) -> Option<String> {
        let path = uri.split('?').next()?;
        let path = if self.backslash_is_slash {
            path.replace('\\', "/")
        } else {
            path.to_owned()
        };
        let mut segments = Vec::new();
        for raw in path.strip_prefix('/')?.split('/') {
            let raw = if self.strip_params {
                raw.split(';').next().unwrap_or("")
            } else {
                raw
            };
            let mut segment = decode(raw)?;
            if self.decode_twice {
                segment = decode(&segment)?;
            }
            // A decoded slash stays inside its segment: routers split the raw path.
            segments.push(segment);
        }
        if self.merge_slashes {
            segments.retain(|s| !s.is_empty());
        }
        if self.resolve_dots {
            let mut resolved: Vec<String> = Vec::new();
            for segment in segments {
                match segment.as_str() {
                    "." => {}
                    ".." => {
                        resolved.pop();
                    }
                    _ => resolved.push(segment),
                }
            }
            segments = resolved;
        }
        // A trailing slash is tolerated.
        if segments.len() > 1 && segments.last().is_some_and(String::is_empty) {
            segments.pop();
        }
        if self.format_suffix
            && let Some(last) = segments.last_mut()
            && let Some((stem, _)) = last.split_once('.')
        {
            *last = stem.to_owned();
        }
        let is = |i: usize, word: &str| segments.get(i).is_some_and(|s| same_static(self, s, word));
        if !(is(0, "api") && is(1, "chat") && is(2, "sessions")) {
            return None;
        }
        let id = segments.get(3)?.clone();
        let get_like = *method == Method::GET
            || *method == Method::HEAD
            || (self.post_as_get && *method == Method::POST);
        if segments.len() == 5 && is(4, "messages") && get_like {
            return Some(id);
        }
        if segments.len() >= 5 && is(4, "files") {
            return Some(id);
        }
        None
    }
}

/// One segment of a generated URI and how to spell it.
#[derive(Debug, Clone)]
struct Spelling {
    /// Per-character case flips (bit i flips character i).
    case: u16,
    /// 0: as is; 1: one character percent-encoded (upper hex); 2: all (lower hex);
    /// 3: one character double-encoded; 4: `s` as `ſ`, `k` as the Kelvin sign.
    encoding: u8,
    /// 0: none; 1: `;x` appended; 2: `;a=1` appended; 3: `%3Bx` appended.
    params: u8,
    /// 0: none; 1: `./` before; 2: `junk/../` before; 3: `%2e%2e/` after a junk segment;
    /// 4: `.%2E/`; 5: `s1/../` before (a dot segment back from the caller's own session);
    /// 6: `..;/` before; 7: `\..\` before.
    dots: u8,
    /// An extra `/` before the segment.
    extra_slash: bool,
}

fn spelling() -> impl Strategy<Value = Spelling> {
    (
        any::<u16>(),
        prop_oneof![4 => Just(0u8), 1 => 1..5u8],
        prop_oneof![5 => Just(0u8), 1 => 1..4u8],
        prop_oneof![4 => Just(0u8), 1 => 1..8u8],
        prop::bool::weighted(0.1),
    )
        .prop_map(|(case, encoding, params, dots, extra_slash)| Spelling {
            case,
            encoding,
            params,
            dots,
            extra_slash,
        })
}

fn spell(word: &str, how: &Spelling) -> String {
    let mut out = String::new();
    if how.extra_slash {
        out.push('/');
    }
    out.push_str(match how.dots {
        1 => "./",
        2 => "junk/../",
        3 => "junk/%2e%2e/",
        4 => "junk/.%2E/",
        5 => "s1/../",
        6 => "..;/",
        7 => "\\..\\",
        _ => "",
    });
    let cased: String = word
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if how.case >> (i % 16) & 1 == 1 {
                if c.is_ascii_lowercase() {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            } else {
                c
            }
        })
        .collect();
    for (i, c) in cased.chars().enumerate() {
        match how.encoding {
            1 if i == 0 => out.push_str(&format!("%{:02X}", c as u32)),
            2 => out.push_str(&format!("%{:02x}", c as u32)),
            3 if i == 0 => out.push_str(&format!("%25{:02X}", c as u32)),
            4 if c == 's' => out.push_str("%C5%BF"),
            4 if c == 'k' => out.push_str("%E2%84%AA"),
            _ => out.push(c),
        }
    }
    out.push_str(match how.params {
        1 => ";x",
        2 => ";a=1",
        3 => "%3Bx",
        _ => "",
    });
    out
}

/// A generated request: a route-shaped path spelled in many ways, and a method.
fn request() -> impl Strategy<Value = (Method, String)> {
    let shape = prop::sample::select(vec![
        vec!["api", "chat", "sessions", "{id}", "messages"],
        vec!["api", "chat", "sessions", "{id}", "messages.json"],
        vec!["api", "chat", "sessions", "{id}", "files", "f1"],
        vec!["api", "chat", "sessions", "{id}", "files"],
        vec!["api", "chat", "sessions", "{id}"],
        vec![
            "api", "chat", "sessions", "{id}", "messages", "s2", "files", "x",
        ],
    ]);
    let id = prop::sample::select(vec!["s1", "s2", "S2", "..", "ks", "s2.json", "s1.s2"]);
    let method = prop::sample::select(vec![
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::OPTIONS,
    ]);
    (
        shape,
        id,
        prop::collection::vec(spelling(), 8),
        method,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(shape, id, spellings, method, trailing, query)| {
            let mut uri = String::new();
            for (word, how) in shape.iter().zip(&spellings) {
                uri.push('/');
                let word = if *word == "{id}" { id } else { word };
                uri.push_str(&spell(word, how));
            }
            if trailing {
                uri.push('/');
            }
            if query {
                uri.push_str("?next=/api/chat/sessions/s2/messages");
            }
            (method, uri)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn every_uri_is_refused_or_decided_as_every_backend_serves_it((method, uri) in request()) {
        let table = RouteTable::parse(ROUTES).expect("the test table compiles");
        let Ok(path) = normalize(&uri) else {
            return Ok(()); // refused: the proxy refuses, no backend serves anything
        };
        // Every reading a backend may give the request; readings naming two sessions are
        // refused, otherwise the one session is decided (under the strictest endpoint).
        let readings = table.find_readings(&method, &path, method == Method::POST);
        if readings.iter().any(|m| m.session_id != readings[0].session_id) {
            return Ok(());
        }
        let decided = readings.first().map(|m| m.session_id.clone());
        // What gatehouse lets through for the caller: unmatched, or matched on its own session.
        let allowed = decided.as_deref().is_none_or(|s| s == CALLER_OWNS);
        for backend in &BACKENDS {
            let served = backend.serves(&method, &uri);
            if let Some(served) = &served {
                prop_assert_eq!(
                    decided.as_deref(),
                    Some(served.as_str()),
                    "{} serves session {:?} for {} {:?}, gatehouse decided {:?}",
                    backend.name, served, method, uri, decided
                );
                prop_assert!(
                    !allowed || served == CALLER_OWNS,
                    "{} {:?}: allowed, and {} serves {:?}", method, uri, backend.name, served
                );
            }
        }
    }
}

#[test]
fn the_models_see_the_attacks_of_the_issue() {
    // Sanity of the models themselves: each attack of issue 14 point 3 reaches s2 on some
    // backend (so the property above is not vacuous), and gatehouse refuses or matches s2.
    let table = RouteTable::parse(ROUTES).expect("the test table compiles");
    for (method, uri) in [
        (Method::GET, "/API/chat/sessions/s2/messages"),
        (Method::GET, "/api/chat/sessions;x/s2/messages"),
        (Method::GET, "/api/chat/sessions/s1/..;/s2/messages"),
        (Method::GET, "/api/chat/sessions/s1/../s2/messages"),
        (Method::HEAD, "/api/chat/sessions/s2/messages"),
        (Method::GET, "/api/chat/%C5%BFessions/s2/messages"),
        (Method::GET, "/api/chat/sessions/s1/%252e%252e/s2/files/x"),
        (Method::GET, "/api/chat/sessions/s2/files/../../s1/files/x"),
        (Method::GET, "/api/chat/sessions/s1\\..\\s2/files/x"),
        (Method::POST, "/api/chat/sessions/s2/messages"),
        (Method::GET, "/api/chat/sessions/s2/messages.json"),
    ] {
        let reached = BACKENDS
            .iter()
            .filter_map(|b| b.serves(&method, uri))
            .any(|s| s == "s2");
        assert!(reached, "no model backend serves s2 for {method} {uri}");
        match normalize(uri) {
            Err(_) => {}
            Ok(path) => assert_eq!(
                table
                    .find_readings(&method, &path, method == Method::POST)
                    .first()
                    .map(|m| m.session_id.as_str()),
                Some("s2"),
                "{method} {uri}"
            ),
        }
    }
}
