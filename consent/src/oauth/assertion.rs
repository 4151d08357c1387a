//! `private_key_jwt` client authentication (RFC 7523, FAPI 2.0 Security Profile 5.3.2.1): the
//! client signs a short-lived JWT with a key of its registered JWK Set instead of sending a
//! shared secret.
//!
//! An assertion is checked before the request takes a pooled connection, by
//! [`OAuthService::prove_assertion`] (called from `client_auth::with_credentials_or`, so every
//! endpoint that authenticates clients, and its throttling, applies): the client's keys are read,
//! the signature is checked (ES256, PS256 or EdDSA only, the key chosen by `kid`), then the claims:
//! `iss` = `sub` = the client id, `aud` = this issuer exactly (a string), `exp` in the future and
//! at most 60 s ahead, `jti` never seen before (recorded in the shared cache until `exp`).
//! Every failure, an unknown client included, is the same `invalid_client` after the same work (an
//! unknown client's assertion is checked against a dummy key).

use ::grants::jws::{Compact, JwkSet, PublicJwk};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::OAuthService;
use super::clients::{ClientCredentials, OAuthClient, Proven};
use super::error::OAuthError;

/// `client_assertion_type` of RFC 7523 section 2.2.
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How far ahead an assertion's `exp` may be.
const MAX_LIFETIME: Duration = Duration::seconds(60);
/// Clock skew allowed on `exp`, `iat` and `nbf`.
const SKEW: Duration = Duration::seconds(5);

#[derive(Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: serde_json::Value,
    exp: i64,
    jti: String,
    iat: Option<i64>,
    nbf: Option<i64>,
}

/// The client an assertion names (`sub`, else `iss`), read before anything is verified, only to
/// find the keys to verify it with.
pub fn claimed_client(assertion: &str) -> Option<String> {
    // Nothing larger than a JWS the check would accept is decoded, even here.
    if assertion.len() > ::grants::jws::MAX_JWS_LEN {
        return None;
    }
    let payload = assertion.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("sub")
        .or_else(|| v.get("iss"))
        .and_then(|s| s.as_str())
        .filter(|s| !s.is_empty() && s.len() <= 128)
        .map(str::to_string)
}

