//! DPoP (RFC 9449): proof-of-possession for access tokens, the resource server's half.
//!
//! A token minted for a DPoP key carries `cnf_jkt("<thumbprint>")` in its authority block: the
//! RFC 7638 SHA-256 thumbprint of the client's public JWK. Attenuation appends blocks and cannot
//! remove it, so every attenuated copy stays bound. [`crate::Verifier::verify`] refuses a bound
//! token (`VerifyError::ProofRequired`); [`crate::Verifier::verify_dpop`] accepts it only with a
//! proof that [`verify_proof`] checked: a compact JWS (`typ` `dpop+jwt`, `alg` ES256 or EdDSA,
//! the public key in the `jwk` header), signed by the bound key, for this method and URL, recent,
//! naming this token (`ath`), and never seen before (`jti`, through a [`ReplayStore`]).
//!
//! Only what is needed is parsed, strictly: no `none`, no HMAC, no `crit` extensions, no private
//! key members, bounded sizes.

use std::collections::HashMap;

use crate::jws::{Compact, JwsError, PublicJwk};
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use thiserror::Error;

/// Algorithms accepted in proofs (`dpop_signing_alg_values_supported`).
pub const DPOP_ALGS: [&str; 2] = ["ES256", "EdDSA"];

/// A proof longer than this is refused before decoding.
pub const MAX_PROOF_LEN: usize = 4096;

/// Why a DPoP proof was refused. Every variant means "refuse the request".
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DpopError {
    #[error("the DPoP proof is malformed: {0}")]
    Malformed(String),
    #[error("the DPoP proof uses an unsupported algorithm (ES256 or EdDSA only)")]
    UnsupportedAlgorithm,
    #[error("the DPoP proof's signature does not verify")]
    BadSignature,
    #[error("the DPoP proof is for another method")]
    WrongMethod,
    #[error("the DPoP proof is for another URL")]
    WrongUrl,
    #[error("the DPoP proof's iat is outside the accepted window")]
    Stale,
    #[error("the DPoP proof does not name this access token (ath)")]
    WrongTokenHash,
    #[error("the DPoP proof was already used (jti)")]
    Replayed,
    #[error("the DPoP proof was signed by another key than the token is bound to")]
    KeyMismatch,
    #[error("the DPoP replay store is unavailable: {0}")]
    ReplayStoreUnavailable(String),
}

/// Where single use of proofs is recorded: `first_use` stores `key` until `until` and says
/// whether it was new (an entry whose `until` has passed at `now`, the verifier's clock, counts
/// as gone). Resource servers behind several instances use a shared store (Redis);
/// [`InMemoryReplayStore`] serves one process.
pub trait ReplayStore {
    fn first_use(
        &self,
        key: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, String>;
}

/// A per-process replay store. Expired entries are dropped when the map has doubled since the
/// last sweep (at least 10,000 entries), so the cost per proof stays constant however many are
/// live.
#[derive(Debug, Default)]
pub struct InMemoryReplayStore {
    seen: Mutex<(HashMap<String, DateTime<Utc>>, usize)>,
}

impl ReplayStore for InMemoryReplayStore {
    fn first_use(
        &self,
        key: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, String> {
        let mut guard = self.seen.lock().map_err(|_| "poisoned".to_string())?;
        let (seen, sweep_above) = &mut *guard;
        if seen.len() > (*sweep_above).max(10_000) {
            seen.retain(|_, t| *t > now);
            *sweep_above = seen.len().saturating_mul(2);
        }
        match seen.get(key) {
            Some(t) if *t > now => Ok(false),
            _ => {
                seen.insert(key.to_string(), until);
                Ok(true)
            }
        }
    }
}

/// What the proof must match.
#[derive(Debug, Clone)]
pub struct ProofContext<'a> {
    /// The request's HTTP method (`GET`, `POST`...).
    pub method: &'a str,
    /// The request's URL as the client addressed it (query and fragment are ignored).
    pub url: &'a str,
    /// The verifier's clock.
    pub now: DateTime<Utc>,
    /// How old a proof may be (by its `iat`).
    pub max_age: Duration,
    /// How far in the future its `iat` may be (clock skew).
    pub max_skew: Duration,
    /// The access token the proof must name (`ath`); `None` at the token endpoint.
    pub access_token: Option<&'a str>,
}

impl<'a> ProofContext<'a> {
    /// A context with the usual windows: proofs up to 60 s old, 5 s ahead.
    pub fn new(method: &'a str, url: &'a str, now: DateTime<Utc>) -> Self {
        Self {
            method,
            url,
            now,
            max_age: Duration::seconds(60),
            max_skew: Duration::seconds(5),
            access_token: None,
        }
    }

