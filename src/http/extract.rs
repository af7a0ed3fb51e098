//! Extractors whose rejections are problem documents instead of axum's plain-text ones, and
//! where a request came from ([`RequestMeta`], [`TrustedProxies`]).

use std::net::IpAddr;

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
/// whose detail is serde's message (with line and column). Every body the API takes is a JSON
/// object, so anything else is a 400 too: serde would otherwise read a struct from an array of
/// its fields in order (`["s1"]` as `{"session_id": "s1"}`), which the contract does not offer.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = json_bytes(req, state).await?;
        json_object(&bytes).map(JsonBody)
    }
}

/// A JSON request body that may be left out: an empty (or all-whitespace) body is `None`;
/// anything else is read as [`JsonBody`] reads it (a JSON object: `null` is no body).
pub struct OptionalJsonBody<T>(pub Option<T>);

impl<S, T> FromRequest<S> for OptionalJsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = json_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(None));
        }
        json_object(&bytes).map(|body| OptionalJsonBody(Some(body)))
    }
}

/// The body of a request declared as JSON (or undeclared: see [`JsonBody`]).
async fn json_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
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
    Bytes::from_request(req, state).await.map_err(|e| match e {
        BytesRejection::FailedToBufferBody(_) => ApiError::PayloadTooLarge(MAX_JSON_BODY),
        other => ApiError::InvalidRequest(other.body_text()),
    })
}

/// Reads a JSON object (only: see [`JsonBody`]).
fn json_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::InvalidRequest(
            "invalid JSON body: expected a JSON object ({...})".into(),
        ));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::InvalidRequest(format!("invalid JSON body: {e}")))
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

/// The proxies whose forwarded client address is believed (`GATEHOUSE_TRUSTED_PROXIES`:
/// comma-separated CIDRs or addresses; default none).
///
/// Anyone can send `X-Forwarded-For` or `X-Real-IP`, so they say something only when the TCP
/// peer is a proxy of ours that sets them. For a request from a trusted peer the client is
/// found by walking `X-Forwarded-For` from the right (each proxy appends the address it saw)
/// past the trusted proxies: the first untrusted entry is the client (all trusted: the
/// leftmost; an unreadable entry stops the walk at the last address believed). Without
/// `X-Forwarded-For`, a single `X-Real-IP` is taken. From any other peer, both headers are
/// ignored and the client is the peer. Addresses are compared in canonical form (an
/// IPv4-mapped IPv6 peer is its IPv4 address).
///
/// The app inserts it into every request's extensions; a service using
/// [`crate::middleware::OwnershipLayer`] on its own may add it with
/// `axum::Extension(TrustedProxies::parse(...)?)` (without it, the peer address is used).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(std::sync::Arc<[ipnet::IpNet]>);

const X_FORWARDED_FOR: axum::http::HeaderName =
    axum::http::HeaderName::from_static("x-forwarded-for");
const X_REAL_IP: axum::http::HeaderName = axum::http::HeaderName::from_static("x-real-ip");

impl TrustedProxies {
    /// Parses `10.0.0.0/8, 192.168.1.7, ::1`; a bare address is a single-address network.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let net = item
                .parse::<ipnet::IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("{item:?} is not a CIDR (10.0.0.0/8) or an address"))?;
            nets.push(net.trunc());
        }
        Ok(Self(nets.into()))
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client address of a request from `peer` carrying `headers` (see the type docs).
    pub fn client_ip(&self, peer: IpAddr, headers: &axum::http::HeaderMap) -> IpAddr {
        self.client_ip_from(peer, headers, AddressHeader::Any)
    }

    /// The client address, read only from the header `from` names when the peer is trusted
    /// (a proxy that sets one passes the other through from the client unchanged).
    pub fn client_ip_from(
        &self,
        peer: IpAddr,
        headers: &axum::http::HeaderMap,
        from: AddressHeader,
    ) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.contains(peer) {
            return peer;
        }
        let forwarded: Vec<&str> = headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or(",").split(','))
            .collect();
        if from != AddressHeader::RealIp && !forwarded.is_empty() {
            let mut believed = peer;
            for entry in forwarded.iter().rev() {
                let Some(ip) = forwarded_ip(entry) else {
                    return believed;
                };
                believed = ip;
                if !self.contains(ip) {
                    return ip;
                }
            }
            return believed;
        }
        if from == AddressHeader::ForwardedFor {
            return peer;
        }
        let mut real = headers.get_all(X_REAL_IP).iter();
        match (real.next(), real.next()) {
            (Some(one), None) => one.to_str().ok().and_then(forwarded_ip).unwrap_or(peer),
            _ => peer,
        }
    }
}

