//! Signing keys, public keys, key rotation ([`KeyProvider`]) and the
//! `GET /.well-known/biscuit-keys` document ([`BiscuitKeys`]).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use biscuit_auth::{Algorithm, KeyPair, PrivateKey};
use chrono::{DateTime, Utc};
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{KeySetError, ParseError};

/// An Ed25519 public key, written `ed25519/<64 hex digits>` (Biscuit's textual form).
#[derive(Clone, Copy, PartialEq)]
pub struct PublicKey(pub(crate) biscuit_auth::PublicKey);

impl PublicKey {
    /// Parses `ed25519/<hex>`.
    pub fn parse(value: &str) -> Result<Self, ParseError> {
        let hex_part = value
            .strip_prefix("ed25519/")
            .ok_or_else(|| ParseError::InvalidPublicKey("expected `ed25519/<hex>`".into()))?;
        let bytes = hex::decode(hex_part)
            .map_err(|_| ParseError::InvalidPublicKey("not hexadecimal".into()))?;
        Self::from_bytes(&bytes)
    }

    /// From the 32 raw bytes of an Ed25519 public key.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ParseError> {
        if bytes.len() != 32 {
            return Err(ParseError::InvalidPublicKey(format!(
                "expected 32 bytes, got {}",
                bytes.len()
            )));
        }
        biscuit_auth::PublicKey::from_bytes(bytes, Algorithm::Ed25519)
            .map(PublicKey)
            .map_err(|e| ParseError::InvalidPublicKey(e.to_string()))
    }

    /// The 32 raw bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.to_bytes()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ed25519/{}", hex::encode(self.0.to_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl std::str::FromStr for PublicKey {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// The server's Ed25519 signing key and its key id (`kid`, Biscuit's `root_key_id`).
///
/// `Debug` never prints the private key.
#[derive(Clone)]
pub struct SigningKey {
    kid: u32,
    // Arc: biscuit's KeyPair is not Clone; the secret is still held once.
    keypair: Arc<KeyPair>,
}

impl SigningKey {
    /// A fresh random key from the operating system's CSPRNG.
    pub fn generate(kid: u32) -> Self {
        Self::generate_with_rng(kid, &mut rand::rngs::OsRng)
    }

    /// A fresh key from the given CSPRNG (seeded RNGs give reproducible test keys).
    pub fn generate_with_rng<R: RngCore + CryptoRng>(kid: u32, rng: &mut R) -> Self {
        Self {
            kid,
            keypair: Arc::new(KeyPair::new_with_rng(Algorithm::Ed25519, rng)),
        }
    }

    /// From the 32-byte Ed25519 secret (seed), e.g. after decrypting it from storage.
    pub fn from_private_bytes(kid: u32, secret: &[u8]) -> Result<Self, ParseError> {
        if secret.len() != 32 {
            return Err(ParseError::InvalidPrivateKey(format!(
                "expected 32 bytes, got {}",
                secret.len()
            )));
        }
        let private = PrivateKey::from_bytes(secret, Algorithm::Ed25519)
            .map_err(|e| ParseError::InvalidPrivateKey(e.to_string()))?;
        Ok(Self {
            kid,
            keypair: Arc::new(KeyPair::from(&private)),
        })
    }

    /// The 32-byte secret, to be encrypted at rest. Zeroized on drop.
    pub fn private_bytes(&self) -> zeroize::Zeroizing<Vec<u8>> {
        self.keypair.private().to_bytes()
    }

    /// The key id written into tokens as Biscuit's `root_key_id`.
    pub fn kid(&self) -> u32 {
        self.kid
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.keypair.public())
    }

    /// The entry to publish in `/.well-known/biscuit-keys`.
    pub fn published(
        &self,
        not_before: Option<DateTime<Utc>>,
        not_after: Option<DateTime<Utc>>,
    ) -> PublishedKey {
        PublishedKey {
            kid: self.kid,
            alg: KeyAlgorithm::Ed25519,
            public_key: self.public_key(),
            not_before,
            not_after,
        }
    }

    pub(crate) fn keypair(&self) -> &KeyPair {
        &self.keypair
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("public_key", &self.public_key())
            .field("private_key", &"<redacted>")
            .finish()
    }
}

