//! A local identity provider over real HTTPS (the test CA's `localhost` certificate, see
//! [`super::tls`]): OpenID Connect discovery and a JWKS that the test changes, counting the
//! requests; and keys to sign its tokens with. Laid out like a Keycloak realm: issuer
//! `https://localhost:{port}/realms/chat`, keys at `.../protocol/openid-connect/certs`.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use base64::Engine;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tower::ServiceExt;

/// The JWKS path.
const CERTS: &str = "/realms/chat/protocol/openid-connect/certs";

struct Published {
    /// The body at [`CERTS`].
    jwks: Vec<u8>,
    /// `Cache-Control` of the JWKS answer.
    cache_control: Option<String>,
    /// The `issuer` the discovery document names (`None`: the real one).
    discovery_issuer: Option<String>,
    /// The JWKS answer's status.
    status: StatusCode,
}

struct Shared {
    issuer: String,
    jwks_url: String,
    published: Mutex<Published>,
    /// Connections are dropped before the TLS handshake: the provider is unreachable.
    down: AtomicBool,
    /// Cancelled when the provider goes down: ends the connections open then.
    open: Mutex<tokio_util::sync::CancellationToken>,
    /// Each JWKS answer is held this long (milliseconds).
    delay_ms: AtomicU64,
    jwks_requests: AtomicUsize,
    discovery_requests: AtomicUsize,
}

/// The provider, serving until dropped.
pub struct TestIdp {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

async fn discovery(State(shared): State<Arc<Shared>>) -> axum::Json<Value> {
    shared.discovery_requests.fetch_add(1, Ordering::SeqCst);
    let named = shared.published.lock().unwrap().discovery_issuer.clone();
    axum::Json(json!({
        "issuer": named.unwrap_or_else(|| shared.issuer.clone()),
        "jwks_uri": shared.jwks_url,
        "authorization_endpoint": format!("{}/protocol/openid-connect/auth", shared.issuer),
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
    }))
}

async fn certs(State(shared): State<Arc<Shared>>) -> axum::response::Response {
    shared.jwks_requests.fetch_add(1, Ordering::SeqCst);
    let delay = shared.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let (body, cache_control, status) = {
        let p = shared.published.lock().unwrap();
        (p.jwks.clone(), p.cache_control.clone(), p.status)
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jwk-set+json"),
    );
    if let Some(value) = cache_control.and_then(|v| HeaderValue::from_str(&v).ok()) {
        headers.insert(header::CACHE_CONTROL, value);
    }
    (status, headers, body).into_response()
}

fn tls_config() -> rustls::ServerConfig {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (cert, key) = super::tls::certs().server();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap()
}

impl TestIdp {
    /// A provider on a free loopback port, publishing `keys`.
    pub async fn start(keys: &[&SigningKey]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let base = format!("https://localhost:{port}");
        let shared = Arc::new(Shared {
            issuer: format!("{base}/realms/chat"),
            jwks_url: format!("{base}{CERTS}"),
            published: Mutex::new(Published {
                jwks: jwks(keys),
                cache_control: None,
                discovery_issuer: None,
                status: StatusCode::OK,
            }),
            down: AtomicBool::new(false),
            open: Mutex::new(tokio_util::sync::CancellationToken::new()),
            delay_ms: AtomicU64::new(0),
            jwks_requests: AtomicUsize::new(0),
            discovery_requests: AtomicUsize::new(0),
        });
        let router = axum::Router::new()
            .route(
                "/realms/chat/.well-known/openid-configuration",
                get(discovery),
            )
            .route(CERTS, get(certs))
            .with_state(shared.clone());
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config()));
        let serving = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                if serving.down.load(Ordering::SeqCst) {
                    drop(tcp);
                    continue;
                }
                let (acceptor, router) = (acceptor.clone(), router.clone());
                let open = serving.open.lock().unwrap().clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        move |request: hyper::Request<hyper::body::Incoming>| {
                            router.clone().oneshot(request)
                        },
                    );
                    let connection = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service);
                    tokio::select! {
                        _ = connection => {}
                        () = open.cancelled() => {}
                    }
                });
            }
        });
        Self { shared, task }
    }

    /// The issuer (`iss` of its tokens).
    pub fn issuer(&self) -> String {
        self.shared.issuer.clone()
    }

    /// The JWKS URL.
    pub fn jwks_url(&self) -> String {
        self.shared.jwks_url.clone()
    }

    /// Publishes exactly `keys` from now on.
    pub fn publish(&self, keys: &[&SigningKey]) {
        self.shared.published.lock().unwrap().jwks = jwks(keys);
    }

    /// Serves `body` as the JWKS from now on.
    pub fn publish_raw(&self, body: Vec<u8>) {
        self.shared.published.lock().unwrap().jwks = body;
    }

    /// The JWKS answer's `Cache-Control` from now on.
    pub fn cache_control(&self, value: Option<&str>) {
        self.shared.published.lock().unwrap().cache_control = value.map(str::to_owned);
    }

    /// The JWKS answer's status from now on.
    pub fn status(&self, status: StatusCode) {
        self.shared.published.lock().unwrap().status = status;
    }

    /// The `issuer` the discovery document names from now on.
    pub fn discovery_names(&self, issuer: &str) {
        self.shared.published.lock().unwrap().discovery_issuer = Some(issuer.to_owned());
    }

    /// Unreachable (`true`: open connections closed, new ones dropped) or back.
    pub fn down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
        if down {
            let mut open = self.shared.open.lock().unwrap();
            open.cancel();
            *open = tokio_util::sync::CancellationToken::new();
        }
    }

    /// Each JWKS answer held this long from now on.
    pub fn delay(&self, delay: Duration) {
        self.shared
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// JWKS requests answered or being answered so far.
    pub fn jwks_requests(&self) -> usize {
        self.shared.jwks_requests.load(Ordering::SeqCst)
    }

    /// Discovery requests so far.
    pub fn discovery_requests(&self) -> usize {
        self.shared.discovery_requests.load(Ordering::SeqCst)
    }
}

