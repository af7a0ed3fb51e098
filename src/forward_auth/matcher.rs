//! The forward-auth route table: `name METHOD PATTERN` lines compiled into matchit routers,
//! and the strict path checks applied before matching.
//!
//! ```text
//! # name          method  pattern
//! chat.messages   GET     /api/chat/sessions/{session_id}/messages
//! chat.session    *       /api/chat/sessions/{session_id}/*
//! ```
//!
//! - `METHOD` is one HTTP method or `*` (any); a method-specific route wins over a `*` one.
//!   `HEAD` is matched as `GET` (frameworks serve HEAD with the GET handler), unless a `HEAD`
//!   route is configured.
//! - Every pattern captures `{session_id}` as a whole segment; other `{name}` captures are
//!   allowed and ignored.
//! - A trailing `/*` means "this path and everything below it".
//! - Static segments match case-insensitively (ASCII): `/API/Chat/sessions/s2/messages` is
//!   the route above; the captured session id keeps its spelling (`S2` is not `s2`).
//!
//! # Strict paths
//!
//! gatehouse decides on the path; the backend serves the raw URI the client sent. Any spelling
//! that backends may read differently from gatehouse is refused ([`normalize`] returns
//! [`PathError::Refused`], the endpoint answers 400 and the proxy refuses), never resolved and
//! decided. Where backends disagree, the stricter reading is taken. Refused:
//!
//! - dot segments `.` and `..`, raw or with an encoded dot; any encoded dot (`%2E`) at all
//!   (`.%2e`, `%2E%2E`, `s%2e1`: nobody needs to encode an unreserved character);
//! - `;` anywhere in the path, raw or `%3B` (Tomcat and Spring strip `;params`, and `..;/`
//!   is a dot segment to them);
//! - backslashes, raw or `%5C` (some servers read them as `/`); encoded slashes `%2F`;
//! - `%25` (an encoded `%`: a second decoding by any hop turns `%252e` into a dot), encoded
//!   `?` and `#` (`%3F`, `%23`), and a malformed escape (`%`, `%4`, `%zz`);
//! - empty segments (`//`, anywhere, including a leading `//`): some servers merge them, some
//!   route them as empty values; one trailing slash is allowed and dropped;
//! - a segment ending in a dot or a space (`sessions.`, `s2%20`): Windows servers drop them;
//! - NUL and control characters, raw or encoded (C0, DEL and C1); invalid UTF-8 once decoded;
//! - raw bytes outside RFC 3986 paths (space, `"`, `<`, `>`, `^`, `` ` ``, `{`, `|`, `}`,
//!   `[`, `]`, a raw `#`, raw non-ASCII);
//! - non-ASCII characters that case-map to ASCII (`ſ` upper-cases to `S`, the Kelvin sign
//!   lower-cases to `k`, `ı`, `İ`), and the halfwidth/fullwidth forms (U+FF00-U+FFEF), which
//!   case-insensitive or compatibility-normalising routers match to ASCII.
//!
//! What remains is decoded once (`%73%32` is `s2`) and matched; the query string is ignored.

use std::collections::HashMap;
use std::fmt;

use axum::http::Method;
use percent_encoding::percent_decode_str;

/// One configured route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The endpoint name whose mode applies.
    pub name: String,
    /// The method, or `None` for any.
    pub method: Option<Method>,
    /// The pattern as written.
    pub pattern: String,
    /// Which segment of the path (from 0, after the leading `/`) is the session id.
    session_segment: usize,
}

/// A compiled route table.
#[derive(Clone)]
pub struct RouteTable {
    routes: Vec<Route>,
    by_method: HashMap<Method, matchit::Router<usize>>,
    any_method: matchit::Router<usize>,
}

impl fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteTable")
            .field("routes", &self.routes)
            .finish_non_exhaustive()
    }
}

/// What a path matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched<'a> {
    /// The route.
    pub route: &'a Route,
    /// The session id captured (still to be validated).
    pub session_id: String,
}

/// Why a path cannot be matched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path is not absolute.
    #[error("the original URI must be an absolute path")]
    NotAbsolute,
    /// The path holds something with no agreed meaning.
    #[error("the original URI contains {0}, which is refused")]
    Refused(&'static str),
}

/// The built-in table used when no route file is configured: the legacy chat API.
pub const DEFAULT_ROUTES: &str = "\
chat.session * /api/chat/sessions/{session_id}/*
";

