//! Signed webhooks through the outbox: a local receiver checks every signature with an
//! independent Standard Webhooks implementation; the clock is controllable, so warnings,
//! endings and retries happen when the test says.

use std::time::Duration as StdDuration;

use chrono::Duration;
use diesel::prelude::*;
use e2e_tests::lifecycle::{clock_options, free_port, insert_grants, spawn_with_clock};
use e2e_tests::webhooks::{Receiver, verify};
use e2e_tests::{TestApp, backends, spawn_app_with};
use platform::clock::OffsetClock;
use platform::storage::schema::{audit_events, grant_rows, webhook_outbox};
use reqwest::Method;
use serde_json::{Value, json};

const HOOKS_DEV: &str = "hooks@fintech.example";

/// The body has exactly the fields the OpenAPI `webhooks` entry of its type documents: the
/// envelope's, and its `data` schema's (all required there).
fn assert_documented(body: &Value) {
    let spec: Value = serde_json::from_str(&consent::openapi::spec_json()).unwrap();
    let kind = body["type"].as_str().unwrap();
    let envelope =
        &spec["webhooks"][kind]["post"]["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(
        envelope["properties"]["type"]["enum"][0], kind,
        "{kind} documented"
    );
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(body), keys(&envelope["properties"]), "{kind} envelope");
    let data_ref = envelope["properties"]["data"]["$ref"].as_str().unwrap();
    let data = &spec["components"]["schemas"][data_ref.rsplit('/').next().unwrap()];
    assert_eq!(
        keys(&body["data"]),
        keys(&data["properties"]),
        "{kind} data"
    );
    let mut required: Vec<String> = serde_json::from_value(data["required"].clone()).unwrap();
    required.sort();
    assert_eq!(
        required,
        keys(&body["data"]),
        "{kind}: every data field is required"
    );
}
const WAIT: StdDuration = StdDuration::from_secs(15);

/// A developer with a sandbox client whose webhook points at `url`; returns
/// (developer token, client id, client secret, webhook secret).
async fn client_with_webhook(app: &TestApp, url: &str) -> (String, String, String, String) {
    let dev = app.developer_token(HOOKS_DEV).await;
    let (client_id, secret) = app.sandbox_client(&dev).await;
    let r = app
        .api(
            Method::PATCH,
            &format!("/api/v1/clients/{client_id}"),
            Some(&dev),
            Some(&json!({ "webhook_url": url })),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let whsec = v["webhook_secret"]
        .as_str()
        .expect("secret shown once")
        .to_string();
    assert!(whsec.starts_with("whsec_"));
    (dev, client_id, secret, whsec)
}

async fn deliveries(app: &TestApp, dev: &str, client: &str) -> Vec<Value> {
    let r = app
        .api(
            Method::GET,
            &format!("/api/v1/clients/{client}/webhook-deliveries"),
            Some(dev),
            None,
        )
        .await;
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["deliveries"]
        .as_array()
        .unwrap()
        .clone()
}

/// Waits until `n` outbox events are delivered (their outcome recorded, not just received):
/// moving the clock while an attempt is in flight would expire its lease and send it again.
async fn wait_delivered(app: &TestApp, n: i64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let done: i64 = app
            .platform
            .db
            .run(|c| {
                Ok(webhook_outbox::table
                    .filter(webhook_outbox::status.eq("delivered"))
                    .count()
                    .get_result(c)?)
            })
            .await
            .unwrap();
        if done >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{done} of {n} delivered"
        );
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
}

