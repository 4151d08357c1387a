//! Hostile holders: attenuation blocks written to burn the verifier's CPU or memory are refused
//! before (admission) or instead of (work budget) their evaluation, with a reason; everything
//! the `Attenuation` builder and a reasonable hand-written block produce is still admitted.

use chrono::Duration;
use grants::error::VerifyError;
use grants::{Action, Attenuation, GrantScope, Limits, Request};

use crate::common::*;

fn listing() -> Request {
    req(Action::AccountsRead)
}

fn refused(source: &str) -> VerifyError {
    let t = append_block(&mint(full_scope()), source);
    let err = verifier().verify(&t, &listing()).unwrap_err();
    // And the same for a request naming an account (a different evaluation plan).
    let err2 = verifier()
        .verify(&t, &req(Action::TransactionsRead).account(acc("acc_1")))
        .unwrap_err();
    assert_eq!(
        std::mem::discriminant(&err),
        std::mem::discriminant(&err2),
        "{err} / {err2}"
    );
    err
}

fn facts(name: &str, n: usize) -> String {
    (0..n).map(|i| format!("{name}({i});")).collect()
}

#[test]
fn the_combinatorial_block_of_the_report_is_refused_before_evaluation() {
    // 120 facts and a four-way join that matches nothing: 120^4 = 207M combinations, which
    // stalled the server for seconds per request before admission existed.
    let err = refused(&format!(
        "{} check if n($a), n($b), n($c), n($d), $a + $b + $c + $d < 0;",
        facts("n", 120)
    ));
    assert!(matches!(err, VerifyError::Inadmissible(_)), "{err:?}");
    assert!(err.to_string().contains("120 facts"), "{err}");
}

#[test]
fn joins_within_the_static_limits_are_refused_by_the_work_budget() {
    // Every static limit holds (64 facts, 4 predicates), the join does not: 64^4 = 16.7M.
    let err = refused(&format!(
        "{} check if n($a), n($b), n($c), n($d), $a + $b + $c + $d < 0;",
        facts("n", 64)
    ));
    assert!(matches!(err, VerifyError::OverLimits(_)), "{err:?}");
    assert!(err.to_string().contains("work units"), "{err}");
    // Spread over several blocks, facts add up in the estimate too.
    let mut t = mint(full_scope());
    for _ in 0..3 {
        t = append_block(&t, &facts("n", 40));
    }
    t = append_block(&t, "check if n($a), n($b), n($c), $a + $b + $c < 0;");
    let err = verifier().verify(&t, &listing()).unwrap_err();
    assert!(matches!(err, VerifyError::OverLimits(_)), "{err:?}");
}

#[test]
fn joins_against_the_verifiers_own_facts_are_charged() {
    // Two predicates over the request's candidate accounts and 64 facts, in 32 checks: each
    // listing run evaluates every one of them.
    let checks: String = (0..32)
        .map(|i| format!("check if req_account($a), n($b), $b != {i}, $a != \"x\";"))
        .collect();
    let scope = GrantScope::new(
        (0..100).map(|i| acc(&format!("acc_{i}"))).collect(),
        Action::KNOWN.to_vec(),
        None,
        None,
        now() + Duration::days(1),
    )
    .unwrap();
    let t = append_block(&mint(scope), &format!("{}{checks}", facts("n", 64)));
    let err = verifier().verify(&t, &listing()).unwrap_err();
    assert!(matches!(err, VerifyError::OverLimits(_)), "{err:?}");
}

#[test]
fn deep_and_recursive_rules() {
    // A chain of 16 rules is fine while cheap...
    let chain: String = (0..16)
        .map(|i| format!("r{}($x) <- r{i}($x);", i + 1))
        .collect();
    let t = append_block(
        &mint(full_scope()),
        &format!("r0(1); {chain} check if r16(1);"),
    );
    verifier().verify(&t, &listing()).unwrap();
    // ...one more rule is over the per-block limit...
    let chain17: String = (0..17)
        .map(|i| format!("r{}($x) <- r{i}($x);", i + 1))
        .collect();
    let err = refused(&format!("r0(1); {chain17} check if r17(1);"));
    assert!(err.to_string().contains("17 rules"), "{err}");
    // ...recursion is refused whatever its size...
    let err = refused(&format!(
        "{} p(1); p($x) <- p($y), n($x), $x == $y + 1; check if p(5);",
        facts("n", 10)
    ));
    assert!(err.to_string().contains("recursive"), "{err}");
    let err = refused("a(1); b($x) <- a($x); a($x) <- b($x); check if a(1);");
    assert!(err.to_string().contains("recursive"), "{err}");
    // ...and a fan-out chain whose derived facts multiply is charged for them.
    let fan = format!(
        "{} p1($a, $b) <- n($a), n($b); p2($a, $b, $c) <- p1($a, $b), n($c); check if p2(1, 2, 3);",
        facts("n", 60)
    );
    let err = refused(&fan);
    assert!(matches!(err, VerifyError::OverLimits(_)), "{err:?}");
}

