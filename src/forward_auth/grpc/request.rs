//! Reading a `CheckRequest` as a forward-auth question: which of its fields say what.
//!
//! Envoy describes the request it holds in `attributes.request.http`. gatehouse reads, like
//! the `envoy` HTTP style (the request's own method and path, never another convention's
//! headers):
//!
//! | question | from | never from |
//! | --- | --- | --- |
//! | original method | `http.method` (upper-cased, as the header styles do) | `X-Original-Method`, `X-Forwarded-Method`, `X-HTTP-Method-Override` (that one only widens the readings, as over HTTP) |
//! | original raw URI | `http.path`: the request target as the client sent it, query included, not decoded | `X-Original-URI`, `X-Forwarded-Uri`, `http.query` (always empty) |
//! | credentials, cookie, method overrides, preflight | `http.headers` (Envoy's default: one lower-cased entry per name, repeats joined with `,`) or `http.header_map` (`encode_raw_headers: true`: repeats kept, so a second `Authorization` is refused as over HTTP) | |
//! | client address | `X-Forwarded-For` in those headers, only when the gRPC peer is in `GATEHOUSE_TRUSTED_PROXIES` (as the `envoy` style); else the peer | `attributes.source`, `X-Real-IP` |
//! | request id | `x-request-id` in those headers, else `http.id`, else a new one | |
//!
//! `http.host` is not read: the route table matches paths only, as over HTTP.
//!
//! Refused (never decided): a check with no `attributes.request.http`, an empty or invalid
//! method, an empty path, a header name or value HTTP cannot carry (Envoy replaces invalid
//! UTF-8 by `!`; anything else means the request was not built by Envoy) — 400
//! `invalid-request`; and as ambiguous (400 `ambiguous-request`, audited): both header forms
//! at once, or a `:method` / `:path` pseudo-header entry that differs from the field (Envoy
//! fills both from the same request, so a difference means something else wrote one).

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;

use crate::forward_auth::original::{OriginalRequest, Refusal};

/// What a `CheckRequest` says about the original request.
#[derive(Debug)]
pub(super) struct Read {
    /// The original method and raw URI, or why they cannot be read.
    pub original: Result<OriginalRequest, Refusal>,
    /// The original request's headers (pseudo-headers left out); empty when unreadable.
    pub headers: HeaderMap,
    /// `x-request-id`, else `http.id`, when either is set.
    pub request_id: Option<String>,
}

const MISSING_HTTP: &str =
    "the CheckRequest has no attributes.request.http: only HTTP requests are checked";

/// Reads `check` (see the [module docs](self)).
pub(super) fn read(check: &CheckRequest) -> Read {
    let Some(http) = check
        .attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref())
    else {
        return Read {
            original: Err(Refusal::Missing(MISSING_HTTP.into())),
            headers: HeaderMap::new(),
            request_id: None,
        };
    };
    let (headers, header_problem) = match headers(http) {
        Ok(headers) => (headers, None),
        Err(refusal) => (HeaderMap::new(), Some(refusal)),
    };
    let request_id = headers
        .get(crate::http::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .or_else(|| (!http.id.is_empty()).then(|| http.id.clone()));
    let original = match header_problem {
        Some(refusal) => Err(refusal),
        None => original(http),
    };
    Read {
        original,
        headers,
        request_id,
    }
}

fn original(http: &HttpRequest) -> Result<OriginalRequest, Refusal> {
    let raw_method = http.method.trim();
    if raw_method.is_empty() {
        return Err(Refusal::Missing(
            "the CheckRequest has no attributes.request.http.method".into(),
        ));
    }
    let method = Method::from_bytes(raw_method.to_ascii_uppercase().as_bytes())
        .map_err(|_| Refusal::Missing(format!("invalid original method {raw_method:?}")))?;
    if http.path.is_empty() {
        return Err(Refusal::Missing(
            "the CheckRequest has no attributes.request.http.path".into(),
        ));
    }
    Ok(OriginalRequest {
        method,
        uri: http.path.clone(),
    })
}

