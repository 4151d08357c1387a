//! DPoP (RFC 9449) at the resource server: a token bound with `cnf_jkt` verifies only with a
//! fresh proof, for this method, URL and token, signed by the bound key; every other proof is
//! refused with its reason.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use biscuit_auth::{BlockBuilder, UnverifiedBiscuit};
use chrono::Duration;
use grants::dpop::{DpopError, InMemoryReplayStore, ProofContext, jwk_thumbprint, token_hash};
use grants::error::VerifyError;
use grants::{Action, Attenuation};
use serde_json::{Value, json};

use crate::common::*;

const URL: &str = "https://bank.example/sandbox/v1/accounts/acc_1/balances";

/// A proof key: ES256 (P-256) or EdDSA (Ed25519), with its public JWK.
enum Key {
    Es256(p256::ecdsa::SigningKey),
    Ed25519(ed25519_dalek::SigningKey),
}

impl Key {
    fn es256(seed: u8) -> Self {
        Key::Es256(p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap())
    }
    fn ed25519(seed: u8) -> Self {
        Key::Ed25519(ed25519_dalek::SigningKey::from_bytes(&[seed; 32]))
    }
    fn alg(&self) -> &'static str {
        match self {
            Key::Es256(_) => "ES256",
            Key::Ed25519(_) => "EdDSA",
        }
    }
    fn jwk(&self) -> Value {
        match self {
            Key::Es256(k) => {
                let p = k.verifying_key().to_encoded_point(false);
                json!({"kty": "EC", "crv": "P-256",
                       "x": URL_SAFE_NO_PAD.encode(p.x().unwrap()),
                       "y": URL_SAFE_NO_PAD.encode(p.y().unwrap())})
            }
            Key::Ed25519(k) => json!({"kty": "OKP", "crv": "Ed25519",
                "x": URL_SAFE_NO_PAD.encode(k.verifying_key().as_bytes())}),
        }
    }
    fn jkt(&self) -> String {
        jwk_thumbprint(&self.jwk()).unwrap()
    }
    fn sign(&self, input: &[u8]) -> Vec<u8> {
        match self {
            Key::Es256(k) => {
                use p256::ecdsa::signature::Signer;
                let s: p256::ecdsa::Signature = k.sign(input);
                s.to_bytes().to_vec()
            }
            Key::Ed25519(k) => {
                use ed25519_dalek::Signer;
                k.sign(input).to_bytes().to_vec()
            }
        }
    }
}

fn jws(header: &Value, claims: &Value, key: &Key) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

fn claims(token: &str, jti: &str) -> Value {
    json!({"jti": jti, "htm": "GET", "htu": URL, "iat": now().timestamp(), "ath": token_hash(token)})
}

fn proof_with(key: &Key, claims: &Value) -> String {
    jws(
        &json!({"typ": "dpop+jwt", "alg": key.alg(), "jwk": key.jwk()}),
        claims,
        key,
    )
}

fn bound_token(key: &Key) -> String {
    grants::mint_bound(
        &crate::common::key(1),
        &grant(full_scope()),
        &key.jkt(),
        now() + Duration::minutes(10),
        now(),
    )
    .unwrap()
    .token
}

fn balances() -> grants::Request {
    grants::Request::new(Action::BalancesRead, now()).account(acc("acc_1"))
}

fn ctx() -> ProofContext<'static> {
    ProofContext::new("GET", URL, now())
}

fn refused(r: Result<grants::Authorization, VerifyError>) -> DpopError {
    match r {
        Err(VerifyError::Dpop(e)) => e,
        other => panic!("expected a DPoP refusal, got {other:?}"),
    }
}