#[test]
fn large_terms_and_wide_rules() {
    let long = "x".repeat(257);
    let err = refused(&format!("check if req_account(\"{long}\");"));
    assert!(err.to_string().contains("257 bytes"), "{err}");
    let err = refused(&format!("check if \"{long}\".length() > 0;"));
    assert!(err.to_string().contains("257 bytes"), "{err}");
    let set: Vec<String> = (0..257).map(|i| i.to_string()).collect();
    let err = refused(&format!(
        "check if req_account($a), [{}].contains(1);",
        set.join(",")
    ));
    assert!(err.to_string().contains("257 elements"), "{err}");
    let err = refused("check if a($a), b($b), c($c), d($d), e($e);");
    assert!(err.to_string().contains("5 predicates"), "{err}");
    let err = refused("check if a($a, $b, $c, $d, $e, $f, $g, $h, $i);");
    assert!(err.to_string().contains("9 variables"), "{err}");
    let ops = ["1"; 40].join(" + ");
    let err = refused(&format!("check if {ops} > 0;"));
    assert!(err.to_string().contains("expression operations"), "{err}");
    let checks: String = (0..33).map(|i| format!("check if n({i});")).collect();
    let err = refused(&checks);
    assert!(err.to_string().contains("33 checks"), "{err}");
    let alternatives = ["n(1)"; 9].join(" or ");
    let err = refused(&format!("check if {alternatives};"));
    assert!(err.to_string().contains("9 queries"), "{err}");
}

