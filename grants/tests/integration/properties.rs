//! Property: attenuation only narrows. For random grants, random (chains of) attenuations and
//! random requests, whatever an attenuated token allows its parent allowed, with a scope no
//! wider than the parent's, and within what the attenuation named.

use std::cell::Cell;

use chrono::{DateTime, Duration, Utc};
use grants::{AccountId, Action, Attenuation, GrantScope, MerchantId, Request, TxWindow};
use proptest::prelude::*;
use proptest::prop_assert;
use proptest::test_runner::{Config, RngAlgorithm, RngSeed};

use crate::common::*;

const ACCOUNTS: [&str; 5] = ["acc_1", "acc_2", "acc_3", "acc_4", "acc_5"];
const MERCHANTS: [&str; 4] = ["m_1", "m_2", "m_3", "m_4"];

fn day(n: u32) -> DateTime<Utc> {
    ts("2025-01-01T00:00:00Z") + Duration::days(i64::from(n))
}

fn subset<T: Clone + std::fmt::Debug>(items: Vec<T>) -> impl Strategy<Value = Vec<T>> {
    let n = items.len();
    proptest::collection::vec(any::<bool>(), n).prop_map(move |mask| {
        items
            .iter()
            .zip(mask)
            .filter(|(_, keep)| *keep)
            .map(|(i, _)| i.clone())
            .collect()
    })
}

fn non_empty<T: Clone + std::fmt::Debug>(items: Vec<T>) -> impl Strategy<Value = Vec<T>> {
    subset(items).prop_filter("non-empty", |v| !v.is_empty())
}

fn window_strategy() -> impl Strategy<Value = TxWindow> {
    (0u32..360, 0u32..360).prop_map(|(a, b)| TxWindow::new(day(a.min(b)), day(a.max(b))).unwrap())
}

fn accounts(universe: &[&str]) -> Vec<AccountId> {
    universe.iter().map(|a| acc(a)).collect()
}

fn merchants(universe: &[&str]) -> Vec<MerchantId> {
    universe.iter().map(|m| mer(m)).collect()
}

fn scope_strategy() -> impl Strategy<Value = GrantScope> {
    (
        non_empty(accounts(&ACCOUNTS[..4])),
        non_empty(Action::KNOWN.to_vec()),
        proptest::option::of(window_strategy()),
        proptest::option::of(non_empty(merchants(&MERCHANTS[..3]))),
        1i64..120,
    )
        .prop_map(|(a, act, w, m, exp_min)| {
            GrantScope::new(a, act, w, m, now() + Duration::minutes(exp_min)).unwrap()
        })
}

fn attenuation_strategy() -> impl Strategy<Value = Attenuation> {
    (
        proptest::option::of(subset(accounts(&ACCOUNTS))),
        proptest::option::of(subset(Action::KNOWN.to_vec())),
        proptest::option::of(subset(merchants(&MERCHANTS))),
        proptest::option::of(window_strategy()),
        proptest::option::of(0i64..120),
    )
        .prop_filter_map("narrows something", |(a, act, m, w, exp)| {
            let mut att = Attenuation::new();
            if let Some(a) = a {
                att = att.accounts(a);
            }
            if let Some(act) = act {
                att = att.actions(act);
            }
            if let Some(m) = m {
                att = att.merchants(m);
            }
            if let Some(w) = w {
                att = att.window(w);
            }
            if let Some(e) = exp {
                att = att.expires_at(now() + Duration::minutes(e));
            }
            (!att.is_empty()).then_some(att)
        })
}

fn request_strategy() -> impl Strategy<Value = Request> {
    (
        proptest::sample::select(Action::KNOWN.to_vec()),
        proptest::option::of(proptest::sample::select(accounts(&ACCOUNTS))),
        proptest::option::weighted(0.3, window_strategy()),
        proptest::option::weighted(0.3, proptest::sample::select(merchants(&MERCHANTS))),
        prop_oneof![4 => 0i64..5, 1 => 0i64..130],
    )
        .prop_map(|(op, a, w, m, at)| Request {
            operation: op,
            account: a,
            tx_range: w,
            merchant: m,
            now: now() + Duration::minutes(at),
            client_certificate: None,
        })
}

fn config() -> Config {
    Config {
        cases: 128,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(0x6772_616e_7473),
        failure_persistence: None,
        ..Config::default()
    }
}

fn scope_within(child: &grants::EffectiveScope, parent: &grants::EffectiveScope) -> bool {
    let accounts = child.accounts.iter().all(|a| parent.accounts.contains(a));
    let actions = child.actions.iter().all(|a| parent.actions.contains(a));
    let window = match (&parent.window, &child.window) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(p), Some(c)) => p.contains_window(c),
    };
    let merchants = match (&parent.merchants, &child.merchants) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(p), Some(c)) => c.iter().all(|m| p.contains(m)),
    };
    accounts && actions && window && merchants && child.expires_at <= parent.expires_at
}

