//! Compact JWS (RFC 7515) checked with public JWKs (RFC 7517), strictly: ES256 (P-256), PS256
//! (RSA-PSS, keys of 2048 to 8192 bits) and EdDSA (Ed25519) only, as FAPI 2.0 allows. No `none`,
//! no HMAC (so no "public key as the HMAC secret"), no RS256 (PKCS#1 v1.5), no `crit`
//! extensions, no private or symmetric key members, bounded sizes. DPoP proofs
//! ([`crate::dpop`]) and client assertions (RFC 7523 `private_key_jwt`, checked by the
//! authorization server against a client's registered JWK Set) use it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// The algorithms accepted anywhere a JWS is checked (DPoP proofs take a subset:
/// [`crate::dpop::DPOP_ALGS`]).
pub const ALGS: [&str; 3] = ["ES256", "PS256", "EdDSA"];

/// RSA moduli accepted for PS256 (as ring verifies them).
const RSA_MODULUS_BITS: std::ops::RangeInclusive<usize> = 2048..=8192;

/// A JWS longer than this is refused before decoding.
pub const MAX_JWS_LEN: usize = 8192;

/// At most this many keys in a registered JWK Set.
pub const MAX_JWKS_KEYS: usize = 10;

/// Why a JWS or a JWK was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum JwsError {
    #[error("{0}")]
    Malformed(String),
    #[error("unsupported algorithm (ES256, PS256 or EdDSA only)")]
    UnsupportedAlgorithm,
    #[error("the signature does not verify")]
    BadSignature,
}

fn malformed(what: &str) -> JwsError {
    JwsError::Malformed(what.to_string())
}

fn b64(part: &str, what: &str) -> Result<Vec<u8>, JwsError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| malformed(&format!("{what} is not base64url")))
}

fn member<'a>(jwk: &'a Map<String, Value>, name: &str) -> Result<&'a str, JwsError> {
    jwk.get(name)
        .and_then(|v| v.as_str())
        .ok_or_else(|| malformed(&format!("jwk.{name} is missing")))
}

#[derive(Clone)]
enum Key {
    /// The uncompressed SEC1 point (0x04 || x || y), checked to be on the curve.
    Es256([u8; 65]),
    /// Modulus and exponent, big-endian without leading zeros.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    Ed25519(ed25519_dalek::VerifyingKey),
}

/// An unsigned big-endian integer of a JWK, without leading zeros.
fn uint(jwk: &Map<String, Value>, name: &str) -> Result<Vec<u8>, JwsError> {
    let raw = b64(member(jwk, name)?, name)?;
    let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
    Ok(raw[start..].to_vec())
}

/// A public key read from a JWK: P-256 (`EC`, for ES256), RSA (`RSA`, for PS256) or Ed25519
/// (`OKP`, for EdDSA).
#[derive(Clone)]
pub struct PublicJwk {
    key: Key,
    kid: Option<String>,
    thumbprint: String,
}

impl std::fmt::Debug for PublicJwk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicJwk")
            .field("alg", &self.alg())
            .field("kid", &self.kid)
            .field("thumbprint", &self.thumbprint)
            .finish()
    }
}

