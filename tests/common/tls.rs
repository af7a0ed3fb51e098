//! Certificates made by the tests (rcgen): a CA, a server certificate for `localhost`
//! (only: 127.0.0.1 is a name mismatch), a client certificate, and another CA that signed none of them; and Redis
//! servers that speak TLS with them.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

use super::processes::RedisServer;

/// The PEM files, written once per test binary.
pub struct TestCerts {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl TestCerts {
    /// The CA that signed the server and client certificates.
    pub fn ca(&self) -> PathBuf {
        self.root.join("ca.pem")
    }
    /// A CA that signed nothing here.
    pub fn other_ca(&self) -> PathBuf {
        self.root.join("other-ca.pem")
    }
    /// The server's certificate (names `localhost` only) and key.
    pub fn server(&self) -> (PathBuf, PathBuf) {
        (self.root.join("server.pem"), self.root.join("server.key"))
    }
    /// The client's certificate and key (mTLS).
    pub fn client(&self) -> (PathBuf, PathBuf) {
        (self.root.join("client.pem"), self.root.join("client.key"))
    }
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write a certificate file");
}

/// The certificates of this test binary.
pub fn certs() -> &'static TestCerts {
    static CERTS: OnceLock<TestCerts> = OnceLock::new();
    CERTS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a directory for certificates");
        let root = dir.path().to_owned();
        let issuer = ca("gatehouse test CA");
        write(&root, "ca.pem", &issuer.pem());
        write(&root, "other-ca.pem", &ca("another CA").pem());
        for (name, names, usage) in [
            (
                "server",
                vec!["localhost".to_owned()],
                ExtendedKeyUsagePurpose::ServerAuth,
            ),
            (
                "client",
                vec!["gatehouse".to_owned()],
                ExtendedKeyUsagePurpose::ClientAuth,
            ),
        ] {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &issuer).unwrap();
            write(&root, &format!("{name}.pem"), &cert.pem());
            write(&root, &format!("{name}.key"), &key.serialize_pem());
        }
        TestCerts { _dir: dir, root }
    })
}

/// Whether clients must present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// They may (`--tls-auth-clients optional`).
    Optional,
    /// They must (`--tls-auth-clients yes`).
    Required,
}

/// A TLS Redis: its TLS port (the plain port of [`RedisServer`] stays, for the tests' own
/// inspection), or `None` to skip where `redis-server` cannot start.
pub struct TlsRedis {
    pub server: RedisServer,
    pub tls_port: u16,
}

impl TlsRedis {
    pub fn start(auth: ClientAuth) -> Option<Self> {
        let certs = certs();
        let tls_port = super::processes::free_port();
        let (cert, key) = certs.server();
        let path = |p: PathBuf| p.to_string_lossy().into_owned();
        let server = RedisServer::start_with(vec![
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            path(cert),
            "--tls-key-file".into(),
            path(key),
            "--tls-ca-cert-file".into(),
            path(certs.ca()),
            "--tls-auth-clients".into(),
            match auth {
                ClientAuth::Optional => "optional".into(),
                ClientAuth::Required => "yes".into(),
            },
        ])?;
        Some(Self { server, tls_port })
    }

    /// `rediss://localhost:{tls port}`.
    pub fn url(&self) -> String {
        format!("rediss://localhost:{}", self.tls_port)
    }
}
