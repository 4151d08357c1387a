//! A second factor at login (issue 18): TOTP, mandatory for staff, optional for developers;
//! codes and recovery codes work once; failures are limited per account; a token that owes the
//! factor reaches nothing else.

use diesel::prelude::*;
use e2e_tests::portal::PASSWORD;
use e2e_tests::{TestApp, backends, spawn_app};
use platform::storage::schema::second_factors;
use reqwest::{Method, Response};
use serde_json::{Value, json};

async fn status_and_body(r: Response) -> (u16, Value) {
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Logs `username` in with the password: the token and what it owes.
async fn password_login(app: &TestApp, username: &str) -> (String, Value) {
    let r = app.post_admin_login(username, PASSWORD).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    (
        v["access_token"].as_str().unwrap().to_string(),
        v["second_factor_due"].clone(),
    )
}

async fn send_code(app: &TestApp, path: &str, token: &str, code: &str) -> (u16, Value) {
    status_and_body(
        app.api(
            Method::POST,
            path,
            Some(token),
            Some(&json!({ "code": code })),
        )
        .await,
    )
    .await
}

async fn get_status(app: &TestApp, path: &str, token: &str) -> u16 {
    app.api(Method::GET, path, Some(token), None)
        .await
        .status()
        .as_u16()
}

async fn assert_audited(app: &TestApp, expected: &[&str]) {
    let actions = app.audit_actions().await;
    for a in expected {
        assert!(actions.iter().any(|x| x == a), "{a} in {actions:?}");
    }
}

/// Every stored authenticator: (encrypted secret, last step used).
async fn stored_factors(app: &TestApp) -> Vec<(String, i64)> {
    app.platform
        .db
        .run(|c| {
            Ok(second_factors::table
                .select((second_factors::secret_enc, second_factors::last_step))
                .load(c)?)
        })
        .await
        .unwrap()
}

async fn last_step(app: &TestApp) -> Vec<i64> {
    stored_factors(app).await.into_iter().map(|f| f.1).collect()
}

const STAFF_VERIFY: &str = "/api/v1/admin/login/second-factor";
const STAFF_ENROL: &str = "/api/v1/admin/second-factor";
const STAFF_CONFIRM: &str = "/api/v1/admin/second-factor/confirm";

#[tokio::test]
async fn staff_without_a_second_factor_can_only_enrol() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        let id = app.create_staff("ops1").await;
        let (owing, due) = password_login(&app, "ops1").await;
        assert_eq!(due, "enrol", "{backend:?}");
        // The password alone reaches no staff API, and no code is taken before enrolment.
        for path in ["/api/v1/admin/kyc", "/api/v1/admin/approvals"] {
            assert_eq!(
                get_status(&app, path, &owing).await,
                401,
                "{path} {backend:?}"
            );
        }
        let (s, _) = send_code(&app, STAFF_VERIFY, &owing, "123456").await;
        assert_eq!(s, 403, "{backend:?}");
        // Confirming before starting is a clean conflict.
        let (s, _) = send_code(&app, STAFF_CONFIRM, &owing, "123456").await;
        assert_eq!(s, 409, "{backend:?}");

        let code = json!({ "enrolment_code": app.enrolment_code(&id).await });
        let r = app
            .api(Method::POST, STAFF_ENROL, Some(&owing), Some(&code))
            .await;
        assert_eq!(r.status(), 200, "{backend:?}");
        assert_eq!(r.headers()["cache-control"], "no-store");
        let e: Value = r.json().await.unwrap();
        let secret = e["secret"].as_str().unwrap().to_string();
        assert!(
            e["otpauth_uri"]
                .as_str()
                .unwrap()
                .starts_with("otpauth://totp/Consent:ops1?secret="),
            "{e}"
        );
        // The secret is stored encrypted.
        let stored = stored_factors(&app).await;
        assert_eq!(stored.len(), 1);
        assert!(!stored[0].0.contains(&secret), "{backend:?}");

        // A wrong first code changes nothing: still enrolling, the same secret.
        let wrong = if app.totp_code(&secret, 0) == "000000" {
            "111111"
        } else {
            "000000"
        };
        let (s, v) = send_code(&app, STAFF_CONFIRM, &owing, wrong).await;
        assert_eq!(s, 400, "{v} {backend:?}");
        assert_eq!(v["errors"][0]["field"], "code", "{v}");
        let (again, due) = password_login(&app, "ops1").await;
        assert_eq!(due, "enrol", "{backend:?}");
        assert_ne!(again, owing);

        let (s, v) = send_code(&app, STAFF_CONFIRM, &owing, &app.totp_code(&secret, 0)).await;
        assert_eq!(s, 200, "{v} {backend:?}");
        let codes = v["recovery_codes"].as_array().unwrap();
        assert_eq!(codes.len(), 10);
        assert!(codes.iter().all(|c| c.as_str().unwrap().len() == 19), "{v}");
        let full = v["session"]["access_token"].as_str().unwrap();
        assert!(v["session"].get("second_factor_due").is_none(), "{v}");
        assert_eq!(get_status(&app, "/api/v1/admin/kyc", full).await, 200);
        // The login token ended with the enrolment; it is not a staff session either.
        let r = app.api(Method::POST, STAFF_ENROL, Some(&owing), None).await;
        assert_eq!(r.status(), 401, "{backend:?}");
        assert_eq!(get_status(&app, "/api/v1/admin/kyc", &owing).await, 401);
        // The other pending login now owes a code, not enrolment.
        let (s, _) = send_code(&app, STAFF_CONFIRM, &again, &app.totp_code(&secret, 1)).await;
        assert_eq!(s, 409, "{backend:?}");
        // A full session cannot enrol again (the endpoints take only owing tokens).
        let r = app.api(Method::POST, STAFF_ENROL, Some(full), None).await;
        assert_eq!(r.status(), 401, "{backend:?}");

        assert_audited(
            &app,
            &["second_factor.enrolment_started", "second_factor.enrolled"],
        )
        .await;
        app.stop().await;
    }
}

