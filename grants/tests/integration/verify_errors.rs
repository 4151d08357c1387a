//! Every bad-input class gets its typed error (and never a panic).

use biscuit_auth::{Algorithm, Biscuit, BlockBuilder, KeyPair, PrivateKey, UnverifiedBiscuit};
use chrono::Duration;
use grants::error::{AttenuateError, DenyReason, RevocationLookupError, VerifyError};
use grants::{Action, Attenuation, GrantId, Limits, Verifier};

use crate::common::*;

fn biscuit_keypair(kid: u32) -> KeyPair {
    KeyPair::from(&PrivateKey::from_bytes(&[kid as u8 + 1; 32], Algorithm::Ed25519).unwrap())
}

const GOOD_AUTHORITY: &str = r#"
    grant("g_1"); client("c_app"); subject("cust_1");
    right("balances:read"); account("acc_1");
    check if time($t), $t <= 2026-03-01T12:10:00Z;
"#;

/// A token written by hand with the real key 1 (as a buggy or future server might).
fn custom_token(authority: &str, kid: Option<u32>) -> String {
    let mut b = Biscuit::builder().code(authority).unwrap();
    if let Some(kid) = kid {
        b = b.root_key_id(kid);
    }
    b.build(&biscuit_keypair(1)).unwrap().to_base64().unwrap()
}

fn balances_acc1() -> grants::Request {
    req(Action::BalancesRead).account(acc("acc_1"))
}

#[test]
fn hand_written_good_token_is_accepted() {
    // Guards the tests below: they fail for the reason they claim, not for a typo.
    let token = custom_token(GOOD_AUTHORITY, Some(1));
    verifier().verify(&token, &balances_acc1()).unwrap();
}

#[test]
fn unknown_kid() {
    let t = grants::mint(
        &key(2),
        &grant(full_scope()),
        now() + Duration::minutes(5),
        now(),
    )
    .unwrap();
    let err = verifier().verify(&t.token, &balances_acc1()).unwrap_err();
    assert!(matches!(err, VerifyError::UnknownKid(2)), "{err:?}");
}

#[test]
fn missing_kid() {
    let token = custom_token(GOOD_AUTHORITY, None);
    let err = verifier().verify(&token, &balances_acc1()).unwrap_err();
    assert!(matches!(err, VerifyError::MissingKid), "{err:?}");
}

#[test]
fn wrong_key_for_kid() {
    let impostor = grants::SigningKey::from_private_bytes(1, &[99; 32]).unwrap();
    let t = grants::mint(
        &impostor,
        &grant(full_scope()),
        now() + Duration::minutes(5),
        now(),
    )
    .unwrap();
    let err = verifier().verify(&t.token, &balances_acc1()).unwrap_err();
    assert!(matches!(err, VerifyError::BadSignature), "{err:?}");
}

#[test]
fn key_outside_its_validity_is_refused() {
    let keys =
        grants::KeySet::new([key(1).published(None, Some(now() - Duration::hours(1)))]).unwrap();
    let err = Verifier::new(keys, grants::NoRevocationCheck)
        .verify(&mint(full_scope()), &balances_acc1())
        .unwrap_err();
    assert!(matches!(err, VerifyError::UnknownKid(1)), "{err:?}");
}

#[test]
fn truncated_garbage_and_tampered() {
    let token = mint(full_scope());
    let v = verifier();
    // Padding is not content: cut into the data itself.
    let body = token.trim_end_matches('=');
    for cut in [1, 10, body.len() / 2, body.len() - 4, body.len() - 1] {
        let err = v.verify(&body[..cut], &balances_acc1()).unwrap_err();
        assert!(
            matches!(err, VerifyError::BadEncoding | VerifyError::Malformed(_)),
            "cut {cut}: {err:?}"
        );
    }
    for garbage in [
        "",
        "not a token!",
        "aGVsbG8gd29ybGQ=",
        "%%%%",
        "AAAAAAAAAAAAAAAA",
    ] {
        let err = v.verify(garbage, &balances_acc1()).unwrap_err();
        assert!(
            matches!(err, VerifyError::BadEncoding | VerifyError::Malformed(_)),
            "{garbage:?}: {err:?}"
        );
    }
    // Flip one bit in each of a few positions of the decoded token: never accepted.
    let mut raw = biscuit_auth::UnverifiedBiscuit::from_base64(&token)
        .unwrap()
        .to_vec()
        .unwrap();
    for pos in [20, raw.len() / 2, raw.len() - 10] {
        raw[pos] ^= 0x01;
        let tampered = base64_url(&raw);
        assert!(
            v.verify(&tampered, &balances_acc1()).is_err(),
            "flip at {pos}"
        );
        raw[pos] ^= 0x01;
    }
}

