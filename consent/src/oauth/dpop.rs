//! DPoP (RFC 9449) at the authorization server and the sandbox bank API: reading the `DPoP`
//! header, checking a proof for this server's URL, and recording its single use in the shared
//! cache (Redis across instances, in-process without it), so a proof replayed at another instance
//! is refused too.
//!
//! Where the key goes: PAR (`DPoP` header or `dpop_jkt`) binds the authorization request, the
//! customer's approval copies the binding to the code, the token endpoint requires a proof from
//! that key and binds the refresh token family and every access token (`cnf_jkt`) to it.

use ::grants::dpop::{CheckedProof, ProofContext};
use chrono::{DateTime, Utc};

use super::OAuthService;
use super::error::OAuthError;

/// The request header that carries the proof.
pub const HEADER: &str = "DPoP";

/// The request's proof: `None` without a `DPoP` header; more than one is refused (RFC 9449
/// section 4.3, check 1), as is a value that is not visible ASCII.
pub fn proof_header(headers: &actix_web::http::header::HeaderMap) -> Result<Option<&str>, String> {
    let mut values = headers.get_all(HEADER);
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err("send one DPoP header, not several".into());
    }
    first
        .to_str()
        .map(|v| Some(v.trim()))
        .map_err(|_| "the DPoP header is not a JWS".into())
}

/// Whether `jkt` has the form of an RFC 7638 SHA-256 thumbprint (43 base64url characters).
pub fn is_thumbprint(jkt: &str) -> bool {
    jkt.len() == 43
        && jkt
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl OAuthService {
    /// The URL a proof for `path` on this server must name (`htu`): the issuer's origin, as the
    /// client addresses it, and the path.
    pub fn proof_url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer.trim_end_matches('/'))
    }

    /// Checks a proof for `POST` to `path` at `now`; the caller records its use
    /// ([`Self::record_proof`]) once the client is authenticated.
    pub fn check_post_proof(
        &self,
        proof: &str,
        path: &str,
        now: DateTime<Utc>,
    ) -> Result<CheckedProof, OAuthError> {
        let url = self.proof_url(path);
        Ok(::grants::dpop::check_proof(
            proof,
            &ProofContext::new("POST", &url, now),
        )?)
    }

    /// Records a proof's single use; its key's thumbprint if it was new.
    pub async fn record_proof(
        &self,
        proof: CheckedProof,
        now: DateTime<Utc>,
    ) -> Result<String, OAuthError> {
        let first = self.first_use(proof.replay_entry(), now).await?;
        Ok(proof.recorded(first)?.jkt)
    }

    /// `::grants::dpop::ReplayStore::first_use` over the shared cache (`SET NX` with an expiry).
    pub async fn first_use(
        &self,
        (key, until): (&str, DateTime<Utc>),
        now: DateTime<Utc>,
    ) -> Result<bool, OAuthError> {
        let ttl = (until - now)
            .to_std()
            .unwrap_or_default()
            .max(std::time::Duration::from_secs(1));
        Ok(self.platform.cache.put_once(key, "1", ttl).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

    #[test]
    fn one_proof_header_is_read_and_two_are_refused() {
        let mut h = HeaderMap::new();
        assert_eq!(proof_header(&h), Ok(None));
        let name = HeaderName::from_static("dpop");
        h.append(name.clone(), HeaderValue::from_static("a.b.c"));
        assert_eq!(proof_header(&h), Ok(Some("a.b.c")));
        h.append(name, HeaderValue::from_static("d.e.f"));
        assert!(proof_header(&h).is_err());
    }

    #[test]
    fn thumbprints_have_one_form() {
        assert!(is_thumbprint("0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"));
        assert!(!is_thumbprint("0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4"));
        assert!(!is_thumbprint(
            "0ZcOCORZNYy+DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
        ));
        assert!(!is_thumbprint(""));
    }
}