#[tokio::test]
async fn codes_and_recovery_codes_work_once() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        app.create_staff("ops1").await;
        let (owing, _) = password_login(&app, "ops1").await;
        let (secret, recovery, _) = app.enrol(&owing).await;

        let (login, due) = password_login(&app, "ops1").await;
        assert_eq!(due, "verify", "{backend:?}");
        let totp = platform::totp::Totp::from_base32(&secret).unwrap();
        let used = last_step(&app).await[0];
        // The code that confirmed enrolment has been used: replayed, refused.
        let (s, _) = send_code(&app, STAFF_VERIFY, &login, &totp.code_for_step(used)).await;
        assert_eq!(s, 400, "replay {backend:?}");
        // Two steps ahead of now is outside the window.
        let now = platform::totp::step_at(app.platform.now());
        let ahead = totp.code_for_step(now + 2);
        if (now - 1..=now + 1).all(|st| totp.code_for_step(st) != ahead) {
            let (s, _) = send_code(&app, STAFF_VERIFY, &login, &ahead).await;
            assert_eq!(s, 400, "two steps ahead {backend:?}");
        }
        let next = totp.code_for_step(used + 1);
        let (s, v) = send_code(&app, STAFF_VERIFY, &login, &next).await;
        assert_eq!(s, 200, "{v} {backend:?}");
        let full = v["access_token"].as_str().unwrap().to_string();
        assert_ne!(full, login);
        assert_eq!(get_status(&app, "/api/v1/admin/kyc", &full).await, 200);
        assert_eq!(get_status(&app, "/api/v1/admin/kyc", &login).await, 401);
        // The paid login token is spent.
        let (s, _) = send_code(&app, STAFF_VERIFY, &login, &next).await;
        assert_eq!(s, 401, "{backend:?}");

        // The same code on another login: used, refused.
        let (login2, _) = password_login(&app, "ops1").await;
        let (s, _) = send_code(&app, STAFF_VERIFY, &login2, &next).await;
        assert_eq!(s, 400, "{backend:?}");
        // A recovery code, typed without dashes and in capitals, logs in once.
        let typed = recovery[0].replace('-', "").to_uppercase();
        let (s, v) = send_code(&app, STAFF_VERIFY, &login2, &typed).await;
        assert_eq!(s, 200, "{v} {backend:?}");
        let (login3, _) = password_login(&app, "ops1").await;
        let (s, _) = send_code(&app, STAFF_VERIFY, &login3, &recovery[0]).await;
        assert_eq!(s, 400, "{backend:?}");
        let (s, _) = send_code(&app, STAFF_VERIFY, &login3, &recovery[1]).await;
        assert_eq!(s, 200, "{backend:?}");
        // A developer's token is not a staff login, and garbage is nothing.
        let dev = app.developer_token("dev@fintech.example").await;
        for token in [dev.as_str(), "sess_garbage"] {
            let (s, _) = send_code(&app, STAFF_VERIFY, token, &recovery[2]).await;
            assert_eq!(s, 401, "{backend:?}");
        }
        assert_audited(
            &app,
            &[
                "second_factor.verified",
                "second_factor.verified_with_recovery_code",
                "second_factor.recovery_code_used",
            ],
        )
        .await;
        app.stop().await;
    }
}

