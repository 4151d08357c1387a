//! The generated SDKs as a fintech uses them: `sdks/python/scenario.py` and
//! `sdks/typescript/src/scenario.ts` run the same integration through the Python and TypeScript
//! SDKs generated from `openapi/openapi.json` (no hand-written HTTP): developer sign-up and login,
//! KYC draft and submit, two staff approvals, a production client with a webhook, secret
//! rotation; then, once a customer consented here, the client grant API, the revocation feed
//! around the client's own revocation, and the webhook deliveries.
//!
//! Skips (passes with a message) when the SDKs were not generated (`sdks/generate.sh`), unless
//! `CONSENT_REQUIRE_SDKS=1` (as CI sets, after generating them).

use std::path::{Path, PathBuf};
use std::process::Command;

use e2e_tests::dashboard::connect_app;
use e2e_tests::portal::PASSWORD;
use e2e_tests::{Backend, TestApp, spawn_demo_app};
use serde_json::Value;

fn sdks() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdks")
}

/// Whether `generated` exists; a failure instead of a skip when CI requires the SDKs.
fn generated(generated: &Path, what: &str) -> bool {
    let ok = generated.exists();
    if !ok && std::env::var("CONSENT_REQUIRE_SDKS").is_ok_and(|v| v == "1") {
        panic!("CONSENT_REQUIRE_SDKS=1 but the {what} SDK is not generated (sdks/generate.sh)");
    }
    if !ok {
        eprintln!("{what} SDK not generated (sdks/generate.sh): its scenario is skipped");
    }
    ok
}

/// Runs `cmd` off the test's runtime (which also runs the server's background tasks).
async fn run(mut cmd: Command, what: &str) -> Value {
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{what} prints JSON: {e}"))
}

/// Runs one SDK's scenario (`command` + phase arguments) against a fresh demo server.
async fn scenario(name: &str, command: impl Fn() -> Command) {
    let app: TestApp = spawn_demo_app(Backend::Sqlite).await;
    let (staff1, staff2) = (format!("{name}-staff-1"), format!("{name}-staff-2"));
    let id1 = app.create_staff(&staff1).await;
    let id2 = app.create_staff(&staff2).await;
    let (code1, code2) = (
        app.enrolment_code(&id1).await,
        app.enrolment_code(&id2).await,
    );
    let mut cmd = command();
    cmd.args(["portal", &app.address, &staff1, &staff2, PASSWORD])
        .arg("https://hooks.fintech.example/consent")
        .args([&code1, &code2]);
    let portal = run(cmd, &format!("{name} portal phase")).await;
    let str_of = |k: &str| portal[k].as_str().unwrap().to_string();
    let (client_id, secret) = (str_of("client_id"), str_of("client_secret"));

    // A customer connects the fintech's new production client.
    app.login_customer("alice").await;
    let account = app.account_ids("alice").await[0].clone();
    let tokens = connect_app(
        &app,
        (&client_id, &secret),
        &str_of("redirect_uri"),
        &account,
    )
    .await;
    let grant_id = tokens["grant_id"].as_str().unwrap();

    let mut cmd = command();
    cmd.args(["grants", &app.address, &str_of("developer_token")])
        .args([&client_id, &secret, grant_id]);
    let grants = run(cmd, &format!("{name} grants phase")).await;
    assert_eq!(grants["revoked_in_feed"], true, "{grants}");
    assert_eq!(grants["client_status"], "active", "{grants}");
    assert!(
        grants["webhook_events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "grant.revoked"),
        "{grants}"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_python_sdk_runs_a_fintech_integration() {
    let dir = sdks().join("python");
    if !generated(&dir.join("consent_client"), "Python") {
        return;
    }
    scenario("python", || {
        let mut cmd = Command::new("python3");
        cmd.current_dir(&dir).arg("scenario.py");
        cmd
    })
    .await;
}

#[tokio::test]
async fn the_typescript_sdk_runs_a_fintech_integration() {
    let dir = sdks().join("typescript");
    if !generated(&dir.join("dist/scenario.js"), "TypeScript") {
        return;
    }
    scenario("typescript", || {
        let mut cmd = Command::new("node");
        cmd.current_dir(&dir).arg("dist/scenario.js");
        cmd
    })
    .await;
}