impl RouteTable {
    /// Parses and compiles a route file's text. Every problem is reported, with its line.
    pub fn parse(text: &str) -> Result<Self, Vec<String>> {
        let mut routes = Vec::new();
        let mut problems = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            match parse_line(line) {
                Ok(route) => routes.push(route),
                Err(why) => problems.push(format!("line {}: {why}", number + 1)),
            }
        }
        let mut table = Self {
            routes: Vec::new(),
            by_method: HashMap::new(),
            any_method: matchit::Router::new(),
        };
        for route in routes {
            if let Err(why) = table.add(route.clone()) {
                problems.push(format!("{} {}: {why}", route.name, route.pattern));
            }
        }
        if problems.is_empty() {
            Ok(table)
        } else {
            Err(problems)
        }
    }

    fn add(&mut self, route: Route) -> Result<(), String> {
        let index = self.routes.len();
        let router = match &route.method {
            Some(method) => self.by_method.entry(method.clone()).or_default(),
            None => &mut self.any_method,
        };
        // Static segments match case-insensitively: the table holds them lower-cased and
        // [`Self::find`] matches a lower-cased path.
        let pattern = route.pattern.to_ascii_lowercase();
        let (base, below) = match pattern.strip_suffix("/*") {
            Some(base) => (base.to_owned(), true),
            None => (pattern.clone(), false),
        };
        let base = if base.is_empty() {
            "/".to_owned()
        } else {
            base
        };
        router
            .insert(base.clone(), index)
            .map_err(|e| e.to_string())?;
        if below {
            let rest = if base == "/" {
                "/{*gatehouse_rest}".to_owned()
            } else {
                format!("{base}/{{*gatehouse_rest}}")
            };
            router.insert(rest, index).map_err(|e| e.to_string())?;
        }
        self.routes.push(route);
        Ok(())
    }

    /// The routes, in file order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The route a [normalised](normalize) `path` matches for `method`, if any: static
    /// segments compared case-insensitively, `HEAD` as `GET` (after `HEAD` routes), then `*`.
    pub fn find(&self, method: &Method, path: &str) -> Option<Matched<'_>> {
        let methods: &[&Method] = if method == Method::HEAD {
            &[&Method::HEAD, &Method::GET]
        } else {
            &[method]
        };
        let routers = methods
            .iter()
            .filter_map(|m| self.by_method.get(*m))
            .chain([&self.any_method]);
        self.first_match(routers, path)
    }

    /// The first of `routers` that matches `path`.
    fn first_match<'r>(
        &self,
        routers: impl IntoIterator<Item = &'r matchit::Router<usize>>,
        path: &str,
    ) -> Option<Matched<'_>> {
        let lowered = path.to_ascii_lowercase();
        let found = routers.into_iter().find_map(|r| r.at(&lowered).ok())?;
        let route = &self.routes[*found.value];
        // The id in its own spelling: the same segment of the path as given.
        let session_id = path
            .strip_prefix('/')?
            .split('/')
            .nth(route.session_segment)?;
        debug_assert_eq!(
            Some(session_id.to_ascii_lowercase().as_str()),
            found.params.get("session_id")
        );
        Some(Matched {
            route,
            session_id: session_id.to_owned(),
        })
    }
}

impl RouteTable {
    /// Every route a backend may run the request on, the request's own reading first:
    /// besides [`Self::find`], with `every_method` the request under every method, each
    /// method's routes and the `*` ones alike (a backend that honours a method override runs
    /// `POST` + `_method=GET` as a `GET`; the caller sets it for a `POST`, whose form body
    /// gatehouse never sees, and for any request carrying an override header); and the path
    /// with the last segment's format suffix cut off at its first and at its last dot
    /// (`messages.json` is `messages` to Rails' `(.:format)` and Spring's suffix matching).
    /// Distinct matches only.
    pub fn find_readings(
        &self,
        method: &Method,
        path: &str,
        every_method: bool,
    ) -> Vec<Matched<'_>> {
        let mut paths = vec![path.to_owned()];
        if let Some((parent, last)) = path.rsplit_once('/') {
            for cut in [last.split_once('.'), last.rsplit_once('.')]
                .into_iter()
                .flatten()
                .map(|(stem, _)| stem)
                .filter(|stem| !stem.is_empty())
            {
                let shorter = format!("{parent}/{cut}");
                if !paths.contains(&shorter) {
                    paths.push(shorter);
                }
            }
        }
        let mut overridden: Vec<&matchit::Router<usize>> = Vec::new();
        if every_method {
            let mut methods: Vec<&Method> = self.by_method.keys().collect();
            methods.sort_by(|a, b| a.as_str().cmp(b.as_str()));
            overridden.extend(methods.into_iter().map(|m| &self.by_method[m]));
            overridden.push(&self.any_method);
        }
        let mut found: Vec<Matched<'_>> = Vec::new();
        for path in &paths {
            let own = self.find(method, path);
            let others = overridden
                .iter()
                .filter_map(|router| self.first_match([*router], path));
            for matched in own.into_iter().chain(others) {
                let seen = found.iter().any(|m| {
                    std::ptr::eq(m.route, matched.route) && m.session_id == matched.session_id
                });
                if !seen {
                    found.push(matched);
                }
            }
        }
        found
    }
}