/// Polls the portal API until every listed event has `status`.
async fn wait_status(app: &TestApp, dev: &str, client: &str, status: &str) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let d = deliveries(app, dev, client).await;
        if (!d.is_empty() && d.iter().all(|e| e["status"] == status))
            || tokio::time::Instant::now() >= deadline
        {
            return d;
        }
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_revocation_reaches_the_client_signed_and_the_portal_shows_it_delivered() {
    for backend in backends() {
        let (app, _clock) = spawn_with_clock(backend, |_| {}).await;
        let receiver = Receiver::start().await;
        let (dev, client_id, secret, whsec) = client_with_webhook(&app, &receiver.url).await;
        let gid = insert_grants(&app, &client_id, 1, Duration::days(30), Duration::days(1))
            .await
            .remove(0);

        // The client ends the grant through its API.
        let r = app
            .client
            .delete(app.url(&format!("/api/v1/grants/{gid}")))
            .basic_auth(&client_id, Some(&secret))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{backend:?}: {}", r.status());

        let got = receiver.wait_for(1, WAIT).await;
        assert_eq!(got.len(), 1, "{backend:?}: exactly one event");
        let hook = &got[0];
        let now = app.platform.now().timestamp();
        verify(&whsec, hook, now, 300).unwrap_or_else(|e| panic!("{backend:?}: {e}"));
        let body = hook.json();
        assert_documented(&body);
        assert_eq!(body["type"], "grant.revoked");
        assert_eq!(body["id"], hook.id.as_str(), "webhook-id is the event id");
        assert_eq!(body["data"]["grant_id"], gid.as_str());
        assert_eq!(body["data"]["client_id"], client_id.as_str());
        assert_eq!(body["data"]["revoked_by"], "client");

        // The check can fail: another secret, a changed body, a replayed old timestamp.
        let mut forged = hook.clone();
        forged.body = forged.body.replace("grant.revoked", "grant.expired");
        assert!(verify(&whsec, &forged, now, 300).is_err());
        let other = platform::webhooks::generate_secret();
        assert!(verify(other.expose(), hook, now, 300).is_err());
        assert!(
            verify(&whsec, hook, now + 3_600, 300).is_err(),
            "replay window"
        );

        let d = wait_status(&app, &dev, &client_id, "delivered").await;
        assert_eq!(d.len(), 1);
        assert_eq!(d[0]["id"], hook.id.as_str());
        assert_eq!(
            (d[0]["attempts"].as_i64(), d[0]["last_status"].as_i64()),
            (Some(1), Some(204))
        );
        assert_eq!(d[0]["payload"], body);

        // Another developer cannot see them.
        let stranger = app.developer_token("stranger@fintech.example").await;
        let r = app
            .api(
                Method::GET,
                &format!("/api/v1/clients/{client_id}/webhook-deliveries"),
                Some(&stranger),
                None,
            )
            .await;
        assert_eq!(r.status(), 404);

        // The portal page lists the delivery.
        let web = e2e_tests::portal::browser_client();
        let csrf = app.form_csrf(&web, "/developers/login").await;
        let r = web
            .post(app.url("/developers/login"))
            .form(&[
                ("email", HOOKS_DEV),
                ("password", e2e_tests::portal::PASSWORD),
                ("csrf_token", &csrf),
            ])
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_redirection(),
            "{backend:?}: page login {}",
            r.status()
        );
        let html = web
            .get(app.url(&format!("/developers/clients/{client_id}")))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(html.contains("id=\"webhook-deliveries\""), "{backend:?}");
        assert!(html.contains(&format!(
            "data-event=\"{}\" data-status=\"delivered\"",
            hook.id
        )));
        receiver.stop().await;
        app.stop().await;
    }
}

#[tokio::test]
async fn warnings_come_once_before_the_end_and_the_endings_follow() {
    for backend in backends() {
        let (app, clock) = spawn_with_clock(backend, |_| {}).await;
        let receiver = Receiver::start().await;
        let (_dev, client_id, _secret, whsec) = client_with_webhook(&app, &receiver.url).await;
        let expiring =
            insert_grants(&app, &client_id, 2, Duration::days(5), Duration::days(1)).await;
        let far = insert_grants(&app, &client_id, 1, Duration::days(60), Duration::days(1)).await;
        let idle =
            insert_grants(&app, &client_id, 1, Duration::days(100), Duration::days(85)).await;

        let r = consent::lifecycle::run_once(&app.platform).await.unwrap();
        assert_eq!(
            (r.expiry_warnings, r.dormancy_warnings, r.expired, r.dormant),
            (2, 1, 0, 0),
            "{backend:?}: {r:?}"
        );
        // A second pass warns nobody again.
        let again = consent::lifecycle::run_once(&app.platform).await.unwrap();
        assert_eq!((again.expiry_warnings, again.dormancy_warnings), (0, 0));

        let got = receiver.wait_for(3, WAIT).await;
        assert_eq!(got.len(), 3, "{backend:?}");
        let now = app.platform.now().timestamp();
        let mut seen = Vec::new();
        for h in &got {
            verify(&whsec, h, now, 300).unwrap();
            let b = h.json();
            assert_documented(&b);
            seen.push((
                b["type"].as_str().unwrap().to_string(),
                b["data"]["grant_id"].as_str().unwrap().to_string(),
            ));
            if b["type"] == "grant.dormancy_warning" {
                let deadline = chrono::DateTime::parse_from_rfc3339(
                    b["data"]["revoke_after"].as_str().unwrap(),
                )
                .unwrap();
                let expected = app.platform.now() + Duration::days(5);
                assert!((deadline.timestamp() - expected.timestamp()).abs() < 5);
            }
        }
        seen.sort();
        wait_delivered(&app, 3).await;
        let mut want = vec![
            ("grant.dormancy_warning".to_string(), idle[0].clone()),
            ("grant.expiring".to_string(), expiring[0].clone()),
            ("grant.expiring".to_string(), expiring[1].clone()),
        ];
        want.sort();
        assert_eq!(seen, want, "{backend:?}: not {far:?}");

        // Six days on: the two expire, the idle one is revoked as dormant (85 + 6 > 90).
        clock.advance(Duration::days(6));
        let r = consent::lifecycle::run_once(&app.platform).await.unwrap();
        assert_eq!((r.expired, r.dormant), (2, 1), "{backend:?}: {r:?}");
        let got = receiver.wait_for(6, WAIT).await;
        let mut types: Vec<String> = got[3..]
            .iter()
            .map(|h| h.json()["type"].as_str().unwrap().to_string())
            .collect();
        types.sort();
        assert_eq!(types, ["grant.expired", "grant.expired", "grant.revoked"]);
        let dormant = got[3..]
            .iter()
            .map(|h| h.json())
            .find(|b| b["type"] == "grant.revoked")
            .unwrap();
        assert_eq!(dormant["data"]["revoked_by"], "dormancy");
        assert_eq!(dormant["data"]["grant_id"], idle[0].as_str());

        let warned: i64 = app
            .platform
            .db
            .run(|c| {
                Ok(audit_events::table
                    .filter(
                        audit_events::action
                            .eq_any(["grant.expiry_warning", "grant.dormancy_warning"]),
                    )
                    .count()
                    .get_result(c)?)
            })
            .await
            .unwrap();
        assert_eq!(warned, 3, "{backend:?}: warnings are audited");
        receiver.stop().await;
        app.stop().await;
    }
}

