//! Which request the proxy is asking about: the original method and URI, read by exactly one
//! proxy convention (`GATEHOUSE_FORWARD_AUTH_STYLE`).
//!
//! A proxy passes most client headers through to the auth request (Caddy's `forward_auth`
//! passes all of them), so a header of a convention the proxy does not use may have been
//! written by the client. Reading "the first convention present" let a client add
//! `X-Original-URI: /own/session` to a Caddy request for someone else's session and be judged
//! on its own. So:
//!
//! - a named style reads only its own headers, and ignores every other convention's;
//! - `auto` (the default) reads whichever one convention is present, and refuses a request that
//!   carries the URI or method headers of more than one (the Envoy path suffix counts as one);
//! - in every style, any of the headers read given twice is refused (a proxy that appends
//!   instead of replacing would otherwise let the client's copy be read);
//! - the method header is required with its URI header: deciding on a default method would
//!   let a method-specific route be dodged.
//!
//! Refusals are [`Refusal::Ambiguous`] (audited: someone is trying) or [`Refusal::Missing`].

use std::fmt;
use std::str::FromStr;

use axum::http::{HeaderMap, HeaderName, Method, Uri};

/// The path of the endpoint (and the Envoy prefix).
pub const PATH: &str = "/v1/forward-auth";

const X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");

/// The proxy convention gatehouse reads (`GATEHOUSE_FORWARD_AUTH_STYLE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Style {
    /// nginx `auth_request`: `X-Original-Method` and `X-Original-URI` only.
    Nginx,
    /// Traefik ForwardAuth: `X-Forwarded-Method` and `X-Forwarded-Uri` only.
    Traefik,
    /// Caddy `forward_auth`: `X-Forwarded-Method` and `X-Forwarded-Uri` only.
    Caddy,
    /// Envoy `ext_authz` with `path_prefix: /v1/forward-auth`: the request's own method and
    /// the path after the prefix only.
    Envoy,
    /// Whichever single convention the request carries; two, or a header twice: refused.
    #[default]
    Auto,
}

impl Style {
    /// The name used in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Style::Nginx => "nginx",
            Style::Traefik => "traefik",
            Style::Caddy => "caddy",
            Style::Envoy => "envoy",
            Style::Auto => "auto",
        }
    }
}

impl FromStr for Style {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "nginx" => Ok(Style::Nginx),
            "traefik" => Ok(Style::Traefik),
            "caddy" => Ok(Style::Caddy),
            "envoy" => Ok(Style::Envoy),
            "auto" => Ok(Style::Auto),
            _ => Err("expected nginx, traefik, caddy, envoy or auto".into()),
        }
    }
}

/// One way of passing the original request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Convention {
    /// `X-Original-Method` / `X-Original-URI`.
    Original,
    /// `X-Forwarded-Method` / `X-Forwarded-Uri`.
    Forwarded,
    /// The path after [`PATH`], with the request's own method.
    EnvoyPath,
}

impl Convention {
    fn headers(self) -> Option<(HeaderName, HeaderName)> {
        match self {
            Convention::Original => Some((X_ORIGINAL_METHOD, X_ORIGINAL_URI)),
            Convention::Forwarded => Some((X_FORWARDED_METHOD, X_FORWARDED_URI)),
            Convention::EnvoyPath => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Convention::Original => "X-Original-Method/X-Original-URI (nginx)",
            Convention::Forwarded => "X-Forwarded-Method/X-Forwarded-Uri (Traefik, Caddy)",
            Convention::EnvoyPath => "the /v1/forward-auth/{path} suffix (Envoy)",
        }
    }
}

/// The original request, as the proxy described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginalRequest {
    /// Its method (upper case).
    pub method: Method,
    /// Its raw URI (path and query, as the client sent it).
    pub uri: String,
}

/// Why the original request cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Two conventions, or a header given twice: the proxy may not be the only writer.
    Ambiguous(String),
    /// No original URI (or method) in the style's convention, or an unreadable one.
    Missing(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Ambiguous(why) | Refusal::Missing(why) => f.write_str(why),
        }
    }
}

