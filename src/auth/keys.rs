//! Loading verification keys: an HS256 secret, PEM public keys, JWKS files.

use jsonwebtoken::jwk::{JwkSet, PublicKeyUse};
use jsonwebtoken::{AlgorithmFamily, DecodingKey};

/// A public key ready for verification.
#[derive(Clone)]
pub struct PublicKey {
    /// The `kid` tokens name it by (from the JWKS, or `kid=` in the configuration).
    pub kid: Option<String>,
    /// The key.
    pub key: DecodingKey,
    /// Where it came from, for error messages.
    pub source: String,
}

/// Names the key, never its material.
impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey")
            .field("kid", &self.kid)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// A key file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read key file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is neither a usable PEM public key nor a JWKS.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A key matches none of the configured algorithms.
    #[error(
        "key {source_name} ({family:?}) matches none of the configured algorithms; add one of {family_algorithms} to GATEHOUSE_JWT_ALGORITHMS"
    )]
    NoAlgorithm {
        /// Where the key came from.
        source_name: String,
        /// Its family.
        family: AlgorithmFamily,
        /// The algorithms of that family.
        family_algorithms: String,
    },
    /// No key at all.
    #[error("no verification key configured")]
    NoKeys,
    /// An identity provider that cannot be set up (its CA bundle, no trust roots).
    #[error("identity provider {issuer}: {message}")]
    Provider {
        /// The issuer.
        issuer: String,
        /// What is wrong.
        message: String,
    },
    /// Identity providers whose keys could not be fetched at start, one line each.
    #[error("{}", .0.join("; "))]
    Unfetched(Vec<String>),
}

/// Loads the keys named by `spec`: comma-separated `[kid=]path` entries, each a PEM public key
/// (RSA, EC or Ed25519) or a JWKS file (`{"keys": [...]}`; `kid`s taken from the set).
pub fn load_public_keys(spec: &str) -> Result<Vec<PublicKey>, KeyError> {
    let mut keys = Vec::new();
    for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (kid, path) = match entry.split_once('=') {
            Some((kid, path)) => (Some(kid.trim().to_owned()), path.trim()),
            None => (None, entry),
        };
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        if text.trim_start().starts_with('{') {
            keys.extend(parse_jwks(path, &text)?);
        } else {
            keys.push(PublicKey {
                kid,
                key: parse_pem(path, text.as_bytes())?,
                source: path.to_owned(),
            });
        }
    }
    Ok(keys)
}

fn parse_pem(path: &str, pem: &[u8]) -> Result<DecodingKey, KeyError> {
    DecodingKey::from_rsa_pem(pem)
        .or_else(|_| DecodingKey::from_ec_pem(pem))
        .or_else(|_| DecodingKey::from_ed_pem(pem))
        .map_err(|_| KeyError::Parse {
            path: path.to_owned(),
            message: "not an RSA, EC or Ed25519 public key in PEM".into(),
        })
}

fn parse_jwks(path: &str, json: &str) -> Result<Vec<PublicKey>, KeyError> {
    let set: JwkSet = serde_json::from_str(json).map_err(|e| KeyError::Parse {
        path: path.to_owned(),
        message: format!("not a JWKS: {e}"),
    })?;
    set.keys
        .iter()
        .filter(|jwk| jwk.common.public_key_use != Some(PublicKeyUse::Encryption))
        .map(|jwk| {
            let kid = jwk.common.key_id.clone();
            let key = DecodingKey::from_jwk(jwk).map_err(|e| KeyError::Parse {
                path: path.to_owned(),
                message: format!("key {}: {e}", kid.as_deref().unwrap_or("without kid")),
            })?;
            Ok(PublicKey {
                source: format!("{path}#{}", kid.as_deref().unwrap_or("?")),
                kid,
                key,
            })
        })
        .collect()
}