#[tokio::test]
async fn a_used_grant_is_warned_again_only_after_a_new_stretch_of_inactivity() {
    for backend in backends() {
        let (app, clock) = spawn_with_clock(backend, |_| {}).await;
        let receiver = Receiver::start().await;
        let (_dev, client_id, _secret, _whsec) = client_with_webhook(&app, &receiver.url).await;
        let id = insert_grants(&app, &client_id, 1, Duration::days(170), Duration::days(84))
            .await
            .remove(0);
        let r = consent::lifecycle::run_once(&app.platform).await.unwrap();
        assert_eq!(r.dormancy_warnings, 1);
        // The app uses the grant again: no revocation, and no warning until it idles again.
        let now = app.platform.now();
        let gid = id.clone();
        app.platform
            .db
            .write(move |c| {
                Ok(
                    diesel::update(grant_rows::table.filter(grant_rows::id.eq(gid)))
                        .set(grant_rows::last_used_at.eq(now.naive_utc()))
                        .execute(c)?,
                )
            })
            .await
            .unwrap();
        clock.advance(Duration::days(10));
        let r = consent::lifecycle::run_once(&app.platform).await.unwrap();
        assert_eq!((r.dormant, r.dormancy_warnings), (0, 0), "{backend:?}");
        clock.advance(Duration::days(74));
        let r = consent::lifecycle::run_once(&app.platform).await.unwrap();
        assert_eq!((r.dormant, r.dormancy_warnings), (0, 1), "{backend:?}");
        receiver.stop().await;
        app.stop().await;
    }
}

#[tokio::test]
async fn redelivery_after_the_receiver_was_down() {
    for backend in backends() {
        let (app, clock) = spawn_with_clock(backend, |_| {}).await;
        let receiver = Receiver::start().await;
        receiver.set_failing(true);
        let (dev, client_id, secret, whsec) = client_with_webhook(&app, &receiver.url).await;
        let gid = insert_grants(&app, &client_id, 1, Duration::days(30), Duration::days(1))
            .await
            .remove(0);
        let r = app
            .client
            .delete(app.url(&format!("/api/v1/grants/{gid}")))
            .basic_auth(&client_id, Some(&secret))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());

        let first = receiver.wait_for(1, WAIT).await;
        assert_eq!(first.len(), 1);
        // Recorded as a failed attempt, pending, with a backed-off next attempt.
        let d = {
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                let d = deliveries(&app, &dev, &client_id).await;
                if d[0]["last_status"] == 503 || tokio::time::Instant::now() >= deadline {
                    break d;
                }
                tokio::time::sleep(StdDuration::from_millis(100)).await;
            }
        };
        assert_eq!(d[0]["status"], "pending", "{backend:?}: {d:?}");
        assert_eq!(d[0]["attempts"], 1);
        assert_eq!(d[0]["last_status"], 503);
        let next = chrono::DateTime::parse_from_rfc3339(d[0]["next_attempt_at"].as_str().unwrap())
            .unwrap();
        let wait = next.timestamp() - app.platform.now().timestamp();
        assert!((20..=31).contains(&wait), "{backend:?}: backoff {wait}s");
        // Nothing is sent again before it is due.
        tokio::time::sleep(StdDuration::from_millis(1_500)).await;
        assert_eq!(receiver.received().len(), 1);

        // The receiver is back; the next attempt comes when due, with the same event id.
        receiver.set_failing(false);
        clock.advance(Duration::seconds(31));
        let got = receiver.wait_for(2, WAIT).await;
        assert_eq!(got.len(), 2, "{backend:?}");
        assert_eq!(got[1].id, got[0].id, "same webhook-id on redelivery");
        assert_eq!(got[1].body, got[0].body);
        verify(&whsec, &got[1], app.platform.now().timestamp(), 300).unwrap();
        let d = wait_status(&app, &dev, &client_id, "delivered").await;
        assert_eq!(d[0]["attempts"], 2, "{backend:?}");
        receiver.stop().await;
        app.stop().await;
    }
}