fn envoy_suffix(uri: &Uri) -> Option<String> {
    // The raw path after the prefix (not axum's decoded capture: the path checks must see the
    // bytes the proxy saw).
    let rest = uri.path().strip_prefix(PATH)?;
    if !rest.starts_with('/') {
        return None;
    }
    Some(match uri.query() {
        Some(query) => format!("{rest}?{query}"),
        None => rest.to_owned(),
    })
}

fn present(headers: &HeaderMap, convention: Convention, uri: &Uri) -> bool {
    match convention.headers() {
        Some((method, target)) => headers.contains_key(method) || headers.contains_key(target),
        None => envoy_suffix(uri).is_some(),
    }
}

/// The one value of `name`, refusing a repeated header.
fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a str>, Refusal> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Refusal::Ambiguous(format!(
            "{name} is given more than once; the proxy must replace it, not append"
        )));
    }
    let text = first
        .to_str()
        .map_err(|_| Refusal::Missing(format!("{name} is not visible ASCII")))?
        .trim();
    Ok((!text.is_empty()).then_some(text))
}

fn read(
    convention: Convention,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<OriginalRequest, Refusal> {
    let Some((method_header, uri_header)) = convention.headers() else {
        let uri = envoy_suffix(uri).ok_or_else(|| {
            Refusal::Missing("no original URI: call /v1/forward-auth/{path} (Envoy)".into())
        })?;
        // Upper-cased as the header styles do: `get` would otherwise miss a GET route (and
        // be unmatched, allowed) while a backend may run it as the GET.
        let method = Method::from_bytes(method.as_str().to_ascii_uppercase().as_bytes())
            .map_err(|_| Refusal::Missing(format!("invalid original method {method}")))?;
        return Ok(OriginalRequest { method, uri });
    };
    // Both are checked for repeats before either is used.
    let raw_method = single(headers, &method_header)?;
    let raw_uri = single(headers, &uri_header)?;
    let raw_uri = raw_uri
        .ok_or_else(|| Refusal::Missing(format!("no original URI: send {}", convention.name())))?;
    let raw_method = raw_method
        .ok_or_else(|| Refusal::Missing(format!("{uri_header} needs {method_header} with it")))?;
    let method = Method::from_bytes(raw_method.to_ascii_uppercase().as_bytes())
        .map_err(|_| Refusal::Missing(format!("invalid original method {raw_method:?}")))?;
    Ok(OriginalRequest {
        method,
        uri: raw_uri.to_owned(),
    })
}

/// Reads the original request of a forward-auth call by `style` (see the module docs).
pub fn original(
    style: Style,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<OriginalRequest, Refusal> {
    let convention = match style {
        Style::Nginx => Convention::Original,
        Style::Traefik | Style::Caddy => Convention::Forwarded,
        Style::Envoy => Convention::EnvoyPath,
        Style::Auto => {
            let found: Vec<Convention> = [
                Convention::Original,
                Convention::Forwarded,
                Convention::EnvoyPath,
            ]
            .into_iter()
            .filter(|c| present(headers, *c, uri))
            .collect();
            match found[..] {
                [one] => one,
                [] => {
                    return Err(Refusal::Missing(
                        "no original URI: send X-Original-URI (nginx) or X-Forwarded-Uri \
                         (Traefik, Caddy), or call /v1/forward-auth/{path} (Envoy)"
                            .into(),
                    ));
                }
                _ => {
                    let names: Vec<&str> = found.iter().map(|c| c.name()).collect();
                    return Err(Refusal::Ambiguous(format!(
                        "the request carries more than one proxy convention ({}); set \
                         GATEHOUSE_FORWARD_AUTH_STYLE or make the proxy send only its own",
                        names.join(" and ")
                    )));
                }
            }
        }
    };
    read(convention, method, uri, headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_static(name),
                value.parse().expect("test header"),
            );
        }
        map
    }

    fn ask(
        style: Style,
        path: &str,
        pairs: &[(&'static str, &'static str)],
    ) -> Result<OriginalRequest, Refusal> {
        let uri: Uri = path.parse().expect("test uri");
        original(style, &Method::GET, &uri, &headers(pairs))
    }

    const NGINX: [(&str, &str); 2] = [("x-original-method", "get"), ("x-original-uri", "/a")];
    const CADDY: [(&str, &str); 2] = [("x-forwarded-method", "POST"), ("x-forwarded-uri", "/b")];

    #[test]
    fn named_styles_read_only_their_own_convention() {
        let both = [NGINX, CADDY].concat();
        let got = ask(Style::Nginx, PATH, &both).unwrap();
        assert_eq!((got.method, got.uri.as_str()), (Method::GET, "/a"));
        for style in [Style::Traefik, Style::Caddy] {
            let got = ask(style, PATH, &both).unwrap();
            assert_eq!((got.method, got.uri.as_str()), (Method::POST, "/b"));
        }
        let got = ask(Style::Envoy, "/v1/forward-auth/c?x=1", &both).unwrap();
        assert_eq!((got.method, got.uri.as_str()), (Method::GET, "/c?x=1"));
        let uri: Uri = "/v1/forward-auth/c".parse().unwrap();
        let lower = Method::from_bytes(b"head").unwrap();
        let got = original(Style::Envoy, &lower, &uri, &HeaderMap::new()).unwrap();
        assert_eq!(
            got.method,
            Method::HEAD,
            "upper-cased like the header styles"
        );
        assert!(matches!(
            ask(Style::Envoy, PATH, &both),
            Err(Refusal::Missing(_))
        ));
        assert!(matches!(
            ask(Style::Nginx, PATH, &CADDY),
            Err(Refusal::Missing(_))
        ));
    }

    #[test]
    fn auto_reads_one_convention_and_refuses_two() {
        assert_eq!(ask(Style::Auto, PATH, &NGINX).unwrap().uri, "/a");
        assert_eq!(ask(Style::Auto, PATH, &CADDY).unwrap().uri, "/b");
        assert_eq!(
            ask(Style::Auto, "/v1/forward-auth/c", &[]).unwrap().uri,
            "/c"
        );
        for (path, pairs) in [
            (PATH, [NGINX, CADDY].concat()),
            (PATH, vec![NGINX[1], CADDY[0]]),
            (PATH, vec![NGINX[0], NGINX[1], CADDY[0]]),
            ("/v1/forward-auth/c", NGINX.to_vec()),
            ("/v1/forward-auth/c", vec![CADDY[0]]),
        ] {
            assert!(
                matches!(ask(Style::Auto, path, &pairs), Err(Refusal::Ambiguous(_))),
                "{path} {pairs:?}"
            );
        }
        assert!(matches!(
            ask(Style::Auto, PATH, &[]),
            Err(Refusal::Missing(_))
        ));
    }

    #[test]
    fn a_header_twice_is_refused_in_every_style() {
        let twice_uri = [NGINX[0], NGINX[1], ("x-original-uri", "/other")];
        let twice_method = [NGINX[0], NGINX[1], ("x-original-method", "DELETE")];
        for style in [Style::Nginx, Style::Auto] {
            assert!(matches!(
                ask(style, PATH, &twice_uri),
                Err(Refusal::Ambiguous(_))
            ));
            assert!(matches!(
                ask(style, PATH, &twice_method),
                Err(Refusal::Ambiguous(_))
            ));
        }
        let twice = [CADDY[0], CADDY[1], ("x-forwarded-uri", "/other")];
        for style in [Style::Traefik, Style::Caddy, Style::Auto] {
            assert!(matches!(
                ask(style, PATH, &twice),
                Err(Refusal::Ambiguous(_))
            ));
        }
    }

    #[test]
    fn the_method_header_is_required_with_the_uri_header() {
        let uri_only = [NGINX[1]];
        assert!(matches!(
            ask(Style::Nginx, PATH, &uri_only),
            Err(Refusal::Missing(_))
        ));
        assert!(matches!(
            ask(Style::Auto, PATH, &uri_only),
            Err(Refusal::Missing(_))
        ));
        let bad = [("x-original-method", "G E T"), NGINX[1]];
        assert!(matches!(
            ask(Style::Nginx, PATH, &bad),
            Err(Refusal::Missing(_))
        ));
    }

    #[test]
    fn styles_parse() {
        for style in [
            Style::Nginx,
            Style::Traefik,
            Style::Caddy,
            Style::Envoy,
            Style::Auto,
        ] {
            assert_eq!(style.as_str().to_uppercase().parse::<Style>(), Ok(style));
        }
        assert!("haproxy".parse::<Style>().is_err());
        assert_eq!(Style::default(), Style::Auto);
    }
}
