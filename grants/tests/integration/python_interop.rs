//! Interop: tokens attenuated by biscuit-python (module `biscuit_auth`) get exactly the verdicts
//! and scopes of the same attenuations made by this crate.
//!
//! Skips (passes with a message) when python3 or the module is missing, unless
//! GRANTS_REQUIRE_PYTHON=1, in which case it fails.

use std::io::Write;
use std::process::{Command, Stdio};

use chrono::Duration;
use grants::error::{DenyReason, VerifyError};
use grants::{Action, Attenuation, Request};
use serde_json::json;

use crate::common::*;

const SCRIPT: &str = r#"
import json, sys
from biscuit_auth import Algorithm, Biscuit, BlockBuilder, PublicKey

req = json.load(sys.stdin)
root = PublicKey.from_bytes(bytes.fromhex(req["public_key"]), Algorithm.Ed25519)
token = Biscuit.from_base64(req["token"], root)

def strings(items):
    return ", ".join(json.dumps(i) for i in items)

# The Datalog is written here, by hand, as any fintech using biscuit-python would.
for spec in req["chain"]:
    lines = []
    if "accounts" in spec:
        lines.append("check if req_account($a), {%s}.contains($a);" % strings(spec["accounts"]))
    if "actions" in spec:
        lines.append("check if operation($o), {%s}.contains($o);" % strings(spec["actions"]))
    if "merchants" in spec:
        lines.append("check if req_merchant($m), {%s}.contains($m);" % strings(spec["merchants"]))
    if "window" in spec:
        lines.append("check if req_tx_range($f, $u), $f >= %s, $u <= %s;" % tuple(spec["window"]))
    if "expires_at" in spec:
        lines.append("check if time($time), $time <= %s;" % spec["expires_at"])
    token = token.append(BlockBuilder("\n".join(lines)))
print(token.to_base64())
"#;

fn python_available() -> bool {
    Command::new("python3")
        .args(["-c", "import biscuit_auth"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn python_attenuate(token: &str, chain: &serde_json::Value) -> String {
    let input = json!({
        "token": token,
        "public_key": hex::encode(key(1).public_key().to_bytes()),
        "chain": chain,
    });
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "biscuit-python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn rust_attenuation(spec: &serde_json::Value) -> Attenuation {
    let mut a = Attenuation::new();
    if let Some(v) = spec.get("accounts") {
        a = a.accounts(
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| acc(x.as_str().unwrap())),
        );
    }
    if let Some(v) = spec.get("actions") {
        a = a.actions(
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| Action::parse(x.as_str().unwrap()).unwrap()),
        );
    }
    if let Some(v) = spec.get("merchants") {
        a = a.merchants(
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| mer(x.as_str().unwrap())),
        );
    }
    if let Some(v) = spec.get("window") {
        a = a.window(window(v[0].as_str().unwrap(), v[1].as_str().unwrap()));
    }
    if let Some(v) = spec.get("expires_at") {
        a = a.expires_at(ts(v.as_str().unwrap()));
    }
    a
}

/// A comparable summary of a verification result.
fn outcome(r: Result<grants::Authorization, VerifyError>) -> String {
    match r {
        Ok(a) => format!("allow {:?} blocks={}", a.scope, a.blocks),
        Err(VerifyError::Denied(DenyReason::Attenuation { block, .. })) => {
            format!("deny attenuation block {block}")
        }
        Err(e) => format!("deny {e}"),
    }
}

fn requests() -> Vec<Request> {
    let tx = |a: &str| req(Action::TransactionsRead).account(acc(a));
    let mut later = req(Action::BalancesRead).account(acc("acc_1"));
    later.now = now() + Duration::minutes(4);
    vec![
        req(Action::AccountsRead),
        req(Action::BalancesRead).account(acc("acc_1")),
        req(Action::BalancesRead).account(acc("acc_2")),
        req(Action::BalancesRead).account(acc("acc_9")),
        tx("acc_1"),
        tx("acc_2"),
        tx("acc_1").merchant(mer("m_1")),
        tx("acc_1").merchant(mer("m_2")),
        tx("acc_1").tx_range(window("2025-03-02T00:00:00Z", "2025-03-03T00:00:00Z")),
        tx("acc_1").tx_range(window("2025-01-02T00:00:00Z", "2025-03-03T00:00:00Z")),
        later,
    ]
}