#[tokio::test]
async fn after_the_last_attempt_an_event_fails_and_the_developer_can_send_it_again() {
    for backend in backends() {
        let (app, clock) = spawn_with_clock(backend, |s| {
            s.webhooks.max_attempts = 2;
        })
        .await;
        // Nothing listens on this port.
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}/hook");
        let (dev, client_id, secret, _whsec) = client_with_webhook(&app, &url).await;
        let gid = insert_grants(&app, &client_id, 1, Duration::days(30), Duration::days(1))
            .await
            .remove(0);
        let r = app
            .client
            .delete(app.url(&format!("/api/v1/grants/{gid}")))
            .basic_auth(&client_id, Some(&secret))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let mut d = Vec::new();
        for _ in 0..2 {
            let deadline = tokio::time::Instant::now() + WAIT;
            let before = d.first().and_then(|e: &Value| e["attempts"].as_i64());
            loop {
                d = deliveries(&app, &dev, &client_id).await;
                // The attempt's outcome is recorded: failed, or pending with a backoff (<= 30 s
                // ahead; a claim in flight holds a 35 s lease instead).
                let recorded = d[0]["status"] == "failed"
                    || d[0]["next_attempt_at"].as_str().is_some_and(|t| {
                        chrono::DateTime::parse_from_rfc3339(t).unwrap().timestamp()
                            <= app.platform.now().timestamp() + 30
                    });
                if d[0]["attempts"].as_i64() != before && d[0]["last_error"].is_string() && recorded
                {
                    break;
                }
                assert!(tokio::time::Instant::now() < deadline, "{backend:?}: {d:?}");
                tokio::time::sleep(StdDuration::from_millis(100)).await;
            }
            clock.advance(Duration::minutes(2));
        }
        let d = wait_status(&app, &dev, &client_id, "failed").await;
        assert_eq!(d[0]["status"], "failed", "{backend:?}: {d:?}");
        assert_eq!(d[0]["attempts"], 2);
        assert_eq!(d[0]["last_error"], "could not connect");

        // Only failed events can be sent again; unknown ids are 404.
        let retry = |event: String| {
            let path = format!("/api/v1/clients/{client_id}/webhook-deliveries/{event}/retry");
            let app = &app;
            let dev = dev.clone();
            async move { app.api(Method::POST, &path, Some(&dev), None).await }
        };
        assert_eq!(retry("msg_nope".into()).await.status(), 404);
        // The receiver comes up on that port; the developer asks for the event again.
        let receiver = Receiver::start_on(port).await;
        let event = d[0]["id"].as_str().unwrap().to_string();
        assert_eq!(retry(event.clone()).await.status(), 202);
        let got = receiver.wait_for(1, WAIT).await;
        assert_eq!(got.len(), 1, "{backend:?}");
        assert_eq!(got[0].id, event);
        let d = wait_status(&app, &dev, &client_id, "delivered").await;
        assert_eq!(d[0]["status"], "delivered");
        assert_eq!(
            retry(event).await.status(),
            409,
            "a delivered event is not resent"
        );
        receiver.stop().await;
        app.stop().await;
    }
}

