//! The effective scope reported to resource servers, including attenuation.

use biscuit_auth::{BlockBuilder, UnverifiedBiscuit};
use chrono::Duration;
use grants::error::{DenyReason, VerifyError};
use grants::{Action, Attenuation};

use crate::common::*;

fn append_raw(token: &str, code: &str) -> String {
    UnverifiedBiscuit::from_base64(token)
        .unwrap()
        .append(BlockBuilder::new().code(code).unwrap())
        .unwrap()
        .to_base64()
        .unwrap()
}

#[test]
fn unattenuated_scope_is_the_grant() {
    let token = mint(full_scope());
    let ok = verifier()
        .verify(&token, &req(Action::TransactionsRead).account(acc("acc_2")))
        .unwrap();
    let s = ok.scope;
    assert_eq!(ok.blocks, 1);
    assert_eq!(ok.kid, 1);
    assert_eq!(s.grant.as_str(), "g_1");
    assert_eq!(s.client.as_str(), "c_app");
    assert_eq!(s.subject.as_str(), "cust_1");
    assert_eq!(s.accounts, vec![acc("acc_2")]);
    assert_eq!(s.actions, Action::KNOWN.to_vec());
    assert_eq!(
        s.window,
        Some(window("2025-01-01T00:00:00Z", "2025-12-31T23:59:59Z"))
    );
    assert_eq!(s.merchants, Some(vec![mer("m_1"), mer("m_2"), mer("m_3")]));
    assert_eq!(s.expires_at, now() + Duration::minutes(10));

    let listing = verifier()
        .verify_listing(&token, Action::AccountsRead, now())
        .unwrap();
    assert_eq!(
        listing.scope.accounts,
        vec![acc("acc_1"), acc("acc_2"), acc("acc_3")]
    );
    let open = verifier()
        .verify(
            &mint(open_scope()),
            &req(Action::TransactionsRead).account(acc("acc_1")),
        )
        .unwrap();
    assert_eq!(open.scope.window, None);
    assert_eq!(open.scope.merchants, None);
}

#[test]
fn attenuated_accounts_narrow_listings_and_requests() {
    // Naming an account the grant never had (acc_9) does not add it.
    let token = attenuate(
        &mint(full_scope()),
        &Attenuation::new().accounts([acc("acc_2"), acc("acc_9")]),
    );
    let v = verifier();
    let listing = v
        .verify_listing(&token, Action::AccountsRead, now())
        .unwrap();
    assert_eq!(listing.scope.accounts, vec![acc("acc_2")]);
    assert_eq!(listing.blocks, 2);
    assert!(
        v.verify(&token, &req(Action::BalancesRead).account(acc("acc_2")))
            .is_ok()
    );
    assert!(
        v.verify(&token, &req(Action::BalancesRead).account(acc("acc_1")))
            .is_err()
    );
    assert!(matches!(
        v.verify(&token, &req(Action::BalancesRead).account(acc("acc_9"))),
        Err(VerifyError::Denied(DenyReason::AccountNotGranted(_)))
    ));

    // A second block narrows further; disjoint narrowing leaves nothing.
    let twice = attenuate(&token, &Attenuation::new().accounts([acc("acc_1")]));
    assert!(matches!(
        v.verify_listing(&twice, Action::AccountsRead, now()),
        Err(VerifyError::Denied(DenyReason::NothingLeft("account")))
    ));
}

#[test]
fn attenuated_actions_and_expiry_are_reported() {
    let token = attenuate(
        &mint(full_scope()),
        &Attenuation::new()
            .actions([Action::BalancesRead, Action::AccountsRead])
            .expires_at(now() + Duration::minutes(3)),
    );
    let ok = verifier()
        .verify(&token, &req(Action::BalancesRead).account(acc("acc_1")))
        .unwrap();
    assert_eq!(
        ok.scope.actions,
        vec![Action::AccountsRead, Action::BalancesRead]
    );
    assert_eq!(ok.scope.expires_at, now() + Duration::minutes(3));
    assert!(matches!(
        verifier().verify(&token, &req(Action::TransactionsRead).account(acc("acc_1"))),
        Err(VerifyError::Denied(DenyReason::Attenuation {
            block: 1,
            ..
        }))
    ));
    // An attenuated expiry later than the token's does not extend it.
    let later = attenuate(
        &mint(full_scope()),
        &Attenuation::new().expires_at(now() + Duration::days(30)),
    );
    let ok = verifier()
        .verify(&later, &req(Action::BalancesRead).account(acc("acc_1")))
        .unwrap();
    assert_eq!(ok.scope.expires_at, now() + Duration::minutes(10));
}