/// Which header a trusted proxy writes the client's address in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressHeader {
    /// `X-Forwarded-For`, else `X-Real-IP` (what a proxy of unknown kind may have set).
    Any,
    /// Only `X-Forwarded-For` (Traefik, Caddy and Envoy append or replace it).
    ForwardedFor,
    /// Only `X-Real-IP` (nginx's recipe sets it and passes a client's `X-Forwarded-For`).
    RealIp,
}

/// An address as proxies write it: `203.0.113.7`, `2001:db8::1`, `[2001:db8::1]:443`,
/// `203.0.113.7:5000`.
fn forwarded_ip(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<std::net::SocketAddr>().map(|a| a.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// Where a request came from, for the audit stream: its request id and the client's address:
/// the TCP peer's (from `ConnectInfo`), or the forwarded one when the peer is one of the
/// [`TrustedProxies`] in the request's extensions.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    /// The `x-request-id` header (set by the request-id layer when the client sent none).
    pub request_id: Option<String>,
    /// The client's IP address.
    pub client_ip: Option<IpAddr>,
    /// The TCP peer's address (canonical), whoever it is.
    pub peer_ip: Option<IpAddr>,
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
        let peer_ip = extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|info| info.0.ip().to_canonical());
        Self {
            request_id: headers
                .get(super::REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            client_ip: peer_ip.map(|peer| match extensions.get::<TrustedProxies>() {
                Some(trusted) => trusted.client_ip(peer, headers),
                None => peer,
            }),
            peer_ip,
        }
    }

    /// The audit origin of a check made by `source` for this request.
    pub fn origin(&self, source: crate::records::Source) -> crate::gatekeeper::Origin {
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().expect("test header"));
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn forwarded_addresses_are_believed_only_from_trusted_peers() {
        let trusted = TrustedProxies::parse("10.0.0.0/8, 192.168.1.7 ,::1").unwrap();
        let spoof = headers(&[
            ("x-forwarded-for", "198.51.100.1"),
            ("x-real-ip", "198.51.100.2"),
        ]);
        assert_eq!(
            trusted.client_ip(ip("203.0.113.9"), &spoof),
            ip("203.0.113.9")
        );
        assert_eq!(
            TrustedProxies::default().client_ip(ip("10.0.0.1"), &spoof),
            ip("10.0.0.1")
        );
        assert_eq!(
            trusted.client_ip(ip("10.1.2.3"), &spoof),
            ip("198.51.100.1")
        );
        assert_eq!(
            trusted.client_ip(ip("::ffff:10.1.2.3"), &spoof),
            ip("198.51.100.1")
        );
        assert_eq!(trusted.client_ip(ip("::1"), &spoof), ip("198.51.100.1"));
    }

    #[test]
    fn forwarded_for_is_walked_from_the_right_past_trusted_proxies() {
        let trusted = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let peer = ip("10.0.0.1");
        let chain = headers(&[
            ("x-forwarded-for", "1.1.1.1, 203.0.113.7"),
            ("x-forwarded-for", "10.0.0.5"),
            ("x-real-ip", "198.51.100.2"),
        ]);
        // 1.1.1.1 was written by the client; 203.0.113.7 is what our first proxy saw.
        assert_eq!(trusted.client_ip(peer, &chain), ip("203.0.113.7"));
        let all_trusted = headers(&[("x-forwarded-for", "10.0.0.9, 10.0.0.5")]);
        assert_eq!(trusted.client_ip(peer, &all_trusted), ip("10.0.0.9"));
        let garbage = headers(&[("x-forwarded-for", "203.0.113.7, unknown, 10.0.0.5")]);
        assert_eq!(trusted.client_ip(peer, &garbage), ip("10.0.0.5"));
        let ported = headers(&[("x-forwarded-for", "[2001:db8::1]:443")]);
        assert_eq!(trusted.client_ip(peer, &ported), ip("2001:db8::1"));
        let real = headers(&[("x-real-ip", "203.0.113.8")]);
        assert_eq!(trusted.client_ip(peer, &real), ip("203.0.113.8"));
        let from = |h: &HeaderMap, which| trusted.client_ip_from(peer, h, which);
        assert_eq!(from(&chain, AddressHeader::RealIp), ip("198.51.100.2"));
        assert_eq!(from(&chain, AddressHeader::ForwardedFor), ip("203.0.113.7"));
        assert_eq!(from(&real, AddressHeader::ForwardedFor), peer);
        let two_real = headers(&[("x-real-ip", "203.0.113.8"), ("x-real-ip", "1.1.1.1")]);
        assert_eq!(trusted.client_ip(peer, &two_real), peer);
        assert_eq!(trusted.client_ip(peer, &headers(&[])), peer);
    }

    #[test]
    fn bad_lists_are_refused() {
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("proxy.internal").is_err());
        assert!(TrustedProxies::parse("").unwrap().0.is_empty());
    }
}