#[tokio::test]
async fn nothing_is_lost_when_the_server_stops_between_commit_and_delivery() {
    for backend in backends() {
        let clock = OffsetClock::default();
        let options = clock_options(&clock);
        let app = spawn_app_with(backend, options.clone(), |s| {
            s.lifecycle.sweep_interval = "1h".parse().unwrap();
            // This instance never gets round to delivering (first pass at start only).
            s.webhooks.delivery_interval = "1h".parse().unwrap();
        })
        .await;
        let receiver = Receiver::start().await;
        let (_dev, client_id, secret, whsec) = client_with_webhook(&app, &receiver.url).await;
        let ids = insert_grants(&app, &client_id, 3, Duration::days(30), Duration::days(1)).await;
        for gid in &ids {
            let r = app
                .client
                .delete(app.url(&format!("/api/v1/grants/{gid}")))
                .basic_auth(&client_id, Some(&secret))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
        }
        // One event was claimed by a worker that then died: its lease is still running.
        let now = app.platform.now();
        let claimed = app
            .platform
            .db
            .write(move |c| {
                let id: String = webhook_outbox::table
                    .order(webhook_outbox::id.asc())
                    .select(webhook_outbox::id)
                    .first(c)?;
                diesel::update(webhook_outbox::table.filter(webhook_outbox::id.eq(&id)))
                    .set((
                        webhook_outbox::attempts.eq(1),
                        webhook_outbox::next_attempt_at
                            .eq((now + Duration::seconds(35)).naive_utc()),
                    ))
                    .execute(c)?;
                Ok(id)
            })
            .await
            .unwrap();
        tokio::time::sleep(StdDuration::from_millis(500)).await;
        assert!(
            receiver.received().is_empty(),
            "{backend:?}: nothing sent yet"
        );

        let mut app = app;
        app.settings.webhooks.delivery_interval = "1s".parse().unwrap();
        let app = app.restart(options.clone()).await;
        let got = receiver.wait_for(2, WAIT).await;
        assert_eq!(
            got.len(),
            2,
            "{backend:?}: the unclaimed ones after restart"
        );
        assert!(got.iter().all(|h| h.id != claimed));
        wait_delivered(&app, 2).await;
        // The claimed one once its lease ran out.
        clock.advance(Duration::seconds(40));
        let got = receiver.wait_for(3, WAIT).await;
        assert_eq!(got.len(), 3, "{backend:?}");
        let mut grant_ids: Vec<String> = got
            .iter()
            .map(|h| {
                verify(&whsec, h, app.platform.now().timestamp(), 300).unwrap();
                h.json()["data"]["grant_id"].as_str().unwrap().to_string()
            })
            .collect();
        grant_ids.sort();
        let mut want = ids.clone();
        want.sort();
        assert_eq!(grant_ids, want);
        receiver.stop().await;
        app.stop().await;
    }
}

#[tokio::test]
async fn concurrent_delivery_passes_send_each_event_once() {
    for backend in backends() {
        let (app, _clock) = spawn_with_clock(backend, |s| {
            s.webhooks.delivery_interval = "1h".parse().unwrap();
        })
        .await;
        let receiver = Receiver::start().await;
        let (_dev, client_id, _secret, _whsec) = client_with_webhook(&app, &receiver.url).await;
        insert_grants(&app, &client_id, 120, Duration::days(3), Duration::days(1)).await;
        let r = consent::lifecycle::run_once(&app.platform).await.unwrap();
        assert_eq!(r.expiry_warnings, 120);
        let http = consent::webhooks::http_client(&app.platform).unwrap();
        let passes = (0..4).map(|_| {
            let p = app.platform.clone();
            let http = http.clone();
            tokio::spawn(async move {
                let mut total = 0;
                loop {
                    let r = consent::webhooks::deliver_due(&p, &http).await.unwrap();
                    if r.delivered == 0 {
                        return total;
                    }
                    total += r.delivered;
                }
            })
        });
        let delivered: usize = futures_join(passes.collect()).await.into_iter().sum();
        assert_eq!(delivered, 120, "{backend:?}");
        let mut ids: Vec<String> = receiver.received().into_iter().map(|h| h.id).collect();
        assert_eq!(ids.len(), 120, "{backend:?}: no duplicates sent");
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 120);
        receiver.stop().await;
        app.stop().await;
    }
}

async fn futures_join(handles: Vec<tokio::task::JoinHandle<usize>>) -> Vec<usize> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn suspension_tells_the_client_and_clients_without_webhooks_get_no_events() {
    for backend in backends() {
        let (app, _clock) = spawn_with_clock(backend, |_| {}).await;
        let receiver = Receiver::start().await;
        let (_dev, client_id, _secret, whsec) = client_with_webhook(&app, &receiver.url).await;
        let ids = insert_grants(&app, &client_id, 2, Duration::days(30), Duration::days(1)).await;
        // A client without a webhook: its grants end too, but nothing is queued for it.
        let quiet_dev = app.developer_token("quiet@fintech.example").await;
        let (quiet, _) = app.sandbox_client(&quiet_dev).await;
        insert_grants(&app, &quiet, 1, Duration::days(2), Duration::days(1)).await;

        let ops_a = app.staff_token("ops-a").await;
        let ops_b = app.staff_token("ops-b").await;
        let r = app
            .api(
                Method::POST,
                &format!("/api/v1/admin/clients/{client_id}/suspension"),
                Some(&ops_a),
                Some(&json!({"justification": "fraud reports from three customers"})),
            )
            .await;
        assert_eq!(r.status(), 202);
        let rid = r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let r = app
            .api(
                Method::POST,
                &format!("/api/v1/admin/approvals/{rid}/approve"),
                Some(&ops_b),
                Some(&json!({"justification": "confirmed with the fraud team"})),
            )
            .await;
        assert_eq!(r.status(), 200, "{backend:?}");

        let got = receiver.wait_for(3, WAIT).await;
        assert_eq!(got.len(), 3, "{backend:?}");
        let now = app.platform.now().timestamp();
        let mut types = Vec::new();
        for h in &got {
            verify(&whsec, h, now, 300).unwrap();
            let b = h.json();
            assert_documented(&b);
            types.push(b["type"].as_str().unwrap().to_string());
            if b["type"] == "grant.revoked" {
                assert_eq!(b["data"]["revoked_by"], "staff");
                assert!(ids.contains(&b["data"]["grant_id"].as_str().unwrap().to_string()));
            }
        }
        types.sort();
        assert_eq!(
            types,
            ["client.suspended", "grant.revoked", "grant.revoked"]
        );

        let r = consent::lifecycle::run_once(&app.platform).await.unwrap();
        assert_eq!(
            r.expiry_warnings, 1,
            "the quiet client's grant was warned of"
        );
        let quiet_events: i64 = app
            .platform
            .db
            .run(move |c| {
                Ok(webhook_outbox::table
                    .filter(webhook_outbox::client_id.eq(&quiet))
                    .count()
                    .get_result(c)?)
            })
            .await
            .unwrap();
        assert_eq!(quiet_events, 0, "{backend:?}");
        receiver.stop().await;
        app.stop().await;
    }
}

