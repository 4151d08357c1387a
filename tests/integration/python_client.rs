//! A FAPI 2.0 client written in Python with a third-party JOSE library (`joserfc`, see
//! `tests/python/fapi_client.py`): PAR, code exchange and refresh with `private_key_jwt`
//! assertions and DPoP proofs it signs itself, then the sandbox API with DPoP. Nothing on the
//! client side is ours, so this catches what our own signer and verifier would agree on wrongly
//! (signature encodings, thumbprints, `ath`).
//!
//! Skips (passes with a message) when python3 or joserfc is missing, unless
//! GRANTS_REQUIRE_PYTHON=1 (as CI sets), in which case it fails.

use std::process::Command;

use e2e_tests::oauth::*;
use e2e_tests::{Backend, TestApp, spawn_demo_app};
use serde_json::{Value, json};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python/fapi_client.py");
const REDIRECT: &str = "https://fintech.example/cb";

fn joserfc_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import joserfc"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok && std::env::var("GRANTS_REQUIRE_PYTHON").is_ok_and(|v| v == "1") {
        panic!("GRANTS_REQUIRE_PYTHON=1 but python3 with joserfc is missing (pip install joserfc)");
    }
    ok
}

fn run(args: &[&str]) -> Value {
    let out = Command::new("python3")
        .arg(SCRIPT)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the script prints JSON")
}

#[tokio::test]
async fn a_python_joserfc_client_completes_the_fapi_flow() {
    if !joserfc_available() {
        eprintln!("python3 with joserfc not found: the Python FAPI client test is skipped");
        return;
    }
    let app: TestApp = spawn_demo_app(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let state = state.to_str().unwrap();
    let keys = run(&["keys", state]);
    insert_client_with(
        &app,
        "c_python",
        "sandbox",
        REDIRECT,
        ClientAuth::Keys(keys["jwks"].clone()),
        true,
    )
    .await;
    app.login_customer("alice").await;
    let par = run(&["par", state, &app.address, "c_python", REDIRECT]);
    assert_eq!(par["status"], 201, "{par}");
    let request_uri = par["request_uri"].as_str().unwrap();
    let auth = app
        .get_authorize(&[("client_id", "c_python"), ("request_uri", request_uri)])
        .await;
    let acc = app.account_ids("alice").await[0].clone();
    let redirect = app
        .decide(
            auth,
            &[
                ("decision", "approve"),
                ("account", acc.as_str()),
                ("action", "accounts:read"),
            ],
        )
        .await;
    let code = query_param(&redirect, "code").expect("code");
    let out = run(&["finish", state, &app.address, "c_python", &code, REDIRECT]);
    assert_eq!(
        out,
        json!({
            "token": 200,
            "token_type": "DPoP",
            "api": 200,
            "api_replayed": 401,
            "api_bearer": 401,
            "refresh": 200,
            "refresh_kept": true,
            "assertion_replayed": [401, "invalid_client"],
        })
    );
    app.stop().await;
}