#[tokio::test]
async fn one_code_sent_twice_at_once_logs_in_once() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        app.create_staff("ops1").await;
        let (owing, _) = password_login(&app, "ops1").await;
        let (secret, _, _) = app.enrol(&owing).await;
        let (a, _) = password_login(&app, "ops1").await;
        let (b, _) = password_login(&app, "ops1").await;
        let code = app.totp_code(&secret, 1);
        let (ra, rb) = tokio::join!(
            send_code(&app, STAFF_VERIFY, &a, &code),
            send_code(&app, STAFF_VERIFY, &b, &code)
        );
        let mut statuses = [ra.0, rb.0];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 400], "{ra:?} {rb:?} {backend:?}");
        app.stop().await;
    }
}

#[tokio::test]
async fn wrong_codes_are_limited_per_account_wherever_they_come_from() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        app.create_staff("ops1").await;
        let (owing, _) = password_login(&app, "ops1").await;
        let (secret, _, _) = app.enrol(&owing).await;
        let steps = last_step(&app).await;
        let (login, _) = password_login(&app, "ops1").await;
        let right = app.totp_code(&secret, 1);
        let wrong = if right == "000000" {
            "111111"
        } else {
            "000000"
        };
        for i in 0..developer_portal::second_factor::FAILURES_PER_ACCOUNT {
            let (s, _) = send_code(&app, STAFF_VERIFY, &login, wrong).await;
            assert_eq!(s, 400, "failure {i} {backend:?}");
        }
        // Now even the right code is refused, and from another address with a new login too.
        let (s, v) = send_code(&app, STAFF_VERIFY, &login, &right).await;
        assert_eq!(s, 429, "{v} {backend:?}");
        let other = app.client_from("127.0.0.2");
        let r = other
            .post(app.url("/api/v1/admin/login"))
            .json(&json!({ "username": "ops1", "password": PASSWORD }))
            .send()
            .await
            .unwrap();
        let fresh = r.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        let r = other
            .post(app.url(STAFF_VERIFY))
            .bearer_auth(&fresh)
            .json(&json!({ "code": right }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 429, "{backend:?}");
        assert!(r.headers().contains_key("retry-after"));
        // Nothing was used up by the refused attempts.
        assert_eq!(last_step(&app).await, steps, "{backend:?}");
        let locked = app.audit_actions().await;
        assert_eq!(
            locked
                .iter()
                .filter(|a| *a == "second_factor.locked")
                .count(),
            1,
            "{locked:?}"
        );
        // Another account is not affected.
        app.create_staff("ops2").await;
        let (owing2, _) = password_login(&app, "ops2").await;
        app.enrol(&owing2).await;
        app.stop().await;
    }
}

const DEV_FACTOR: &str = "/api/v1/developers/me/second-factor";

