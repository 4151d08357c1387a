//! Lifecycle notices on the dashboard, and consent extension (re-confirmation) from the page and
//! the JSON API, with a controllable clock.

use chrono::{DateTime, Duration, NaiveDateTime, SecondsFormat, Utc};
use diesel::prelude::*;
use e2e_tests::dashboard::{customer_client, me_csrf, refresh};
use e2e_tests::lifecycle::spawn_with_clock;
use e2e_tests::oauth::*;
use e2e_tests::{TestApp, backends};
use platform::clock::OffsetClock;
use platform::storage::schema::{audit_events, clients, grant_rows, webhook_outbox};
use serde_json::{Value, json};

const DEMO: (&str, &str) = (DEMO_CLIENT, DEMO_SECRET);

async fn app_with_clock(backend: e2e_tests::Backend) -> (TestApp, OffsetClock) {
    // Longer than the grants below: refresh tokens are capped at the grant's expiry.
    spawn_with_clock(backend, |s| {
        s.tokens.refresh_token_ttl = "180d".parse().unwrap()
    })
    .await
}

fn day(offset: i64) -> String {
    (Utc::now() + Duration::days(offset))
        .format("%Y-%m-%d")
        .to_string()
}

/// A real grant of alice (logged in on `app.client`) through PAR + consent + code exchange,
/// ending on `expires` (YYYY-MM-DD); returns the token response.
async fn grant(app: &TestApp, expires: &str) -> Value {
    let (verifier, challenge) = pkce();
    let acc = app.account_ids("alice").await[0].clone();
    let rar = details(
        json!({"type": "account_access", "actions": ["accounts:read"], "expires_at": expires}),
    );
    let loc = app
        .authorize_with_par(
            DEMO,
            DEMO_REDIRECT,
            &rar,
            &challenge,
            &[
                ("decision", "approve"),
                ("account", &acc),
                ("action", "accounts:read"),
            ],
        )
        .await;
    let code = query_param(&loc, "code").unwrap();
    let r = app
        .exchange_code(DEMO, &code, DEMO_REDIRECT, &verifier)
        .await;
    assert_eq!(r.status(), 200, "code exchange");
    r.json().await.unwrap()
}

fn id_of(tokens: &Value) -> String {
    tokens["grant_id"].as_str().unwrap().to_string()
}

fn ts(v: &Value) -> DateTime<Utc> {
    let s = v.as_str().unwrap_or_else(|| panic!("a timestamp, got {v}"));
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn secs(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn day_text(t: DateTime<Utc>) -> String {
    t.format("%-d %b %Y").to_string()
}

/// A grant's row as stored.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    status: String,
    created_at: DateTime<Utc>,
    authorized_at: Option<DateTime<Utc>>,
    expires_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    details: Value,
    expiry_warned_at: Option<NaiveDateTime>,
    dormancy_warned_at: Option<NaiveDateTime>,
    updated_at: NaiveDateTime,
}

type RowTuple = (
    String,
    NaiveDateTime,
    Option<NaiveDateTime>,
    NaiveDateTime,
    Option<NaiveDateTime>,
    String,
    Option<NaiveDateTime>,
    Option<NaiveDateTime>,
    NaiveDateTime,
);

async fn row(app: &TestApp, id: &str) -> Row {
    let id = id.to_string();
    let r: RowTuple = app
        .platform
        .db
        .run(move |c| {
            Ok(grant_rows::table
                .filter(grant_rows::id.eq(id))
                .select((
                    grant_rows::status,
                    grant_rows::created_at,
                    grant_rows::authorized_at,
                    grant_rows::expires_at,
                    grant_rows::last_used_at,
                    grant_rows::authorization_details,
                    grant_rows::expiry_warned_at,
                    grant_rows::dormancy_warned_at,
                    grant_rows::updated_at,
                ))
                .first(c)?)
        })
        .await
        .unwrap();
    Row {
        status: r.0,
        created_at: r.1.and_utc(),
        authorized_at: r.2.map(|t| t.and_utc()),
        expires_at: r.3.and_utc(),
        last_used_at: r.4.map(|t| t.and_utc()),
        details: serde_json::from_str(&r.5).unwrap(),
        expiry_warned_at: r.6,
        dormancy_warned_at: r.7,
        updated_at: r.8,
    }
}

/// Sets columns of a grant directly (to simulate history the clock alone cannot produce).
async fn set_grant(
    app: &TestApp,
    id: &str,
    f: impl FnOnce(&mut platform::storage::AnyConnection, &str) -> QueryResult<usize> + Send + 'static,
) {
    let id = id.to_string();
    app.platform
        .db
        .write(move |c| Ok(f(c, &id)?))
        .await
        .unwrap();
}

/// The `grant.extended` audit events of a grant: (actor_type, details).
async fn extended_events(app: &TestApp, id: &str) -> Vec<(String, Value)> {
    let id = id.to_string();
    let rows: Vec<(String, String)> = app
        .platform
        .db
        .run(move |c| {
            Ok(audit_events::table
                .filter(audit_events::target_id.eq(id))
                .filter(audit_events::action.eq("grant.extended"))
                .order(audit_events::seq.asc())
                .select((audit_events::actor_type, audit_events::details))
                .load(c)?)
        })
        .await
        .unwrap();
    rows.into_iter()
        .map(|(a, d)| (a, serde_json::from_str(&d).unwrap()))
        .collect()
}

async fn grant_json(app: &TestApp, id: &str) -> Value {
    let r = app.get(&format!("/api/v1/me/grants/{id}")).await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn page(app: &TestApp, path: &str) -> String {
    let r = app.get(path).await;
    assert_eq!(r.status(), 200, "{path}");
    r.text().await.unwrap()
}

/// The card (`<section class="app" ...>`) of a grant on a page.
fn card<'a>(html: &'a str, id: &str) -> &'a str {
    html.split("<section class=\"app\"")
        .skip(1)
        .find(|c| c.contains(&format!("data-grant-id=\"{id}\"")))
        .unwrap_or_else(|| panic!("card of {id} in {html}"))
}

