//! Security Event Tokens (RFC 8417) as compact JWS, EdDSA (RFC 8037) with the active
//! `security_events` key, and the JWK Set that publishes the keys (`GET /ssf/jwks`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signer;
use serde::Serialize;

use crate::oauth::keys::LoadedKeys;

/// The `typ` of a SET (RFC 8417 section 2.3).
pub const TYP: &str = "secevent+jwt";

/// One Ed25519 public key as a JWK (RFC 8037).
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Jwk {
    /// Always `OKP`.
    pub kty: String,
    /// Always `Ed25519`.
    pub crv: String,
    /// The public key, base64url without padding.
    pub x: String,
    pub kid: String,
    /// Always `EdDSA`.
    pub alg: String,
    /// Always `sig`.
    #[serde(rename = "use")]
    pub use_: String,
}

/// The keys Security Event Tokens are signed with: the active one and those retired recently.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

/// The published keys of `loaded` as a JWK Set.
pub fn jwks(loaded: &LoadedKeys) -> JwkSet {
    JwkSet {
        keys: loaded
            .published
            .iter()
            .map(|k| Jwk {
                kty: "OKP".into(),
                crv: "Ed25519".into(),
                x: URL_SAFE_NO_PAD.encode(k.public_key.to_bytes()),
                kid: k.kid.to_string(),
                alg: "EdDSA".into(),
                use_: "sig".into(),
            })
            .collect(),
    }
}

/// The subject of an event: an opaque identifier (RFC 9493 section 3.2.4), a grant id, or for
/// client and stream events the client's or the stream's id.
pub fn opaque(id: &str) -> serde_json::Value {
    serde_json::json!({ "format": "opaque", "id": id })
}

/// One event, ready to sign.
#[derive(Debug)]
pub struct SetClaims<'a> {
    pub issuer: &'a str,
    pub jti: &'a str,
    /// When the event happened (the SET's `iat` is when it was queued).
    pub iat: i64,
    /// The receiving client.
    pub audience: &'a str,
    pub subject: &'a str,
    pub event_type: &'a str,
    pub body: serde_json::Value,
}

impl SetClaims<'_> {
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "iss": self.issuer,
            "jti": self.jti,
            "iat": self.iat,
            "aud": self.audience,
            "sub_id": opaque(self.subject),
            "events": { self.event_type: self.body },
        })
    }
}

/// Signs `claims` with the active key: `base64url(header).base64url(claims).base64url(sig)`.
pub fn sign(keys: &LoadedKeys, claims: &SetClaims<'_>) -> String {
    let header = serde_json::json!({
        "alg": "EdDSA",
        "typ": TYP,
        "kid": keys.active.kid().to_string(),
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_json().to_string())
    );
    let secret = keys.active.private_bytes();
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    // `private_bytes` is the 32-byte Ed25519 seed (grants::SigningKey).
    let n = secret.len().min(32);
    seed[..n].copy_from_slice(&secret[..n]);
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let signature = key.sign(signing_input.as_bytes());
    format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.to_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Verifier;
    use std::sync::Arc;

    fn keys() -> LoadedKeys {
        let key = grants::SigningKey::generate(7);
        let published = vec![key.published(None, None)];
        LoadedKeys {
            keyset: Arc::new(grants::KeySet::new(published.clone()).unwrap()),
            active: Arc::new(key),
            published,
        }
    }

    #[test]
    fn a_set_verifies_with_the_published_jwk_and_names_its_kid() {
        let keys = keys();
        let jws = sign(
            &keys,
            &SetClaims {
                issuer: "https://as.example",
                jti: "set_1",
                iat: 1_700_000_000,
                audience: "cl_1",
                subject: "gr_1",
                event_type: platform::ssf::GRANT_REVOKED,
                body: serde_json::json!({ "revoked_by": "customer" }),
            },
        );
        let parts: Vec<&str> = jws.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["kid"], "7");
        assert_eq!(header["typ"], TYP);
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["sub_id"]["id"], "gr_1");
        assert_eq!(
            claims["events"][platform::ssf::GRANT_REVOKED]["revoked_by"],
            "customer"
        );
        let jwk = &jwks(&keys).keys[0];
        assert_eq!(jwk.kid, "7");
        let x: [u8; 32] = URL_SAFE_NO_PAD.decode(&jwk.x).unwrap().try_into().unwrap();
        let public = ed25519_dalek::VerifyingKey::from_bytes(&x).unwrap();
        let sig: [u8; 64] = URL_SAFE_NO_PAD
            .decode(parts[2])
            .unwrap()
            .try_into()
            .unwrap();
        let input = format!("{}.{}", parts[0], parts[1]);
        public
            .verify(
                input.as_bytes(),
                &ed25519_dalek::Signature::from_bytes(&sig),
            )
            .unwrap();
        // A changed claim does not verify.
        let forged = format!("{}.{}", parts[0], URL_SAFE_NO_PAD.encode("{}"));
        assert!(
            public
                .verify(
                    forged.as_bytes(),
                    &ed25519_dalek::Signature::from_bytes(&sig)
                )
                .is_err()
        );
    }
}