#[tokio::test]
async fn developers_may_add_a_second_factor_and_remove_it_with_a_code() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        let dev = app.developer_token("dev@fintech.example").await;
        let status = |token: String| {
            let app = &app;
            async move {
                app.api(Method::GET, DEV_FACTOR, Some(&token), None)
                    .await
                    .json::<Value>()
                    .await
                    .unwrap()
            }
        };
        assert_eq!(status(dev.clone()).await["enrolled"], false);
        // A second session, opened with the password alone (another browser, or a thief).
        let r = app
            .post_developer_login("dev@fintech.example", PASSWORD)
            .await;
        let elsewhere = r.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(status(elsewhere.clone()).await["enrolled"], false);
        // The session alone starts nothing: the password again (a stolen session could
        // otherwise set up an authenticator and lock the owner out).
        let enrol = |body: Option<Value>| {
            let (app, dev) = (&app, dev.clone());
            async move {
                let r = app.api(Method::POST, DEV_FACTOR, Some(&dev), body.as_ref());
                status_and_body(r.await).await
            }
        };
        assert_eq!(enrol(None).await.0, 415, "{backend:?}");
        for wrong in ["", "not the password"] {
            let (s, v) = enrol(Some(json!({ "password": wrong }))).await;
            assert_eq!(s, 400, "{v} {backend:?}");
            assert_eq!(v["errors"][0]["field"], "password", "{v}");
        }
        let (s, _) = enrol(Some(json!({ "password": PASSWORD, "extra": 1 }))).await;
        assert_eq!(s, 400, "{backend:?}");
        assert!(stored_factors(&app).await.is_empty(), "{backend:?}");
        let body = json!({ "password": PASSWORD });
        let r = app
            .api(Method::POST, DEV_FACTOR, Some(&dev), Some(&body))
            .await;
        assert_eq!(r.status(), 200, "{backend:?}");
        let secret = r.json::<Value>().await.unwrap()["secret"]
            .as_str()
            .unwrap()
            .to_string();
        let confirm = format!("{DEV_FACTOR}/confirm");
        let (s, v) = send_code(&app, &confirm, &dev, &app.totp_code(&secret, 0)).await;
        assert_eq!(s, 200, "{v} {backend:?}");
        let v_codes: Vec<String> = v["recovery_codes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect();
        assert_eq!(v_codes.len(), 10);
        assert!(v.get("session").is_none(), "{v}");
        // Set up: the password-only session elsewhere has ended; this one goes on.
        let r = app
            .api(Method::GET, DEV_FACTOR, Some(&elsewhere), None)
            .await;
        assert_eq!(r.status(), 401, "{backend:?}");
        let st = status(dev.clone()).await;
        assert_eq!(
            (st["enrolled"].clone(), st["recovery_codes_left"].clone()),
            (json!(true), json!(10))
        );
        // Already set up: a second enrolment is a conflict, whatever the password (and a
        // wrong one does not count against the owner then).
        let r = app
            .api(Method::POST, DEV_FACTOR, Some(&dev), Some(&body))
            .await;
        assert_eq!(r.status(), 409, "{backend:?}");
        for _ in 0..developer_portal::second_factor::FAILURES_PER_ACCOUNT {
            let wrong = json!({ "password": "not the password" });
            let r = app.api(Method::POST, DEV_FACTOR, Some(&dev), Some(&wrong));
            assert_eq!(r.await.status(), 409, "{backend:?}");
        }

        // From now on the password alone is not a session.
        let r = app
            .post_developer_login("dev@fintech.example", PASSWORD)
            .await;
        let login: Value = r.json().await.unwrap();
        assert_eq!(login["second_factor_due"], "verify", "{login}");
        let owing = login["access_token"].as_str().unwrap();
        assert_eq!(get_status(&app, "/api/v1/developers/me", owing).await, 401);
        assert_eq!(get_status(&app, "/api/v1/clients", owing).await, 401);
        let (s, v) = send_code(
            &app,
            "/api/v1/developers/login/second-factor",
            owing,
            &app.totp_code(&secret, 1),
        )
        .await;
        assert_eq!(s, 200, "{v} {backend:?}");
        let full = v["access_token"].as_str().unwrap().to_string();
        assert_eq!(get_status(&app, "/api/v1/developers/me", &full).await, 200);

        // Removal needs a current, unused code.
        let removal = format!("{DEV_FACTOR}/removal");
        let (s, _) = send_code(&app, &removal, &full, &app.totp_code(&secret, 1)).await;
        assert_eq!(s, 400, "used code {backend:?}");
        assert_eq!(status(full.clone()).await["enrolled"], true);
        // A recovery code proves the owner as well.
        let recovery = v_codes[0].clone();
        let r = app
            .api(
                Method::POST,
                &removal,
                Some(&full),
                Some(&json!({ "code": recovery })),
            )
            .await;
        assert_eq!(r.status(), 204, "{backend:?}");
        let r = app
            .post_developer_login("dev@fintech.example", PASSWORD)
            .await;
        let login: Value = r.json().await.unwrap();
        assert!(login.get("second_factor_due").is_none(), "{login}");
        assert_eq!(
            get_status(
                &app,
                "/api/v1/developers/me",
                login["access_token"].as_str().unwrap()
            )
            .await,
            200
        );
        assert_audited(&app, &["second_factor.removed"]).await;
        app.stop().await;
    }
}

/// The text of the element with `id` in `html` (a `<code>` or `<li>` holds it directly).
fn element_text(html: &str, id: &str) -> Option<String> {
    let at = html.find(&format!("id=\"{id}\""))?;
    let rest = &html[at..];
    let start = rest.find('>')? + 1;
    let end = rest[start..].find('<')?;
    Some(rest[start..start + end].to_string())
}

