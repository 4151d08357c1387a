//! Certificate-bound tokens (RFC 8705 section 3): a token minted for a client that
//! authenticated with mutual TLS carries `cnf_x5t("<thumbprint>")` in its authority block, the
//! base64url SHA-256 of the client certificate's DER encoding (the `x5t#S256` of RFC 8705).
//!
//! A resource server terminating TLS with client certificates passes the thumbprint of the
//! certificate the request's connection presented to [`crate::Request::client_certificate`]; the
//! verifier refuses a certificate-bound token on any other connection
//! ([`crate::VerifyError::CertificateRequired`], [`crate::VerifyError::CertificateMismatch`]).
//! The fact sits in the signed authority block: no attenuation block can remove the binding, so
//! a token a fintech narrows and hands on is still useless without the fintech's certificate.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// The RFC 8705 `x5t#S256` thumbprint of a certificate (its DER encoding).
pub fn certificate_thumbprint(der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(der))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_is_base64url_sha256_of_the_der() {
        // SHA-256 of the empty string, base64url without padding.
        assert_eq!(
            certificate_thumbprint(b""),
            "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"
        );
        assert_eq!(certificate_thumbprint(&[0x30, 0x00]).len(), 43);
    }
}