/// Chooses the public key for a token's key id. Implementations support rotation by
/// returning different keys for different ids; `None` refuses the token (unknown kid).
pub trait KeyProvider {
    /// The public key for `kid` if it may verify tokens at `now`.
    fn public_key(&self, kid: u32, now: DateTime<Utc>) -> Option<PublicKey>;
}

impl<F> KeyProvider for F
where
    F: Fn(u32, DateTime<Utc>) -> Option<PublicKey>,
{
    fn public_key(&self, kid: u32, now: DateTime<Utc>) -> Option<PublicKey> {
        self(kid, now)
    }
}

impl<T: KeyProvider + ?Sized> KeyProvider for Arc<T> {
    fn public_key(&self, kid: u32, now: DateTime<Utc>) -> Option<PublicKey> {
        (**self).public_key(kid, now)
    }
}

impl KeyProvider for SigningKey {
    fn public_key(&self, kid: u32, _now: DateTime<Utc>) -> Option<PublicKey> {
        (kid == self.kid).then(|| self.public_key())
    }
}

/// Key algorithm in the keys document. Only Ed25519 today.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum KeyAlgorithm {
    /// Ed25519 (RFC 8032).
    Ed25519,
}

impl Serialize for KeyAlgorithm {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("Ed25519")
    }
}

impl<'de> Deserialize<'de> for KeyAlgorithm {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        match raw.as_str() {
            "Ed25519" => Ok(KeyAlgorithm::Ed25519),
            _ => Err(serde::de::Error::custom(ParseError::UnsupportedAlgorithm(
                raw,
            ))),
        }
    }
}

/// One published verification key.
///
/// JSON: `{"kid":"1","alg":"Ed25519","public_key":"ed25519/<hex>",
/// "not_before":"2026-01-01T00:00:00Z","not_after":null}`. The kid is a decimal string (it is
/// Biscuit's 32-bit `root_key_id`). A key verifies tokens only inside
/// `[not_before, not_after]` (either bound may be absent/null).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PublishedKey {
    /// Key id (decimal string on the wire).
    #[serde(serialize_with = "ser_kid", deserialize_with = "de_kid")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, pattern = "^[0-9]{1,10}$"))]
    pub kid: u32,
    /// Always `Ed25519`.
    pub alg: KeyAlgorithm,
    /// `ed25519/<hex>`.
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = String, pattern = "^ed25519/[0-9a-f]{64}$")
    )]
    pub public_key: PublicKey,
    /// Not valid for verification before this instant.
    #[serde(default)]
    pub not_before: Option<DateTime<Utc>>,
    /// Not valid for verification after this instant (set when the key is retired; keep it
    /// published until every token it signed has expired).
    #[serde(default)]
    pub not_after: Option<DateTime<Utc>>,
}

fn ser_kid<S: Serializer>(kid: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&kid.to_string())
}

fn de_kid<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let raw = String::deserialize(d)?;
    if raw.is_empty() || raw.len() > 10 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(serde::de::Error::custom(ParseError::InvalidKid(raw)));
    }
    raw.parse::<u32>()
        .map_err(|_| serde::de::Error::custom(ParseError::InvalidKid(raw)))
}

impl PublishedKey {
    /// Whether the key may verify tokens at `now`.
    pub fn is_valid_at(&self, now: DateTime<Utc>) -> bool {
        self.not_before.is_none_or(|nb| nb <= now) && self.not_after.is_none_or(|na| now <= na)
    }
}

/// The `GET /.well-known/biscuit-keys` document: `{"keys":[PublishedKey, ...]}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BiscuitKeys {
    /// Every key a verifier may need, newest first by convention.
    pub keys: Vec<PublishedKey>,
}

/// A validated set of published keys; the usual [`KeyProvider`] for resource servers.
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    keys: BTreeMap<u32, PublishedKey>,
}

