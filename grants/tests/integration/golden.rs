//! Golden samples: tokens minted with a seeded key and seeded block keys, committed with their
//! expected verdicts. Any change to the token format, the Datalog written, or a verdict fails
//! here. To regenerate after an intended change:
//!
//! ```text
//! GRANTS_REGENERATE_GOLDEN=1 cargo test -p grants --test integration golden
//! ```
//! then review the diff of grants/tests/golden/tokens.json.

use std::path::PathBuf;

use chrono::Duration;
use grants::{Action, Attenuation, Request};
use serde_json::{Value, json};

use crate::common::*;

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/tokens.json")
}

/// The samples, built deterministically.
fn samples() -> Vec<(&'static str, String)> {
    let full = mint(full_scope());
    let open = mint(open_scope());
    let narrowed = attenuate(
        &full,
        &Attenuation::new()
            .accounts([acc("acc_1")])
            .actions([Action::TransactionsRead])
            .merchants([mer("m_2")])
            .window(window("2025-06-01T00:00:00Z", "2025-06-30T23:59:59Z"))
            .expires_at(now() + Duration::minutes(5)),
    );
    let twice = grants::attenuate_with_rng(
        &narrowed,
        &Attenuation::new().expires_at(now() + Duration::minutes(2)),
        true,
        &mut rng(3),
    )
    .unwrap();
    let open_narrowed = attenuate(&open, &Attenuation::new().merchants([mer("m_7")]));
    vec![
        ("full_grant", full),
        ("unlimited_grant", open),
        ("attenuated_once", narrowed),
        ("attenuated_twice_sealed", twice),
        ("unlimited_grant_merchant_narrowed", open_narrowed),
    ]
}

fn requests() -> Vec<(&'static str, Request)> {
    let tx = |a: &str| req(Action::TransactionsRead).account(acc(a));
    let at = |r: Request, minutes: i64| Request {
        now: now() + Duration::minutes(minutes),
        ..r
    };
    vec![
        ("list_accounts", req(Action::AccountsRead)),
        (
            "balances_acc_1",
            req(Action::BalancesRead).account(acc("acc_1")),
        ),
        ("transactions_acc_1", tx("acc_1")),
        ("transactions_acc_2", tx("acc_2")),
        ("transactions_acc_1_m_2", tx("acc_1").merchant(mer("m_2"))),
        ("transactions_acc_1_m_7", tx("acc_1").merchant(mer("m_7"))),
        (
            "transactions_acc_1_june",
            tx("acc_1").tx_range(window("2025-06-02T00:00:00Z", "2025-06-03T00:00:00Z")),
        ),
        (
            "transactions_acc_1_2024",
            tx("acc_1").tx_range(window("2024-06-02T00:00:00Z", "2024-06-03T00:00:00Z")),
        ),
        ("transactions_acc_1_in_4_min", at(tx("acc_1"), 4)),
        ("transactions_acc_1_in_11_min", at(tx("acc_1"), 11)),
    ]
}

fn verdicts(token: &str) -> Value {
    let v = verifier();
    let mut out = serde_json::Map::new();
    for (name, r) in requests() {
        let verdict = match v.verify(token, &r) {
            Ok(a) => json!({"allow": true, "scope": a.scope}),
            Err(e) => json!({"allow": false, "error": e.to_string()}),
        };
        out.insert(name.into(), verdict);
    }
    Value::Object(out)
}

fn document() -> Value {
    let samples: Vec<Value> = samples()
        .into_iter()
        .map(|(name, token)| {
            let info = grants::inspect(&token).unwrap();
            json!({
                "name": name,
                "token": token,
                "revocation_ids": info.revocation_ids,
                "datalog": info.blocks,
                "verdicts": verdicts(&token),
            })
        })
        .collect();
    json!({
        "about": "Golden Biscuit samples for the grants crate. Regenerate with GRANTS_REGENERATE_GOLDEN=1 cargo test -p grants --test integration golden, then review the diff.",
        "now": grants::format_timestamp(now()),
        "keys": keys().to_document(),
        "samples": samples,
    })
}

#[test]
fn golden_samples_are_stable() {
    let fresh = document();
    if std::env::var("GRANTS_REGENERATE_GOLDEN").as_deref() == Ok("1") {
        std::fs::create_dir_all(path().parent().unwrap()).unwrap();
        std::fs::write(path(), serde_json::to_string_pretty(&fresh).unwrap() + "\n").unwrap();
        eprintln!("regenerated {}", path().display());
    }
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(path())
            .expect("golden file missing: run with GRANTS_REGENERATE_GOLDEN=1"),
    )
    .unwrap();

    // 1. The committed tokens still verify exactly as recorded (old tokens keep working).
    let keys = grants::KeySet::new(
        serde_json::from_value::<grants::BiscuitKeys>(committed["keys"].clone())
            .unwrap()
            .keys,
    )
    .unwrap();
    assert!(grants::KeyProvider::public_key(&keys, 1, now()).is_some());
    for sample in committed["samples"].as_array().unwrap() {
        let token = sample["token"].as_str().unwrap();
        assert_eq!(
            verdicts(token),
            sample["verdicts"],
            "verdicts changed for committed sample {}",
            sample["name"]
        );
    }
    // 2. Minting today produces byte-identical tokens (the format did not change silently).
    assert_eq!(
        fresh, committed,
        "golden samples drifted; if intended, regenerate with GRANTS_REGENERATE_GOLDEN=1"
    );
}
