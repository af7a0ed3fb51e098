//! The forward-auth route table: `name METHOD PATTERN` lines compiled into matchit routers,
//! and the path normalisation applied before matching.
//!
//! ```text
//! # name          method  pattern
//! chat.messages   GET     /api/chat/sessions/{session_id}/messages
//! chat.session    *       /api/chat/sessions/{session_id}/*
//! ```
//!
//! - `METHOD` is one HTTP method or `*` (any); a method-specific route wins over a `*` one.
//! - Every pattern captures `{session_id}`; other `{name}` captures are allowed and ignored.
//! - A trailing `/*` means "this path and everything below it".
//!
//! Paths are normalised before matching ([`normalize`]), so that no spelling of a protected
//! path can dodge its route: percent-decoding (once), `.` and `..` segments resolved, empty
//! segments (`//`) and a trailing slash dropped. Encoded slashes and backslashes (`%2F`,
//! `%5C`, `\`), NUL and control characters, and invalid UTF-8 are refused: upstream servers
//! disagree on what they mean, so there is no safe way to match them.

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
        let (base, below) = match route.pattern.strip_suffix("/*") {
            Some(base) => (base.to_owned(), true),
            None => (route.pattern.clone(), false),
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

    /// The route a normalised `path` matches for `method`, if any.
    pub fn find(&self, method: &Method, path: &str) -> Option<Matched<'_>> {
        let found = self
            .by_method
            .get(method)
            .and_then(|router| router.at(path).ok())
            .or_else(|| self.any_method.at(path).ok())?;
        Some(Matched {
            route: &self.routes[*found.value],
            session_id: found.params.get("session_id")?.to_owned(),
        })
    }
}

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
    if !pattern.contains("{session_id}") {
        return Err(format!("pattern {pattern:?} must capture {{session_id}}"));
    }
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
    })
}

/// Normalises the path of an original URI (its query and fragment are ignored): see the
/// [module docs](self).
pub fn normalize(uri: &str) -> Result<String, PathError> {
    let path = uri.split(['?', '#']).next().unwrap_or("");
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let lowered = path.to_ascii_lowercase();
    if lowered.contains("%2f") || lowered.contains("%5c") || path.contains('\\') {
        return Err(PathError::Refused("an encoded slash or a backslash"));
    }
    let decoded = percent_decode_str(path)
        .decode_utf8()
        .map_err(|_| PathError::Refused("invalid UTF-8"))?;
    if decoded.chars().any(char::is_control) {
        return Err(PathError::Refused("a control character"));
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    Ok(format!("/{}", segments.join("/")))
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
    fn normalisation() {
        for (raw, expected) in [
            ("/api/chat/sessions/s1", "/api/chat/sessions/s1"),
            ("/api/chat/sessions/s1/", "/api/chat/sessions/s1"),
            ("//api///chat/sessions/s1", "/api/chat/sessions/s1"),
            ("/api/./chat/x/../sessions/s1", "/api/chat/sessions/s1"),
            ("/api/chat/sessions/%2e%2e/x", "/api/chat/x"),
            ("/api/chat/sessions/%73%31?q=1#f", "/api/chat/sessions/s1"),
            ("/../../api/chat", "/api/chat"),
            ("/", "/"),
        ] {
            assert_eq!(normalize(raw).as_deref(), Ok(expected), "{raw}");
        }
        for raw in [
            "api/x", "/a%2Fb", "/a%5cb", "/a\\b", "/a%00b", "/a%0ab", "/a%ff",
        ] {
            assert!(normalize(raw).is_err(), "{raw}");
        }
    }

    /// A path segment that needs no normalisation.
    fn segment() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9_.:-]{1,8}".prop_filter("not a dot segment", |s| s != "." && s != "..")
    }

    /// Spells `path` differently without changing what it normalises to.
    fn respell(path: &[String], noise: &[u8]) -> String {
        let mut out = String::new();
        for (i, segment) in path.iter().enumerate() {
            let n = noise.get(i).copied().unwrap_or(0);
            out.push('/');
            if n & 1 == 1 {
                out.push_str("./");
            }
            if n & 2 == 2 {
                out.push_str("junk/../");
            }
            if n & 4 == 4 {
                out.push('/');
            }
            if n & 8 == 8 {
                // Percent-encode every character of the segment.
                for b in segment.bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            } else {
                out.push_str(segment);
            }
        }
        if noise.last().is_some_and(|n| n & 16 == 16) {
            out.push('/');
        }
        out
    }

    proptest! {
        #[test]
        fn never_panics_on_any_input(uri in "\\PC{0,64}", method in "[A-Z]{1,7}") {
            let t = table();
            if let Ok(path) = normalize(&uri) {
                prop_assert!(path.starts_with('/'));
                prop_assert_eq!(normalize(&path), Ok(path.clone()), "idempotent");
                if let Ok(method) = Method::from_bytes(method.as_bytes()) {
                    let _ = t.find(&method, &path);
                }
            }
        }

        #[test]
        fn equivalent_spellings_match_alike(
            prefix in prop::sample::select(vec!["api/chat/sessions", "api/share/tok", "other"]),
            rest in prop::collection::vec(segment(), 1..4),
            noise in prop::collection::vec(any::<u8>(), 0..6),
            method in prop::sample::select(vec![Method::GET, Method::POST, Method::DELETE]),
        ) {
            let mut path: Vec<String> = prefix.split('/').map(str::to_owned).collect();
            path.extend(rest);
            let canonical = format!("/{}", path.join("/"));
            let spelled = respell(&path, &noise);
            let t = table();
            let a = t.find(&method, &normalize(&canonical).unwrap()).map(|m| (m.route.name.clone(), m.session_id));
            let b = t.find(&method, &normalize(&spelled).unwrap()).map(|m| (m.route.name.clone(), m.session_id));
            prop_assert_eq!(a, b, "{} vs {}", canonical, spelled);
        }
    }
}