    /// The proof must name `token` in `ath`.
    pub fn for_token(mut self, token: &'a str) -> Self {
        self.access_token = Some(token);
        self
    }
}

/// A proof that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedProof {
    /// RFC 7638 thumbprint of the signing key (base64url SHA-256).
    pub jkt: String,
    pub jti: String,
    pub iat: DateTime<Utc>,
    /// The server nonce, if the proof carried one (checking it is the caller's).
    pub nonce: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    jti: String,
    htm: String,
    htu: String,
    /// A NumericDate: fractions are allowed (RFC 7519) and dropped.
    iat: f64,
    ath: Option<String>,
    nonce: Option<String>,
}

fn malformed(what: &str) -> DpopError {
    DpopError::Malformed(what.to_string())
}

/// The RFC 7638 SHA-256 thumbprint (base64url) of a public JWK (P-256 `EC` or Ed25519 `OKP`).
pub fn jwk_thumbprint(jwk: &serde_json::Value) -> Result<String, DpopError> {
    let map = jwk
        .as_object()
        .ok_or_else(|| malformed("jwk is not an object"))?;
    Ok(PublicJwk::parse(map)?.thumbprint().to_string())
}

impl From<JwsError> for DpopError {
    fn from(e: JwsError) -> Self {
        match e {
            JwsError::Malformed(m) => DpopError::Malformed(m),
            JwsError::UnsupportedAlgorithm => DpopError::UnsupportedAlgorithm,
            JwsError::BadSignature => DpopError::BadSignature,
        }
    }
}

/// `ath`: base64url SHA-256 of the access token.
pub fn token_hash(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(access_token.as_bytes()))
}

/// `htu` comparison (RFC 9449 section 4.3): scheme, host, port and path, without query and
/// fragment; scheme and host case-insensitively.
fn same_target(a: &str, b: &str) -> bool {
    fn base(u: &str) -> Option<String> {
        let cut = u.find(['?', '#']).map_or(u, |i| &u[..i]);
        let (scheme, rest) = cut.split_once("://")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (scheme, mut authority) = (scheme.to_ascii_lowercase(), authority.to_ascii_lowercase());
        // The scheme's default port is the same target as no port (`URL.origin` drops it).
        let default = match scheme.as_str() {
            "https" => ":443",
            "http" => ":80",
            _ => "",
        };
        if !default.is_empty() && authority.ends_with(default) {
            authority.truncate(authority.len() - default.len());
        }
        Some(format!("{scheme}://{authority}{path}"))
    }
    matches!((base(a), base(b)), (Some(x), Some(y)) if x == y)
}

/// Verifies a DPoP proof for `ctx` and records its `jti` in `replay` (keyed with the key's
/// thumbprint, until the proof could no longer be accepted anyway).
pub fn verify_proof(
    proof: &str,
    ctx: &ProofContext<'_>,
    replay: &dyn ReplayStore,
) -> Result<VerifiedProof, DpopError> {
    check_proof(proof, ctx)?.record(replay, ctx.now)
}

/// A proof that passed every check but single use. It gives its [`VerifiedProof`] only once its
/// `jti` is recorded: [`CheckedProof::record`] with a [`ReplayStore`], or, for an asynchronous
/// store (Redis), [`CheckedProof::replay_entry`] to store and [`CheckedProof::recorded`] with the
/// store's answer.
#[derive(Debug, Clone)]
#[must_use = "a proof is accepted only once its jti is recorded"]
pub struct CheckedProof {
    proof: VerifiedProof,
    key: String,
    until: DateTime<Utc>,
}

impl CheckedProof {
    /// The RFC 7638 thumbprint of the key that signed the proof.
    pub fn jkt(&self) -> &str {
        &self.proof.jkt
    }

    /// What single use records: a key (the thumbprint and a hash of the `jti`, so at most 100
    /// bytes whatever the proof holds) and until when (after that the proof is stale anyway).
    pub fn replay_entry(&self) -> (&str, DateTime<Utc>) {
        (&self.key, self.until)
    }

    /// The proof, given whether recording [`Self::replay_entry`] found it new.
    pub fn recorded(self, first_use: bool) -> Result<VerifiedProof, DpopError> {
        if first_use {
            Ok(self.proof)
        } else {
            Err(DpopError::Replayed)
        }
    }

    /// Records the use in `replay` (a synchronous store) at the verifier's clock `now`.
    pub fn record(
        self,
        replay: &dyn ReplayStore,
        now: DateTime<Utc>,
    ) -> Result<VerifiedProof, DpopError> {
        match replay.first_use(&self.key, self.until, now) {
            Ok(first) => self.recorded(first),
            Err(e) => Err(DpopError::ReplayStoreUnavailable(e)),
        }
    }
}