#[test]
fn a_bound_token_verifies_only_with_a_fresh_proof_of_its_key() {
    for key in [Key::es256(7), Key::ed25519(7)] {
        let token = bound_token(&key);
        let replay = InMemoryReplayStore::default();
        // As a bearer token: refused.
        assert!(matches!(
            verifier().verify(&token, &balances()),
            Err(VerifyError::ProofRequired)
        ));
        // With a proof of the bound key: allowed, and the binding is reported.
        let proof = proof_with(&key, &claims(&token, "j1"));
        let ok = verifier()
            .verify_dpop(&token, &balances(), &proof, ctx(), &replay)
            .unwrap();
        assert_eq!(ok.cnf_jkt.as_deref(), Some(key.jkt().as_str()));
        // The same proof again: replayed.
        assert_eq!(
            refused(verifier().verify_dpop(&token, &balances(), &proof, ctx(), &replay)),
            DpopError::Replayed
        );
        // Another key's proof: refused.
        let other = Key::es256(9);
        let proof = proof_with(&other, &claims(&token, "j2"));
        assert_eq!(
            refused(verifier().verify_dpop(&token, &balances(), &proof, ctx(), &replay)),
            DpopError::KeyMismatch
        );
    }
}

#[test]
fn proofs_for_another_request_time_or_token_are_refused() {
    let key = Key::es256(3);
    let token = bound_token(&key);
    let replay = InMemoryReplayStore::default();
    let mut n = 0;
    let mut check = |mutate: &dyn Fn(&mut Value), expected: DpopError| {
        n += 1;
        let mut c = claims(&token, &format!("jti-{n}"));
        mutate(&mut c);
        let proof = proof_with(&key, &c);
        assert_eq!(
            refused(verifier().verify_dpop(&token, &balances(), &proof, ctx(), &replay)),
            expected,
            "{c}"
        );
    };
    check(&|c| c["htm"] = json!("POST"), DpopError::WrongMethod);
    check(
        &|c| c["htu"] = json!("https://bank.example/other"),
        DpopError::WrongUrl,
    );
    check(
        &|c| c["htu"] = json!("https://evil.example/sandbox/v1/accounts/acc_1/balances"),
        DpopError::WrongUrl,
    );
    check(
        &|c| c["iat"] = json!((now() - Duration::seconds(61)).timestamp()),
        DpopError::Stale,
    );
    check(
        &|c| c["iat"] = json!((now() + Duration::seconds(30)).timestamp()),
        DpopError::Stale,
    );
    check(
        &|c| {
            c.as_object_mut().unwrap().remove("ath");
        },
        DpopError::WrongTokenHash,
    );
    check(
        &|c| c["ath"] = json!(token_hash("another token")),
        DpopError::WrongTokenHash,
    );
}

#[test]
fn malformed_and_unsupported_proofs_are_refused() {
    let key = Key::es256(4);
    let token = bound_token(&key);
    let replay = InMemoryReplayStore::default();
    let c = claims(&token, "jx");
    let verify =
        |proof: &str| refused(verifier().verify_dpop(&token, &balances(), proof, ctx(), &replay));
    // alg none, HS256 with the public key as the secret: no such algorithms.
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD
            .encode(json!({"typ": "dpop+jwt", "alg": "none", "jwk": key.jwk()}).to_string()),
        URL_SAFE_NO_PAD.encode(c.to_string())
    );
    assert_eq!(verify(&none), DpopError::UnsupportedAlgorithm);
    let hs = jws(
        &json!({"typ": "dpop+jwt", "alg": "HS256", "jwk": key.jwk()}),
        &c,
        &key,
    );
    assert_eq!(verify(&hs), DpopError::UnsupportedAlgorithm);
    // Wrong typ, crit extensions, a private key in the header, a key of another type.
    for header in [
        json!({"typ": "JWT", "alg": "ES256", "jwk": key.jwk()}),
        json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": key.jwk(), "crit": ["exp"]}),
        json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": {"kty": "EC", "crv": "P-256", "x": key.jwk()["x"], "y": key.jwk()["y"], "d": "AAAA"}}),
        json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": key.jwk()}),
    ] {
        assert!(
            matches!(verify(&jws(&header, &c, &key)), DpopError::Malformed(_)),
            "{header}"
        );
    }
    // A signature that does not verify, and things that are not JWS at all.
    let good = proof_with(&key, &c);
    let (input, _) = good.rsplit_once('.').unwrap();
    let forged = format!("{input}.{}", URL_SAFE_NO_PAD.encode([0u8; 64]));
    assert_eq!(verify(&forged), DpopError::BadSignature);
    for junk in ["", "a.b", "a.b.c.d", "!!!.???.###", &"a".repeat(5000)] {
        assert!(
            matches!(verify(junk), DpopError::Malformed(_)),
            "{junk:.20}"
        );
    }
}