/// The method-override headers frameworks honour (Rails, Express `method-override`, ASP.NET
/// Core, Symfony and Slim 4, which honours them on any method).
pub const METHOD_OVERRIDE_HEADERS: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

fn parse_line(line: &str) -> Result<Route, String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [name, method, pattern] = fields[..] else {
        return Err(format!(
            "expected `name METHOD PATTERN`, got {} fields",
            fields.len()
        ));
    };
    crate::session_id::check_name("endpoint", name).map_err(|e| e.to_string())?;
    let method = match method {
        "*" => None,
        m => Some(
            Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                .map_err(|_| format!("invalid method {m:?}"))?,
        ),
    };
    if !pattern.starts_with('/') {
        return Err(format!("pattern {pattern:?} must start with /"));
    }
    let Some(session_segment) = pattern[1..].split('/').position(|s| s == "{session_id}") else {
        return Err(format!(
            "pattern {pattern:?} must capture {{session_id}} as a whole segment"
        ));
    };
    if pattern.contains("{*") {
        return Err("use a trailing /* for \"everything below\"".into());
    }
    if pattern.contains("//") || pattern.split('/').any(|s| s == "." || s == "..") {
        return Err(format!("pattern {pattern:?} is not a normalised path"));
    }
    Ok(Route {
        name: name.to_owned(),
        method,
        pattern: pattern.to_owned(),
        session_segment,
    })
}

/// Checks the path of an original URI (its query is ignored) against the strict rules of
/// the [module docs](self) and returns it decoded, without its trailing slash, ready for
/// [`RouteTable::find`]. Refuses, never resolves.
pub fn normalize(uri: &str) -> Result<String, PathError> {
    let path = uri.split('?').next().unwrap_or("");
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    check_raw(path)?;
    let decoded = percent_decode_str(path)
        .decode_utf8()
        .map_err(|_| PathError::Refused("invalid UTF-8"))?;
    for c in decoded.chars() {
        if c.is_control() {
            return Err(PathError::Refused("a control character"));
        }
        if folds_to_ascii(c) {
            return Err(PathError::Refused(
                "a non-ASCII character that routers may read as ASCII",
            ));
        }
    }
    let rest = &decoded[1..];
    if rest.is_empty() {
        return Ok("/".to_owned());
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    for segment in rest.split('/') {
        match segment {
            "" => return Err(PathError::Refused("an empty segment (//)")),
            "." | ".." => return Err(PathError::Refused("a dot segment")),
            // Windows servers drop trailing dots and spaces (`sessions.` is `sessions`).
            s if s.ends_with(['.', ' ']) => {
                return Err(PathError::Refused("a segment ending in a dot or a space"));
            }
            _ => {}
        }
    }
    Ok(format!("/{rest}"))
}

/// The checks on the raw bytes and escapes, before decoding.
fn check_raw(path: &str) -> Result<(), PathError> {
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b';' => return Err(PathError::Refused("`;` (a path parameter)")),
            b'\\' => return Err(PathError::Refused("a backslash")),
            0..=0x1f | 0x7f => return Err(PathError::Refused("a control character")),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or(PathError::Refused("a malformed percent-escape"))?;
                check_escaped(hex)?;
                i += 3;
                continue;
            }
            b if is_path_byte(b) => {}
            _ => {
                return Err(PathError::Refused(
                    "a character that is not allowed in a URI path (RFC 3986)",
                ));
            }
        }
        i += 1;
    }
    Ok(())
}

/// What a percent-escape may not encode.
fn check_escaped(byte: u8) -> Result<(), PathError> {
    Err(PathError::Refused(match byte {
        b'/' => "an encoded slash (%2F)",
        b'\\' => "an encoded backslash (%5C)",
        b'.' => "an encoded dot (%2E)",
        b';' => "an encoded `;` (%3B)",
        b'%' => "an encoded percent sign (%25, double encoding)",
        b'?' | b'#' => "an encoded `?` or `#`",
        0..=0x1f | 0x7f => "an encoded control character",
        _ => return Ok(()),
    }))
}

/// RFC 3986 `pchar` and `/`, as raw bytes (`%` handled by the caller, `;` refused before).
fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@/".contains(&b)
}

