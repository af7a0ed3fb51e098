//! Fetching an identity provider's documents (OIDC discovery, JWKS) over HTTPS.
//!
//! hyper's client over rustls with ring (the Redis connections' provider), built for this one
//! use: `https://` only, no proxy, no redirect followed (a 3xx is an error: the configured or
//! discovered URL is the one trusted), no compression asked for, one bound on the whole
//! exchange (connect, TLS, headers and body), and a body of at most [`MAX_BODY`] bytes.
//! Trust: the PEM CA bundle configured for the issuer, instead of the system's roots, or
//! those roots (`rustls-native-certs`) when none is.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, CACHE_CONTROL, HeaderMap, LOCATION, USER_AGENT};
use hyper::{Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The largest document accepted (a JWKS of a few keys is a few KiB; Azure AD's, with its
/// certificates, about 10).
pub const MAX_BODY: usize = 256 * 1024;

/// Why a document could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// No answer, or not a 200: connection, TLS (an unknown CA), timeout, an HTTP error.
    #[error("{0}")]
    Unreachable(String),
    /// An answer that is not what was asked for: too large, not the JSON expected, no usable
    /// key, a discovery document for another issuer.
    #[error("{0}")]
    Invalid(String),
}

/// A document, and how long its server says it may be kept.
pub struct Fetched {
    /// The body.
    pub body: Bytes,
    /// From `Cache-Control`: `max-age`, or zero for `no-cache` / `no-store`; `None` without.
    pub max_age: Option<Duration>,
}

/// An HTTPS client for one issuer's documents.
#[derive(Clone)]
pub struct Fetcher {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    timeout: Duration,
}

/// The error and its causes, one after the other (hyper's own says only "client error
/// (Connect)"; the cause says "invalid peer certificate: UnknownIssuer").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// `Cache-Control`'s `max-age` (zero for `no-cache` and `no-store`: fetch again as soon as
/// allowed).
pub fn max_age(headers: &HeaderMap) -> Option<Duration> {
    let mut found = None;
    for value in headers.get_all(CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',').map(str::trim) {
            let (name, argument) = directive.split_once('=').unwrap_or((directive, ""));
            match name.trim().to_ascii_lowercase().as_str() {
                "no-cache" | "no-store" => return Some(Duration::ZERO),
                "max-age" => {
                    if let Ok(seconds) = argument.trim().trim_matches('"').parse::<u64>() {
                        found = Some(Duration::from_secs(seconds));
                    }
                }
                _ => {}
            }
        }
    }
    found
}

impl Fetcher {
    /// A client trusting `ca_pem` (a PEM bundle) instead of the system's roots, or those
    /// roots; every exchange bounded by `timeout`.
    pub fn new(ca_pem: Option<&[u8]>, timeout: Duration) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        match ca_pem {
            Some(pem) => {
                for certificate in CertificateDer::pem_slice_iter(pem) {
                    let certificate =
                        certificate.map_err(|e| format!("the CA file does not parse: {e}"))?;
                    roots
                        .add(certificate)
                        .map_err(|e| format!("the CA file: {e}"))?;
                }
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(native.certs);
                if added == 0 {
                    return Err(
                        "no system trust roots found (install ca-certificates, or name the \
                         identity provider's CA with GATEHOUSE_JWT_CA_FILE)"
                            .into(),
                    );
                }
            }
        }
        if roots.is_empty() {
            return Err("no certificate in the CA file".into());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
        Ok(Self { client, timeout })
    }

    /// GETs `url` (`https://` only) and reads its body.
    pub async fn get(&self, url: &str) -> Result<Fetched, FetchError> {
        let request = Request::get(url)
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
            .body(Empty::new())
            .map_err(|e| FetchError::Invalid(format!("{url}: {e}")))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| FetchError::Unreachable(format!("{url}: {}", chain(&e))))?;
            let status = response.status();
            if status.is_redirection() {
                let to = response
                    .headers()
                    .get(LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .unwrap_or("?");
                return Err(FetchError::Unreachable(format!(
                    "{url}: HTTP {status}, redirected to {to} (redirects are not followed: \
                     configure the final URL)"
                )));
            }
            if status != StatusCode::OK {
                return Err(FetchError::Unreachable(format!("{url}: HTTP {status}")));
            }
            let max_age = max_age(response.headers());
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        FetchError::Invalid(format!("{url}: larger than {MAX_BODY} bytes"))
                    } else {
                        FetchError::Unreachable(format!("{url}: {}", chain(&*e)))
                    }
                })?
                .to_bytes();
            Ok(Fetched { body, max_age })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(FetchError::Unreachable(format!(
                    "{url}: no answer within {:?}",
                    self.timeout
                )))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(CACHE_CONTROL, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(max_age(&headers(&[])), None);
        assert_eq!(
            max_age(&headers(&["public, max-age=3600, must-revalidate"])),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            max_age(&headers(&["Max-Age=\"60\""])),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            max_age(&headers(&["max-age=600", "no-cache"])),
            Some(Duration::ZERO)
        );
        assert_eq!(max_age(&headers(&["no-store"])), Some(Duration::ZERO));
        assert_eq!(max_age(&headers(&["max-age=soon"])), None);
        assert_eq!(max_age(&headers(&["s-maxage=60"])), None);
    }

    #[tokio::test]
    async fn only_https_is_fetched() {
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let fetcher = Fetcher::new(Some(ca.cert.pem().as_bytes()), Duration::from_secs(1)).unwrap();
        let refused = fetcher.get("http://127.0.0.1:9/jwks").await.err().unwrap();
        assert!(matches!(refused, FetchError::Unreachable(_)), "{refused}");
    }
}
