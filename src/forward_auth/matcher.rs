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
//! Paths are checked by [`super::paths`] first (strict paths: refused, never resolved).

use std::collections::HashMap;
use std::fmt;

use axum::http::Method;

pub use super::paths::{PathError, normalize};

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
