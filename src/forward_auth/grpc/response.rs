//! Writing the forward-auth answer as a `CheckResponse`, field by field.
//!
//! | HTTP answer | `status.code` | `http_response` |
//! | --- | --- | --- |
//! | 2xx (allow, would-deny, unprotected, an allowed preflight) | `OK` (0) | `ok_response`: the six `X-Gatehouse-*` as `headers`, each replacing any of its name; `headers_to_remove`: every other client-sent header whose name, `_` read as `-`, starts with `x-gatehouse-` |
//! | 400 (invalid, ambiguous, refused URI) | `INVALID_ARGUMENT` (3) | `denied_response`: the same status, headers and problem body as over HTTP |
//! | 401 | `UNAUTHENTICATED` (16) | `denied_response` 401, with `WWW-Authenticate` |
//! | 403 | `PERMISSION_DENIED` (7) | `denied_response` 403 |
//! | 503 (store or settings unavailable under ENFORCED) | `UNAVAILABLE` (14) | `denied_response` 503 |
//!
//! Every refusal is a `denied_response`, never an `error_response` or a failed call: Envoy
//! sends a denied response to the client as it is whatever `failure_mode_allow` says, so an
//! outage fails closed even in a mesh configured to fail open.
//!
//! Envoy applies `headers` before `headers_to_remove` (`ext_authz.cc`, `onComplete`): the
//! six names are never listed for removal, or Envoy would drop gatehouse's own values. They
//! are set with `append: false` and `append_action: OVERWRITE_IF_EXISTS_OR_ADD` both: older
//! Envoys read only the deprecated `append`, newer ones take it over `append_action` when it
//! is set, and the `append_action` default (`APPEND_IF_EXISTS_OR_ADD`) would keep a client's
//! value beside gatehouse's.

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{
    CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::protobuf::BoolValue;
use envoy_types::pb::google::rpc;

use crate::forward_auth::check::IDENTITY_HEADERS;

/// Largest answer body read back (a problem document is well under 1 KiB).
const MAX_BODY: usize = 64 * 1024;

/// The gRPC code a `CheckResponse` carries for an HTTP answer's status.
pub(super) fn code(status: StatusCode) -> tonic::Code {
    match status.as_u16() {
        200..=299 => tonic::Code::Ok,
        400 => tonic::Code::InvalidArgument,
        401 => tonic::Code::Unauthenticated,
        403 => tonic::Code::PermissionDenied,
        404 => tonic::Code::NotFound,
        408 | 504 => tonic::Code::DeadlineExceeded,
        429 => tonic::Code::ResourceExhausted,
        503 => tonic::Code::Unavailable,
        402..=499 => tonic::Code::FailedPrecondition,
        _ => tonic::Code::Internal,
    }
}

/// The canonical name of `code` (`PERMISSION_DENIED`), as metrics label it.
pub(super) fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "CANCELLED",
        tonic::Code::Unknown => "UNKNOWN",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::AlreadyExists => "ALREADY_EXISTS",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
        tonic::Code::Aborted => "ABORTED",
        tonic::Code::OutOfRange => "OUT_OF_RANGE",
        tonic::Code::Unimplemented => "UNIMPLEMENTED",
        tonic::Code::Internal => "INTERNAL",
        tonic::Code::Unavailable => "UNAVAILABLE",
        tonic::Code::DataLoss => "DATA_LOSS",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Whether a header name is one a backend may read as `X-Gatehouse-*`: any case, `_` for `-`
/// (CGI-style servers read `X_Gatehouse_User` as `X-Gatehouse-User`).
pub(super) fn is_gatehouse_header(name: &str) -> bool {
    name.len() > "x-gatehouse-".len()
        && name.as_bytes()[.."x-gatehouse-".len()]
            .iter()
            .zip(b"x-gatehouse-")
            .all(|(a, b)| a.to_ascii_lowercase() == *b || (*a == b'_' && *b == b'-'))
}

/// A header to set, replacing any of its name (see the module docs).
#[allow(deprecated)] // `append`: read by the Envoys that predate `append_action`.
fn replacing(name: &str, value: &[u8]) -> HeaderValueOption {
    let (value, raw_value) = match std::str::from_utf8(value) {
        Ok(text) => (text.to_owned(), Vec::new()),
        Err(_) => (String::new(), value.to_vec()),
    };
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.to_owned(),
            value,
            raw_value,
        }),
        append: Some(BoolValue { value: false }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        keep_empty_value: true,
    }
}

/// The `CheckResponse` for `answer`, the HTTP answer to a check of a request that carried
/// `request_headers`.
pub(super) async fn check_response(answer: Response, request_headers: &HeaderMap) -> CheckResponse {
    let (parts, body) = answer.into_parts();
    let code = code(parts.status);
    let reason = parts
        .headers
        .get("x-gatehouse-reason")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let http_response = if code == tonic::Code::Ok {
        let headers = IDENTITY_HEADERS
            .iter()
            .filter_map(|name| {
                let value = parts.headers.get(*name)?;
                Some(replacing(name, value.as_bytes()))
            })
            .collect();
        // One entry per name: a header map's keys are unique.
        let headers_to_remove = request_headers
            .keys()
            .map(|name| name.as_str())
            .filter(|name| is_gatehouse_header(name) && !IDENTITY_HEADERS.contains(name))
            .map(str::to_owned)
            .collect();
        HttpResponse::OkResponse(OkHttpResponse {
            headers,
            headers_to_remove,
            ..Default::default()
        })
    } else {
        // The body is the problem document the handler built in memory: it cannot fail.
        let body = axum::body::to_bytes(body, MAX_BODY)
            .await
            .unwrap_or_default();
        HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(parts.status.as_u16()),
            }),
            headers: parts
                .headers
                .iter()
                .map(|(name, value)| replacing(name.as_str(), value.as_bytes()))
                .collect(),
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    };
    CheckResponse {
        status: Some(rpc::Status {
            code: code as i32,
            message: reason,
            details: Vec::new(),
        }),
        http_response: Some(http_response),
        dynamic_metadata: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_the_codes_envoy_and_meshes_expect() {
        for (status, expected) in [
            (200, tonic::Code::Ok),
            (400, tonic::Code::InvalidArgument),
            (401, tonic::Code::Unauthenticated),
            (403, tonic::Code::PermissionDenied),
            (503, tonic::Code::Unavailable),
            (500, tonic::Code::Internal),
        ] {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(code(status), expected, "{status}");
        }
        assert_eq!(tonic::Code::Unavailable as i32, 14);
        assert_eq!(
            code_name(tonic::Code::PermissionDenied),
            "PERMISSION_DENIED"
        );
    }

    #[test]
    fn gatehouse_headers_in_every_spelling_are_recognised() {
        for name in [
            "x-gatehouse-user",
            "x_gatehouse_user",
            "X-Gatehouse-Admin",
            "x-gatehouse_x",
        ] {
            assert!(is_gatehouse_header(name), "{name}");
        }
        for name in [
            "x-gatehouse-",
            "x-gatehousex",
            "gatehouse-user",
            "x-forwarded-user",
        ] {
            assert!(!is_gatehouse_header(name), "{name}");
        }
    }
}