impl PublicJwk {
    /// Reads a public JWK, refusing private and symmetric members, other key types and curves,
    /// and points that are not on the curve. An `alg` or `use` member, if present, must fit.
    pub fn parse(jwk: &Map<String, Value>) -> Result<Self, JwsError> {
        if ["d", "p", "q", "dp", "dq", "qi", "oth", "k"]
            .iter()
            .any(|m| jwk.contains_key(*m))
        {
            return Err(malformed("jwk holds private or symmetric key material"));
        }
        let coordinate = |name: &str| -> Result<[u8; 32], JwsError> {
            b64(member(jwk, name)?, name)?
                .try_into()
                .map_err(|_| malformed(&format!("jwk.{name} must be 32 bytes")))
        };
        let (key, canonical) = match (member(jwk, "kty")?, jwk.get("crv").and_then(Value::as_str)) {
            ("EC", Some("P-256")) => {
                let (x, y) = (coordinate("x")?, coordinate("y")?);
                let point =
                    p256::EncodedPoint::from_affine_coordinates(&x.into(), &y.into(), false);
                p256::ecdsa::VerifyingKey::from_encoded_point(&point)
                    .map_err(|_| malformed("jwk is not a P-256 point"))?;
                let mut key = [0u8; 65];
                key.copy_from_slice(point.as_bytes());
                let canonical = format!(
                    r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                    URL_SAFE_NO_PAD.encode(x),
                    URL_SAFE_NO_PAD.encode(y)
                );
                (Key::Es256(key), canonical)
            }
            ("RSA", None) => {
                let (n, e) = (uint(jwk, "n")?, uint(jwk, "e")?);
                let bits = n.first().map_or(0, |top| {
                    (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize)
                });
                if !RSA_MODULUS_BITS.contains(&bits) {
                    return Err(malformed("jwk.n: RSA keys must have 2048 to 8192 bits"));
                }
                // ring's bounds: an odd exponent from 3 to 2^33 - 1.
                let exponent = e.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
                if e.len() > 5 || !(3..1 << 33).contains(&exponent) || exponent & 1 == 0 {
                    return Err(malformed("jwk.e is not a usable RSA exponent"));
                }
                let canonical = format!(
                    r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                    URL_SAFE_NO_PAD.encode(&e),
                    URL_SAFE_NO_PAD.encode(&n)
                );
                (Key::Rsa { n, e }, canonical)
            }
            ("OKP", Some("Ed25519")) => {
                let x = coordinate("x")?;
                let key = ed25519_dalek::VerifyingKey::from_bytes(&x)
                    .map_err(|_| malformed("jwk is not an Ed25519 key"))?;
                let canonical = format!(
                    r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
                    URL_SAFE_NO_PAD.encode(x)
                );
                (Key::Ed25519(key), canonical)
            }
            _ => return Err(JwsError::UnsupportedAlgorithm),
        };
        let kid = match jwk.get("kid") {
            None => None,
            Some(Value::String(k)) if !k.is_empty() && k.len() <= 128 => Some(k.clone()),
            Some(_) => return Err(malformed("jwk.kid must be a string of 1 to 128 characters")),
        };
        let parsed = Self {
            key,
            kid,
            thumbprint: URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())),
        };
        if let Some(alg) = jwk.get("alg")
            && alg.as_str() != Some(parsed.alg())
        {
            return Err(malformed("jwk.alg does not fit the key"));
        }
        if let Some(usage) = jwk.get("use")
            && usage.as_str() != Some("sig")
        {
            return Err(malformed("jwk.use must be sig"));
        }
        Ok(parsed)
    }

    /// `ES256`, `PS256` or `EdDSA`.
    pub fn alg(&self) -> &'static str {
        match self.key {
            Key::Es256(_) => "ES256",
            Key::Rsa { .. } => "PS256",
            Key::Ed25519(_) => "EdDSA",
        }
    }

    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The RFC 7638 SHA-256 thumbprint (base64url).
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    /// Whether `signature` over `signing_input` verifies with this key. ES256 signatures are
    /// accepted with either `s` of the pair (WebCrypto does not normalise it); Ed25519 ones
    /// strictly (no small-order keys, canonical `S`).
    pub fn verifies(&self, signing_input: &[u8], signature: &[u8]) -> bool {
        match &self.key {
            // ring: fixed-size (r || s) signatures, either s accepted.
            Key::Es256(point) => ring::signature::UnparsedPublicKey::new(
                &ring::signature::ECDSA_P256_SHA256_FIXED,
                point,
            )
            .verify(signing_input, signature)
            .is_ok(),
            // RSASSA-PSS with SHA-256 and MGF1-SHA-256 (RFC 7518 3.5).
            Key::Rsa { n, e } => ring::signature::RsaPublicKeyComponents { n, e }
                .verify(
                    &ring::signature::RSA_PSS_2048_8192_SHA256,
                    signing_input,
                    signature,
                )
                .is_ok(),
            Key::Ed25519(k) => ed25519_dalek::Signature::from_slice(signature)
                .ok()
                .is_some_and(|sig| k.verify_strict(signing_input, &sig).is_ok()),
        }
    }
}