/// Keys that verify nothing, for unknown clients: the same signature check as a real client's.
fn dummy_key(alg: &str) -> Option<PublicJwk> {
    let jwk = match alg {
        "ES256" => serde_json::json!({"kty": "EC", "crv": "P-256",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}),
        // A 2048-bit modulus nobody holds the key of.
        "PS256" => serde_json::json!({"kty": "RSA", "e": "AQAB",
            "n": "oApn72nzwctlHxTobWyGNaQa9iWWav1-X5hUf6HKMC0TtYJw96Cbkcc3Pgimj-2YHKEGBdepU_bfvem9ASlEPwp-7jcQurDbNLQVEqhVWN1lqb4znlst_MSC7N96Hi8qWcaM_mRLGNgwVjtP5HKF1zYiiAadLpx7noPQ6n5q-jqnBHu-7N3de4vbtrb88uuro8laFKF8RCQmW_9v3D2UAA1EptkNrFKuYKVCCy6pgu0p-DQqIbCjjqhfCAr7wKwoj35Touc_HtIQdPfdQR3jqXd3hw5J683P7Ti_rFJtH2grQZSaatH3y20genndyeb10b6NRDPI3xxO_gs41XnaTQ"}),
        _ => serde_json::json!({"kty": "OKP", "crv": "Ed25519",
            "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}),
    };
    PublicJwk::parse(jwk.as_object()?).ok()
}

/// What a valid assertion leaves to record: its single-use key, until when.
struct Accepted {
    replay_key: String,
    until: DateTime<Utc>,
}

/// Checks `assertion` for `client_id` against `client` (its row; `None` when unknown). `Err`
/// carries the reason for the log only: the caller answers `invalid_client` whatever it is.
fn check(
    assertion: &str,
    client_id: &str,
    client: Option<&OAuthClient>,
    issuer: &str,
    now: DateTime<Utc>,
) -> Result<Accepted, String> {
    let jws = Compact::decode(assertion).map_err(|e| e.to_string())?;
    if jws.header.get("typ").and_then(|t| t.as_str()) == Some("dpop+jwt") {
        return Err("a DPoP proof is not a client assertion".into());
    }
    let keys = client
        .and_then(|c| c.jwks.as_deref())
        .and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok())
        .and_then(|j| JwkSet::parse(&j).ok());
    let key = keys
        .as_ref()
        .and_then(|k| k.select(jws.kid(), jws.alg()).cloned());
    let signed = match &key {
        Some(k) => jws.verify_with(k),
        None => {
            // Unknown client, no keys, or no key with this kid: the same work, then refuse.
            if let Some(d) = dummy_key(jws.alg()) {
                let _ = jws.verify_with(&d);
            }
            return Err("no registered key matches the assertion".into());
        }
    };
    signed.map_err(|e| e.to_string())?;
    let c: Claims = serde_json::from_slice(&jws.payload).map_err(|e| format!("claims: {e}"))?;
    if c.iss != client_id || c.sub != client_id {
        return Err("iss and sub must both be the client id".into());
    }
    if c.aud.as_str() != Some(issuer) {
        return Err("aud must be the issuer identifier, as a string".into());
    }
    let exp = DateTime::<Utc>::from_timestamp(c.exp, 0).ok_or("exp is out of range")?;
    if exp <= now - SKEW {
        return Err("the assertion has expired".into());
    }
    if exp > now + MAX_LIFETIME + SKEW {
        return Err("exp is more than 60 seconds ahead".into());
    }
    let ahead = |t: Option<i64>| t.is_some_and(|t| t > (now + SKEW).timestamp());
    if ahead(c.iat) || ahead(c.nbf) {
        return Err("iat or nbf is in the future".into());
    }
    if c.jti.is_empty() || c.jti.len() > 256 {
        return Err("jti must be 1 to 256 characters".into());
    }
    let jti_hash = URL_SAFE_NO_PAD.encode(Sha256::digest(c.jti.as_bytes()));
    Ok(Accepted {
        replay_key: format!("assertion:{client_id}:{jti_hash}"),
        until: exp + SKEW,
    })
}

impl OAuthService {
    /// Proves an assertion (see the module documentation): [`ClientCredentials::Proven`], or the
    /// one `invalid_client` answer.
    pub(super) async fn prove_assertion(
        &self,
        client_id: String,
        assertion: String,
    ) -> Result<ClientCredentials, OAuthError> {
        let refused = || OAuthError::InvalidClient("client authentication failed".into());
        let client = self
            .active_client(&client_id)
            .await?
            .filter(|c| c.auth_method == "private_key_jwt");
        let now = self.platform.now();
        let accepted = match check(&assertion, &client_id, client.as_ref(), &self.issuer, now) {
            Ok(a) => a,
            Err(why) => {
                tracing::info!(client_id, reason = %why, "client assertion refused");
                return Err(refused());
            }
        };
        let ttl = (accepted.until - now)
            .to_std()
            .unwrap_or_default()
            .max(std::time::Duration::from_secs(1));
        if !self
            .platform
            .cache
            .put_once(&accepted.replay_key, "1", ttl)
            .await?
        {
            tracing::info!(client_id, "client assertion replayed (jti)");
            return Err(refused());
        }
        Ok(ClientCredentials::Proven(Proven { client_id }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_print_their_secret_or_assertion() {
        let creds = ClientCredentials::Assertion {
            client_id: "c_1".into(),
            assertion: "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJjXzEifQ.c2lnbmF0dXJl".into(),
        };
        let shown = format!("{creds:?}");
        assert!(
            shown.contains("c_1") && shown.contains("private_key_jwt"),
            "{shown}"
        );
        assert!(!shown.contains("eyJ"), "{shown}");
        let secret = ClientCredentials::Basic {
            client_id: "c_2".into(),
            secret: platform::crypto::PlainToken::from_presented("cs_very-secret"),
        };
        assert!(!format!("{secret:?}").contains("very-secret"));
    }

    #[test]
    fn the_claimed_client_is_read_only_from_plausible_assertions() {
        let payload = URL_SAFE_NO_PAD.encode(r#"{"sub":"c_1","iss":"c_1"}"#);
        assert_eq!(
            claimed_client(&format!("e30.{payload}.x")).as_deref(),
            Some("c_1")
        );
        let padded = format!("e30.{payload}.{}", "x".repeat(::grants::jws::MAX_JWS_LEN));
        assert_eq!(claimed_client(&padded), None);
        let long = URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"{}"}}"#, "c".repeat(200)));
        assert_eq!(claimed_client(&format!("e30.{long}.x")), None);
    }
}