fn base64_url(bytes: &[u8]) -> String {
    // Re-encode through biscuit's own decoder/encoder is not possible for invalid tokens;
    // a minimal URL-safe base64 encoder keeps the test free of extra dependencies.
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn too_large_and_too_many_blocks() {
    let v = verifier().with_limits(Limits {
        max_token_len: 100,
        ..Limits::default()
    });
    assert!(matches!(
        v.verify(&mint(full_scope()), &balances_acc1()),
        Err(VerifyError::TooLarge { max: 100 })
    ));
    let mut token = mint(full_scope());
    for _ in 0..8 {
        token = attenuate(
            &token,
            &Attenuation::new().expires_at(now() + Duration::hours(1)),
        );
    }
    assert!(matches!(
        verifier().verify(&token, &balances_acc1()),
        Err(VerifyError::TooManyBlocks { count: 9, max: 8 })
    ));
}

#[test]
fn expired_token_grant_and_attenuated_expiry() {
    let token = mint(full_scope());
    let later = req(Action::BalancesRead).account(acc("acc_1"));
    let mut at_expiry = later.clone();
    at_expiry.now = now() + Duration::minutes(10);
    verifier().verify(&token, &at_expiry).unwrap();
    let mut after = later;
    after.now = now() + Duration::minutes(10) + Duration::seconds(1);
    assert!(matches!(
        verifier().verify(&token, &after),
        Err(VerifyError::Expired)
    ));

    // Grant expiring before the requested token expiry caps the token.
    let short = grants::GrantScope::new(
        vec![acc("acc_1")],
        vec![Action::BalancesRead],
        None,
        None,
        now() + Duration::minutes(2),
    )
    .unwrap();
    let minted = grants::mint(&key(1), &grant(short), now() + Duration::hours(1), now()).unwrap();
    assert_eq!(minted.expires_at, now() + Duration::minutes(2));
    let mut r = balances_acc1();
    r.now = now() + Duration::minutes(3);
    assert!(matches!(
        verifier().verify(&minted.token, &r),
        Err(VerifyError::Expired)
    ));
    assert!(grants::mint(&key(1), &grant(full_scope()), now(), now()).is_err());

    // An attenuated, earlier expiry.
    let narrowed = attenuate(
        &mint(full_scope()),
        &Attenuation::new().expires_at(now() + Duration::minutes(1)),
    );
    let mut r = balances_acc1();
    r.now = now() + Duration::minutes(2);
    let err = verifier().verify(&narrowed, &r).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::Denied(DenyReason::Attenuation { block: 1, .. })
        ),
        "{err:?}"
    );
}

#[test]
fn revoked_by_grant_or_revocation_id_and_fail_closed() {
    let minted = grants::mint(
        &key(1),
        &grant(full_scope()),
        now() + Duration::minutes(5),
        now(),
    )
    .unwrap();
    let by_grant = Verifier::new(keys(), |g: &GrantId, _: &[String]| g.as_str() == "g_1");
    assert!(matches!(
        by_grant.verify(&minted.token, &balances_acc1()),
        Err(VerifyError::Revoked)
    ));
    let narrowed = attenuate(&minted.token, &Attenuation::new().accounts([acc("acc_1")]));
    let ids = minted.revocation_ids.clone();
    let by_id = Verifier::new(keys(), move |_: &GrantId, got: &[String]| {
        got.iter().any(|r| ids.contains(r))
    });
    // The attenuated token carries the parent's revocation id: revoking the parent revokes it.
    assert!(matches!(
        by_id.verify(&narrowed, &balances_acc1()),
        Err(VerifyError::Revoked)
    ));

    struct Down;
    impl grants::RevocationCheck for Down {
        fn is_revoked(&self, _: &GrantId, _: &[String]) -> Result<bool, RevocationLookupError> {
            Err(RevocationLookupError("redis unavailable".into()))
        }
    }
    assert!(matches!(
        Verifier::new(keys(), Down).verify(&minted.token, &balances_acc1()),
        Err(VerifyError::RevocationUnavailable(_))
    ));
}

