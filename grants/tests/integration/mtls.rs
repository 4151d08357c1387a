//! Certificate-bound tokens (RFC 8705) at the resource server: a token minted with `cnf_x5t`
//! verifies only for a request whose TLS connection presented that certificate, whatever
//! attenuation blocks the holder adds; both bindings are demanded when a token has both.

use chrono::Duration;
use grants::error::VerifyError;
use grants::{Action, Attenuation, Confirmation};

use crate::common::*;

const CERT_A: &[u8] = b"the DER of certificate A";
const CERT_B: &[u8] = b"the DER of certificate B";

fn bound(cnf: Confirmation<'_>) -> String {
    grants::mint_confirmed(
        &key(1),
        &grant(open_scope()),
        cnf,
        now() + Duration::minutes(10),
        now(),
    )
    .unwrap()
    .token
}

fn over(cert: &[u8]) -> grants::Request {
    req(Action::AccountsRead).client_certificate(grants::mtls::certificate_thumbprint(cert))
}

#[test]
fn a_certificate_bound_token_needs_its_certificate() {
    let a = grants::mtls::certificate_thumbprint(CERT_A);
    let token = bound(Confirmation {
        jkt: None,
        x5t: Some(&a),
    });
    let auth = verifier().verify(&token, &over(CERT_A)).unwrap();
    assert_eq!(auth.cnf_x5t.as_deref(), Some(a.as_str()));
    assert_eq!(auth.cnf_jkt, None);
    assert!(matches!(
        verifier().verify(&token, &req(Action::AccountsRead)),
        Err(VerifyError::CertificateRequired)
    ));
    assert!(matches!(
        verifier().verify(&token, &over(CERT_B)),
        Err(VerifyError::CertificateMismatch)
    ));
    // The binding survives attenuation: the holder cannot take it off.
    let narrowed = attenuate(&token, &Attenuation::new().actions([Action::AccountsRead]));
    assert!(verifier().verify(&narrowed, &over(CERT_A)).is_ok());
    assert!(matches!(
        verifier().verify(&narrowed, &over(CERT_B)),
        Err(VerifyError::CertificateMismatch)
    ));
    // The authorization server's own reading reports it without demanding it.
    let reported = verifier()
        .verify_reporting_binding(&narrowed, &req(Action::AccountsRead))
        .unwrap();
    assert_eq!(reported.cnf_x5t.as_deref(), Some(a.as_str()));
    let summary = grants::inspect(&narrowed).unwrap().grant.unwrap();
    assert_eq!(summary.cnf_x5t.as_deref(), Some(a.as_str()));
}

#[test]
fn a_bearer_token_ignores_the_connection_certificate() {
    let token = mint(open_scope());
    let auth = verifier().verify(&token, &over(CERT_A)).unwrap();
    assert_eq!(auth.cnf_x5t, None);
}

#[test]
fn a_token_bound_to_both_carries_both_and_keeps_the_dpop_rule() {
    let a = grants::mtls::certificate_thumbprint(CERT_A);
    let jkt = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I";
    let token = bound(Confirmation {
        jkt: Some(jkt),
        x5t: Some(&a),
    });
    // As a bearer token over the right connection: the DPoP binding still refuses it.
    assert!(matches!(
        verifier().verify(&token, &over(CERT_A)),
        Err(VerifyError::ProofRequired)
    ));
    let summary = grants::inspect(&token).unwrap().grant.unwrap();
    assert_eq!(summary.cnf_jkt.as_deref(), Some(jkt));
    assert_eq!(summary.cnf_x5t.as_deref(), Some(a.as_str()));
}

#[test]
fn thumbprints_that_are_not_thumbprints_are_not_minted() {
    for bad in [
        "",
        "short",
        &"a".repeat(44),
        "not base64url!!not base64url!!not base64url",
    ] {
        let r = grants::mint_confirmed(
            &key(1),
            &grant(open_scope()),
            Confirmation {
                jkt: None,
                x5t: Some(bad),
            },
            now() + Duration::minutes(10),
            now(),
        );
        assert!(r.is_err(), "{bad:?}");
    }
}
