//! One issuer's verification keys, each with the algorithms it may verify and the rules every
//! token it verifies must meet; built from configured keys or from a JWKS an identity provider
//! published.
//!
//! Every key has a serial number, unique in the process: the verified-token cache remembers
//! which key verified a token, and a remembered token counts only while its key is still in
//! its issuer's set (a key the identity provider withdrew stops every token it verified). A
//! key that stays across a refresh, the same JWK to the byte, keeps its serial.

use std::sync::atomic::{AtomicU64, Ordering};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde_json::Value;

use super::keys::{KeyError, PublicKey};

/// Serial numbers of keys, unique in the process.
static SERIALS: AtomicU64 = AtomicU64::new(1);

fn next_serial() -> u64 {
    SERIALS.fetch_add(1, Ordering::Relaxed)
}

/// What every token of an issuer must carry, besides a good signature and `exp`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Rules {
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud`, when set.
    pub audience: Option<String>,
}

/// A key ready to verify with.
pub(crate) struct VerifyingKey {
    pub kid: Option<String>,
    pub key: DecodingKey,
    pub validation: Validation,
    pub serial: u64,
    /// The JWK it was made from (published keys), to keep its serial across refreshes.
    jwk: Option<Value>,
}

/// The keys of one issuer.
#[derive(Default)]
pub(crate) struct KeySet {
    keys: Vec<VerifyingKey>,
}

/// The default algorithm of a key family, when none is configured (configured keys only).
fn default_algorithm(family: AlgorithmFamily) -> Algorithm {
    match family {
        AlgorithmFamily::Hmac => Algorithm::HS256,
        AlgorithmFamily::Rsa => Algorithm::RS256,
        AlgorithmFamily::Ec => Algorithm::ES256,
        AlgorithmFamily::Ed => Algorithm::EdDSA,
    }
}

/// The validation of a key: `algorithms` (never empty), `exp` and `sub` required, `iss` and
/// `aud` required and checked when the rules name them, `nbf` checked, 30 s leeway.
fn validation(algorithms: Vec<Algorithm>, rules: &Rules) -> Validation {
    let mut validation = Validation::new(algorithms[0]);
    validation.algorithms = algorithms;
    // jsonwebtoken checks iss/aud only when the token has them: require them.
    let mut required = vec!["exp", "sub"];
    required.extend(rules.issuer.as_ref().map(|_| "iss"));
    required.extend(rules.audience.as_ref().map(|_| "aud"));
    validation.set_required_spec_claims(&required);
    validation.leeway = 30;
    validation.validate_nbf = true;
    validation.validate_aud = rules.audience.is_some();
    if let Some(aud) = &rules.audience {
        validation.set_audience(&[aud]);
    }
    if let Some(iss) = &rules.issuer {
        validation.set_issuer(&[iss]);
    }
    validation
}

/// Why a published key is not used (logged; the set's other keys are).
fn unusable(jwk: &Value, why: impl std::fmt::Display) -> String {
    let kid = jwk
        .get("kid")
        .and_then(Value::as_str)
        .unwrap_or("without kid");
    format!("key {kid}: {why}")
}

impl KeySet {
    /// The configured keys (secret, PEM and JWKS files) with `algorithms` (empty: each key's
    /// family default); a key none of them fits is an error.
    pub fn configured(
        keys: Vec<PublicKey>,
        algorithms: &[Algorithm],
        rules: &Rules,
    ) -> Result<Self, KeyError> {
        let keys = keys
            .into_iter()
            .map(|k| {
                let family = k.key.family();
                let fitting: Vec<Algorithm> = if algorithms.is_empty() {
                    vec![default_algorithm(family)]
                } else {
                    algorithms
                        .iter()
                        .copied()
                        .filter(|a| a.family() == family)
                        .collect()
                };
                if fitting.is_empty() {
                    return Err(KeyError::NoAlgorithm {
                        source_name: k.source,
                        family,
                        family_algorithms: format!("{:?}", family.algorithms()),
                    });
                }
                Ok(VerifyingKey {
                    kid: k.kid,
                    key: k.key,
                    validation: validation(fitting, rules),
                    serial: next_serial(),
                    jwk: None,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { keys })
    }

    /// The keys of a JWKS an identity provider published, verifying only with `algorithms`
    /// (pinned, never HMAC), each key further held to its own `alg` when it states one and to
    /// its curve (P-256: ES256, P-384: ES384). Keys that cannot verify a signature here are
    /// left out and named in the second value: encryption keys (`use: enc`, `key_ops`
    /// without `verify`), symmetric keys (`kty: oct`: a published secret is no secret), keys
    /// no pinned algorithm fits, keys that do not parse. Keys already in `previous` (the same
    /// JWK) keep their serial. An error when no key is left: the set is not taken.
    pub fn published(
        jwks: &[u8],
        algorithms: &[Algorithm],
        rules: &Rules,
        previous: Option<&KeySet>,
    ) -> Result<(Self, Vec<String>), String> {
        #[derive(serde::Deserialize)]
        struct Set {
            keys: Vec<Value>,
        }
        let set: Set = serde_json::from_slice(jwks)
            .map_err(|e| format!("not a JWKS ({{\"keys\": [...]}}): {e}"))?;
        let mut skipped = Vec::new();
        let mut keys = Vec::new();
        for raw in set.keys {
            match Self::published_key(&raw, algorithms, rules, previous) {
                Ok(key) => keys.push(key),
                Err(why) => skipped.push(unusable(&raw, why)),
            }
        }
        if keys.is_empty() {
            let why = if skipped.is_empty() {
                "the JWKS holds no key".to_owned()
            } else {
                format!("no usable key in the JWKS ({})", skipped.join("; "))
            };
            return Err(why);
        }
        Ok((Self { keys }, skipped))
    }

    fn published_key(
        raw: &Value,
        algorithms: &[Algorithm],
        rules: &Rules,
        previous: Option<&KeySet>,
    ) -> Result<VerifyingKey, String> {
        let jwk: Jwk = serde_json::from_value(raw.clone()).map_err(|e| e.to_string())?;
        if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
            return Err("an encryption key (use: enc)".into());
        }
        if let Some(ops) = &jwk.common.key_operations
            && !ops.contains(&KeyOperations::Verify)
        {
            return Err("key_ops without verify".into());
        }
        let curve_algorithm = match &jwk.algorithm {
            AlgorithmParameters::OctetKey(_) => {
                return Err("a symmetric key (kty: oct) is never taken from a JWKS URL".into());
            }
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => Some(Algorithm::ES256),
                EllipticCurve::P384 => Some(Algorithm::ES384),
                _ => return Err(format!("curve {:?} is not supported", ec.curve)),
            },
            _ => None,
        };
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
        let stated = jwk
            .common
            .key_algorithm
            .map(|alg| alg.to_string().parse::<Algorithm>());
        let fitting: Vec<Algorithm> = algorithms
            .iter()
            .copied()
            .filter(|a| a.family() == key.family() && a.family() != AlgorithmFamily::Hmac)
            .filter(|a| curve_algorithm.is_none_or(|c| c == *a))
            .filter(|a| match &stated {
                None => true,
                Some(Ok(stated)) => stated == a,
                // An `alg` jsonwebtoken cannot verify with (RSA-OAEP...): nothing fits.
                Some(Err(_)) => false,
            })
            .collect();
        if fitting.is_empty() {
            let alg = jwk
                .common
                .key_algorithm
                .map_or_else(|| format!("{:?}", key.family()), |a| a.to_string());
            return Err(format!(
                "{alg} matches none of the pinned algorithms {algorithms:?}"
            ));
        }
        let serial = previous
            .and_then(|set| set.keys.iter().find(|k| k.jwk.as_ref() == Some(raw)))
            .map_or_else(next_serial, |k| k.serial);
        Ok(VerifyingKey {
            kid: jwk.common.key_id.clone(),
            key,
            validation: validation(fitting, rules),
            serial,
            jwk: Some(raw.clone()),
        })
    }

    /// The keys a token with `kid` is tried against: those with that `kid`, or every key for
    /// a token without one (never a key without `kid` for a token that names one).
    pub fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
    ) -> impl Iterator<Item = &'a VerifyingKey> + 'a {
        self.keys
            .iter()
            .filter(move |k| kid.is_none_or(|kid| k.kid.as_deref() == Some(kid)))
    }

    /// Whether a key of the set has `kid`.
    pub fn knows(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// Whether the key with `serial` is still in the set.
    pub fn holds(&self, serial: u64) -> bool {
        self.keys.iter().any(|k| k.serial == serial)
    }

    /// The keys' serials, in order.
    pub fn serials(&self) -> Vec<u64> {
        self.keys.iter().map(|k| k.serial).collect()
    }

    /// Their kids, for logs.
    pub fn kids(&self) -> Vec<&str> {
        self.keys
            .iter()
            .map(|k| k.kid.as_deref().unwrap_or("(no kid)"))
            .collect()
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const RSA_N: &str = "u1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0_IzW7yWR7QkrmBL7jTKEn5u-qKhbwKfBstIs-bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW_VDL5AaWTg0nLVkjRo9z-40RQzuVaE8AkAFmxZzow3x-VJYKdjykkJ0iT9wCS0DRTXu269V264Vf_3jvredZiKRkgwlL9xNAwxXFg0x_XFw005UWVRIkdgcKWTjpBP2dPwVZ4WWC-9aGVd-Gyn1o0CLelf4rEjGoXbAAEgAqeGUxrcIlbjXfbcmw";

    fn rsa(kid: &str, extra: Value) -> Value {
        let mut key = json!({ "kty": "RSA", "kid": kid, "n": RSA_N, "e": "AQAB" });
        if let (Value::Object(key), Value::Object(extra)) = (&mut key, extra) {
            key.extend(extra);
        }
        key
    }

    fn set(keys: Vec<Value>) -> Vec<u8> {
        serde_json::to_vec(&json!({ "keys": keys })).unwrap()
    }

    #[test]
    fn published_sets_keep_usable_keys_and_say_why_not_the_others() {
        let jwks = set(vec![
            rsa("sig", json!({ "use": "sig", "alg": "RS256" })),
            rsa("enc", json!({ "use": "enc", "alg": "RSA-OAEP" })),
            rsa("pss", json!({ "alg": "PS256" })),
            json!({ "kty": "oct", "kid": "hmac", "k": "c2VjcmV0" }),
            json!({ "kty": "XYZ", "kid": "odd" }),
        ]);
        let (keys, skipped) =
            KeySet::published(&jwks, &[Algorithm::RS256], &Rules::default(), None).unwrap();
        assert_eq!(keys.len(), 1);
        assert!(keys.knows("sig"));
        assert_eq!(skipped.len(), 4, "{skipped:?}");
        assert!(
            skipped
                .iter()
                .any(|s| s.starts_with("key hmac: a symmetric key"))
        );
        // Nothing usable: no set.
        let none = set(vec![
            json!({ "kty": "oct", "kid": "hmac", "k": "c2VjcmV0" }),
        ]);
        assert!(KeySet::published(&none, &[Algorithm::RS256], &Rules::default(), None).is_err());
        assert!(
            KeySet::published(
                b"{\"keys\": []}",
                &[Algorithm::RS256],
                &Rules::default(),
                None
            )
            .is_err()
        );
        assert!(
            KeySet::published(b"<html>", &[Algorithm::RS256], &Rules::default(), None).is_err()
        );
    }

    #[test]
    fn a_key_that_stays_keeps_its_serial_and_a_changed_one_gets_a_new_one() {
        let rules = Rules::default();
        let first = set(vec![rsa("a", json!({})), rsa("b", json!({}))]);
        let (old, _) = KeySet::published(&first, &[Algorithm::RS256], &rules, None).unwrap();
        let serial = |set: &KeySet, kid: &str| set.candidates(Some(kid)).next().unwrap().serial;
        let (a, b) = (serial(&old, "a"), serial(&old, "b"));
        let second = set(vec![
            rsa("a", json!({})),
            rsa("b", json!({ "alg": "RS256" })),
        ]);
        let (new, _) = KeySet::published(&second, &[Algorithm::RS256], &rules, Some(&old)).unwrap();
        assert_eq!(serial(&new, "a"), a);
        assert_ne!(serial(&new, "b"), b);
        assert!(new.holds(a) && !new.holds(b));
    }
}
