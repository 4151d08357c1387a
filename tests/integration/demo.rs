//! `--demo` seed: the documented data, idempotent, credentials that work, PII encrypted.

use diesel::prelude::*;
use e2e_tests::{backends, spawn_demo_app};
use platform::crypto::{PlainToken, verify_password};
use platform::storage::schema::*;

#[tokio::test]
async fn demo_seed_creates_the_documented_data_once() {
    for backend in backends() {
        let app = spawn_demo_app(backend).await;
        let report = app.demo.clone().unwrap();
        assert!(
            report.contains("c_demo-client") && report.contains("http://127.0.0.1:8081/callback")
        );
        let p = app.platform.clone();
        let counts = || {
            let p = p.clone();
            async move {
                p.db.run(|c| {
                    Ok((
                        customers::table.count().get_result::<i64>(c)?,
                        accounts::table.count().get_result::<i64>(c)?,
                        merchants::table.count().get_result::<i64>(c)?,
                        transactions::table.count().get_result::<i64>(c)?,
                        staff::table.count().get_result::<i64>(c)?,
                        clients::table.count().get_result::<i64>(c)?,
                    ))
                })
                .await
                .unwrap()
            }
        };
        let first = counts().await;
        assert_eq!(
            (first.0, first.1, first.2, first.4, first.5),
            (2, 5, 20, 2, 1),
            "{backend:?}"
        );
        assert!(first.3 > 5 * 300, "a year of transactions: {}", first.3);

        // Transactions span about a year and use ~20 merchants.
        let (min, max, distinct) =
            p.db.run(|c| {
                let min = transactions::table
                    .select(diesel::dsl::min(transactions::booked_at))
                    .first::<Option<chrono::NaiveDateTime>>(c)?;
                let max = transactions::table
                    .select(diesel::dsl::max(transactions::booked_at))
                    .first::<Option<chrono::NaiveDateTime>>(c)?;
                let distinct = transactions::table
                    .select(transactions::merchant_id)
                    .distinct()
                    .load::<String>(c)?
                    .len();
                Ok((min.unwrap(), max.unwrap(), distinct))
            })
            .await
            .unwrap();
        assert!((max - min).num_days() >= 350, "{min} .. {max}");
        assert_eq!(distinct, 20);

        // Credentials from the settings work; secrets are stored hashed.
        let (alice_hash, ops_hash, secret_hash, kyc_legal): (String, String, String, String) =
            p.db.run(|c| {
                Ok((
                    customers::table
                        .filter(customers::username.eq("alice"))
                        .select(customers::password_hash)
                        .first(c)?,
                    staff::table
                        .filter(staff::username.eq("ops2"))
                        .select(staff::password_hash)
                        .first(c)?,
                    clients::table
                        .filter(clients::id.eq("c_demo-client"))
                        .select(clients::secret_hash)
                        .first(c)?,
                    kyc_submissions::table
                        .select(kyc_submissions::legal_name_enc)
                        .first(c)?,
                ))
            })
            .await
            .unwrap();
        assert!(alice_hash.starts_with("$argon2id$"));
        assert!(verify_password("demo-password-123", Some(&alice_hash)));
        // Staff do not share the demo password, nor one another's (four-eyes needs two people).
        assert!(!verify_password("demo-password-123", Some(&ops_hash)));
        let staff_password = |name: &str| {
            report
                .lines()
                .find_map(|l| {
                    l.trim()
                        .strip_prefix(&format!("staff:     {name} password "))
                        .and_then(|rest| rest.split_whitespace().next())
                        .map(str::to_string)
                })
                .unwrap_or_else(|| panic!("{name} in {report}"))
        };
        let (ops1, ops2) = (staff_password("ops1"), staff_password("ops2"));
        assert_ne!(ops1, ops2);
        assert!(verify_password(&ops2, Some(&ops_hash)));
        // Each demo staff member's first login sets up an authenticator with the enrolment code
        // printed beside the password.
        let code = report
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("ops1 enrolment code ")
                    .and_then(|rest| rest.split_whitespace().next())
            })
            .unwrap_or_else(|| panic!("ops1's enrolment code in {report}"));
        let r = app.post_admin_login("ops1", &ops1).await;
        let login: serde_json::Value = r.json().await.unwrap();
        assert_eq!(login["second_factor_due"], "enrol", "{login}");
        let owing = login["access_token"].as_str().unwrap();
        let body = serde_json::json!({ "enrolment_code": code });
        let r = app.api(
            reqwest::Method::POST,
            "/api/v1/admin/second-factor",
            Some(owing),
            Some(&body),
        );
        assert_eq!(r.await.status(), 200, "{backend:?}");
        assert!(
            platform::crypto::HashedToken::from_stored(secret_hash.clone())
                .matches(&PlainToken::from_presented("cs_test-demo-client-secret"))
        );
        assert!(!secret_hash.contains("cs_test"));
        assert!(
            !kyc_legal.contains("Demo Fintech"),
            "KYC PII encrypted at rest"
        );
        let kyc_id: String =
            p.db.run(|c| {
                Ok(kyc_submissions::table
                    .select(kyc_submissions::id)
                    .first(c)?)
            })
            .await
            .unwrap();
        let plain = p
            .master_key
            .cipher("kyc-pii")
            .decrypt_str(&kyc_legal, &format!("kyc_submissions.legal_name:{kyc_id}"))
            .unwrap();
        assert_eq!(plain, "Demo Fintech Ltd");

        // A PostgreSQL database that holds people is not seeded without --demo-reset (it may be
        // a real deployment); the embedded SQLite data dir is the developer's own.
        let again = consent::demo::seed(&p, false).await;
        if backend == e2e_tests::Backend::Postgres {
            let e = again.expect_err("refused").to_string();
            assert!(e.contains("--demo-reset"), "{e}");
        } else {
            again.unwrap();
        }
        // Seeding again changes no data.
        consent::demo::seed(&p, true).await.unwrap();
        assert_eq!(counts().await, first, "{backend:?}: seed is idempotent");
        app.stop().await;
    }
}
