//! The customer's pages as a customer reads them: the consent page's summary and quick period
//! choices, the dashboard's summaries, last reads, revocation confirmations and paged history,
//! and the self-hosted stylesheet and script under a CSP that allows no inline style.

use chrono::{Datelike, Months, NaiveDate, Utc};
use diesel::prelude::*;
use e2e_tests::dashboard::*;
use e2e_tests::oauth::*;
use e2e_tests::{Backend, TestApp, backends, spawn_demo_app};
use platform::audit::{Actor, NewEvent, Target};
use platform::storage::schema::{clients, grant_rows};
use serde_json::json;

const DEMO: (&str, &str) = (DEMO_CLIENT, DEMO_SECRET);

async fn client_name(app: &TestApp) -> String {
    app.platform
        .db
        .run(|c| {
            Ok(clients::table
                .filter(clients::id.eq(DEMO_CLIENT))
                .select(clients::name)
                .first(c)?)
        })
        .await
        .unwrap()
}

fn day(d: NaiveDate) -> String {
    d.format("%-d %b %Y").to_string()
}

/// The text of the first element with `class="summary"` (maud escapes `&` as `&amp;`).
fn summary(html: &str) -> String {
    let start = html.find("class=\"summary\"").expect("a summary");
    let rest = &html[start..];
    let open = rest.find('>').unwrap() + 1;
    let close = rest.find("</p>").unwrap();
    rest[open..close].replace("&amp;", "&")
}

/// The consent page for `rar`, opened by the logged-in customer: (path, html, PKCE verifier).
async fn consent_page(app: &TestApp, rar: &str) -> (String, String, String) {
    let (verifier, challenge) = pkce();
    let url = app.pushed_authorize_url(rar, &challenge).await;
    let auth = app.client.get(url).send().await.unwrap();
    let (path, html) = app.get_consent_page(auth).await;
    (path, html, verifier)
}

async fn grants_count(app: &TestApp) -> i64 {
    app.platform
        .db
        .run(|c| Ok(grant_rows::table.count().get_result(c)?))
        .await
        .unwrap()
}