async fn extend_json(
    app: &TestApp,
    client: &reqwest::Client,
    id: &str,
    csrf: Option<&str>,
) -> reqwest::Response {
    let mut req = client.post(app.url(&format!("/api/v1/me/grants/{id}/extend")));
    if let Some(h) = csrf {
        req = req.header("X-CSRF-Token", h);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn notices_warn_before_expiry_and_dormancy() {
    for backend in backends() {
        let (app, clock) = app_with_clock(backend).await;
        app.login_customer("alice").await;
        let soon = id_of(&grant(&app, &day(30)).await);
        let far = id_of(&grant(&app, &day(170)).await);

        // Day 0: no notices; the dormancy deadline is the last use plus 90 days.
        for id in [&soon, &far] {
            let g = grant_json(&app, id).await;
            assert!(g.get("notice").is_none(), "{backend:?}: {g}");
            assert_eq!(
                ts(&g["dormancy_deadline"]),
                ts(&g["last_used_at"]) + Duration::days(90),
                "{g}"
            );
        }
        // A client's own dormancy period applies when it is shorter, not when it is longer.
        for (days, expected) in [(Some(30), 30), (Some(120), 90), (None, 90)] {
            app.platform
                .db
                .write(move |c| {
                    Ok(
                        diesel::update(clients::table.filter(clients::id.eq(DEMO_CLIENT)))
                            .set(clients::dormancy_days.eq(days))
                            .execute(c)?,
                    )
                })
                .await
                .unwrap();
            let g = grant_json(&app, &far).await;
            assert_eq!(
                ts(&g["dormancy_deadline"]),
                ts(&g["last_used_at"]) + Duration::days(expected),
                "{backend:?}: dormancy_days {days:?}"
            );
        }
        let html = page(&app, "/account/apps").await;
        assert!(!html.contains("/extend\""), "no extend button yet");

        // Day 25: the first grant ends within the 7-day lead time.
        clock.advance(Duration::days(25));
        app.login_customer("alice").await; // sessions end by the same clock
        let g = grant_json(&app, &soon).await;
        let expires = ts(&g["expires_at"]);
        assert_eq!(g["notice"]["kind"], "expiring", "{backend:?}: {g}");
        assert_eq!(ts(&g["notice"]["ends_at"]), expires);
        let message = format!(
            "This access ends on {}. Extend it to keep the app connected.",
            day_text(expires)
        );
        assert_eq!(g["notice"]["message"], message.as_str());
        assert!(grant_json(&app, &far).await.get("notice").is_none());
        // The list says the same.
        let list: Value = app.get("/api/v1/me/grants").await.json().await.unwrap();
        let listed = list["grants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["grant_id"] == soon.as_str())
            .unwrap();
        assert_eq!(listed["notice"], g["notice"]);

        // The list page and the app page show it, with an Extend button.
        let html = page(&app, "/account/apps").await;
        let attention = html
            .split("class=\"attention\"")
            .nth(1)
            .expect("attention banner")
            .split("<section id=\"active\">")
            .next()
            .unwrap();
        assert!(
            attention.contains(&message) && attention.contains(&soon),
            "{attention}"
        );
        assert!(!attention.contains(&far));
        let soon_card = card(&html, &soon);
        assert!(soon_card.contains(&message), "{soon_card}");
        assert!(soon_card.contains(&format!("action=\"/account/apps/{soon}/extend\"")));
        assert!(soon_card.contains("Extend access for"));
        let far_card = card(&html, &far);
        assert!(!far_card.contains("/extend\"") && !far_card.contains("class=\"notice\""));
        let detail = page(&app, &format!("/account/apps/{soon}")).await;
        assert!(detail.contains(&message), "{backend:?}");
        assert!(detail.contains(&format!("action=\"/account/apps/{soon}/extend\"")));
        assert!(detail.contains(&format!("value=\"/account/apps/{soon}\"")));

        // Day 85: the first grant has expired (no notice for ended grants); the unused second
        // one is 5 days from its dormancy deadline.
        clock.advance(Duration::days(60));
        app.login_customer("alice").await;
        let g = grant_json(&app, &soon).await;
        assert_eq!(
            (g["status"].as_str(), g["active"].as_bool()),
            (Some("expired"), Some(false))
        );
        assert!(g.get("notice").is_none() && g.get("dormancy_deadline").is_none());
        let g = grant_json(&app, &far).await;
        let deadline = ts(&g["dormancy_deadline"]);
        assert_eq!(g["notice"]["kind"], "dormant_soon", "{backend:?}: {g}");
        assert_eq!(ts(&g["notice"]["ends_at"]), deadline);
        let message = format!(
            "This app has not used its access since {}; it will be disconnected on {} unless \
             you extend it.",
            day_text(ts(&g["last_used_at"])),
            day_text(deadline)
        );
        assert_eq!(g["notice"]["message"], message.as_str());
        let html = page(&app, "/account/apps").await;
        assert!(card(&html, &far).contains(&message), "{backend:?}");
        assert!(!card(&html, &soon).contains("class=\"notice\""));
        app.stop().await;
    }
}

#[tokio::test]
async fn extending_moves_the_expiry_everywhere_and_keeps_the_app_working() {
    for backend in backends() {
        let (app, clock) = app_with_clock(backend).await;
        app.login_customer("alice").await;
        // The app has a webhook: it is told about the extension.
        app.platform
            .db
            .write(|c| {
                Ok(
                    diesel::update(clients::table.filter(clients::id.eq(DEMO_CLIENT)))
                        .set(clients::webhook_url.eq(Some("http://127.0.0.1:9/hook")))
                        .execute(c)?,
                )
            })
            .await
            .unwrap();
        let tokens = grant(&app, &day(30)).await;
        let id = id_of(&tokens);
        let rt = tokens["refresh_token"].as_str().unwrap().to_string();
        let before = row(&app, &id).await;
        let old = before.expires_at;
        let lifetime = old - before.authorized_at.unwrap();
        // The refresh token was capped at the grant's expiry.
        let intro = app.post_introspect(DEMO, &rt).await;
        assert_eq!(intro["exp"], old.timestamp(), "{backend:?}: {intro}");

        clock.advance(Duration::days(25));
        app.login_customer("alice").await; // sessions end by the same clock
        assert_eq!(grant_json(&app, &id).await["notice"]["kind"], "expiring");
        // Warnings already sent (by the sweeper) are cleared by the extension.
        set_grant(&app, &id, |c, id| {
            let t = Utc::now().naive_utc();
            diesel::update(grant_rows::table.filter(grant_rows::id.eq(id)))
                .set((
                    grant_rows::expiry_warned_at.eq(Some(t)),
                    grant_rows::dormancy_warned_at.eq(Some(t)),
                ))
                .execute(c)
        })
        .await;

        // Without the CSRF header: 403, nothing changes.
        let unchanged = row(&app, &id).await;
        for h in [None, Some("csrf_wrong"), Some("")] {
            let r = extend_json(&app, &app.client, &id, h).await;
            assert_eq!(r.status(), 403, "{h:?}");
            assert_eq!(r.headers()["content-type"], "application/problem+json");
        }
        assert_eq!(row(&app, &id).await, unchanged);

        let csrf = me_csrf(&app, &app.client).await;
        let t0 = app.platform.now();
        let r = extend_json(&app, &app.client, &id, Some(&csrf)).await;
        let t1 = app.platform.now();
        assert_eq!(r.status(), 200, "{backend:?}");
        let g: Value = r.json().await.unwrap();
        let new = ts(&g["expires_at"]);
        // now + the original lifetime, in whole seconds.
        assert_eq!(new.timestamp_subsec_nanos(), 0, "{new}");
        assert!(
            new >= t0 + lifetime - Duration::seconds(1) && new <= t1 + lifetime,
            "{backend:?}: {new} vs {t0} + {lifetime}"
        );
        assert!(new > old + Duration::days(20));
        assert!(g.get("notice").is_none(), "{g}");
        assert_eq!(g["status"], "authorized");
        let used = ts(&g["last_used_at"]);
        assert!(
            used >= t0 - Duration::seconds(1) && used <= t1,
            "last use reset"
        );
        assert_eq!(ts(&g["dormancy_deadline"]), used + Duration::days(90));
        assert_eq!(g["authorization_details"][0]["expires_at"], secs(new));
        assert_eq!(g, grant_json(&app, &id).await, "GET says the same");

        // The column and the stored details agree; warnings cleared; the rest untouched.
        let after = row(&app, &id).await;
        assert_eq!(after.expires_at, new);
        assert_eq!(after.details[0]["expires_at"], secs(new));
        assert_eq!(after.last_used_at, Some(used));
        assert_eq!(
            (after.expiry_warned_at, after.dormancy_warned_at),
            (None, None)
        );
        let mut details = before.details.clone();
        details[0]["expires_at"] = json!(secs(new));
        assert_eq!(after.details, details, "only expires_at changed");
        assert_eq!(
            (after.created_at, after.authorized_at),
            (before.created_at, before.authorized_at)
        );

        // Audited, shown in the history, and a webhook event for the app.
        let events = extended_events(&app, &id).await;
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].0, "customer");
        assert_eq!(events[0].1["previous_expires_at"], secs(old));
        assert_eq!(events[0].1["expires_at"], secs(new));
        let a: Value = app
            .get(&format!("/api/v1/me/grants/{id}/activity"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(a["events"][0]["action"], "grant.extended");
        assert_eq!(
            a["events"][0]["description"],
            format!("You extended this app's access until {}", day_text(new))
        );
        let id2 = id.clone();
        let hooks: Vec<String> = app
            .platform
            .db
            .run(move |c| {
                Ok(webhook_outbox::table
                    .filter(webhook_outbox::grant_id.eq(id2))
                    .filter(webhook_outbox::event_type.eq("grant.extended"))
                    .select(webhook_outbox::payload)
                    .load(c)?)
            })
            .await
            .unwrap();
        assert_eq!(hooks.len(), 1, "{backend:?}");
        let hook: Value = serde_json::from_str(&hooks[0]).unwrap();
        assert_eq!(hook["type"], "grant.extended");
        assert_eq!(hook["data"]["grant_id"], id.as_str());
        assert_eq!(hook["data"]["expires_at"], secs(new));
        assert_eq!(hook["data"]["previous_expires_at"], secs(old));

        // The refresh token now lasts until the new expiry.
        let intro = app.post_introspect(DEMO, &rt).await;
        assert_eq!(intro["exp"], new.timestamp(), "{backend:?}: {intro}");

        // Day 35: past the old expiry, the app refreshes; new tokens carry the new expiry.
        clock.advance(Duration::days(10));
        assert!(app.platform.now() > old);
        let (status, body) = refresh(&app, DEMO, &rt).await;
        assert_eq!(status, 200, "{backend:?}: {body}");
        assert_eq!(body["authorization_details"][0]["expires_at"], secs(new));
        let access = body["access_token"].as_str().unwrap();
        let info = ::grants::inspect(access).unwrap();
        assert!(
            info.blocks[0].contains(&format!("$t <= {}", secs(new))),
            "{}",
            info.blocks[0]
        );
        assert!(!info.blocks[0].contains(&secs(old)));
        let intro = app.post_introspect(DEMO, access).await;
        assert_eq!(intro["active"], true, "{intro}");
        assert_eq!(intro["authorization_details"][0]["expires_at"], secs(new));
        // The rotated refresh token is capped at the new expiry, and works again.
        let next = body["refresh_token"].as_str().unwrap();
        assert_eq!(
            app.post_introspect(DEMO, next).await["exp"],
            new.timestamp()
        );
        assert_eq!(refresh(&app, DEMO, next).await.0, 200);
        app.stop().await;
    }
}

#[tokio::test]
async fn extension_is_capped_and_never_shortens() {
    for backend in backends() {
        let (app, clock) = app_with_clock(backend).await;
        app.login_customer("alice").await;
        let csrf = me_csrf(&app, &app.client).await;

        // Given for 250 days under an older, longer cap: renewed for the 180-day maximum.
        let long = id_of(&grant(&app, &day(100)).await);
        set_grant(&app, &long, |c, id| {
            let t = (Utc::now() - Duration::days(150)).naive_utc();
            diesel::update(grant_rows::table.filter(grant_rows::id.eq(id)))
                .set((
                    grant_rows::created_at.eq(t),
                    grant_rows::authorized_at.eq(Some(t)),
                ))
                .execute(c)
        })
        .await;
        let t0 = app.platform.now();
        let r = extend_json(&app, &app.client, &long, Some(&csrf)).await;
        let t1 = app.platform.now();
        assert_eq!(r.status(), 200, "{backend:?}");
        let new = ts(&r.json::<Value>().await.unwrap()["expires_at"]);
        assert!(
            new >= t0 + Duration::days(180) - Duration::seconds(1)
                && new <= t1 + Duration::days(180),
            "{backend:?}: {new} is not now + 180 days ({t0})"
        );
        assert_eq!(row(&app, &long).await.details[0]["expires_at"], secs(new));

        // A short original lifetime never moves an expiry earlier; it still counts as use.
        let short = id_of(&grant(&app, &day(100)).await);
        let before = row(&app, &short).await;
        let authorized = (before.expires_at - Duration::days(10)).naive_utc();
        set_grant(&app, &short, move |c, id| {
            let used = (Utc::now() - Duration::days(30)).naive_utc();
            diesel::update(grant_rows::table.filter(grant_rows::id.eq(id)))
                .set((
                    grant_rows::last_used_at.eq(Some(used)),
                    grant_rows::authorized_at.eq(Some(authorized)),
                ))
                .execute(c)
        })
        .await;
        let r = extend_json(&app, &app.client, &short, Some(&csrf)).await;
        assert_eq!(r.status(), 200, "{backend:?}");
        let g: Value = r.json().await.unwrap();
        assert_eq!(ts(&g["expires_at"]), before.expires_at, "unchanged: {g}");
        let after = row(&app, &short).await;
        assert_eq!(after.expires_at, before.expires_at);
        assert!(after.last_used_at.unwrap() > Utc::now() - Duration::minutes(5));
        let events = extended_events(&app, &short).await;
        assert_eq!(events.len(), 1);
        assert_eq!(
            events[0].1["expires_at"],
            events[0].1["previous_expires_at"]
        );

        // Repeated extensions renew the last confirmed lifetime; they do not compound. A 30-day
        // consent extended on day 25 ends on day 55; extended again on day 50, on day 80.
        let monthly = id_of(&grant(&app, &day(30)).await);
        let start = row(&app, &monthly).await;
        let lifetime = start.expires_at - app.platform.now();
        clock.advance(Duration::days(25));
        app.login_customer("alice").await;
        let csrf = me_csrf(&app, &app.client).await;
        let r = extend_json(&app, &app.client, &monthly, Some(&csrf)).await;
        assert_eq!(r.status(), 200, "{backend:?}");
        let first = row(&app, &monthly).await.expires_at;
        let want = app.platform.now() + lifetime;
        assert!(
            (first - want).num_seconds().abs() <= 2,
            "{backend:?}: {first} vs {want}"
        );
        clock.advance(Duration::days(25));
        app.login_customer("alice").await;
        let csrf = me_csrf(&app, &app.client).await;
        let r = extend_json(&app, &app.client, &monthly, Some(&csrf)).await;
        assert_eq!(r.status(), 200, "{backend:?}");
        let second = row(&app, &monthly).await.expires_at;
        let want = app.platform.now() + lifetime;
        assert!(
            (second - want).num_seconds().abs() <= 2,
            "{backend:?}: {second} vs {want}: the lifetime compounded"
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn ended_foreign_unknown_and_forged_extensions_change_nothing() {
    for backend in backends() {
        let (app, clock) = app_with_clock(backend).await;
        app.login_customer("alice").await;
        let mut csrf = me_csrf(&app, &app.client).await;
        let revoked = id_of(&grant(&app, &day(60)).await);
        let expiring = id_of(&grant(&app, &day(3)).await);
        let live = id_of(&grant(&app, &day(60)).await);

        // A revoked grant: 409 problem, nothing changed.
        let r = app
            .client
            .delete(app.url(&format!("/api/v1/me/grants/{revoked}")))
            .header("X-CSRF-Token", &csrf)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        let before = row(&app, &revoked).await;
        let r = extend_json(&app, &app.client, &revoked, Some(&csrf)).await;
        assert_eq!(r.status(), 409, "{backend:?}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let p: Value = r.json().await.unwrap();
        assert_eq!(p["status"], 409);
        assert!(p["detail"].as_str().unwrap().contains("revoked"), "{p}");
        let r = app
            .post_form(
                &format!("/account/apps/{revoked}/extend"),
                None,
                &[("csrf_token", csrf.as_str())],
            )
            .await;
        assert_eq!(r.status(), 409);
        assert_eq!(row(&app, &revoked).await, before);
        assert!(extended_events(&app, &revoked).await.is_empty());

        // Past its expiry (not yet swept): 409 as well.
        clock.advance(Duration::days(5));
        app.login_customer("alice").await; // sessions end by the same clock
        csrf = me_csrf(&app, &app.client).await;
        let before_expired = row(&app, &expiring).await;
        assert_eq!(before_expired.status, "authorized");
        let r = extend_json(&app, &app.client, &expiring, Some(&csrf)).await;
        assert_eq!(r.status(), 409, "{backend:?}");
        assert!(
            r.json::<Value>().await.unwrap()["detail"]
                .as_str()
                .unwrap()
                .contains("expired")
        );
        assert_eq!(row(&app, &expiring).await, before_expired);

        // Someone else's grant, unknown and malformed ids: 404.
        let live_before = row(&app, &live).await;
        let bob = customer_client(&app, "bob").await;
        let bob_csrf = me_csrf(&app, &bob).await;
        let r = extend_json(&app, &bob, &live, Some(&bob_csrf)).await;
        assert_eq!(r.status(), 404, "{backend:?}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let r = bob
            .post(app.url(&format!("/account/apps/{live}/extend")))
            .form(&[("csrf_token", bob_csrf.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        for id in ["g_doesnotexist", "not-a-grant", "g_%2E%2E%2Fx"] {
            let r = extend_json(&app, &app.client, id, Some(&csrf)).await;
            assert_eq!(r.status(), 404, "{id}");
            let r = app
                .post_form(
                    &format!("/account/apps/{id}/extend"),
                    None,
                    &[("csrf_token", csrf.as_str())],
                )
                .await;
            assert_eq!(r.status(), 404, "{id}");
        }
        // The page form without (or with a wrong) CSRF token: 403.
        for form in [vec![], vec![("csrf_token", "csrf_wrong-token-value")]] {
            let r = app
                .post_form(&format!("/account/apps/{live}/extend"), None, &form)
                .await;
            assert_eq!(r.status(), 403, "{backend:?}");
        }
        // Without a session: login page / 401.
        let anonymous = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let r = anonymous
            .post(app.url(&format!("/account/apps/{live}/extend")))
            .form(&[("csrf_token", csrf.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        assert!(location(&r).starts_with("/login"));
        let r = extend_json(&app, &anonymous, &live, Some(&csrf)).await;
        assert_eq!(r.status(), 401);
        assert_eq!(row(&app, &live).await, live_before, "{backend:?}");
        assert!(extended_events(&app, &live).await.is_empty());

        // The page form with its token works, and goes back to the page it came from.
        let detail = format!("/account/apps/{live}");
        let r = app
            .post_form(
                &format!("/account/apps/{live}/extend"),
                None,
                &[("csrf_token", csrf.as_str()), ("next", detail.as_str())],
            )
            .await;
        assert_eq!(r.status(), 303, "{backend:?}");
        assert_eq!(location(&r), format!("{detail}?extended={live}"));
        let new = row(&app, &live).await.expires_at;
        assert!(new > live_before.expires_at, "{new}");
        let html = page(&app, &location(&r)).await;
        assert!(
            html.contains(&format!("stays connected until {}", day_text(new))),
            "{html}"
        );
        // Anywhere else is not a destination.
        let r = app
            .post_form(
                &format!("/account/apps/{live}/extend"),
                None,
                &[
                    ("csrf_token", csrf.as_str()),
                    ("next", "https://evil.example/"),
                ],
            )
            .await;
        assert_eq!(r.status(), 303);
        assert_eq!(location(&r), format!("/account/apps?extended={live}"));
        assert_eq!(extended_events(&app, &live).await.len(), 2);
        app.stop().await;
    }
}