#[tokio::test]
async fn webhooks_to_non_public_addresses_are_refused_unless_allowed() {
    for backend in backends() {
        let (app, _clock) = spawn_with_clock(backend, |s| {
            s.webhooks.allow_private_targets = false;
        })
        .await;
        let receiver = Receiver::start().await;
        let (dev, client_id, secret, _whsec) = client_with_webhook(&app, &receiver.url).await;
        let gid = insert_grants(&app, &client_id, 1, Duration::days(30), Duration::days(1))
            .await
            .remove(0);
        let r = app
            .client
            .delete(app.url(&format!("/api/v1/grants/{gid}")))
            .basic_auth(&client_id, Some(&secret))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let d = wait_status(&app, &dev, &client_id, "failed").await;
        assert_eq!(d[0]["status"], "failed", "{backend:?}: {d:?}");
        assert!(
            d[0]["last_error"]
                .as_str()
                .unwrap()
                .contains("non-public address"),
            "{d:?}"
        );
        assert!(
            receiver.received().is_empty(),
            "{backend:?}: nothing sent to 127.0.0.1"
        );
        receiver.stop().await;
        app.stop().await;
    }
}

#[tokio::test]
async fn a_dead_receiver_defers_its_backlog_and_does_not_hold_up_other_clients() {
    for backend in backends() {
        let (app, _clock) = spawn_with_clock(backend, |s| {
            // Passes are driven by the test.
            s.webhooks.delivery_interval = "1h".parse().unwrap();
        })
        .await;
        // Nothing listens on this port.
        let port = free_port();
        let (_dev, dead, _secret, _whsec) =
            client_with_webhook(&app, &format!("http://127.0.0.1:{port}/hook")).await;
        insert_grants(&app, &dead, 60, Duration::days(3), Duration::days(1)).await;
        let r = consent::lifecycle::run_once(&app.platform).await.unwrap();
        assert_eq!(r.expiry_warnings, 60);

        let http = consent::webhooks::http_client(&app.platform).unwrap();
        let pass = consent::webhooks::deliver_due(&app.platform, &http)
            .await
            .unwrap();
        assert_eq!((pass.delivered, pass.retrying), (0, 50), "{backend:?}");
        // The ten not yet attempted wait with the others: none is due now.
        let now = app.platform.now().naive_utc();
        let (due, untried) = app
            .platform
            .db
            .run(move |c| {
                use webhook_outbox as o;
                Ok((
                    o::table
                        .filter(o::status.eq("pending"))
                        .filter(o::next_attempt_at.le(now))
                        .count()
                        .get_result::<i64>(c)?,
                    o::table
                        .filter(o::attempts.eq(0))
                        .count()
                        .get_result::<i64>(c)?,
                ))
            })
            .await
            .unwrap();
        assert_eq!((due, untried), (0, 10), "{backend:?}");

        // Another client's event goes out on the next pass, alone.
        let receiver = Receiver::start().await;
        let healthy_dev = app.developer_token("healthy@fintech.example").await;
        let (healthy, _) = app.sandbox_client(&healthy_dev).await;
        let r = app
            .api(
                Method::PATCH,
                &format!("/api/v1/clients/{healthy}"),
                Some(&healthy_dev),
                Some(&json!({ "webhook_url": receiver.url })),
            )
            .await;
        assert_eq!(r.status(), 200);
        insert_grants(&app, &healthy, 1, Duration::days(3), Duration::days(1)).await;
        consent::lifecycle::run_once(&app.platform).await.unwrap();
        let pass = consent::webhooks::deliver_due(&app.platform, &http)
            .await
            .unwrap();
        assert_eq!((pass.delivered, pass.retrying), (1, 0), "{backend:?}");
        assert_eq!(receiver.received().len(), 1);
        receiver.stop().await;
        app.stop().await;
    }
}