/// Whether a case-insensitive or compatibility-normalising router may read `c` as ASCII.
fn folds_to_ascii(c: char) -> bool {
    !c.is_ascii()
        && (c.to_lowercase().any(|l| l.is_ascii())
            || c.to_uppercase().any(|u| u.is_ascii())
            || ('\u{FF00}'..='\u{FFEF}').contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn table() -> RouteTable {
        RouteTable::parse(
            "# comment\n\
             chat.messages GET /api/chat/sessions/{session_id}/messages\n\
             chat.session  *   /api/chat/sessions/{session_id}/*\n\
             chat.share    post /api/share/{token}/{session_id}  # other captures\n",
        )
        .unwrap()
    }

    #[test]
    fn finds_routes_by_method_with_wildcards() {
        let t = table();
        let m = t
            .find(&Method::GET, "/api/chat/sessions/s1/messages")
            .unwrap();
        assert_eq!(
            (m.route.name.as_str(), m.session_id.as_str()),
            ("chat.messages", "s1")
        );
        let m = t
            .find(&Method::POST, "/api/chat/sessions/s1/messages")
            .unwrap();
        assert_eq!(
            m.route.name, "chat.session",
            "method-specific first, then *"
        );
        let m = t.find(&Method::DELETE, "/api/chat/sessions/s1").unwrap();
        assert_eq!(
            m.route.name, "chat.session",
            "the wildcard's base path is covered"
        );
        let m = t.find(&Method::GET, "/api/chat/sessions/s1/a/b/c").unwrap();
        assert_eq!(m.session_id, "s1");
        let m = t.find(&Method::POST, "/api/share/t0k/s9").unwrap();
        assert_eq!(
            (m.route.name.as_str(), m.session_id.as_str()),
            ("chat.share", "s9")
        );
        assert!(t.find(&Method::GET, "/api/share/t0k/s9").is_none());
        assert!(t.find(&Method::GET, "/api/chat/sessions").is_none());
        assert!(t.find(&Method::GET, "/healthz").is_none());
    }

    #[test]
    fn the_shipped_tables_compile() {
        let shipped =
            RouteTable::parse(include_str!("../../examples/proxies/routes.conf")).unwrap();
        assert_eq!(shipped.routes().len(), 3);
        assert_eq!(RouteTable::parse(DEFAULT_ROUTES).unwrap().routes().len(), 1);
    }

    #[test]
    fn bad_tables_are_refused_with_every_problem() {
        let problems = RouteTable::parse(
            "a GET\n\
             b GET api/x/{session_id}\n\
             c GET /x/{id}\n\
             d FOO@ /x/{session_id}\n\
             e GET /x/{session_id}/{*rest}\n\
             f GET /x/../{session_id}\n\
             g GET /y/{session_id}\n\
             h GET /y/{session_id}\n",
        )
        .unwrap_err();
        assert_eq!(problems.len(), 7, "{problems:#?}");
        assert!(problems[0].starts_with("line 1:"), "{problems:?}");
        assert!(problems[6].contains("h /y/{session_id}"), "{problems:?}");
    }

    #[test]
    fn accepted_paths_are_decoded_once() {
        for (raw, expected) in [
            ("/api/chat/sessions/s1", "/api/chat/sessions/s1"),
            ("/api/chat/sessions/s1/", "/api/chat/sessions/s1"),
            ("/api/chat/sessions/%73%31?q=1#f", "/api/chat/sessions/s1"),
            (
                "/api/chat/sessions/s1?a=../..;x%2F",
                "/api/chat/sessions/s1",
            ),
            ("/a/b-c_d~e!$&'()*+,=:@", "/a/b-c_d~e!$&'()*+,=:@"),
            ("/docs/%C3%BCber", "/docs/über"),
            ("/api/chat/sessions/a.b...c", "/api/chat/sessions/a.b...c"),
            ("/docs/my%20file.txt", "/docs/my file.txt"),
            ("/", "/"),
        ] {
            assert_eq!(normalize(raw).as_deref(), Ok(expected), "{raw}");
        }
    }

    #[test]
    fn spellings_backends_read_differently_are_refused() {
        for raw in [
            // dot segments, raw and encoded, and any encoded dot
            "/api/chat/sessions/s2/../s1/messages",
            "/api/./chat/sessions/s1",
            "/api/chat/sessions/s1/..",
            "/api/chat/sessions/s1/.",
            "/api/chat/sessions/%2e%2e/s1",
            "/api/chat/sessions/.%2E/s1",
            "/api/chat/sessions/%2E./s1",
            "/api/chat/sessions/%2e/s1",
            "/api/chat/sessions/s%2e1",
            // ;params, raw and encoded
            "/api/chat/sessions;x/s2/messages",
            "/api/chat/sessions/s2;jsessionid=1/messages",
            "/api/chat/sessions/..;/s2/messages",
            "/api/chat/sessions/s2%3Bx/messages",
            "/api/chat/sessions/s2%3bx/messages",
            // backslashes and encoded slashes
            "/api/chat/sessions/s1\\..\\s2",
            "/a%5cb",
            "/a%5Cb",
            "/a%2Fb",
            "/a%2fb",
            // double encoding, encoded ? and #, malformed escapes
            "/api/chat/sessions/%252e%252e/s1",
            "/a%25",
            "/a%3Fb",
            "/a%23b",
            "/a%",
            "/a%4",
            "/a%zz",
            "/a%+1",
            // trailing dots and spaces (Windows servers drop them)
            "/api/chat/sessions./s2",
            "/api/chat/sessions/s2.",
            "/api/chat/sessions/.../s2",
            "/api/chat/sessions%20/s2",
            // empty segments
            "//api/chat/sessions/s1",
            "/api//chat/sessions/s1",
            "/api/chat/sessions/s1//",
            "//",
            // control characters, raw and encoded; invalid UTF-8
            "/a%00b",
            "/a\0b",
            "/a%0ab",
            "/a%0Db",
            "/a%09b",
            "/a%7Fb",
            "/a%C2%85b",
            "/a%ff",
            "/a%C3",
            // raw characters outside RFC 3986 paths
            "/a b",
            "/a\"b",
            "/a<b>",
            "/a^b",
            "/a`b",
            "/a{b}",
            "/a|b",
            "/a[b]",
            "/a#b",
            "/über",
            // non-ASCII that routers may read as ASCII
            "/api/chat/%C5%BFessions/s2/messages",
            "/api/chat/sessions/s2/messages%E2%84%AA",
            "/api/chat/sess%C4%B1ons/s2",
            "/api/chat/%C4%B0/s2",
            "/api/chat/sessions/%EF%BC%8Fs2",
            // not a path
            "api/x",
            "",
            "*",
        ] {
            assert!(normalize(raw).is_err(), "{raw:?} was accepted");
        }
    }

    #[test]
    fn static_segments_fold_case_and_the_id_keeps_its_spelling() {
        let t = table();
        let m = t
            .find(&Method::GET, "/API/Chat/SESSIONS/S2/Messages")
            .unwrap();
        assert_eq!(
            (m.route.name.as_str(), m.session_id.as_str()),
            ("chat.messages", "S2")
        );
        let m = t.find(&Method::POST, "/Api/Share/ToK/Ab9").unwrap();
        assert_eq!(m.session_id, "Ab9");
        let upper = RouteTable::parse("x GET /API/{session_id}/Files/*\n").unwrap();
        let m = upper.find(&Method::GET, "/api/AbC/files/1/2").unwrap();
        assert_eq!(m.session_id, "AbC");
    }

    #[test]
    fn head_is_matched_as_get() {
        let t = RouteTable::parse("read GET /s/{session_id}\n").unwrap();
        let m = t.find(&Method::HEAD, "/s/s1").unwrap();
        assert_eq!(
            (m.route.name.as_str(), m.session_id.as_str()),
            ("read", "s1")
        );
        assert!(t.find(&Method::POST, "/s/s1").is_none());
        let t = RouteTable::parse("head HEAD /s/{session_id}\nread GET /s/{session_id}\n").unwrap();
        assert_eq!(t.find(&Method::HEAD, "/s/s1").unwrap().route.name, "head");
    }

    #[test]
    fn the_session_id_is_a_whole_segment() {
        assert!(RouteTable::parse("x GET /s/id-{session_id}\n").is_err());
        assert!(RouteTable::parse("x GET /s/{session_id}.json\n").is_err());
    }

    proptest! {
        #[test]
        fn never_panics_on_any_input(uri in "\\PC{0,64}", method in "[A-Z]{1,7}") {
            let t = table();
            if let Ok(path) = normalize(&uri) {
                prop_assert!(path.starts_with('/'));
                if let Ok(method) = Method::from_bytes(method.as_bytes()) {
                    let _ = t.find(&method, &path);
                }
            }
        }

        #[test]
        fn never_panics_on_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..48)) {
            let uri = format!("/{}", String::from_utf8_lossy(&bytes));
            if let Ok(path) = normalize(&uri) {
                let _ = table().find(&Method::GET, &path);
            }
        }
    }
}
