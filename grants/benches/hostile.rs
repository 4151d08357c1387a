//! Hostile holders: how long the verifier takes to refuse the worst tokens, and to evaluate the
//! worst tokens it still admits, next to an ordinary attenuated token (the floor, same run).
//! Run: `cargo bench -p grants --bench hostile -- --measurement-time 3`.
//!
//! "Worst admissible" is searched, not guessed: for each shape of costly block below, the
//! largest size the default limits admit is found by bisection, and that token is timed.

use std::hint::black_box;

use biscuit_auth::{Algorithm, Biscuit, BlockBuilder, PublicKey};
use chrono::{Duration, TimeZone, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use grants::error::VerifyError;
use grants::{
    AccountId, Action, Attenuation, ClientId, Grant, GrantId, GrantScope, KeySet, MerchantId,
    NoRevocationCheck, Request, SigningKey, SubjectId, TxWindow, Verifier,
};

fn facts(name: &str, n: usize) -> String {
    (0..n).map(|i| format!("{name}({i});")).collect()
}

/// A costly block shape: its name and its source for a size parameter.
type Shape = (&'static str, fn(usize) -> String);

/// Costly block shapes, by size parameter.
fn shapes() -> Vec<Shape> {
    vec![
        ("two-way join, nothing matches", |n| {
            format!("{} check if n($a), n($b), $a + $b < 0;", facts("n", n))
        }),
        ("three-way join, nothing matches", |n| {
            format!(
                "{} check if n($a), n($b), n($c), $a + $b + $c < 0;",
                facts("n", n)
            )
        }),
        ("four-way join, nothing matches", |n| {
            format!(
                "{} check if n($a), n($b), n($c), n($d), $a + $b + $c + $d < 0;",
                facts("n", n)
            )
        }),
        ("regex per combination", |n| {
            format!(
                r#"{} check if n($a), n($b), "acc_12".matches("^acc_[0-9]+$"), $a + $b < 0;"#,
                facts("n", n)
            )
        }),
        ("k two-way joins over 64 facts, nothing matches", |k| {
            facts("n", 64)
                + &(0..k.min(32))
                    .map(|i| format!("check if n($a), n($b), $a + $b < -{i};"))
                    .collect::<String>()
        }),
        ("many checks over request facts", |n| {
            (0..n.min(32))
                .map(|i| format!("check if req_account($a), n($b), $b == {i}, $a == \"x\";"))
                .collect::<String>()
                + &facts("n", 64)
        }),
        ("rule chain fan-out", |n| {
            format!(
                "{} p($a, $b) <- n($a), n($b); q($a) <- p($a, $b), n($b); check if q(-1);",
                facts("n", n)
            )
        }),
    ]
}

fn benches(c: &mut Criterion) {
    let now = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
    let key = SigningKey::from_private_bytes(1, &[7; 32]).unwrap();
    let accounts: Vec<AccountId> = (0..20)
        .map(|i| AccountId::parse(format!("acc_{i}")).unwrap())
        .collect();
    let grant = Grant {
        id: GrantId::parse("g_1").unwrap(),
        client: ClientId::parse("c_app").unwrap(),
        subject: SubjectId::parse("cust_1").unwrap(),
        environment: grants::Environment::Production,
        scope: GrantScope::new(
            accounts.clone(),
            Action::KNOWN.to_vec(),
            Some(TxWindow::parse("2025-01-01T00:00:00Z", "2025-12-31T23:59:59Z").unwrap()),
            Some(
                (0..20)
                    .map(|i| MerchantId::parse(format!("m_{i}")).unwrap())
                    .collect(),
            ),
            now + Duration::days(90),
        )
        .unwrap(),
    };
    let token = grants::mint(&key, &grant, now + Duration::minutes(10), now)
        .unwrap()
        .token;
    let root = PublicKey::from_bytes(&key.public_key().to_bytes(), Algorithm::Ed25519).unwrap();
    let append = |src: &str| {
        let b = Biscuit::from_base64(&token, root).unwrap();
        b.append(BlockBuilder::new().code(src).unwrap())
            .unwrap()
            .to_base64()
            .unwrap()
    };
    let verifier = Verifier::new(
        KeySet::new([key.published(None, None)]).unwrap(),
        NoRevocationCheck,
    );
    let listing = Request::new(Action::AccountsRead, now);
    let admitted = |t: &str| {
        !matches!(
            verifier.verify(t, &listing),
            Err(VerifyError::Inadmissible(_) | VerifyError::OverLimits(_))
        )
    };

    // The floor: an ordinary attenuated token (what the builder writes), listing.
    let ordinary = grants::attenuate(
        &token,
        &Attenuation::new()
            .accounts(accounts[..5].to_vec())
            .expires_at(now + Duration::minutes(5)),
        false,
    )
    .unwrap();
    verifier.verify(&ordinary, &listing).unwrap();
    c.bench_function("floor: ordinary 2-block token, listing", |b| {
        b.iter(|| verifier.verify(black_box(&ordinary), &listing).unwrap())
    });

    // Refusals.
    let report = append(&format!(
        "{} check if n($a), n($b), n($c), n($d), $a + $b + $c + $d < 0;",
        facts("n", 120)
    ));
    assert!(matches!(
        verifier.verify(&report, &listing),
        Err(VerifyError::Inadmissible(_))
    ));
    c.bench_function("refuse: the reported block (120 facts, 4-way join)", |b| {
        b.iter(|| verifier.verify(black_box(&report), &listing).unwrap_err())
    });
    let budget = append(&format!(
        "{} check if n($a), n($b), n($c), n($d), $a + $b + $c + $d < 0;",
        facts("n", 64)
    ));
    assert!(matches!(
        verifier.verify(&budget, &listing),
        Err(VerifyError::OverLimits(_))
    ));
    c.bench_function("refuse: 64 facts, 4-way join (work budget)", |b| {
        b.iter(|| verifier.verify(black_box(&budget), &listing).unwrap_err())
    });

    // The worst admissible token of each shape.
    for (name, shape) in shapes() {
        let (mut lo, mut hi) = (1usize, 64usize);
        if !admitted(&append(&shape(lo))) {
            println!("{name}: nothing admitted");
            continue;
        }
        if admitted(&append(&shape(hi))) {
            lo = hi;
        }
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if admitted(&append(&shape(mid))) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let t = append(&shape(lo));
        c.bench_function(&format!("worst admissible: {name} (n = {lo})"), |b| {
            b.iter(|| {
                let _ = verifier.verify(black_box(&t), &listing);
            })
        });
    }
}

criterion_group!(hostile, benches);
criterion_main!(hostile);