#[test]
fn authority_missing_expected_facts_is_refused() {
    let cases = [
        // no account
        r#"grant("g_1"); client("c_app"); subject("cust_1"); right("balances:read");
           check if time($t), $t <= 2026-03-01T12:10:00Z;"#,
        // no grant
        r#"client("c_app"); subject("cust_1"); right("balances:read"); account("acc_1");
           check if time($t), $t <= 2026-03-01T12:10:00Z;"#,
        // no right
        r#"grant("g_1"); client("c_app"); subject("cust_1"); account("acc_1");
           check if time($t), $t <= 2026-03-01T12:10:00Z;"#,
        // no expiry check
        r#"grant("g_1"); client("c_app"); subject("cust_1"); right("balances:read");
           account("acc_1");"#,
        // two grants
        r#"grant("g_1"); grant("g_2"); client("c_app"); subject("cust_1");
           right("balances:read"); account("acc_1");
           check if time($t), $t <= 2026-03-01T12:10:00Z;"#,
        // malformed account id
        r#"grant("g_1"); client("c_app"); subject("cust_1"); right("balances:read");
           account("bank-account-1"); check if time($t), $t <= 2026-03-01T12:10:00Z;"#,
        // a request fact in the authority block
        r#"grant("g_1"); client("c_app"); subject("cust_1"); right("balances:read");
           account("acc_1"); req_account("acc_1");
           check if time($t), $t <= 2026-03-01T12:10:00Z;"#,
        // a rule in the authority block
        r#"grant("g_1"); client("c_app"); subject("cust_1"); right("balances:read");
           account("acc_1"); account($a) <- req_account($a);
           check if time($t), $t <= 2026-03-01T12:10:00Z;"#,
    ];
    for (i, authority) in cases.iter().enumerate() {
        let err = verifier()
            .verify(&custom_token(authority, Some(1)), &balances_acc1())
            .unwrap_err();
        assert!(
            matches!(err, VerifyError::InvalidAuthority(_)),
            "case {i}: {err:?}"
        );
    }
}

#[test]
fn over_limits() {
    // 40 facts and a cartesian rule: 1600 derived facts > max_facts.
    let facts: String = (0..40).map(|i| format!("n({i});")).collect();
    let block = BlockBuilder::new()
        .code(format!("{facts} pair($x, $y) <- n($x), n($y);"))
        .unwrap();
    let token = UnverifiedBiscuit::from_base64(mint(full_scope()))
        .unwrap()
        .append(block)
        .unwrap()
        .to_base64()
        .unwrap();
    let err = verifier().verify(&token, &balances_acc1()).unwrap_err();
    assert!(matches!(err, VerifyError::OverLimits(_)), "{err:?}");
}

#[test]
fn authority_level_denials_have_precise_reasons() {
    let token = mint(full_scope());
    let v = verifier();
    let deny = |r: grants::Request| match v.verify(&token, &r) {
        Err(VerifyError::Denied(reason)) => reason,
        other => panic!("expected a denial, got {other:?}"),
    };
    assert_eq!(
        deny(req(Action::BalancesRead).account(acc("acc_9"))),
        DenyReason::AccountNotGranted("acc_9".into())
    );
    assert_eq!(
        deny(req(Action::parse("payments:initiate").unwrap()).account(acc("acc_1"))),
        DenyReason::ActionNotGranted("payments:initiate".into())
    );
    assert_eq!(
        deny(
            req(Action::TransactionsRead)
                .account(acc("acc_1"))
                .merchant(mer("m_9"))
        ),
        DenyReason::MerchantNotGranted("m_9".into())
    );
    assert!(matches!(
        deny(
            req(Action::TransactionsRead)
                .account(acc("acc_1"))
                .tx_range(window("2024-12-01T00:00:00Z", "2025-01-31T00:00:00Z"))
        ),
        DenyReason::OutsideWindow { .. }
    ));
}

#[test]
fn widening_attempts_in_attenuation_blocks_do_nothing() {
    let parent = mint(full_scope());
    let attempts = [
        r#"account("acc_9"); right("payments:initiate"); merchant("m_9");"#,
        r#"tx_window(2000-01-01T00:00:00Z, 2099-01-01T00:00:00Z);"#,
        r#"grant("g_other"); client("c_evil"); subject("cust_other");"#,
        r#"account($a) <- req_account($a); right($o) <- operation($o);"#,
        r#"merchant($m) <- req_merchant($m); check if true;"#,
        r#"time(2026-01-01T00:00:00Z); check if time($t), $t <= 2026-01-02T00:00:00Z;"#,
    ];
    let v = verifier();
    for block in attempts {
        let token = UnverifiedBiscuit::from_base64(&parent)
            .unwrap()
            .append(BlockBuilder::new().code(block).unwrap())
            .unwrap()
            .to_base64()
            .unwrap();
        for r in [
            req(Action::BalancesRead).account(acc("acc_9")),
            req(Action::parse("payments:initiate").unwrap()).account(acc("acc_1")),
            req(Action::TransactionsRead)
                .account(acc("acc_1"))
                .merchant(mer("m_9")),
            req(Action::TransactionsRead)
                .account(acc("acc_1"))
                .tx_range(window("2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z")),
        ] {
            assert!(v.verify(&token, &r).is_err(), "block {block} allowed {r:?}");
        }
        // Whatever is still allowed reports no more than the authority granted.
        if let Ok(ok) = v.verify_listing(&token, Action::BalancesRead, now()) {
            let granted = full_scope();
            assert!(
                ok.scope
                    .accounts
                    .iter()
                    .all(|a| granted.accounts().contains(a))
            );
            assert_eq!(ok.scope.grant.as_str(), "g_1", "block {block}");
            assert_eq!(ok.scope.client.as_str(), "c_app", "block {block}");
        }
    }
}