/// Every check of [`verify_proof`] but single use (see [`CheckedProof`]). Servers that verify the
/// proof's token or client first record the use only after that, so that strangers' proofs never
/// fill the store.
pub fn check_proof(proof: &str, ctx: &ProofContext<'_>) -> Result<CheckedProof, DpopError> {
    let proof = check_signed(proof, ctx)?;
    let key = format!("dpop:{}:{}", proof.jkt, token_hash(&proof.jti));
    let until = proof.iat + ctx.max_age + ctx.max_skew;
    Ok(CheckedProof { proof, key, until })
}

/// The signature and claims checks of [`check_proof`].
fn check_signed(proof: &str, ctx: &ProofContext<'_>) -> Result<VerifiedProof, DpopError> {
    if proof.len() > MAX_PROOF_LEN {
        return Err(malformed("the proof is too long"));
    }
    let jws = Compact::decode(proof)?;
    if !DPOP_ALGS.contains(&jws.alg()) {
        return Err(crate::jws::JwsError::UnsupportedAlgorithm.into());
    }
    if jws.header.get("typ").and_then(serde_json::Value::as_str) != Some("dpop+jwt") {
        return Err(malformed("typ must be dpop+jwt"));
    }
    let jwk = jws
        .header
        .get("jwk")
        .and_then(serde_json::Value::as_object)
        .ok_or_else(|| malformed("jwk is missing"))?;
    let key = PublicJwk::parse(jwk)?;
    if key.alg() != jws.alg() {
        return Err(malformed("jwk does not fit alg"));
    }
    jws.verify_with(&key)?;
    let jkt = key.thumbprint().to_string();
    let claims: Claims =
        serde_json::from_slice(&jws.payload).map_err(|e| malformed(&format!("claims: {e}")))?;
    if claims.jti.is_empty() || claims.jti.len() > 256 {
        return Err(malformed("jti must be 1 to 256 characters"));
    }
    if claims.htm != ctx.method {
        return Err(DpopError::WrongMethod);
    }
    if !same_target(&claims.htu, ctx.url) {
        return Err(DpopError::WrongUrl);
    }
    let iat = Some(claims.iat.floor())
        .filter(|t| t.is_finite() && t.abs() < 1e12)
        .and_then(|t| DateTime::<Utc>::from_timestamp(t as i64, 0))
        .ok_or(DpopError::Stale)?;
    if iat < ctx.now - ctx.max_age || iat > ctx.now + ctx.max_skew {
        return Err(DpopError::Stale);
    }
    if let Some(token) = ctx.access_token {
        match &claims.ath {
            Some(ath) if *ath == token_hash(token) => {}
            _ => return Err(DpopError::WrongTokenHash),
        }
    }
    Ok(VerifiedProof {
        jkt,
        jti: claims.jti,
        iat,
        nonce: claims.nonce,
    })
}

/// The client's half: a DPoP key pair that signs proofs (ES256 or EdDSA). Fintechs that use the
/// `grants` crate sign with it; the service's tests use it as a client would.
pub struct DpopKey(Signing);

enum Signing {
    Es256(p256::ecdsa::SigningKey),
    Ed25519(ed25519_dalek::SigningKey),
}

impl std::fmt::Debug for DpopKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The private key never appears in logs: only its algorithm and thumbprint.
        write!(f, "DpopKey({}, {})", self.alg(), self.thumbprint())
    }
}

impl DpopKey {
    /// A new random P-256 key (ES256).
    pub fn generate_es256() -> Self {
        use rand::RngCore;
        loop {
            let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
            rand::rngs::OsRng.fill_bytes(bytes.as_mut());
            if let Ok(k) = Self::es256_from_bytes(&bytes) {
                return k;
            }
        }
    }

    /// A new random Ed25519 key (EdDSA).
    pub fn generate_ed25519() -> Self {
        use rand::RngCore;
        let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(bytes.as_mut());
        Self::ed25519_from_bytes(&bytes)
    }

    /// A P-256 key from its 32-byte secret scalar.
    pub fn es256_from_bytes(secret: &[u8; 32]) -> Result<Self, DpopError> {
        p256::ecdsa::SigningKey::from_slice(secret)
            .map(|k| Self(Signing::Es256(k)))
            .map_err(|_| malformed("not a P-256 secret scalar"))
    }

    /// An Ed25519 key from its 32-byte seed.
    pub fn ed25519_from_bytes(seed: &[u8; 32]) -> Self {
        Self(Signing::Ed25519(ed25519_dalek::SigningKey::from_bytes(
            seed,
        )))
    }