#[test]
fn attenuated_window_and_merchants_on_a_limited_grant() {
    let token = attenuate(
        &mint(full_scope()),
        &Attenuation::new()
            .window(window("2025-03-01T00:00:00Z", "2025-03-31T23:59:59Z"))
            .merchants([mer("m_2"), mer("m_7")]),
    );
    let v = verifier();
    let base = req(Action::TransactionsRead).account(acc("acc_1"));
    let ok = v.verify(&token, &base).unwrap();
    assert_eq!(
        ok.scope.window,
        Some(window("2025-03-01T00:00:00Z", "2025-03-31T23:59:59Z"))
    );
    assert_eq!(ok.scope.merchants, Some(vec![mer("m_2")]));
    let inside = base
        .clone()
        .tx_range(window("2025-03-05T00:00:00Z", "2025-03-06T00:00:00Z"))
        .merchant(mer("m_2"));
    let ok = v.verify(&token, &inside).unwrap();
    assert_eq!(ok.scope.merchants, Some(vec![mer("m_2")]));
    assert_eq!(
        ok.scope.window,
        Some(window("2025-03-05T00:00:00Z", "2025-03-06T00:00:00Z"))
    );
    let outside = base
        .clone()
        .tx_range(window("2025-02-05T00:00:00Z", "2025-03-06T00:00:00Z"));
    assert!(v.verify(&token, &outside).is_err());
    assert!(
        v.verify(&token, &base.clone().merchant(mer("m_1")))
            .is_err()
    );
}

#[test]
fn attenuated_window_and_merchants_on_an_unlimited_grant() {
    let token = attenuate(
        &mint(open_scope()),
        &Attenuation::new()
            .window(window("2025-03-01T00:00:00Z", "2025-03-31T23:59:59Z"))
            .merchants([mer("m_5")]),
    );
    let base = req(Action::TransactionsRead).account(acc("acc_1"));
    let ok = verifier().verify(&token, &base).unwrap();
    assert_eq!(
        ok.scope.window,
        Some(window("2025-03-01T00:00:00Z", "2025-03-31T23:59:59Z"))
    );
    assert_eq!(ok.scope.merchants, Some(vec![mer("m_5")]));
    assert!(
        verifier()
            .verify(&token, &base.clone().merchant(mer("m_6")))
            .is_err()
    );
    assert!(
        verifier()
            .verify(&token, &base.merchant(mer("m_5")))
            .is_ok()
    );
}