#[tokio::test]
async fn the_consent_page_says_in_one_sentence_what_the_app_will_see() {
    let app = spawn_demo_app(Backend::Sqlite).await;
    app.login_customer("alice").await;
    let accounts = app.account_ids("alice").await;
    let name = client_name(&app).await;
    let (fresh, bean) = (
        merchant_name(&app, "m_fresh_market").await,
        merchant_name(&app, "m_bean_there").await,
    );
    let expires = Utc::now().date_naive() + chrono::Days::new(40);
    let rar = details(json!({
        "type": "account_access",
        "actions": ["transactions:read", "accounts:read", "balances:read"],
        "transactions_from": "2026-01-01",
        "transactions_until": "2026-06-30",
        "merchants": ["m_fresh_market", "m_bean_there"],
        "expires_at": format!("{expires}T12:00:00Z"),
    }));
    let (_, html, _) = consent_page(&app, &rar).await;
    assert_eq!(
        summary(&html),
        format!(
            "{name} will see account details, balances and transactions of {} accounts from \
             1 Jan 2026 to 30 Jun 2026, only with {fresh} and {bean}, until {}.",
            accounts.len(),
            day(expires)
        )
    );
    // Progressive enhancement: the page's own script, and nothing inline.
    assert!(html.contains(r#"<script src="/assets/consent.js" defer></script>"#));
    assert!(html.contains(r#"<link rel="stylesheet" href="/assets/app.css">"#));
    assert!(
        !html.contains("<style") && !html.contains(" style="),
        "no inline styles"
    );
    for (value, label) in [
        ("this_year", "This year"),
        ("last_3_months", "The last 3 months"),
        ("last_12_months", "The last 12 months"),
    ] {
        assert!(
            html.contains(&format!(
                r#"<input type="radio" name="period" value="{value}">{label}"#
            )),
            "{value}"
        );
    }

    // Without transactions there is no period or merchant in the sentence.
    let rar = details(json!({"type": "account_access", "actions": ["balances:read"]}));
    let (_, html, _) = consent_page(&app, &rar).await;
    let s = summary(&html);
    assert!(
        s.starts_with(&format!("{name} will see balances of ")),
        "{s}"
    );
    assert!(!s.contains("from") && !s.contains("only with"), "{s}");
    app.stop().await;
}

/// "This year", "the last 3 months": chosen without typing a date (and without JavaScript),
/// computed by the server and cut to the period the app asked for.
#[tokio::test]
async fn a_quick_period_choice_is_cut_to_what_the_app_asked_for() {
    for backend in backends() {
        let app = spawn_demo_app(backend).await;
        app.login_customer("alice").await;
        let acc = app.account_ids("alice").await[0].clone();
        let today = Utc::now().date_naive();
        let approve = |period: &'static str| -> Vec<(&'static str, String)> {
            vec![
                ("decision", "approve".to_string()),
                ("account", acc.clone()),
                ("action", "transactions:read".to_string()),
                ("period", period.to_string()),
                // Ignored when a quick choice is made.
                ("transactions_from", "2026-02-01".to_string()),
                ("transactions_until", "2026-02-02".to_string()),
            ]
        };
        let decide = |rar: String, fields: Vec<(&'static str, String)>| {
            let app = &app;
            async move {
                let (path, html, verifier) = consent_page(app, &rar).await;
                let fields: Vec<(&str, &str)> =
                    fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
                (app.post_consent(&path, &html, &fields).await, verifier)
            }
        };
        let whole = details(json!({"type": "account_access", "actions": ["transactions:read"]}));
        let first_half = details(json!({
            "type": "account_access",
            "actions": ["transactions:read"],
            "transactions_from": format!("{}-01-01", today.year()),
            "transactions_until": format!("{}-06-30", today.year()),
        }));

        // The whole history was asked for: the last 3 months, ending today.
        let (r, verifier) = decide(whole.clone(), approve("last_3_months")).await;
        assert_eq!(r.status(), 303, "{backend:?}");
        let granted = granted_detail(&app, &r, &verifier).await;
        let start = today.checked_sub_months(Months::new(3)).unwrap();
        assert_eq!(granted["transactions_from"], format!("{start}T00:00:00Z"));
        assert_eq!(granted["transactions_until"], format!("{today}T23:59:59Z"));

        // This year, cut to the first half the app asked for.
        let (r, verifier) = decide(first_half.clone(), approve("this_year")).await;
        assert_eq!(r.status(), 303);
        let granted = granted_detail(&app, &r, &verifier).await;
        assert_eq!(
            granted["transactions_from"],
            format!("{}-01-01T00:00:00Z", today.year())
        );
        assert_eq!(
            granted["transactions_until"],
            format!("{}-06-30T23:59:59Z", today.year())
        );

        // Refused, nothing written: a period with nothing left of it once cut (the last 3
        // months never reach last year's first half), and a name the page never offers.
        let before = grants_count(&app).await;
        let last_year = details(json!({
            "type": "account_access",
            "actions": ["transactions:read"],
            "transactions_from": format!("{}-01-01", today.year() - 1),
            "transactions_until": format!("{}-06-30", today.year() - 1),
        }));
        let (r, _) = decide(last_year, approve("last_3_months")).await;
        assert_eq!(r.status(), 400);
        assert!(
            r.text()
                .await
                .unwrap()
                .contains("outside the one the app asked for")
        );
        let (r, _) = decide(whole.clone(), approve("since_the_dawn_of_time")).await;
        assert_eq!(r.status(), 400);
        assert!(r.text().await.unwrap().contains("unknown period"));
        assert_eq!(grants_count(&app).await, before);
        app.stop().await;
    }
}

/// The authorization detail granted by the consent decision `r` (its code exchanged).
async fn granted_detail(app: &TestApp, r: &reqwest::Response, verifier: &str) -> serde_json::Value {
    let code = query_param(&location(r), "code").expect("a code");
    let t = app
        .exchange_code(DEMO, &code, DEMO_REDIRECT, verifier)
        .await;
    assert_eq!(t.status(), 200);
    let tokens: serde_json::Value = t.json().await.unwrap();
    tokens["authorization_details"][0].clone()
}

#[tokio::test]
async fn the_dashboard_summarises_each_app_and_confirms_a_revocation() {
    for backend in backends() {
        let app = spawn_demo_app(backend).await;
        app.login_customer("alice").await;
        let alice = app.account_ids("alice").await;
        let tokens = connect_app(&app, DEMO, DEMO_REDIRECT, &alice[1]).await;
        let grant_id = tokens["grant_id"].as_str().unwrap().to_string();
        let name = client_name(&app).await;
        let bean = merchant_name(&app, "m_bean_there").await;

        let html = app.get("/account/apps").await.text().await.unwrap();
        let s = summary(&html);
        assert!(
            s.starts_with(&format!(
                "{name} can see account details and transactions of 1 account from 1 Feb 2026 \
                 to 31 Mar 2026, only with {bean}, until "
            )),
            "{s}"
        );
        assert!(html.contains("Nothing read yet"), "no read yet");

        // A read through the token shows on the card, from the audit log.
        let r = app
            .client
            .get(app.url("/sandbox/v1/accounts"))
            .bearer_auth(tokens["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let html = app.get("/account/apps").await.text().await.unwrap();
        assert!(
            html.contains("The app read your account list, "),
            "last read shown"
        );

        // Revoking from the page comes back with a confirmation naming the app.
        let csrf = csrf_from(&html);
        let r = app
            .post_form(
                &format!("/account/apps/{grant_id}/revoke"),
                None,
                &[("csrf_token", &csrf)],
            )
            .await;
        assert_eq!(r.status(), 303);
        let back = location(&r);
        assert_eq!(back, format!("/account/apps?revoked={grant_id}"));
        let html = app.get(&back).await.text().await.unwrap();
        assert!(
            html.contains(&format!("Done: {name} can no longer see your data.")),
            "confirmation"
        );
        assert!(summary(&html).contains(" could see "), "an ended grant");

        // The confirmation names only the customer's own ended grants.
        for other in ["g_nope", "all-but-not-quite", &grant_id.replace('g', "x")] {
            let html = app
                .get(&format!("/account/apps?revoked={other}"))
                .await
                .text()
                .await
                .unwrap();
            assert!(!html.contains("data-revoked"), "{other}");
        }
        let r = app
            .post_form("/account/apps/revoke-all", None, &[("csrf_token", &csrf)])
            .await;
        assert_eq!(location(&r), "/account/apps?revoked=all");
        app.stop().await;
    }
}

#[tokio::test]
async fn a_grants_history_is_paged_newest_first() {
    for backend in backends() {
        let app = spawn_demo_app(backend).await;
        app.login_customer("alice").await;
        let alice = app.account_ids("alice").await;
        let tokens = connect_app(&app, DEMO, DEMO_REDIRECT, &alice[0]).await;
        let grant_id = tokens["grant_id"].as_str().unwrap().to_string();
        let id = grant_id.clone();
        let now = app.platform.now();
        app.platform
            .db
            .write(move |c| {
                for n in 0..45 {
                    NewEvent::new(
                        Actor::client(DEMO_CLIENT),
                        "resource.read",
                        Target::new("grant", id.clone()),
                    )
                    .details(json!({"resource": "balances", "n": n}))
                    .record(c, now)?;
                }
                Ok(())
            })
            .await
            .unwrap();
        let path = format!("/account/apps/{grant_id}");
        let rows = |html: &str| html.matches("<tr data-action=").count();
        let older = |html: &str| {
            html.split("?before=")
                .nth(1)
                .map(|s| s[..s.find('#').unwrap()].to_string())
        };
        let first = app.get(&path).await.text().await.unwrap();
        assert_eq!(rows(&first), 20);
        assert!(!first.contains("Newest events"));
        let cursor = older(&first).expect("a link to older events");
        let second = app
            .get(&format!("{path}?before={cursor}"))
            .await
            .text()
            .await
            .unwrap();
        assert_eq!(rows(&second), 20);
        assert!(second.contains("Newest events"));
        let cursor2 = older(&second).expect("a third page");
        let third = app
            .get(&format!("{path}?before={cursor2}"))
            .await
            .text()
            .await
            .unwrap();
        // 45 reads and the grant's own events (consent, token), no event twice.
        assert!(rows(&third) >= 5 && rows(&third) < 20, "{}", rows(&third));
        assert!(older(&third).is_none(), "the last page");
        // A cursor that is not a number, or from before everything, is a page, not an error.
        for q in ["?before=abc", "?before=-5", "?before=1"] {
            let r = app.get(&format!("{path}{q}")).await;
            assert_eq!(r.status(), 200, "{q}");
        }
        app.stop().await;
    }
}

#[tokio::test]
async fn pages_load_one_stylesheet_under_a_csp_without_inline_styles() {
    let app = spawn_demo_app(Backend::Sqlite).await;
    let r = app.get("/login").await;
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("style-src 'self';"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    let html = r.text().await.unwrap();
    assert!(html.contains(r#"<link rel="stylesheet" href="/assets/app.css">"#));

    for (path, kind) in [
        ("/assets/app.css", "text/css; charset=utf-8"),
        ("/assets/consent.js", "text/javascript; charset=utf-8"),
    ] {
        let r = app.get(path).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], kind);
        let etag = r.headers()["etag"].to_str().unwrap().to_string();
        assert!(!r.text().await.unwrap().is_empty());
        let again = app
            .client
            .get(app.url(path))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path}");
        assert!(again.text().await.unwrap().is_empty());
    }
    for path in ["/assets/other.css", "/assets/..%2Fapp.css", "/assets/"] {
        let r = app.get(path).await;
        assert_eq!(r.status(), 404, "{path}");
    }
    app.stop().await;
}

/// In Chromium: the login and consent pages pass axe-core (WCAG 2.1 AA, zero violations) and
/// reflow at 320 px; the summary follows the customer's narrowing; "the last 3 months" fills in
/// its dates; and what the customer chose is what the token carries (merchant included).
#[tokio::test]
async fn the_consent_page_in_chromium_is_accessible_and_summarises_as_the_customer_narrows() {
    let backend = Backend::Sqlite;
    let app = spawn_demo_app(backend).await;
    let name = client_name(&app).await;
    let (verifier, challenge) = pkce();
    let rar = details(json!({
        "type": "account_access",
        "actions": ["balances:read", "transactions:read"],
    }));
    let authorize = app.pushed_authorize_url(&rar, &challenge).await;
    let shot = e2e_tests::browser::screenshot_path("consent", backend);
    let Some(r) = e2e_tests::browser::run(
        "consent-page.mjs",
        &[
            &authorize,
            DEMO_REDIRECT,
            "alice",
            DEMO_PASSWORD,
            shot.to_str().unwrap(),
        ],
    )
    .await
    else {
        return;
    };
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["a11y"], json!([]), "axe-core and reflow: {r}");
    let text = |k: &str| r[k].as_str().unwrap().to_string();
    let accounts = app.account_ids("alice").await.len();
    assert!(
        text("initial").starts_with(&format!(
            "{name} will see balances and transactions of {accounts} accounts from any date, until "
        )),
        "{r}"
    );
    assert!(
        text("oneAccount").contains(" of 1 account from any date"),
        "{r}"
    );
    let today = Utc::now().date_naive();
    let start = today.checked_sub_months(Months::new(3)).unwrap();
    assert_eq!(text("from"), start.to_string(), "{r}");
    assert_eq!(text("until"), today.to_string(), "{r}");
    assert!(
        text("period").contains(&format!(" from {} to {},", day(start), day(today))),
        "{r}"
    );
    let merchant_id = text("merchantId");
    let merchant = merchant_name(&app, &merchant_id).await;
    assert!(
        text("withMerchant").contains(&format!(", only with {merchant}, until ")),
        "{r}"
    );
    assert_eq!(r["datesChecked"], true, "typing a date chooses the dates");

    let code = query_param(&text("callbackUrl"), "code").expect("a code");
    let t = app
        .exchange_code(DEMO, &code, DEMO_REDIRECT, &verifier)
        .await;
    assert_eq!(t.status(), 200);
    let tokens: serde_json::Value = t.json().await.unwrap();
    let granted = &tokens["authorization_details"][0];
    assert_eq!(granted["accounts"].as_array().unwrap().len(), 1);
    assert_eq!(granted["merchants"], json!([merchant_id]));
    assert_eq!(granted["transactions_from"], format!("{start}T00:00:00Z"));
    assert_eq!(granted["transactions_until"], format!("{today}T23:59:59Z"));
    app.stop().await;
}