#[test]
fn sealed_tokens_verify_but_cannot_be_attenuated() {
    let sealed = grants::attenuate(
        &mint(full_scope()),
        &Attenuation::new().accounts([acc("acc_1")]),
        true,
    )
    .unwrap();
    verifier().verify(&sealed, &balances_acc1()).unwrap();
    let again = grants::attenuate(&sealed, &Attenuation::new().accounts([acc("acc_1")]), false);
    assert!(matches!(again, Err(AttenuateError::Sealed)), "{again:?}");
    assert!(matches!(
        grants::attenuate(&mint(full_scope()), &Attenuation::new(), false),
        Err(AttenuateError::NothingToNarrow)
    ));
    assert!(matches!(
        grants::attenuate(
            "garbage",
            &Attenuation::new().accounts([acc("acc_1")]),
            false
        ),
        Err(AttenuateError::Malformed(_))
    ));
}

#[test]
fn wall_clock_limit_refuses_instead_of_hanging() {
    // A zero time budget cannot be met: the run limit is enforced (and reported as such).
    let v = verifier().with_limits(Limits {
        max_time: std::time::Duration::ZERO,
        ..Limits::default()
    });
    let err = v.verify(&mint(full_scope()), &balances_acc1()).unwrap_err();
    assert!(matches!(err, VerifyError::OverLimits(_)), "{err:?}");
}

/// A sandbox client's token carries `environment("sandbox")` in its (signed) authority block: a
/// verifier set to production refuses it, whatever attenuation blocks say; production tokens
/// carry nothing and pass. A sandbox verifier refuses production tokens the same way.
#[test]
fn environments_are_kept_apart() {
    let mut sandbox_grant = grant(full_scope());
    sandbox_grant.environment = grants::Environment::Sandbox;
    let sandbox = grants::mint_with_rng(
        &key(1),
        &sandbox_grant,
        now() + Duration::minutes(10),
        now(),
        &mut rng(1),
    )
    .unwrap()
    .token;
    let production = mint(full_scope());
    let production_verifier = verifier().environment(grants::Environment::Production);
    let sandbox_verifier = verifier().environment(grants::Environment::Sandbox);

    assert!(matches!(
        production_verifier.verify(&sandbox, &balances_acc1()),
        Err(VerifyError::WrongEnvironment {
            token: grants::Environment::Sandbox,
            expected: grants::Environment::Production
        })
    ));
    let ok = production_verifier
        .verify(&production, &balances_acc1())
        .unwrap();
    assert_eq!(ok.environment, grants::Environment::Production);
    assert!(matches!(
        sandbox_verifier.verify(&production, &balances_acc1()),
        Err(VerifyError::WrongEnvironment { .. })
    ));
    let ok = sandbox_verifier.verify(&sandbox, &balances_acc1()).unwrap();
    assert_eq!(ok.environment, grants::Environment::Sandbox);
    // Unset: both pass, and the result says which.
    assert_eq!(
        verifier()
            .verify(&sandbox, &balances_acc1())
            .unwrap()
            .environment,
        grants::Environment::Sandbox
    );
    // A holder cannot claim production in an attenuation block: only the authority counts.
    let claimed = UnverifiedBiscuit::from_base64(&sandbox)
        .unwrap()
        .append(
            BlockBuilder::new()
                .code("environment(\"production\");")
                .unwrap(),
        )
        .unwrap()
        .to_base64()
        .unwrap();
    assert!(matches!(
        production_verifier.verify(&claimed, &balances_acc1()),
        Err(VerifyError::WrongEnvironment { .. })
    ));
    let info = grants::inspect(&sandbox).unwrap();
    assert!(
        format!("{info:?}").contains("sandbox"),
        "inspection shows the environment: {info:?}"
    );
}