/// A decoded compact JWS whose signature is not checked yet: check it with
/// [`Compact::verify_with`] before reading the payload as anything but untrusted input.
#[derive(Debug)]
pub struct Compact<'a> {
    /// The protected header.
    pub header: Map<String, Value>,
    /// The payload bytes (untrusted until verified).
    pub payload: Vec<u8>,
    signing_input: &'a [u8],
    signature: Vec<u8>,
}

impl<'a> Compact<'a> {
    /// Splits and decodes `jws`: three base64url parts, a JSON object header with an accepted
    /// `alg` and no `crit`.
    pub fn decode(jws: &'a str) -> Result<Self, JwsError> {
        if jws.len() > MAX_JWS_LEN {
            return Err(malformed("the JWS is too long"));
        }
        let mut parts = jws.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("not a compact JWS"));
        };
        let header: Map<String, Value> = serde_json::from_slice(&b64(h, "header")?)
            .map_err(|e| malformed(&format!("header: {e}")))?;
        if header.contains_key("crit") {
            return Err(malformed("crit extensions are not supported"));
        }
        match header.get("alg").and_then(Value::as_str) {
            Some(alg) if ALGS.contains(&alg) => {}
            Some(_) => return Err(JwsError::UnsupportedAlgorithm),
            None => return Err(malformed("header.alg is missing")),
        }
        Ok(Self {
            header,
            payload: b64(p, "payload")?,
            signing_input: &jws.as_bytes()[..h.len() + 1 + p.len()],
            signature: b64(s, "signature")?,
        })
    }

    /// The header's `alg` (one of [`ALGS`]).
    pub fn alg(&self) -> &str {
        self.header
            .get("alg")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The header's `kid`, if it is a string.
    pub fn kid(&self) -> Option<&str> {
        self.header.get("kid").and_then(Value::as_str)
    }

    /// Checks the signature with `key`, whose algorithm must be the header's.
    pub fn verify_with(&self, key: &PublicJwk) -> Result<(), JwsError> {
        if key.alg() != self.alg() {
            return Err(malformed("the key does not fit alg"));
        }
        if key.verifies(self.signing_input, &self.signature) {
            Ok(())
        } else {
            Err(JwsError::BadSignature)
        }
    }
}

/// A registered JWK Set (RFC 7517 `{"keys": [...]}`) of public signing keys: 1 to
/// [`MAX_JWKS_KEYS`] keys, each valid, `kid`s distinct (keys without one are told apart by
/// algorithm, at most one of each).
#[derive(Debug, Clone)]
pub struct JwkSet(Vec<PublicJwk>);

