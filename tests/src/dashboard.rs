//! Helpers for the customer dashboard tests: connecting apps through the real OAuth flow, a
//! second logged-in customer, and the session's CSRF token.

use diesel::prelude::*;
use platform::crypto::PlainToken;
use platform::storage::schema::{clients, developers};
use serde_json::{Value, json};

use crate::TestApp;
use crate::oauth::*;

/// What a demo app asks for: everything, in the first half of 2026, at two merchants.
pub fn rar_all() -> String {
    details(json!({
        "type": "account_access",
        "actions": ["accounts:read", "balances:read", "transactions:read"],
        "transactions_from": "2026-01-01",
        "transactions_until": "2026-06-30",
        "merchants": ["m_fresh_market", "m_bean_there"],
    }))
}

/// Connects `client` for the customer logged in on `app.client`, narrowed to `account`,
/// accounts + transactions (no balances), February-March 2026 and Bean There Coffee; exchanges
/// the code and returns the token response.
pub async fn connect_app(
    app: &TestApp,
    client: (&str, &str),
    redirect: &str,
    account: &str,
) -> Value {
    let (verifier, challenge) = pkce();
    let loc = app
        .authorize_with_par(
            client,
            redirect,
            &rar_all(),
            &challenge,
            &[
                ("decision", "approve"),
                ("account", account),
                ("action", "accounts:read"),
                ("action", "transactions:read"),
                ("transactions_from", "2026-02-01"),
                ("transactions_until", "2026-03-31"),
                ("merchant", "m_bean_there"),
            ],
        )
        .await;
    let code = query_param(&loc, "code").expect("code in redirect");
    let r = app
        .post_token(
            client,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", redirect),
                ("code_verifier", &verifier),
            ],
        )
        .await;
    assert_eq!(r.status(), 200, "code exchange");
    r.json().await.unwrap()
}

/// A separate HTTP client (own cookie jar) logged in as `username`.
pub async fn customer_client(app: &TestApp, username: &str) -> reqwest::Client {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .build()
        .unwrap();
    let page = client
        .get(app.url("/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = csrf_from(&page);
    let r = client
        .post(app.url("/login"))
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("username", username),
            ("password", DEMO_PASSWORD),
            ("next", "/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "login of {username}");
    client
}

/// The session's CSRF token, as the mobile app reads it (`GET /api/v1/me`).
pub async fn me_csrf(app: &TestApp, client: &reqwest::Client) -> String {
    let r = client.get(app.url("/api/v1/me")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let me: Value = r.json().await.unwrap();
    me["csrf_token"].as_str().unwrap().to_string()
}

/// Registers a sandbox client whose developer has not passed KYC.
pub async fn insert_unverified_client(app: &TestApp, id: &str, redirect: &str, secret: &str) {
    let (id, redirect) = (id.to_string(), redirect.to_string());
    let hash = PlainToken::from_presented(secret)
        .hash()
        .as_str()
        .to_string();
    let now = chrono::Utc::now().naive_utc();
    app.platform
        .db
        .write(move |c| {
            let dev = format!("dev_unverified_{id}");
            diesel::insert_into(developers::table)
                .values((
                    developers::id.eq(&dev),
                    developers::email.eq(format!("{id}@unverified.example")),
                    developers::display_name.eq("Unverified Dev"),
                    developers::password_hash.eq("x"),
                    developers::created_at.eq(now),
                ))
                .execute(c)?;
            diesel::insert_into(clients::table)
                .values((
                    clients::id.eq(&id),
                    clients::developer_id.eq(dev),
                    clients::name.eq(format!("{id} app")),
                    clients::environment.eq("sandbox"),
                    clients::redirect_uris.eq(json!([redirect]).to_string()),
                    clients::auth_method.eq("client_secret_basic"),
                    clients::secret_hash.eq(hash),
                    clients::allowed_actions
                        .eq(r#"["accounts:read","balances:read","transactions:read"]"#),
                    clients::status.eq("active"),
                    clients::created_at.eq(now),
                    clients::updated_at.eq(now),
                ))
                .execute(c)?;
            Ok(())
        })
        .await
        .unwrap();
}

/// A grant's (status, revoked_by) straight from storage.
pub async fn grant_status(app: &TestApp, grant_id: &str) -> (String, Option<String>) {
    use platform::storage::schema::grant_rows;
    let id = grant_id.to_string();
    app.platform
        .db
        .run(move |c| {
            Ok(grant_rows::table
                .filter(grant_rows::id.eq(id))
                .select((grant_rows::status, grant_rows::revoked_by))
                .first(c)?)
        })
        .await
        .unwrap()
}

/// `POST /oauth2/token` with a refresh token; returns (status, body).
pub async fn refresh(app: &TestApp, client: (&str, &str), token: &str) -> (u16, Value) {
    let r = app
        .post_token(
            client,
            &[("grant_type", "refresh_token"), ("refresh_token", token)],
        )
        .await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A merchant's display name.
pub async fn merchant_name(app: &TestApp, id: &str) -> String {
    use platform::storage::schema::merchants;
    let id = id.to_string();
    app.platform
        .db
        .run(move |c| {
            Ok(merchants::table
                .filter(merchants::id.eq(id))
                .select(merchants::name)
                .first(c)?)
        })
        .await
        .unwrap()
}
