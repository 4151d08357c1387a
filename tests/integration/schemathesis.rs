//! The contract, tested by a tool that is not ours: schemathesis generates requests from
//! `openapi.json` for every operation, with the credentials of each security scheme, and checks
//! every answer: no 5xx, every status code, content type and header declared, every body valid
//! against its schema. Bounded and seeded, so a run is repeatable.
//!
//! Skips (passes with a message) when `st` is not installed, unless
//! `CONSENT_REQUIRE_SCHEMATHESIS=1` (as CI sets: `pip install schemathesis==4.32.5`).

use std::process::Command;
use std::sync::Arc;

use e2e_tests::dashboard::{connect_app, me_csrf};
use e2e_tests::oauth::*;
use e2e_tests::{Backend, TestApp, spawn_demo_app};
use reqwest::cookie::CookieStore;

const SPEC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi/openapi.json");

/// What every answer must satisfy. (`positive_data_acceptance` is left out: a schema cannot say
/// that a grant id must name a grant that exists, so valid-looking requests are refused
/// rightly.)
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_headers_conformance,response_schema_conformance";

fn schemathesis_available() -> bool {
    let ok = Command::new("st")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok && std::env::var("CONSENT_REQUIRE_SCHEMATHESIS").is_ok_and(|v| v == "1") {
        panic!("CONSENT_REQUIRE_SCHEMATHESIS=1 but `st` is missing (pip install schemathesis)");
    }
    ok
}

/// One run over the operations whose path matches `paths`, with `headers` on every request; returns the
/// report when anything failed. It runs off the test's runtime, which also runs the server's
/// background tasks (the revocation list's sync, whose staleness would fail verification closed).
async fn run(app: &TestApp, name: &str, paths: &str, headers: &[String]) -> Option<String> {
    let mut cmd = Command::new("st");
    // Its cache and reports go to a scratch folder, not the checkout.
    cmd.current_dir(std::env::temp_dir())
        .args(["run", SPEC, "--url", &app.address, "--checks", CHECKS])
        .args(["--max-examples", "50", "--seed", "20261204", "--no-color"])
        .args(["--generation-database", "none", "--request-timeout", "10"])
        .args(["--include-path-regex", paths]);
    for h in headers {
        cmd.args(["--header", h]);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("st runs");
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    let summary = report.rsplit_once("SUMMARY").map_or("", |(_, s)| s);
    eprintln!("schemathesis [{name}]:{summary}");
    (!out.status.success()).then(|| {
        format!(
            "[{name}]\n{report}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The customer's session cookie and CSRF token, as a browser would hold them.
async fn customer_session(app: &TestApp) -> (String, String) {
    let jar = Arc::new(reqwest::cookie::Jar::default());
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_provider(jar.clone())
        .build()
        .unwrap();
    let page = client.get(app.url("/login")).send().await.unwrap();
    let csrf = csrf_from(&page.text().await.unwrap());
    let r = client
        .post(app.url("/login"))
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("username", "bob"),
            ("password", DEMO_PASSWORD),
            ("next", "/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "login");
    let cookie = jar
        .cookies(&app.url("/api/v1/me").parse().unwrap())
        .expect("session cookie")
        .to_str()
        .unwrap()
        .to_string();
    let csrf = me_csrf(app, &client).await;
    (cookie, csrf)
}

#[tokio::test]
async fn every_operation_answers_as_the_contract_says() {
    if !schemathesis_available() {
        eprintln!("schemathesis (st) not found: the contract test is skipped");
        return;
    }
    let app = spawn_demo_app(Backend::Sqlite).await;
    let developer = app.developer_token("contract@fintech.example").await;
    let staff = app.staff_token("contract-staff").await;
    app.login_customer("alice").await;
    let account = app.account_ids("alice").await[0].clone();
    let tokens = connect_app(&app, (DEMO_CLIENT, DEMO_SECRET), DEMO_REDIRECT, &account).await;
    let biscuit = tokens["access_token"].as_str().unwrap().to_string();
    let (cookie, csrf) = customer_session(&app).await;
    let basic = {
        use base64::Engine;
        let pair = format!("{DEMO_CLIENT}:{DEMO_SECRET}");
        base64::engine::general_purpose::STANDARD.encode(pair)
    };

    let bearer = |t: &str| vec![format!("Authorization: Bearer {t}")];
    // Each scheme's operations with its credentials; the runs that can end their own
    // credentials (developer logout, the customer's revoke-all) come last.
    let runs: [(&str, &str, Vec<String>); 7] = [
        (
            "public",
            r"^/(healthz|readyz|metrics|\.well-known/.*|oauth2/(par|authorize|token|revoke|introspect))$",
            vec![],
        ),
        (
            "client",
            r"^/(api/v1/grants/.*|oauth2/revocations)$",
            vec![format!("Authorization: Basic {basic}")],
        ),
        ("biscuit", r"^/(sandbox/.*|api/v1/usage)$", bearer(&biscuit)),
        ("staff", r"^/api/v1/admin/", bearer(&staff)),
        (
            "developer",
            r"^/api/v1/(developers(?!/logout)|clients)",
            bearer(&developer),
        ),
        (
            "customer",
            r"^/api/v1/me",
            vec![format!("Cookie: {cookie}"), format!("X-CSRF-Token: {csrf}")],
        ),
        ("logout", r"^/api/v1/developers/logout$", bearer(&developer)),
    ];
    let mut failures = Vec::new();
    for (name, paths, headers) in &runs {
        failures.extend(run(&app, name, paths, headers).await);
    }
    app.stop().await;
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