#[test]
fn regular_expressions_and_closures() {
    // A pattern taken from a fact would be compiled on every evaluation, unseen: refused.
    let err = refused(r#"p("a+"); check if req_account($a), p($p), $a.matches($p);"#);
    assert!(err.to_string().contains("literal pattern"), "{err}");
    // A literal pattern that compiles large is refused; a plain one is fine.
    let err = refused(r#"check if req_account($a), $a.matches("((a{20}){20}){20}");"#);
    assert!(err.to_string().contains("too complex"), "{err}");
    let t = append_block(
        &mint(full_scope()),
        r#"check if req_account($a), $a.matches("^acc_[0-9]+$");"#,
    );
    verifier().verify(&t, &listing()).unwrap();
    // Many evaluations of a literal pattern cost a compilation each: charged.
    let err = refused(&format!(
        r#"{} check if n($a), n($b), "acc".matches("^a.*c$"), $a + $b < 0;"#,
        facts("n", 64)
    ));
    assert!(matches!(err, VerifyError::OverLimits(_)), "{err:?}");
    // Closures may not nest; one level is fine.
    let err = refused("check if [1, 2].all($x -> [3, 4].all($y -> $x < $y));");
    assert!(err.to_string().contains("nested"), "{err}");
    let t = append_block(
        &mint(full_scope()),
        r#"check if req_account($a), ["acc_1", "acc_2"].any($x -> $x == $a);"#,
    );
    let ok = verifier().verify(&t, &listing()).unwrap();
    assert_eq!(ok.scope.accounts, vec![acc("acc_1"), acc("acc_2")]);
}

#[test]
fn foreign_functions_are_refused_with_a_reason() {
    let err = refused(r#"check if req_account($a), $a.extern::slow();"#);
    assert!(err.to_string().contains("foreign function"), "{err}");
}

#[test]
fn everything_the_builder_writes_at_its_maximum_is_admitted() {
    // The largest grant and the largest attenuation `Attenuation` writes, in the worst shapes
    // of request: a listing (one run per account) and a transaction query.
    let accounts: Vec<_> = (0..grants::MAX_ACCOUNTS)
        .map(|i| acc(&format!("acc_{i}")))
        .collect();
    let merchants: Vec<_> = (0..grants::MAX_MERCHANTS)
        .map(|i| mer(&format!("m_{i}")))
        .collect();
    let scope = GrantScope::new(
        accounts.clone(),
        Action::KNOWN.to_vec(),
        Some(window("2025-01-01T00:00:00Z", "2025-12-31T23:59:59Z")),
        Some(merchants.clone()),
        now() + Duration::days(90),
    )
    .unwrap();
    let att = Attenuation::new()
        .accounts(accounts[..90].to_vec())
        .actions(Action::KNOWN.to_vec())
        .merchants(merchants[..190].to_vec())
        .window(window("2025-02-01T00:00:00Z", "2025-11-30T23:59:59Z"))
        .expires_at(now() + Duration::minutes(5));
    let t = grants::attenuate(&mint(scope), &att, false).unwrap();
    let ok = verifier().verify(&t, &listing()).unwrap();
    assert_eq!(ok.scope.accounts.len(), 90);
    assert_eq!(ok.scope.merchants.as_ref().map(Vec::len), Some(190));
    assert!(ok.work < Limits::default().max_work / 4, "{}", ok.work);
    let ok = verifier()
        .verify(
            &t,
            &req(Action::TransactionsRead)
                .account(acc("acc_3"))
                .merchant(mer("m_7")),
        )
        .unwrap();
    assert_eq!(ok.scope.accounts, vec![acc("acc_3")]);
}

#[test]
fn reasonable_hand_written_blocks_are_admitted() {
    for (source, request, allowed) in [
        // Facts plus a join, as the Biscuit tutorials write allow-lists.
        (
            r#"allowed("acc_1"); allowed("acc_2"); check if req_account($a), allowed($a);"#,
            req(Action::BalancesRead).account(acc("acc_2")),
            true,
        ),
        // A rule.
        (
            r#"ok($a) <- req_account($a), ["acc_1"].contains($a); check if ok($a);"#,
            req(Action::BalancesRead).account(acc("acc_2")),
            false,
        ),
        // Alternatives, prefixes, `reject if`, `check all`, time.
        (
            r#"check if operation("balances:read") or operation("accounts:read");
               check if req_account($a), $a.starts_with("acc_");
               reject if req_account("acc_9");
               check all req_account($a), $a != "acc_9";
               check if time($t), $t <= 2026-03-01T12:05:00Z;"#,
            req(Action::BalancesRead).account(acc("acc_1")),
            true,
        ),
    ] {
        let t = append_block(&mint(full_scope()), source);
        let r = verifier().verify(&t, &request);
        assert_eq!(r.is_ok(), allowed, "{source}: {r:?}");
        if let Err(e) = r {
            assert!(matches!(e, VerifyError::Denied(_)), "{source}: {e:?}");
        }
    }
}

#[test]
fn limits_are_configurable() {
    let t = append_block(&mint(full_scope()), &facts("n", 10));
    let strict = verifier().with_limits(Limits {
        max_block_facts: 5,
        ..Limits::default()
    });
    let err = strict.verify(&t, &listing()).unwrap_err();
    assert!(err.to_string().contains("10 facts, more than 5"), "{err}");
    let stingy = verifier().with_limits(Limits {
        max_work: 10,
        ..Limits::default()
    });
    let err = stingy.verify(&mint(full_scope()), &listing()).unwrap_err();
    assert!(matches!(err, VerifyError::OverLimits(_)), "{err:?}");
}

#[test]
fn an_allow_list_written_as_facts_over_a_larger_grant_is_admitted() {
    // Not the documented form (facts and a join), so listings are evaluated account by
    // account: still within the budget for a grant of 20 accounts.
    let accounts: Vec<_> = (0..20).map(|i| acc(&format!("acc_{i}"))).collect();
    let scope = GrantScope::new(
        accounts.clone(),
        Action::KNOWN.to_vec(),
        None,
        None,
        now() + Duration::days(30),
    )
    .unwrap();
    let allowed: String = (0..20)
        .step_by(2)
        .map(|i| format!("allowed(\"acc_{i}\");"))
        .collect();
    let t = append_block(
        &mint(scope),
        &format!("{allowed} check if req_account($a), allowed($a);"),
    );
    let ok = verifier().verify(&t, &listing()).unwrap();
    assert_eq!(ok.scope.accounts.len(), 10);
    assert!(ok.work < Limits::default().max_work, "{}", ok.work);
}
