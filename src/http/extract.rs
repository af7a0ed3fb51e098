//! Extractors whose rejections are problem documents instead of axum's plain-text ones.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts};
use serde::de::DeserializeOwned;

use super::ApiError;

/// Largest JSON body accepted, in bytes (a full batch of 100 checks fits many times over).
pub const MAX_JSON_BODY: usize = 256 * 1024;

/// A JSON request body.
///
/// Unlike `axum::Json`, a body without `Content-Type`, or with curl's default
/// `application/x-www-form-urlencoded`, is read as JSON (operators type `curl -d '{...}'`); one
/// declared as anything else is a 415. Malformed JSON, missing and unknown fields are 400s
/// whose detail is serde's message (with line and column).
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(content_type) = req.headers().get(header::CONTENT_TYPE) {
            let essence = content_type
                .to_str()
                .unwrap_or("")
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            // curl -d sends application/x-www-form-urlencoded unless told otherwise: read it
            // as JSON rather than make every operator add a header.
            let json_like = essence == "application/json"
                || essence.ends_with("+json")
                || essence == "application/x-www-form-urlencoded";
            if !json_like {
                return Err(ApiError::UnsupportedMediaType);
            }
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| match e {
            BytesRejection::FailedToBufferBody(_) => ApiError::PayloadTooLarge(MAX_JSON_BODY),
            other => ApiError::InvalidRequest(other.body_text()),
        })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::InvalidRequest(format!("invalid JSON body: {e}")))
    }
}

/// Query parameters, with a problem document for a bad query string.
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| ApiError::InvalidRequest(e.body_text()))
    }
}

/// Answers unknown paths with a 404 problem.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such path; see /docs for the API".into())
}

/// Answers known paths with an unsupported method with a 405 problem.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Path parameters, with a problem document when they cannot be read.
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e| ApiError::InvalidRequest(e.body_text()))
    }
}

/// Where a request came from, for the audit stream: its request id and the peer's address
/// (the connection's, from `ConnectInfo`; forwarded-for headers are not trusted here).
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    /// The `x-request-id` header (set by the request-id layer when the client sent none).
    pub request_id: Option<String>,
    /// The peer's IP address.
    pub client_ip: Option<std::net::IpAddr>,
}

impl RequestMeta {
    /// Reads the metadata of a request's parts.
    pub fn of(parts: &Parts) -> Self {
        Self::from_headers_and_extensions(&parts.headers, &parts.extensions)
    }

    /// Reads the metadata from headers and extensions (for middleware holding a `Request`).
    pub fn from_headers_and_extensions(
        headers: &axum::http::HeaderMap,
        extensions: &axum::http::Extensions,
    ) -> Self {
        Self {
            request_id: headers
                .get(super::REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            client_ip: extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|info| info.0.ip()),
        }
    }

    /// The audit origin of a check made by `source` for this request.
    pub fn origin(&self, source: crate::audit::Source) -> crate::gatekeeper::Origin {
        crate::gatekeeper::Origin {
            request_id: self.request_id.clone(),
            client_ip: self.client_ip,
            ..crate::gatekeeper::Origin::new(source)
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestMeta {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::of(parts))
    }
}