#[test]
fn checks_written_in_other_styles_are_evaluated_not_pattern_matched() {
    // Other libraries (or people) write the same narrowing differently; the scope comes from
    // evaluating the token, so it is still exact.
    let parent = mint(full_scope());
    for code in [
        r#"check if req_account("acc_3");"#,
        r#"check if req_account($acc), $acc == "acc_3";"#,
        r#"check if req_account($a), ["acc_3", "acc_7"].contains($a);"#,
    ] {
        let token = append_raw(&parent, code);
        let listing = verifier()
            .verify_listing(&token, Action::AccountsRead, now())
            .unwrap();
        assert_eq!(listing.scope.accounts, vec![acc("acc_3")], "{code}");
    }
    // A negative condition is honoured too (it only ever narrows).
    let token = append_raw(&parent, r#"check if req_account($a), $a != "acc_1";"#);
    let listing = verifier()
        .verify_listing(&token, Action::AccountsRead, now())
        .unwrap();
    assert_eq!(listing.scope.accounts, vec![acc("acc_2"), acc("acc_3")]);
}

#[test]
fn attenuation_datalog_is_the_documented_vocabulary() {
    let a = Attenuation::new()
        .accounts([acc("acc_1")])
        .actions([Action::BalancesRead])
        .merchants([mer("m_1")])
        .window(window("2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"))
        .expires_at(ts("2026-01-01T10:00:00Z"));
    let src = a.datalog().unwrap();
    for line in [
        r#"check if req_account($a), {"acc_1"}.contains($a);"#,
        r#"check if operation($o), {"balances:read"}.contains($o);"#,
        r#"check if req_merchant($m), {"m_1"}.contains($m);"#,
        r#"check if req_tx_range($f, $u), $f >= 2026-02-01T00:00:00Z, $u <= 2026-03-01T00:00:00Z;"#,
        r#"check if time($t), $t <= 2026-01-01T10:00:00Z;"#,
    ] {
        assert!(src.contains(line), "missing {line}\nin\n{src}");
    }
}

#[test]
fn expiry_written_in_other_styles_is_evaluated() {
    let parent = mint(full_scope());
    for (code, expected) in [
        (
            "check if time($t), $t < 2026-03-01T12:04:00Z;",
            ts("2026-03-01T12:03:59Z"),
        ),
        (
            "valid($t) <- time($t), $t <= 2026-03-01T12:06:00Z; check if valid($x);",
            ts("2026-03-01T12:06:00Z"),
        ),
        (
            "check if time($t), $t <= 2026-03-01T12:07:00Z;",
            ts("2026-03-01T12:07:00Z"),
        ),
    ] {
        let token = append_raw(&parent, code);
        let ok = verifier()
            .verify(&token, &req(Action::BalancesRead).account(acc("acc_1")))
            .unwrap();
        assert_eq!(ok.scope.expires_at, expected, "{code}");
        // And the token really stops working right after the reported instant.
        let mut after = req(Action::BalancesRead).account(acc("acc_1"));
        after.now = expected + Duration::seconds(1);
        assert!(verifier().verify(&token, &after).is_err(), "{code}");
    }
}

#[test]
fn window_only_attenuation_still_allows_balances_and_listings() {
    let token = attenuate(
        &mint(full_scope()),
        &Attenuation::new().window(window("2025-03-01T00:00:00Z", "2025-03-31T23:59:59Z")),
    );
    let ok = verifier()
        .verify_listing(&token, Action::AccountsRead, now())
        .unwrap();
    assert_eq!(ok.scope.accounts.len(), 3);
    assert_eq!(
        ok.scope.window,
        Some(window("2025-03-01T00:00:00Z", "2025-03-31T23:59:59Z"))
    );
    assert!(
        verifier()
            .verify(&token, &req(Action::BalancesRead).account(acc("acc_2")))
            .is_ok()
    );
}

/// `exact` says whether the reported scope is exactly what the token allows: no attenuation, or
/// only the documented check forms, decided in one run (other styles may be exact too, but are
/// not marked so: the flag errs on the side of "not exact"); Datalog that ties two
/// dimensions together is resolved one dimension at a time, and the listing may report each
/// dimension's values separately (here both accounts and both merchants, while no single
/// request may use acc_1 at m_2).
#[test]
fn a_scope_is_marked_exact_only_when_it_is() {
    let parent = mint(full_scope());
    let listing = |token: &str| {
        verifier()
            .verify_listing(token, Action::TransactionsRead, now())
            .unwrap()
    };
    assert!(listing(&parent).exact, "unattenuated");
    let narrowed = attenuate(
        &parent,
        &Attenuation::new()
            .accounts([acc("acc_1")])
            .merchants([mer("m_1")]),
    );
    assert!(listing(&narrowed).exact, "the documented forms");
    let tied = append_raw(
        &parent,
        r#"check if req_account("acc_1"), req_merchant("m_1") or req_account("acc_2"), req_merchant("m_2");"#,
    );
    let tied = listing(&tied);
    assert!(
        !tied.exact,
        "two dimensions tied together: {:?}",
        tied.scope
    );
}