#[test]
fn attenuation_only_narrows() {
    let mut runner = proptest::test_runner::TestRunner::new(config());
    let (child_allows, child_denies) = (Cell::new(0usize), Cell::new(0usize));
    let strategy = (
        scope_strategy(),
        proptest::collection::vec(attenuation_strategy(), 1..=2),
        proptest::collection::vec(request_strategy(), 4),
    );
    let result = runner.run(&strategy, |(scope, chain, requests)| {
        let v = verifier();
        // Every answer is also asked of a verifier with a decode cache: it must not differ
        // (the first request of a token fills the cache, the others are answered from it).
        let cached = verifier().with_cache(grants::DecodeCache::new(1024 * 1024));
        let root = grants::mint(&key(1), &grant(scope), now() + Duration::minutes(60), now())
            .unwrap()
            .token;
        let mut parent = root;
        for attenuation in &chain {
            let child = grants::attenuate(&parent, attenuation, false).unwrap();
            let mut all = requests.clone();
            // Also a listing and an open transactions request for every account.
            all.push(Request::new(Action::AccountsRead, now()));
            for a in accounts(&ACCOUNTS) {
                all.push(Request::new(Action::TransactionsRead, now()).account(a));
            }
            for r in &all {
                let fresh = v.verify(&child, r);
                let again = cached.verify(&child, r);
                prop_assert_eq!(format!("{fresh:?}"), format!("{again:?}"));
                let Ok(c) = fresh else {
                    child_denies.set(child_denies.get() + 1);
                    continue;
                };
                child_allows.set(child_allows.get() + 1);
                let p = v.verify(&parent, r);
                prop_assert!(
                    p.is_ok(),
                    "child allowed {:?} but parent refused: {:?}",
                    r,
                    p
                );
                let p = p.unwrap();
                prop_assert!(
                    scope_within(&c.scope, &p.scope),
                    "child scope {:?} wider than parent {:?} for {:?}",
                    c.scope,
                    p.scope,
                    r
                );
                if let Some(a) = &r.account {
                    prop_assert!(c.scope.accounts == vec![a.clone()]);
                }
            }
            parent = child;
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // Not vacuous: attenuated tokens both allowed and refused many requests.
    let (allows, denies) = (child_allows.get(), child_denies.get());
    assert!(
        allows > 100 && denies > 100,
        "allows {allows}, denies {denies}"
    );
    eprintln!("attenuated tokens: {allows} requests allowed, {denies} refused");
}

/// `token` plus a block that changes nothing but is not of the documented forms, so the
/// verifier evaluates the whole token candidate by candidate instead of in one run.
fn opaque(token: &str) -> String {
    append_block(token, "check if true;")
}

#[test]
fn one_run_and_per_candidate_evaluation_agree() {
    // Blocks the builder writes are resolved in one run from their sets and bounds; any other
    // Datalog by one run per candidate value. Both must give the same verdict and scope.
    let mut runner = proptest::test_runner::TestRunner::new(config());
    let compared = Cell::new(0usize);
    let strategy = (
        scope_strategy(),
        proptest::collection::vec(attenuation_strategy(), 1..=2),
        proptest::collection::vec(request_strategy(), 4),
    );
    let result = runner.run(&strategy, |(scope, chain, requests)| {
        let v = verifier();
        let mut token = grants::mint(&key(1), &grant(scope), now() + Duration::minutes(60), now())
            .unwrap()
            .token;
        for attenuation in &chain {
            token = grants::attenuate(&token, attenuation, false).unwrap();
        }
        let slow = opaque(&token);
        let mut all = requests.clone();
        all.push(Request::new(Action::AccountsRead, now()));
        all.push(Request::new(Action::TransactionsRead, now()).account(acc("acc_1")));
        for r in &all {
            let (fast, per_candidate) = (v.verify(&token, r), v.verify(&slow, r));
            match (&fast, &per_candidate) {
                (Ok(f), Ok(s)) => prop_assert!(f.scope == s.scope, "{r:?}: {f:?} / {s:?}"),
                (Err(f), Err(s)) => prop_assert!(
                    std::mem::discriminant(f) == std::mem::discriminant(s),
                    "{r:?}: {f} / {s}"
                ),
                _ => prop_assert!(false, "{r:?}: {fast:?} / {per_candidate:?}"),
            }
            compared.set(compared.get() + 1);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(compared.get() > 500);
}