#[tokio::test]
async fn developer_pages_set_up_and_ask_for_the_second_factor() {
    use e2e_tests::portal::{browser_client, csrf_from_html};
    for backend in backends() {
        let app = spawn_app(backend).await;
        let web = browser_client();
        let r = app.sign_up_on_page(&web, "page@fintech.example").await;
        assert_eq!(r.status(), 303, "{backend:?}");
        let page = app.page(&web, "/developers/second-factor").await;
        assert!(page.contains("Create a secret"), "{page}");
        let csrf = csrf_from_html(&page).unwrap();
        // Without the session's CSRF token nothing starts.
        let r = app
            .submit(&web, "/developers/second-factor", &[("step", "start")])
            .await;
        assert_eq!(r.status(), 403, "{backend:?}");
        assert!(last_step(&app).await.is_empty());
        // Without the password, or with a wrong one, neither: the form again, with the reason.
        for wrong in ["", "not the password"] {
            let form = [
                ("step", "start"),
                ("password", wrong),
                ("csrf_token", csrf.as_str()),
            ];
            let r = app.submit(&web, "/developers/second-factor", &form).await;
            assert_eq!(r.status(), 400, "{backend:?}");
            let page = r.text().await.unwrap();
            assert!(page.contains("password"), "{page}");
            assert!(element_text(&page, "secret").is_none(), "{page}");
        }
        assert!(last_step(&app).await.is_empty());
        let page = app
            .submit(
                &web,
                "/developers/second-factor",
                &[
                    ("step", "start"),
                    ("password", PASSWORD),
                    ("csrf_token", &csrf),
                ],
            )
            .await
            .text()
            .await
            .unwrap();
        let secret = element_text(&page, "secret").expect("secret shown");
        let r = app
            .submit(
                &web,
                "/developers/second-factor",
                &[
                    ("code", app.totp_code(&secret, 0).as_str()),
                    ("csrf_token", &csrf),
                ],
            )
            .await;
        assert_eq!(r.status(), 200, "{backend:?}");
        let page = r.text().await.unwrap();
        assert_eq!(page.matches("<li><code>").count(), 10, "{page}");

        // A fresh login: the password leads to the code page, and nothing else opens.
        let login = browser_client();
        let t = app.form_csrf(&login, "/developers/login").await;
        let r = app
            .submit(
                &login,
                "/developers/login",
                &[
                    ("email", "page@fintech.example"),
                    ("password", PASSWORD),
                    ("csrf_token", &t),
                ],
            )
            .await;
        assert_eq!(r.status(), 303);
        assert_eq!(r.headers()["location"], "/developers/login/second-factor");
        let r = login
            .get(app.url("/developers/clients"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "{backend:?}");
        assert_eq!(r.headers()["location"], "/developers/login");
        let page = app.page(&login, "/developers/login/second-factor").await;
        let csrf = csrf_from_html(&page).unwrap();
        let r = app
            .submit(
                &login,
                "/developers/login/second-factor",
                &[("code", "12345x"), ("csrf_token", &csrf)],
            )
            .await;
        assert_eq!(r.status(), 400, "{backend:?}");
        assert!(
            r.text()
                .await
                .unwrap()
                .contains("wrong or already used code")
        );
        let r = app
            .submit(
                &login,
                "/developers/login/second-factor",
                &[
                    ("code", app.totp_code(&secret, 1).as_str()),
                    ("csrf_token", &csrf),
                ],
            )
            .await;
        assert_eq!(r.status(), 303, "{backend:?}");
        assert_eq!(r.headers()["location"], "/developers");
        let r = login
            .get(app.url("/developers/clients"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{backend:?}");
        let page = app.page(&login, "/developers/second-factor").await;
        assert!(page.contains("10 recovery code(s) left"), "{page}");
        app.stop().await;
    }
}

#[tokio::test]
async fn a_reset_staff_member_enrols_again_and_loses_their_sessions() {
    for backend in backends() {
        let app = spawn_app(backend).await;
        let full = app.staff_token("ops1").await;
        assert_eq!(get_status(&app, "/api/v1/admin/kyc", &full).await, 200);
        let p = app.platform.clone();
        let reset = tokio::task::spawn_blocking(move || {
            developer_portal::second_factor::reset_staff(&p, " OPS1 ")
        })
        .await
        .unwrap();
        let (member, code) = reset.unwrap();
        assert_eq!(member.username, "ops1");
        // Given at creation, at enrolment (by the test's operator) and now by the reset.
        let issued = app.audit_actions().await;
        let issued = issued
            .iter()
            .filter(|a| *a == "second_factor.enrolment_code_issued");
        assert_eq!(issued.count(), 3, "{backend:?}");
        assert_eq!(
            get_status(&app, "/api/v1/admin/kyc", &full).await,
            401,
            "{backend:?}"
        );
        assert!(stored_factors(&app).await.is_empty());
        let (owing, due) = password_login(&app, "ops1").await;
        assert_eq!(due, "enrol", "{backend:?}");
        // The reset's enrolment code sets the new authenticator up.
        let body = json!({ "enrolment_code": code.as_str() });
        let r = app.api(Method::POST, STAFF_ENROL, Some(&owing), Some(&body));
        assert_eq!(r.await.status(), 200, "{backend:?}");
        assert_audited(
            &app,
            &["second_factor.reset", "second_factor.enrolment_code_issued"],
        )
        .await;
        let p = app.platform.clone();
        let unknown = tokio::task::spawn_blocking(move || {
            developer_portal::second_factor::reset_staff(&p, "nobody")
        })
        .await
        .unwrap();
        assert!(matches!(
            unknown,
            Err(developer_portal::PortalError::NotFound(_))
        ));
        app.stop().await;
    }
}

/// `consent admin reset-second-factor` on the embedded database.
#[test]
fn the_reset_command_names_the_staff_member_or_fails() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let run = |args: &[&str]| {
        e2e_tests::run_consent(
            env!("CARGO_BIN_EXE_consent-e2e"),
            &data,
            &[("CONSENT_ADMIN_PASSWORD", PASSWORD)],
            args,
        )
    };
    let created = run(&[
        "admin",
        "create",
        "--username",
        "ops1",
        "--display-name",
        "Ops",
    ]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    // The first login's enrolment code: 80 bits as four groups of four, printed once.
    let printed = String::from_utf8_lossy(&created.stdout);
    let code = printed.rsplit(": ").next().unwrap().trim();
    assert!(printed.contains("enrolment code (shown once"), "{printed}");
    assert_eq!(code.len(), 19, "{printed}");
    let out = run(&["admin", "reset-second-factor", "--username", "ops1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("removed"), "{printed}");
    assert!(printed.contains("enrolment code (shown once"), "{printed}");
    let out = run(&["admin", "reset-second-factor", "--username", "nobody"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    // Roles: created with the default (support), changed by the CLI, unknown names refused.
    let roles = |args: &[&str]| {
        let mut all = vec!["admin", "set-staff-roles"];
        all.extend_from_slice(args);
        run(&all)
    };
    assert!(
        !roles(&["--username", "ops1", "--roles", "root"])
            .status
            .success()
    );
    assert!(
        !roles(&["--username", "nobody", "--roles", "security"])
            .status
            .success()
    );
    let out = roles(&["--username", "ops1", "--roles", "security,compliance"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("compliance,security"));
    let bad = run(&[
        "admin",
        "create",
        "--username",
        "ops2",
        "--display-name",
        "Ops",
        "--roles",
        "admin",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown role"));
}

/// Guesses sent all at once are bounded as well: attempts are counted before the codes are
/// checked, so a burst gets at most the attempt allowance, then every answer is 429.
#[tokio::test]
async fn a_burst_of_concurrent_guesses_is_capped_per_account() {
    use developer_portal::second_factor::ATTEMPTS_PER_ACCOUNT;
    for backend in backends() {
        let app = spawn_app(backend).await;
        app.create_staff("ops1").await;
        let (owing, _) = password_login(&app, "ops1").await;
        let (secret, _, _) = app.enrol(&owing).await;
        let (login, _) = password_login(&app, "ops1").await;
        let right = app.totp_code(&secret, 1);
        let wrong = if right == "000000" {
            "111111"
        } else {
            "000000"
        };
        let mut burst = tokio::task::JoinSet::new();
        for _ in 0..30 {
            let (client, url, login) = (app.client.clone(), app.url(STAFF_VERIFY), login.clone());
            burst.spawn(async move {
                let r = client
                    .post(url)
                    .bearer_auth(login)
                    .json(&json!({ "code": wrong }))
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), ())
            });
        }
        let answers = burst.join_all().await;
        let checked = answers.iter().filter(|(s, _)| *s == 400).count() as u64;
        let refused = answers.iter().filter(|(s, _)| *s == 429).count() as u64;
        assert_eq!(checked + refused, 30, "{answers:?}");
        // The enrolment's code was one attempt already.
        assert!(
            checked < ATTEMPTS_PER_ACCOUNT,
            "{checked} guesses checked {backend:?}"
        );
        let (s, _) = send_code(&app, STAFF_VERIFY, &login, &right).await;
        assert_eq!(s, 429, "{backend:?}");
        app.stop().await;
    }
}

/// Staff enrolment is not trust on first use: the password alone starts nothing without the
/// enrolment code the operator handed over, and the enrolment belongs to the login that
/// started it.
#[tokio::test]
async fn a_staff_member_enrols_only_with_their_enrolment_code_in_their_own_login() {
    use platform::storage::schema::enrolment_codes;
    for backend in backends() {
        let app = spawn_app(backend).await;
        let p = app.platform.clone();
        let created = tokio::task::spawn_blocking(move || {
            let roles = [developer_portal::StaffRole::Support];
            developer_portal::create_staff_user(&p, "ops1", "Ops One", PASSWORD, &roles)
        })
        .await
        .unwrap()
        .expect("created");
        let (ops1, code) = (created.0.id, created.1.to_string());
        let ops2 = app.create_staff("ops2").await;
        let other_code = app.enrolment_code(&ops2).await;
        let (owing, _) = password_login(&app, "ops1").await;
        let enrol = |body: Option<Value>| {
            let (app, owing) = (&app, owing.clone());
            async move {
                let r = app.api(Method::POST, STAFF_ENROL, Some(&owing), body.as_ref());
                status_and_body(r.await).await
            }
        };

        // No body, an empty object, an unknown field, an empty or wrong code, another staff
        // member's: refused, and nothing stored.
        let (s, v) = enrol(None).await;
        assert_eq!(s, 415, "no body {backend:?}");
        assert_eq!(v["status"], 415, "{v}");
        for body in [
            json!({}),
            json!({ "enrolment_code": code, "extra": 1 }),
            json!({ "enrolment_code": 7 }),
        ] {
            let (s, v) = enrol(Some(body.clone())).await;
            assert_eq!(s, 400, "{body} {v} {backend:?}");
        }
        for wrong in ["", "aaaa-bbbb-cccc-dddd", &other_code] {
            let (s, v) = enrol(Some(json!({ "enrolment_code": wrong }))).await;
            assert_eq!(s, 400, "{wrong} {v} {backend:?}");
            assert_eq!(v["errors"][0]["field"], "enrolment_code", "{v}");
        }
        assert!(stored_factors(&app).await.is_empty(), "{backend:?}");
        assert!(
            !app.audit_actions()
                .await
                .iter()
                .any(|a| a == "second_factor.enrolment_started")
        );

        // The right code (case and spacing do not matter) starts it.
        let typed = format!(" {} ", code.to_uppercase());
        let (s, v) = enrol(Some(json!({ "enrolment_code": typed }))).await;
        assert_eq!(s, 200, "{v} {backend:?}");
        let secret = v["secret"].as_str().unwrap().to_string();

        // Another login with the same password neither sees nor confirms it.
        let (second, _) = password_login(&app, "ops1").await;
        let (s, _) = send_code(&app, STAFF_CONFIRM, &second, &app.totp_code(&secret, 0)).await;
        assert_eq!(s, 409, "another login confirms {backend:?}");
        let web = app.staff_password_browser("ops1").await;
        let page = app.page(&web, "/developers/staff/second-factor").await;
        assert!(page.contains("name=\"enrolment_code\""), "{page}");
        assert!(
            !page.contains(&secret),
            "another login's page shows the secret"
        );

        // The code is not used up by a start: the other login, with it, starts again (a new
        // secret). The first login's code then confirms nothing; the restarted one confirms,
        // and the code is used up.
        let body = json!({ "enrolment_code": code });
        let r = app.api(Method::POST, STAFF_ENROL, Some(&second), Some(&body));
        let (s, v) = status_and_body(r.await).await;
        assert_eq!(s, 200, "{v} {backend:?}");
        let restarted = v["secret"].as_str().unwrap().to_string();
        assert_ne!(restarted, secret);
        let (s, _) = send_code(&app, STAFF_CONFIRM, &owing, &app.totp_code(&secret, 0)).await;
        assert_eq!(s, 409, "a replaced enrolment confirmed {backend:?}");
        let code_now = app.totp_code(&restarted, 0);
        let (s, v) = send_code(&app, STAFF_CONFIRM, &second, &code_now).await;
        assert_eq!(s, 200, "{v} {backend:?}");
        let left = app.platform.db.run(move |c| {
            Ok(enrolment_codes::table
                .filter(enrolment_codes::subject_id.eq(ops1))
                .count()
                .get_result::<i64>(c)?)
        });
        assert_eq!(left.await.unwrap(), 0, "{backend:?}");
        assert_audited(
            &app,
            &[
                "second_factor.enrolled",
                "second_factor.enrolment_code_refused",
            ],
        )
        .await;

        // A code replaced by a new one is refused.
        let p = app.platform.clone();
        let created = tokio::task::spawn_blocking(move || {
            let roles = [developer_portal::StaffRole::Support];
            developer_portal::create_staff_user(&p, "ops3", "Ops Three", PASSWORD, &roles)
        });
        let (ops3, first) = created.await.unwrap().expect("created");
        app.enrolment_code(&ops3.id).await;
        let (owing3, _) = password_login(&app, "ops3").await;
        let body = json!({ "enrolment_code": first.as_str() });
        let r = app.api(Method::POST, STAFF_ENROL, Some(&owing3), Some(&body));
        assert_eq!(r.await.status(), 400, "a replaced code {backend:?}");

        // Wrong enrolment codes count towards the account's limit: then even the right one is
        // refused until the window ends. On the page, a wrong code is refused with the form
        // again; through the API, an expired one too.
        let web = app.staff_password_browser("ops2").await;
        let t = app.form_csrf(&web, "/developers/staff/second-factor").await;
        let form = [
            ("step", "start"),
            ("enrolment_code", "aaaa-bbbb-cccc-dddd"),
            ("csrf_token", &t),
        ];
        let r = app
            .submit(&web, "/developers/staff/second-factor", &form)
            .await;
        assert_eq!(r.status(), 400, "{backend:?}");
        let page = r.text().await.unwrap();
        assert!(page.contains("wrong or expired enrolment code"), "{page}");
        assert!(!page.contains("id=\"secret\""), "{page}");

        let (owing2, _) = password_login(&app, "ops2").await;
        let good = json!({ "enrolment_code": other_code });
        let expire = |at: chrono::NaiveDateTime| {
            let id = ops2.clone();
            app.platform.db.write(move |c| {
                Ok(diesel::update(
                    enrolment_codes::table.filter(enrolment_codes::subject_id.eq(id)),
                )
                .set(enrolment_codes::expires_at.eq(at))
                .execute(c)?)
            })
        };
        let now = app.platform.now().naive_utc();
        assert_eq!(
            expire(now - chrono::TimeDelta::seconds(1)).await.unwrap(),
            1
        );
        let r = app.api(Method::POST, STAFF_ENROL, Some(&owing2), Some(&good));
        let (s, v) = status_and_body(r.await).await;
        assert_eq!(s, 400, "expired {v} {backend:?}");
        expire(now + chrono::TimeDelta::hours(1)).await.unwrap();
        for n in 2..developer_portal::second_factor::FAILURES_PER_ACCOUNT {
            let bad = ["aaaa-bbbb-cccc-dddd".to_string(), "a".repeat(65)][n as usize % 2].clone();
            let bad = json!({ "enrolment_code": bad });
            let r = app.api(Method::POST, STAFF_ENROL, Some(&owing2), Some(&bad));
            let (s, v) = status_and_body(r.await).await;
            assert_eq!(s, 400, "{v} {backend:?}");
            assert_eq!(v["errors"][0]["field"], "enrolment_code", "{v}");
        }
        let r = app.api(Method::POST, STAFF_ENROL, Some(&owing2), Some(&good));
        assert_eq!(r.await.status(), 429, "{backend:?}");
        app.stop().await;
    }
}

/// Password tries at enrolment are under the account's second-factor limit: after five wrong
/// ones even the right password is refused until the window ends.
#[tokio::test]
async fn a_developers_enrolment_password_tries_are_limited() {
    use developer_portal::second_factor::FAILURES_PER_ACCOUNT;
    for backend in backends() {
        let app = spawn_app(backend).await;
        let dev = app.developer_token("guessed@fintech.example").await;
        let enrol = |password: &str| {
            let body = json!({ "password": password });
            let (app, dev) = (&app, dev.clone());
            async move {
                let r = app.api(Method::POST, DEV_FACTOR, Some(&dev), Some(&body));
                r.await.status().as_u16()
            }
        };
        for _ in 0..FAILURES_PER_ACCOUNT {
            assert_eq!(enrol("not the password").await, 400, "{backend:?}");
        }
        assert_eq!(enrol(PASSWORD).await, 429, "{backend:?}");
        assert!(stored_factors(&app).await.is_empty(), "{backend:?}");
        app.stop().await;
    }
}