impl JwkSet {
    pub fn parse(json: &Value) -> Result<Self, JwsError> {
        let keys = json
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| malformed("a JWK Set is an object with a keys array"))?;
        if keys.is_empty() || keys.len() > MAX_JWKS_KEYS {
            return Err(malformed(&format!(
                "a JWK Set holds 1 to {MAX_JWKS_KEYS} keys"
            )));
        }
        let mut parsed: Vec<PublicJwk> = Vec::with_capacity(keys.len());
        for (i, k) in keys.iter().enumerate() {
            let map = k
                .as_object()
                .ok_or_else(|| malformed(&format!("keys[{i}] is not an object")))?;
            let key = PublicJwk::parse(map).map_err(|e| match e {
                JwsError::Malformed(m) => malformed(&format!("keys[{i}]: {m}")),
                JwsError::UnsupportedAlgorithm => malformed(&format!(
                    "keys[{i}]: only P-256 (EC), RSA and Ed25519 (OKP) keys are accepted"
                )),
                other => other,
            })?;
            let clash = parsed.iter().any(|p| match (p.kid(), key.kid()) {
                (Some(a), Some(b)) => a == b,
                (None, None) => p.alg() == key.alg(),
                _ => false,
            });
            if clash {
                return Err(malformed(&format!(
                    "keys[{i}]: kids must be distinct (and keys without a kid of distinct types)"
                )));
            }
            parsed.push(key);
        }
        Ok(Self(parsed))
    }

    pub fn keys(&self) -> &[PublicJwk] {
        &self.0
    }

    /// The key a JWS names: by `kid` when it has one (an unknown `kid` finds nothing), else the
    /// one key without a `kid` of its algorithm, else the only key of its algorithm.
    pub fn select(&self, kid: Option<&str>, alg: &str) -> Option<&PublicJwk> {
        match kid {
            Some(kid) => self.0.iter().find(|k| k.kid() == Some(kid)),
            None => {
                let mut of_alg = self.0.iter().filter(|k| k.alg() == alg);
                let first = of_alg.next()?;
                match of_alg.next() {
                    None => Some(first),
                    Some(_) => self.0.iter().find(|k| k.alg() == alg && k.kid().is_none()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn jwk_sets_are_checked_strictly() {
        let ed = json!({"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
        let set = JwkSet::parse(&json!({"keys": [ed]})).unwrap();
        assert_eq!(
            set.keys()[0].thumbprint(),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
        assert!(set.select(None, "EdDSA").is_some());
        assert!(set.select(Some("other"), "EdDSA").is_none());
        assert!(set.select(None, "ES256").is_none());
        for bad in [
            json!({}),
            json!({"keys": []}),
            json!({"keys": [ed, ed]}),
            json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}),
            // An RSA key too short for PS256, an even exponent, an RSA private key.
            json!({"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}),
            json!({"keys": [{"kty": "RSA", "n": URL_SAFE_NO_PAD.encode([0xC5u8; 256]), "e": "AQA"}]}),
            // 256 bytes but fewer than 2048 bits; an exponent above 2^33.
            json!({"keys": [{"kty": "RSA", "n": URL_SAFE_NO_PAD.encode([[0x7Fu8].as_slice(), &[0xC5u8; 255]].concat()), "e": "AQAB"}]}),
            json!({"keys": [{"kty": "RSA", "n": URL_SAFE_NO_PAD.encode([0xC5u8; 256]), "e": "AgAAAAE"}]}),
            json!({"keys": [{"kty": "RSA", "n": URL_SAFE_NO_PAD.encode([0xC5u8; 256]), "e": "AQAB", "p": "AQAB"}]}),
            json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "d": "AA"}]}),
            json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "alg": "ES256"}]}),
            json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "use": "enc"}]}),
            json!({"keys": (0..11).map(|i| json!({"kty": "OKP", "crv": "Ed25519", "kid": i.to_string(), "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"})).collect::<Vec<_>>()}),
        ] {
            assert!(JwkSet::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_the_three_algorithms_decode() {
        let header = |alg: &str| URL_SAFE_NO_PAD.encode(json!({"alg": alg}).to_string());
        for alg in ["none", "HS256", "RS256", "PS384", "ES384"] {
            let jws = format!("{}.e30.AAAA", header(alg));
            assert_eq!(
                Compact::decode(&jws).unwrap_err(),
                JwsError::UnsupportedAlgorithm,
                "{alg}"
            );
        }
        let crit = URL_SAFE_NO_PAD.encode(json!({"alg": "ES256", "crit": ["b64"]}).to_string());
        assert!(Compact::decode(&format!("{crit}.e30.AAAA")).is_err());
        for alg in ALGS {
            assert!(Compact::decode(&format!("{}.e30.AAAA", header(alg))).is_ok());
        }
        // An RSA key of 2048 bits reads as a PS256 key, its thumbprint over the canonical members.
        let rsa = json!({"kty": "RSA", "e": "AQAB", "n": URL_SAFE_NO_PAD.encode([0xC5u8; 256])});
        let key = PublicJwk::parse(rsa.as_object().unwrap()).unwrap();
        assert_eq!(key.alg(), "PS256");
        assert!(!key.verifies(b"input", &[0u8; 256]));
    }
}