#[tokio::test]
async fn the_webhook_secret_rotates_and_a_failed_event_is_resent_from_the_page() {
    for backend in backends() {
        let (app, clock) = spawn_with_clock(backend, |s| s.webhooks.max_attempts = 1).await;
        let receiver = Receiver::start().await;
        let (dev, client_id, secret, old) = client_with_webhook(&app, &receiver.url).await;

        // Rotation: a new secret, shown once, not cached; the old one stops verifying.
        let path = format!("/api/v1/clients/{client_id}/webhook-secret");
        let r = app.api(Method::POST, &path, Some(&dev), None).await;
        assert_eq!(r.status(), 200, "{backend:?}");
        assert_eq!(r.headers()["cache-control"], "no-store");
        let new = r.json::<Value>().await.unwrap()["webhook_secret"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(new.starts_with("whsec_") && new != old);
        let gid = insert_grants(&app, &client_id, 1, Duration::days(30), Duration::days(1))
            .await
            .remove(0);
        let r = app
            .client
            .delete(app.url(&format!("/api/v1/grants/{gid}")))
            .basic_auth(&client_id, Some(&secret))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let got = receiver.wait_for(1, WAIT).await;
        assert_eq!(got.len(), 1, "{backend:?}");
        let now = app.platform.now().timestamp();
        verify(&new, &got[0], now, 300).unwrap();
        assert!(
            verify(&old, &got[0], now, 300).is_err(),
            "the old secret is cut off"
        );
        wait_delivered(&app, 1).await;

        // Another developer's client is not found; a client without webhook cannot rotate one.
        let other = app.developer_token("other@fintech.example").await;
        let r = app.api(Method::POST, &path, Some(&other), None).await;
        assert_eq!(r.status(), 404);
        let (plain, _) = app.sandbox_client(&other).await;
        let r = app
            .api(
                Method::POST,
                &format!("/api/v1/clients/{plain}/webhook-secret"),
                Some(&other),
                None,
            )
            .await;
        assert_eq!(r.status(), 409);

        // A failed event (one attempt allowed, receiver down) is resent from the client page.
        receiver.set_failing(true);
        let gid = insert_grants(&app, &client_id, 1, Duration::days(30), Duration::days(1))
            .await
            .remove(0);
        let r = app
            .client
            .delete(app.url(&format!("/api/v1/grants/{gid}")))
            .basic_auth(&client_id, Some(&secret))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let d = wait_status(&app, &dev, &client_id, "failed").await;
        let failed = d
            .iter()
            .find(|e| e["status"] == "failed")
            .unwrap_or_else(|| panic!("{backend:?}: {d:?}"))["id"]
            .as_str()
            .unwrap()
            .to_string();
        receiver.set_failing(false);
        let web = e2e_tests::portal::browser_client();
        let csrf = app.form_csrf(&web, "/developers/login").await;
        let r = web
            .post(app.url("/developers/login"))
            .form(&[
                ("email", HOOKS_DEV),
                ("password", e2e_tests::portal::PASSWORD),
                ("csrf_token", &csrf),
            ])
            .send()
            .await
            .unwrap();
        assert!(r.status().is_redirection());
        let page = format!("/developers/clients/{client_id}");
        let html = web
            .get(app.url(&page))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let action = format!("/developers/clients/{client_id}/webhooks/{failed}/retry");
        assert!(html.contains(&action), "{backend:?}: no resend form");
        // Without the CSRF token: refused, nothing queued.
        let r = web
            .post(app.url(&action))
            .form(&[("x", "")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{backend:?}");
        let d = deliveries(&app, &dev, &client_id).await;
        assert!(
            d.iter()
                .any(|e| e["id"] == failed.as_str() && e["status"] == "failed")
        );
        let csrf = app.form_csrf(&web, &page).await;
        let r = web
            .post(app.url(&action))
            .form(&[("csrf_token", csrf.as_str())])
            .send()
            .await
            .unwrap();
        assert!(r.status().is_redirection(), "{backend:?}: {}", r.status());
        clock.advance(Duration::seconds(1));
        let got = receiver.wait_for(3, WAIT).await;
        assert_eq!(got.len(), 3, "{backend:?}: failed attempt + resend");
        assert_eq!(got[2].id, failed);
        receiver.stop().await;
        app.stop().await;
    }
}

/// Webhook deliveries never go through a proxy named by the environment (the address filter
/// would then vet the proxy, not the target). This test runs the next one in a child process of
/// this test binary with `HTTP_PROXY`, `HTTPS_PROXY` and `ALL_PROXY` pointing at a port nothing
/// listens on: the delivery still arrives.
#[test]
fn webhook_deliveries_ignore_environment_proxies() {
    let dead = "http://127.0.0.1:9";
    let mut cmd = std::process::Command::new(std::env::current_exe().expect("test binary"));
    cmd.args([
        "--exact",
        "webhooks::delivery_under_proxy_environment",
        "--ignored",
        "--test-threads=1",
    ]);
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        cmd.env(var, dead);
    }
    for var in ["NO_PROXY", "no_proxy", "TEST_DATABASE_URL"] {
        cmd.env_remove(var);
    }
    let out = cmd.output().expect("child test run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
#[ignore = "run by webhook_deliveries_ignore_environment_proxies, with proxy variables set"]
async fn delivery_under_proxy_environment() {
    if std::env::var("HTTP_PROXY").is_err() {
        return; // only meaningful in the child process set up above
    }
    let (app, _clock) = spawn_with_clock(e2e_tests::Backend::Sqlite, |_| {}).await;
    let receiver = Receiver::start().await;
    let (_, client_id, secret, _) = client_with_webhook(&app, &receiver.url).await;
    let gid = insert_grants(&app, &client_id, 1, Duration::days(30), Duration::days(1))
        .await
        .remove(0);
    let r = app
        .client
        .delete(app.url(&format!("/api/v1/grants/{gid}")))
        .basic_auth(&client_id, Some(&secret))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let got = receiver.wait_for(1, WAIT).await;
    assert_eq!(
        got.len(),
        1,
        "the delivery went direct, not through the dead proxy"
    );
    receiver.stop().await;
    app.stop().await;
}

/// Production and sandbox clients' webhooks go in lanes that do not wait for each other: a
/// sandbox receiver that takes every request to the timeout does not hold up a production
/// client's events. Before, both were claimed into one pass, which waited for its slowest
/// receiver.
#[tokio::test]
async fn slow_sandbox_receivers_do_not_hold_up_production_webhooks() {
    let backend = backends().into_iter().last().unwrap();
    let (app, _clock) = spawn_with_clock(backend, |s| {
        s.webhooks.timeout = "60s".parse().unwrap();
    })
    .await;
    let mut hanging = e2e_tests::webhooks::HangingReceiver::start().await;
    let (dev, slow, _, _) = client_with_webhook(&app, &hanging.url).await;
    // A second client of the developer's, made a production one (as KYC approval would).
    let receiver = Receiver::start().await;
    let (prod, _) = app.sandbox_client(&dev).await;
    let r = app
        .api(
            Method::PATCH,
            &format!("/api/v1/clients/{prod}"),
            Some(&dev),
            Some(&json!({ "webhook_url": receiver.url })),
        )
        .await;
    assert_eq!(r.status(), 200);
    let id = prod.clone();
    app.platform
        .db
        .write(move |c| {
            use platform::storage::schema::clients;
            Ok(diesel::update(clients::table.filter(clients::id.eq(id)))
                .set(clients::environment.eq("production"))
                .execute(c)?)
        })
        .await
        .unwrap();
    let slow_grant = insert_grants(&app, &slow, 1, Duration::days(30), Duration::days(1)).await;
    let prod_grant = insert_grants(&app, &prod, 1, Duration::days(30), Duration::days(1)).await;
    let web = e2e_tests::dashboard::customer_client(&app, "alice").await;
    let csrf = e2e_tests::dashboard::me_csrf(&app, &web).await;
    let revoke = |grant: String| {
        let (web, csrf, url) = (&web, &csrf, app.url(&format!("/api/v1/me/grants/{grant}")));
        async move {
            let r = web.delete(url).header("X-CSRF-Token", csrf).send().await;
            assert_eq!(r.unwrap().status(), 204);
        }
    };
    // The sandbox client's event goes to the hanging receiver: its lane now waits.
    revoke(slow_grant[0].clone()).await;
    hanging.accepted(WAIT).await;
    // Meanwhile a production client's grant ends: its webhook arrives long before the timeout.
    revoke(prod_grant[0].clone()).await;
    let got = receiver.wait_for(1, WAIT).await;
    assert_eq!(
        got.len(),
        1,
        "{backend:?}: the production webhook waited for the sandbox pass"
    );
    assert_eq!(got[0].json()["data"]["grant_id"], prod_grant[0].as_str());
    // Hung up before the stop, which waits for deliveries in flight (up to the timeout).
    drop(hanging);
    receiver.stop().await;
    app.stop().await;
}
