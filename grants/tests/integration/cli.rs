//! The `grants` command line tool, end to end.

use std::process::Command;

use chrono::Duration;
use grants::Action;

use crate::common::*;

fn grants_cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_grants"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn inspect_attenuate_verify() {
    let dir = tempfile::tempdir().unwrap();
    let keys_file = dir.path().join("keys.json");
    std::fs::write(
        &keys_file,
        serde_json::to_string(&keys().to_document()).unwrap(),
    )
    .unwrap();
    let keys_path = keys_file.to_str().unwrap();
    // A token valid for an hour from the real clock (the CLI verifies at "now").
    let real_now = chrono::Utc::now();
    let token = grants::mint(
        &key(1),
        &grant(full_scope_at(real_now)),
        real_now + Duration::hours(1),
        real_now,
    )
    .unwrap()
    .token;

    let (ok, out, err) = grants_cli(&["inspect", &token]);
    assert!(ok, "{err}");
    assert!(out.contains("grant(\"g_1\")"), "{out}");
    assert!(out.contains("acc_2"), "{out}");
    assert!(out.contains("kid: 1"), "{out}");

    let (ok, narrowed, err) = grants_cli(&[
        "attenuate",
        &token,
        "--account",
        "acc_1",
        "--action",
        "balances:read",
        "--seal",
    ]);
    assert!(ok, "{err}");
    let narrowed = narrowed.trim();

    let (ok, out, err) = grants_cli(&[
        "verify",
        narrowed,
        "--keys",
        keys_path,
        "--operation",
        "balances:read",
        "--account",
        "acc_1",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("ALLOW"), "{out}");
    assert!(out.contains("acc_1"), "{out}");

    let (ok, out, _) = grants_cli(&[
        "verify",
        narrowed,
        "--keys",
        keys_path,
        "--operation",
        "balances:read",
        "--account",
        "acc_2",
    ]);
    assert!(!ok);
    assert!(out.contains("DENY"), "{out}");

    let (ok, _, err) = grants_cli(&["attenuate", &token, "--account", "bad id"]);
    assert!(!ok);
    assert!(err.contains("account id"), "{err}");

    let (ok, _, err) = grants_cli(&[
        "verify",
        &token,
        "--keys",
        "/nonexistent/keys.json",
        "--operation",
        "balances:read",
    ]);
    assert!(!ok);
    assert!(err.contains("keys"), "{err}");

    let (ok, out, _) = grants_cli(&["--help"]);
    assert!(ok);
    assert!(out.contains("inspect") && out.contains("attenuate") && out.contains("verify"));
    let _ = Action::BalancesRead;
}

fn full_scope_at(t: chrono::DateTime<chrono::Utc>) -> grants::GrantScope {
    grants::GrantScope::new(
        vec![acc("acc_1"), acc("acc_2")],
        Action::KNOWN.to_vec(),
        None,
        None,
        t + Duration::days(1),
    )
    .unwrap()
}