    /// `ES256` or `EdDSA`.
    pub fn alg(&self) -> &'static str {
        match self.0 {
            Signing::Es256(_) => "ES256",
            Signing::Ed25519(_) => "EdDSA",
        }
    }

    /// The public JWK (what a proof's `jwk` header carries).
    pub fn public_jwk(&self) -> serde_json::Value {
        match &self.0 {
            Signing::Es256(k) => {
                let p = k.verifying_key().to_encoded_point(false);
                let (x, y) = (p.x().map(|x| x.to_vec()), p.y().map(|y| y.to_vec()));
                serde_json::json!({"kty": "EC", "crv": "P-256",
                    "x": URL_SAFE_NO_PAD.encode(x.unwrap_or_default()),
                    "y": URL_SAFE_NO_PAD.encode(y.unwrap_or_default())})
            }
            Signing::Ed25519(k) => serde_json::json!({"kty": "OKP", "crv": "Ed25519",
                "x": URL_SAFE_NO_PAD.encode(k.verifying_key().as_bytes())}),
        }
    }

    /// The RFC 7638 thumbprint (`dpop_jkt`, and the token's `cnf_jkt`).
    pub fn thumbprint(&self) -> String {
        jwk_thumbprint(&self.public_jwk()).unwrap_or_default()
    }

    /// Signs a JWS with this key's algorithm over `header` (the `alg` member is set here) and
    /// `claims`. Exposed for tests that need proofs no honest client would send.
    pub fn sign_jws(&self, header: &serde_json::Value, claims: &serde_json::Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = match &self.0 {
            Signing::Es256(k) => {
                use p256::ecdsa::signature::Signer;
                let s: p256::ecdsa::Signature = k.sign(input.as_bytes());
                s.to_bytes().to_vec()
            }
            Signing::Ed25519(k) => {
                use ed25519_dalek::Signer;
                k.sign(input.as_bytes()).to_bytes().to_vec()
            }
        };
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    /// A proof for `method` and `url` at `now`, naming `access_token` (`ath`) when given and
    /// carrying the server's `nonce` when it asked for one; `jti` is 128 random bits.
    pub fn proof(
        &self,
        method: &str,
        url: &str,
        access_token: Option<&str>,
        nonce: Option<&str>,
        now: DateTime<Utc>,
    ) -> String {
        let jti = {
            use rand::RngCore;
            let mut bytes = [0u8; 16];
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            URL_SAFE_NO_PAD.encode(bytes)
        };
        let mut claims = serde_json::json!({
            "jti": jti, "htm": method, "htu": url, "iat": now.timestamp(),
        });
        if let Some(t) = access_token {
            claims["ath"] = token_hash(t).into();
        }
        if let Some(n) = nonce {
            claims["nonce"] = n.into();
        }
        let header =
            serde_json::json!({"typ": "dpop+jwt", "alg": self.alg(), "jwk": self.public_jwk()});
        self.sign_jws(&header, &claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_matches_rfc_7638_example() {
        // RFC 7638 section 3.1 uses an RSA key; RFC 8037 appendix A.3 gives an Ed25519 one.
        let jwk = serde_json::json!({
            "kty": "OKP", "crv": "Ed25519",
            "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
        });
        assert_eq!(
            jwk_thumbprint(&jwk).unwrap(),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn targets_compare_without_query_and_case() {
        assert!(same_target(
            "HTTPS://Bank.Example/sandbox/v1/accounts?x=1",
            "https://bank.example/sandbox/v1/accounts"
        ));
        assert!(!same_target(
            "https://bank.example/sandbox/v1/Accounts",
            "https://bank.example/sandbox/v1/accounts"
        ));
        assert!(!same_target(
            "https://bank.example:8443/a",
            "https://bank.example/a"
        ));
        assert!(!same_target("not a url", "https://bank.example/a"));
        assert!(same_target(
            "https://bank.example:443/a",
            "https://bank.example/a"
        ));
        assert!(same_target("http://127.0.0.1:80/a", "http://127.0.0.1/a"));
        assert!(!same_target(
            "http://bank.example:443/a",
            "http://bank.example/a"
        ));
    }

    #[test]
    fn a_client_key_signs_proofs_its_thumbprint_verifies() {
        let now = Utc::now();
        for key in [DpopKey::generate_es256(), DpopKey::generate_ed25519()] {
            let url = "https://bank.example/oauth2/token";
            let proof = key.proof("POST", url, None, None, now);
            let ctx = ProofContext::new("POST", url, now);
            let store = InMemoryReplayStore::default();
            let verified = verify_proof(&proof, &ctx, &store).unwrap();
            assert_eq!(verified.jkt, key.thumbprint());
            assert_eq!(verify_proof(&proof, &ctx, &store), Err(DpopError::Replayed));
            assert_eq!(
                format!("{key:?}"),
                format!("DpopKey({}, {})", key.alg(), key.thumbprint())
            );
        }
    }
}