#[test]
fn binding_survives_attenuation_and_cannot_be_added_by_a_holder() {
    let key = Key::ed25519(5);
    let token = bound_token(&key);
    // Attenuated by the holder: still bound.
    let narrowed = grants::attenuate(
        &token,
        &Attenuation::new().actions([Action::BalancesRead]),
        false,
    )
    .unwrap();
    assert!(matches!(
        verifier().verify(&narrowed, &balances()),
        Err(VerifyError::ProofRequired)
    ));
    let replay = InMemoryReplayStore::default();
    let proof = proof_with(&key, &claims(&narrowed, "a1"));
    verifier()
        .verify_dpop(&narrowed, &balances(), &proof, ctx(), &replay)
        .unwrap();
    // An unbound token presented with a proof: a holder's own cnf_jkt fact in a block does
    // not bind it (only the authority block counts), so it is refused.
    let unbound = mint(full_scope());
    let claimed = UnverifiedBiscuit::from_base64(&unbound)
        .unwrap()
        .append(
            BlockBuilder::new()
                .code(format!("cnf_jkt(\"{}\");", key.jkt()))
                .unwrap(),
        )
        .unwrap()
        .to_base64()
        .unwrap();
    let proof = proof_with(&key, &claims(&claimed, "a2"));
    assert!(matches!(
        verifier().verify_dpop(&claimed, &balances(), &proof, ctx(), &replay),
        Err(VerifyError::NotBound)
    ));
    // Inspection shows the binding.
    let info = grants::inspect(&token).unwrap();
    assert_eq!(info.grant.unwrap().cnf_jkt, Some(key.jkt()));
}

/// WebCrypto and other JOSE libraries do not normalise ECDSA's `s`: a proof whose signature has
/// the high `s` of the pair is as valid and must verify (its `jti` still makes it single use).
#[test]
fn es256_proofs_with_either_s_verify() {
    let key = Key::es256(6);
    let token = bound_token(&key);
    let replay = InMemoryReplayStore::default();
    let good = proof_with(&key, &claims(&token, "hs"));
    let (input, sig) = good.rsplit_once('.').unwrap();
    let sig = p256::ecdsa::Signature::from_slice(&URL_SAFE_NO_PAD.decode(sig).unwrap()).unwrap();
    let (r, s) = sig.split_scalars();
    let flipped = p256::ecdsa::Signature::from_scalars(r, -*s).unwrap();
    assert_ne!(flipped, sig);
    let high = format!("{input}.{}", URL_SAFE_NO_PAD.encode(flipped.to_bytes()));
    verifier()
        .verify_dpop(&token, &balances(), &high, ctx(), &replay)
        .unwrap();
}

/// A proof that does not open its token (another key, an unbound token) records nothing: a
/// stranger signing proofs with keys of their own cannot fill the replay store, nor burn the
/// holder's `jti`.
#[test]
fn refused_proofs_are_not_recorded() {
    let key = Key::es256(8);
    let token = bound_token(&key);
    let replay = InMemoryReplayStore::default();
    let c = claims(&token, "shared-jti");
    let stranger = Key::es256(9);
    assert_eq!(
        refused(verifier().verify_dpop(
            &token,
            &balances(),
            &proof_with(&stranger, &c),
            ctx(),
            &replay
        )),
        DpopError::KeyMismatch
    );
    let unbound = mint(full_scope());
    let c2 = claims(&unbound, "other-jti");
    assert!(matches!(
        verifier().verify_dpop(
            &unbound,
            &balances(),
            &proof_with(&key, &c2),
            ctx(),
            &replay
        ),
        Err(VerifyError::NotBound)
    ));
    // The holder's proof with the same jti still works once.
    verifier()
        .verify_dpop(&token, &balances(), &proof_with(&key, &c), ctx(), &replay)
        .unwrap();
    assert_eq!(
        refused(verifier().verify_dpop(&token, &balances(), &proof_with(&key, &c), ctx(), &replay)),
        DpopError::Replayed
    );
}