/// The headers of the original request, from whichever of the two forms Envoy filled.
fn headers(http: &HttpRequest) -> Result<HeaderMap, Refusal> {
    let raw = http.header_map.as_ref().map_or(&[][..], |m| &m.headers[..]);
    if !http.headers.is_empty() && !raw.is_empty() {
        return Err(Refusal::Ambiguous(
            "the CheckRequest carries both attributes.request.http.headers and header_map".into(),
        ));
    }
    let entries: Vec<(&str, &[u8])> = if raw.is_empty() {
        http.headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_bytes()))
            .collect()
    } else {
        raw.iter()
            .map(|h| {
                let value = if h.raw_value.is_empty() {
                    h.value.as_bytes()
                } else {
                    &h.raw_value[..]
                };
                (h.key.as_str(), value)
            })
            .collect()
    };
    let mut map = HeaderMap::new();
    for (name, value) in entries {
        if let Some(pseudo) = name.strip_prefix(':') {
            let (field, what) = match pseudo.to_ascii_lowercase().as_str() {
                "method" => (http.method.as_bytes(), "method"),
                "path" => (http.path.as_bytes(), "path"),
                // :authority, :scheme and the like decide nothing here.
                _ => continue,
            };
            if value != field {
                return Err(Refusal::Ambiguous(format!(
                    "the CheckRequest's :{what} header and its {what} field differ"
                )));
            }
            continue;
        }
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| Refusal::Missing(format!("invalid header name {name:?}")))?;
        let value = HeaderValue::from_bytes(value)
            .map_err(|_| Refusal::Missing(format!("the {header} header has an invalid value")))?;
        map.append(header, value);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::{HeaderMap as RawHeaders, HeaderValue as Raw};
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::Request;

    fn check(http: HttpRequest) -> CheckRequest {
        CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(Request {
                    http: Some(http),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }

    fn http(method: &str, path: &str, headers: &[(&str, &str)]) -> HttpRequest {
        HttpRequest {
            method: method.into(),
            path: path.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_fields_are_authoritative_never_the_convention_headers() {
        let read = read(&check(http(
            "delete",
            "/api/chat/sessions/s2/messages?x=%2e",
            &[
                ("x-original-method", "GET"),
                ("x-original-uri", "/api/chat/sessions/s1"),
                ("x-forwarded-uri", "/static/app.js"),
                (":path", "/api/chat/sessions/s2/messages?x=%2e"),
                (":authority", "chat.example"),
                ("x-request-id", "r-1"),
            ],
        )));
        let original = read.original.unwrap();
        assert_eq!(original.method, Method::DELETE);
        assert_eq!(original.uri, "/api/chat/sessions/s2/messages?x=%2e");
        assert_eq!(read.request_id.as_deref(), Some("r-1"));
        assert!(
            read.headers.contains_key("x-original-uri"),
            "kept, never read"
        );
        assert!(!read.headers.keys().any(|k| k.as_str().starts_with(':')));
    }

    #[test]
    fn what_cannot_be_read_is_refused() {
        let missing = |r: Read| matches!(r.original, Err(Refusal::Missing(_)));
        let ambiguous = |r: Read| matches!(r.original, Err(Refusal::Ambiguous(_)));
        assert!(missing(read(&CheckRequest::default())));
        assert!(missing(read(&check(http("", "/a", &[])))));
        assert!(missing(read(&check(http("G E T", "/a", &[])))));
        assert!(missing(read(&check(http("GET", "", &[])))));
        assert!(missing(read(&check(http("GET", "/a", &[("x-a", "a\nb")])))));
        assert!(missing(read(&check(http(
            "GET",
            "/a",
            &[("bad name", "1")]
        )))));
        assert!(ambiguous(read(&check(http(
            "GET",
            "/a",
            &[(":path", "/b")]
        )))));
        assert!(ambiguous(read(&check(http(
            "GET",
            "/a",
            &[(":method", "POST")]
        )))));
        let mut both = http("GET", "/a", &[("authorization", "Bearer x")]);
        both.header_map = Some(RawHeaders {
            headers: vec![Raw {
                key: "authorization".into(),
                value: "Bearer y".into(),
                ..Default::default()
            }],
        });
        assert!(ambiguous(read(&check(both))));
    }

    #[test]
    fn raw_headers_keep_repeats() {
        let mut raw = http("GET", "/a", &[]);
        raw.id = "stream-7".into();
        raw.header_map = Some(RawHeaders {
            headers: ["Bearer a", "Bearer b"]
                .into_iter()
                .map(|v| Raw {
                    key: "authorization".into(),
                    raw_value: v.as_bytes().to_vec(),
                    ..Default::default()
                })
                .collect(),
        });
        let read = read(&check(raw));
        assert_eq!(read.headers.get_all("authorization").iter().count(), 2);
        assert_eq!(read.request_id.as_deref(), Some("stream-7"));
    }
}