impl KeySet {
    /// Builds a key set, refusing duplicate kids.
    pub fn new(keys: impl IntoIterator<Item = PublishedKey>) -> Result<Self, KeySetError> {
        let mut map = BTreeMap::new();
        for key in keys {
            let kid = key.kid;
            if map.insert(kid, key).is_some() {
                return Err(KeySetError::DuplicateKid(kid));
            }
        }
        Ok(Self { keys: map })
    }

    /// Parses the JSON document served at `/.well-known/biscuit-keys`.
    pub fn from_json(json: &str) -> Result<Self, KeySetError> {
        let doc: BiscuitKeys = serde_json::from_str(json)?;
        Self::new(doc.keys)
    }

    /// The document to serve.
    pub fn to_document(&self) -> BiscuitKeys {
        BiscuitKeys {
            keys: self.keys.values().rev().cloned().collect(),
        }
    }

    /// Looks a key up regardless of validity.
    pub fn get(&self, kid: u32) -> Option<&PublishedKey> {
        self.keys.get(&kid)
    }
}

impl KeyProvider for KeySet {
    fn public_key(&self, kid: u32, now: DateTime<Utc>) -> Option<PublicKey> {
        self.keys
            .get(&kid)
            .filter(|k| k.is_valid_at(now))
            .map(|k| k.public_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn key(kid: u32) -> SigningKey {
        SigningKey::generate_with_rng(kid, &mut rand::rngs::StdRng::seed_from_u64(kid.into()))
    }

    #[test]
    fn keys_document_round_trips() {
        let k = key(7);
        let nb = crate::time::parse_timestamp("2026-01-01T00:00:00Z").unwrap();
        let set = KeySet::new([k.published(Some(nb), None)]).unwrap();
        let json = serde_json::to_string(&set.to_document()).unwrap();
        assert!(json.contains(r#""kid":"7""#), "{json}");
        assert!(json.contains(r#""alg":"Ed25519""#), "{json}");
        assert!(json.contains(&format!("\"public_key\":\"{}\"", k.public_key())));
        let again = KeySet::from_json(&json).unwrap();
        assert_eq!(again.public_key(7, nb), Some(k.public_key()));
        assert_eq!(again.public_key(8, nb), None);
        assert_eq!(again.public_key(7, nb - chrono::Duration::seconds(1)), None);
    }

    #[test]
    fn bad_documents_are_refused() {
        let pk = key(1).public_key().to_string();
        let cases = [
            format!(r#"{{"keys":[{{"kid":"x","alg":"Ed25519","public_key":"{pk}"}}]}}"#),
            format!(r#"{{"keys":[{{"kid":"99999999999","alg":"Ed25519","public_key":"{pk}"}}]}}"#),
            format!(r#"{{"keys":[{{"kid":"1","alg":"RS256","public_key":"{pk}"}}]}}"#),
            r#"{"keys":[{"kid":"1","alg":"Ed25519","public_key":"ed25519/abcd"}]}"#.to_string(),
            r#"{"keys":[{"kid":"1","alg":"Ed25519","public_key":"secp256r1/00"}]}"#.to_string(),
            format!(
                r#"{{"keys":[{{"kid":"1","alg":"Ed25519","public_key":"{pk}"}},{{"kid":"1","alg":"Ed25519","public_key":"{pk}"}}]}}"#
            ),
            "not json".to_string(),
        ];
        for case in cases {
            assert!(KeySet::from_json(&case).is_err(), "{case}");
        }
    }

    #[test]
    fn private_key_round_trip_and_redacted_debug() {
        let k = key(3);
        let again = SigningKey::from_private_bytes(3, &k.private_bytes()).unwrap();
        assert_eq!(again.public_key(), k.public_key());
        let dbg = format!("{k:?}");
        assert!(dbg.contains("<redacted>"));
        assert!(!dbg.contains(&hex::encode(k.private_bytes().as_slice())));
        assert!(SigningKey::from_private_bytes(3, &[1, 2, 3]).is_err());
    }
}