impl Drop for TestIdp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn jwks(keys: &[&SigningKey]) -> Vec<u8> {
    let keys: Vec<Value> = keys.iter().map(|k| k.jwk.clone()).collect();
    serde_json::to_vec(&json!({ "keys": keys })).unwrap()
}

/// A key the provider signs with, and its public JWK.
pub struct SigningKey {
    /// Its `kid`.
    pub kid: String,
    algorithm: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

impl SigningKey {
    /// A fresh EC P-256 key (ES256).
    pub fn ec(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate().unwrap();
        let point = pair.public_key_raw();
        // Uncompressed: 0x04, then X and Y, 32 bytes each.
        assert_eq!(point.len(), 65);
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        Self {
            kid: kid.to_owned(),
            algorithm: Algorithm::ES256,
            encoding: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
            jwk: json!({
                "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
                "x": b64(&point[1..33]), "y": b64(&point[33..]),
            }),
        }
    }

    /// The fixture RSA key (`tests/fixtures/rsa.*`, kid `rsa-2026`, RS256).
    pub fn rsa_fixture() -> Self {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
        let pem = std::fs::read(format!("{dir}/rsa.key.pem")).unwrap();
        let jwk: Value =
            serde_json::from_slice(&std::fs::read(format!("{dir}/rsa.jwk.json")).unwrap()).unwrap();
        Self {
            kid: jwk["kid"].as_str().unwrap().to_owned(),
            algorithm: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_pem(&pem).unwrap(),
            jwk,
        }
    }

    /// The public JWK.
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// `claims` signed with this key, its `kid` in the header.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_as(Some(&self.kid), claims)
    }

    /// `claims` signed with this key, `kid` (or none) in the header.
    pub fn sign_as(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

/// Claims of a token for `sub` from `issuer` to `audience`, valid ten minutes, with `extra`.
pub fn claims(issuer: &str, audience: &str, sub: &str, extra: Value) -> Value {
    let mut claims = json!({
        "iss": issuer,
        "aud": audience,
        "sub": sub,
        "exp": jsonwebtoken::get_current_timestamp() + 600,
    });
    if let (Value::Object(claims), Value::Object(extra)) = (&mut claims, extra) {
        claims.extend(extra);
    }
    claims
}