#[test]
fn biscuit_python_attenuations_verify_like_ours() {
    if !python_available() {
        if std::env::var("GRANTS_REQUIRE_PYTHON").as_deref() == Ok("1") {
            panic!(
                "GRANTS_REQUIRE_PYTHON=1 but python3 with biscuit_auth is unavailable (pip install biscuit-python)"
            );
        }
        eprintln!(
            "SKIPPED biscuit_python_attenuations_verify_like_ours: python3 or the `biscuit_auth` \
             module (pip install biscuit-python) is unavailable; set GRANTS_REQUIRE_PYTHON=1 to \
             make this a failure"
        );
        return;
    }
    let chains = [
        json!([{"accounts": ["acc_1"]}]),
        json!([{"actions": ["balances:read", "accounts:read"]}]),
        json!([{"merchants": ["m_1", "m_9"]}]),
        json!([{"window": ["2025-03-01T00:00:00Z", "2025-03-31T23:59:59Z"]}]),
        json!([{"expires_at": "2026-03-01T12:03:00Z"}]),
        json!([
            {"accounts": ["acc_1", "acc_2"], "merchants": ["m_1"]},
            {"accounts": ["acc_1"], "expires_at": "2026-03-01T12:05:00Z",
             "window": ["2025-02-01T00:00:00Z", "2025-06-30T00:00:00Z"]}
        ]),
    ];
    let v = verifier();
    let (mut allows, mut denies) = (0, 0);
    for scope in [full_scope(), open_scope()] {
        let root = mint(scope);
        for chain in &chains {
            let from_python = python_attenuate(&root, chain);
            let mut ours = root.clone();
            for spec in chain.as_array().unwrap() {
                ours = attenuate(&ours, &rust_attenuation(spec));
            }
            assert_ne!(from_python, ours, "different block keys, different bytes");
            for r in requests() {
                let theirs = outcome(v.verify(&from_python, &r));
                let mine = outcome(v.verify(&ours, &r));
                assert_eq!(theirs, mine, "chain {chain} request {r:?}");
                if mine.starts_with("allow") {
                    allows += 1;
                } else {
                    denies += 1;
                }
            }
        }
    }
    // The comparison is not vacuous: both allows and denies occur.
    assert!(
        allows > 20 && denies > 20,
        "allows {allows}, denies {denies}"
    );
}

/// A DPoP-bound token attenuated by biscuit-python stays bound: without a proof, or with another
/// key's proof, it is refused; with its key's proof it is served, narrowed by the Python block.
#[test]
fn biscuit_python_attenuated_bound_tokens_stay_bound() {
    if !python_available() {
        assert!(
            std::env::var("GRANTS_REQUIRE_PYTHON").as_deref() != Ok("1"),
            "GRANTS_REQUIRE_PYTHON=1 but python3 with biscuit_auth is unavailable"
        );
        eprintln!("SKIPPED biscuit_python_attenuated_bound_tokens_stay_bound: no biscuit_auth");
        return;
    }
    let holder = grants::dpop::DpopKey::generate_es256();
    let stranger = grants::dpop::DpopKey::generate_ed25519();
    let bound = grants::mint_bound(
        &key(1),
        &grant(full_scope()),
        &holder.thumbprint(),
        now() + Duration::minutes(10),
        now(),
    )
    .unwrap()
    .token;
    let narrowed = python_attenuate(&bound, &json!([{"accounts": ["acc_1"]}]));
    let url = "https://bank.example/sandbox/v1/accounts/acc_1/balances";
    let request = Request::new(Action::BalancesRead, now())
        .account(grants::AccountId::parse("acc_1").unwrap());
    let replay = grants::dpop::InMemoryReplayStore::default();
    let ctx = || grants::dpop::ProofContext::new("GET", url, now());
    let v = verifier();
    assert!(matches!(
        v.verify(&narrowed, &request),
        Err(VerifyError::ProofRequired)
    ));
    let foreign = stranger.proof("GET", url, Some(&narrowed), None, now());
    assert!(matches!(
        v.verify_dpop(&narrowed, &request, &foreign, ctx(), &replay),
        Err(VerifyError::Dpop(grants::dpop::DpopError::KeyMismatch))
    ));
    let proof = holder.proof("GET", url, Some(&narrowed), None, now());
    let ok = v
        .verify_dpop(&narrowed, &request, &proof, ctx(), &replay)
        .unwrap();
    assert_eq!(ok.scope.accounts.len(), 1, "the Python block narrowed it");
    // Another account: the Python block refuses it, proof or not.
    let other = Request::new(Action::BalancesRead, now())
        .account(grants::AccountId::parse("acc_2").unwrap());
    let proof = holder.proof("GET", url, Some(&narrowed), None, now());
    assert!(matches!(
        v.verify_dpop(&narrowed, &other, &proof, ctx(), &replay),
        Err(VerifyError::Denied(_))
    ));
}
