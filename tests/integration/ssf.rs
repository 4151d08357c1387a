//! Shared Signals (SSF 1.0, RFC 8935 push, RFC 8936 poll): streams managed by clients, SETs
//! checked by a stock JOSE library (joserfc) against the published JWK Set, before and after a
//! key rotation; a client sees only its own streams and its own grants' events; paused streams
//! queue and then deliver in order, disabled ones drop; a failing receiver gets retries; private
//! addresses are refused; a resource server reads the revocation feed as a poll stream.

use std::time::Duration as StdDuration;

use chrono::Duration;
use e2e_tests::lifecycle::{insert_grants, spawn_with_clock};
use e2e_tests::ssf::{SetReceiver, joserfc_available, verify_sets};
use e2e_tests::{TestApp, backends};
use platform::ssf::{CAEP_SESSION_REVOKED, GRANT_REVOKED, REVOCATION, SSF_VERIFICATION};
use reqwest::Method;
use serde_json::{Value, json};

const WAIT: StdDuration = StdDuration::from_secs(15);

/// A sandbox client of a new developer: (client id, secret).
async fn client(app: &TestApp, email: &str) -> (String, String) {
    let dev = app.developer_token(email).await;
    app.sandbox_client(&dev).await
}

/// A client-authenticated call to the SSF API: (status, JSON body or Null).
async fn call(
    app: &TestApp,
    (id, secret): (&str, &str),
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = app
        .client
        .request(method, app.url(path))
        .basic_auth(id, Some(secret));
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn revoke_as_client(app: &TestApp, (id, secret): (&str, &str), grant: &str) {
    let r = app
        .client
        .delete(app.url(&format!("/api/v1/grants/{grant}")))
        .basic_auth(id, Some(secret))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
}

async fn revoke_as_customer(app: &TestApp, grant: &str) {
    let web = e2e_tests::dashboard::customer_client(app, "alice").await;
    let csrf = e2e_tests::dashboard::me_csrf(app, &web).await;
    let r = web
        .delete(app.url(&format!("/api/v1/me/grants/{grant}")))
        .header("X-CSRF-Token", csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
}

async fn poll(
    app: &TestApp,
    c: (&str, &str),
    stream: &str,
    body: Value,
) -> (Vec<String>, Vec<String>, bool) {
    let (status, v) = call(
        app,
        c,
        Method::POST,
        &format!("/ssf/poll/{stream}"),
        Some(body),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let sets = v["sets"].as_object().unwrap();
    let jtis: Vec<String> = sets.keys().cloned().collect();
    let jws: Vec<String> = sets
        .values()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    (jtis, jws, v["moreAvailable"].as_bool().unwrap())
}

async fn jwks(app: &TestApp) -> Value {
    app.get("/ssf/jwks").await.json().await.unwrap()
}

/// The events of verified SETs, as (event type, subject id).
fn events_of(verified: &[Value]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = verified
        .iter()
        .map(|v| {
            let c = &v["claims"];
            let ty = c["events"]
                .as_object()
                .unwrap()
                .keys()
                .next()
                .unwrap()
                .clone();
            (ty, c["sub_id"]["id"].as_str().unwrap().to_string())
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn a_poll_stream_delivers_signed_events_about_the_clients_own_grants_across_a_key_rotation() {
    if !joserfc_available() {
        eprintln!("python3 with joserfc not found: the SSF receiver test is skipped");
        return;
    }
    for backend in backends() {
        let (app, _clock) = spawn_with_clock(backend, |_| {}).await;
        let meta: Value = app
            .get("/.well-known/ssf-configuration")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(meta["issuer"], app.address.as_str());
        assert_eq!(meta["jwks_uri"], app.url("/ssf/jwks"));
        assert_eq!(meta["spec_version"], "1_0");
        let (a_id, a_secret) = client(&app, "ssf-a@fintech.example").await;
        let (b_id, b_secret) = client(&app, "ssf-b@fintech.example").await;
        let a = (a_id.as_str(), a_secret.as_str());
        let b = (b_id.as_str(), b_secret.as_str());

        let (status, stream) = call(
            &app,
            a,
            Method::POST,
            "/ssf/streams",
            Some(json!({
                "delivery": { "method": "urn:ietf:rfc:8936" },
                "events_requested": [GRANT_REVOKED, CAEP_SESSION_REVOKED, "urn:example:unknown"],
                "description": "revocations",
            })),
        )
        .await;
        assert_eq!(status, 201, "{stream}");
        let sid = stream["stream_id"].as_str().unwrap().to_string();
        assert_eq!(stream["aud"], a_id.as_str());
        assert_eq!(
            stream["delivery"]["endpoint_url"],
            app.url(&format!("/ssf/poll/{sid}"))
        );
        assert_eq!(
            stream["events_delivered"],
            json!([GRANT_REVOKED, CAEP_SESSION_REVOKED])
        );

        let a_grants = insert_grants(&app, &a_id, 3, Duration::days(30), Duration::days(1)).await;
        let b_grant = insert_grants(&app, &b_id, 1, Duration::days(30), Duration::days(1))
            .await
            .remove(0);
        revoke_as_customer(&app, &a_grants[0]).await;
        revoke_as_client(&app, b, &b_grant).await;

        // Only A's grant, once per requested type; not acknowledged, so delivered again.
        let (jtis, sets, more) = poll(&app, a, &sid, json!({ "returnImmediately": true })).await;
        assert!(!more);
        let again = poll(&app, a, &sid, json!({ "returnImmediately": true })).await;
        assert_eq!(again.0, jtis, "{backend:?}: unacknowledged SETs come again");
        let keys_before = jwks(&app).await;
        let verified = verify_sets(&keys_before, &sets, &app.address, &a_id)
            .await
            .unwrap();
        assert_eq!(
            events_of(&verified),
            vec![
                (CAEP_SESSION_REVOKED.to_string(), a_grants[0].clone()),
                (GRANT_REVOKED.to_string(), a_grants[0].clone()),
            ],
            "{backend:?}"
        );
        let ours = verified
            .iter()
            .find(|v| v["claims"]["events"].get(GRANT_REVOKED).is_some())
            .unwrap();
        assert_eq!(
            ours["claims"]["events"][GRANT_REVOKED]["revoked_by"],
            "customer"
        );
        assert_eq!(ours["claims"]["sub_id"]["format"], "opaque");
        let caep = verified
            .iter()
            .find(|v| v["claims"]["events"].get(CAEP_SESSION_REVOKED).is_some())
            .unwrap();
        assert_eq!(
            caep["claims"]["events"][CAEP_SESSION_REVOKED]["initiating_entity"],
            "user"
        );
        // A changed SET does not verify with the stock library.
        let mut forged = sets[0].clone();
        forged.insert(forged.find('.').unwrap() + 2, 'x');
        assert!(
            verify_sets(&keys_before, &[forged], &app.address, &a_id)
                .await
                .is_err()
        );
        // Nor does it pass as a SET for another audience.
        assert!(
            verify_sets(&keys_before, &sets, &app.address, &b_id)
                .await
                .is_err()
        );

        // Acknowledged: gone.
        let (none, _, _) = poll(
            &app,
            a,
            &sid,
            json!({ "returnImmediately": true, "ack": jtis }),
        )
        .await;
        assert!(none.is_empty(), "{backend:?}: {none:?}");

        // A removed subject gets no events; the others still do.
        let (status, _) = call(
            &app,
            a,
            Method::POST,
            "/ssf/subjects:remove",
            Some(json!({
                "stream_id": sid, "subject": { "format": "opaque", "id": a_grants[1] },
            })),
        )
        .await;
        assert_eq!(status, 204);
        // B's grant is not A's to add or remove.
        let (status, _) = call(
            &app,
            a,
            Method::POST,
            "/ssf/subjects:add",
            Some(json!({
                "stream_id": sid, "subject": { "format": "opaque", "id": b_grant },
            })),
        )
        .await;
        assert_eq!(status, 400);

        // Key rotation: new SETs name the new kid; the JWK Set lists both keys.
        let p = app.platform.clone();
        let now = p.now();
        let ring = app.ssf.keys.clone();
        p.db.run(move |c| {
            use consent::oauth::keys::{KeyPurpose, load, rotate};
            rotate(
                c,
                &p.master_key,
                now,
                Duration::minutes(10),
                KeyPurpose::SecurityEvents,
                platform::audit::Actor::system("test"),
            )?;
            ring.replace(load(
                c,
                &p.master_key.cipher("signing-keys"),
                now,
                KeyPurpose::SecurityEvents,
            )?);
            Ok(())
        })
        .await
        .unwrap();
        revoke_as_client(&app, a, &a_grants[1]).await;
        revoke_as_client(&app, a, &a_grants[2]).await;
        let (_, after, _) = poll(&app, a, &sid, json!({ "returnImmediately": true })).await;
        let keys_after = jwks(&app).await;
        assert_eq!(
            keys_after["keys"].as_array().unwrap().len(),
            2,
            "{keys_after}"
        );
        let mut both = sets.clone();
        both.extend(after.iter().cloned());
        let verified = verify_sets(&keys_after, &both, &app.address, &a_id)
            .await
            .unwrap();
        let new_kid = &verified[sets.len()]["kid"];
        assert_ne!(
            &verified[0]["kid"], new_kid,
            "{backend:?}: signed with the new key"
        );
        assert_eq!(
            events_of(&verified[sets.len()..]),
            vec![
                (CAEP_SESSION_REVOKED.to_string(), a_grants[2].clone()),
                (GRANT_REVOKED.to_string(), a_grants[2].clone()),
            ],
            "{backend:?}: nothing about the removed subject"
        );

        // Verification: an event with the state, then a wait before the next request.
        let (status, _) = call(
            &app,
            a,
            Method::POST,
            "/ssf/verify",
            Some(json!({ "stream_id": sid, "state": "s-1" })),
        )
        .await;
        assert_eq!(status, 204);
        let (status, _) = call(
            &app,
            a,
            Method::POST,
            "/ssf/verify",
            Some(json!({ "stream_id": sid })),
        )
        .await;
        assert_eq!(status, 429);
        let (_, sets, _) = poll(
            &app,
            a,
            &sid,
            json!({ "returnImmediately": true, "maxEvents": 10 }),
        )
        .await;
        let verified = verify_sets(&keys_after, &sets, &app.address, &a_id)
            .await
            .unwrap();
        let v = verified
            .iter()
            .find(|v| v["claims"]["events"].get(SSF_VERIFICATION).is_some())
            .expect("a verification event");
        assert_eq!(v["claims"]["events"][SSF_VERIFICATION]["state"], "s-1");
        assert_eq!(v["claims"]["sub_id"]["id"], sid.as_str());
        // An error acknowledgement (setErrs) is final too: the SET is kept as failed, with the
        // receiver's error, and not delivered again; the others are acknowledged.
        let refused = v["claims"]["jti"].as_str().unwrap().to_string();
        let rest: Vec<String> = verified
            .iter()
            .map(|v| v["claims"]["jti"].as_str().unwrap().to_string())
            .filter(|j| *j != refused)
            .collect();
        let (none, _, _) = poll(&app, a, &sid, json!({
            "returnImmediately": true,
            "ack": rest,
            "setErrs": { refused.clone(): { "err": "invalid_key", "description": "unknown kid" } },
        }))
        .await;
        assert!(none.is_empty(), "{backend:?}: {none:?}");
        let failed: Vec<(String, Option<String>)> = {
            use diesel::prelude::*;
            use platform::storage::schema::ssf_events as e;
            let jti = refused.clone();
            app.platform
                .db
                .run(move |c| {
                    Ok(e::table
                        .filter(e::jti.eq(jti))
                        .select((e::status, e::last_error))
                        .load(c)?)
                })
                .await
                .unwrap()
        };
        assert_eq!(
            failed,
            vec![(
                "failed".to_string(),
                Some("invalid_key: unknown kid".to_string())
            )],
            "{backend:?}"
        );

        // A stranger can neither read nor change nor poll A's stream; nobody without
        // credentials can.
        let q = format!("/ssf/streams?stream_id={sid}");
        assert_eq!(call(&app, b, Method::GET, &q, None).await.0, 404);
        assert_eq!(
            call(
                &app,
                b,
                Method::GET,
                &format!("/ssf/status?stream_id={sid}"),
                None
            )
            .await
            .0,
            404
        );
        assert_eq!(
            call(
                &app,
                b,
                Method::POST,
                "/ssf/status",
                Some(json!({ "stream_id": sid, "status": "disabled" }))
            )
            .await
            .0,
            404
        );
        assert_eq!(
            call(
                &app,
                b,
                Method::PATCH,
                "/ssf/streams",
                Some(json!({ "stream_id": sid, "description": "mine" }))
            )
            .await
            .0,
            404
        );
        assert_eq!(
            call(
                &app,
                b,
                Method::POST,
                "/ssf/verify",
                Some(json!({ "stream_id": sid }))
            )
            .await
            .0,
            404
        );
        assert_eq!(
            call(
                &app,
                b,
                Method::POST,
                &format!("/ssf/poll/{sid}"),
                Some(json!({ "returnImmediately": true }))
            )
            .await
            .0,
            404
        );
        assert_eq!(call(&app, b, Method::DELETE, &q, None).await.0, 404);
        assert_eq!(
            call(&app, b, Method::GET, "/ssf/streams", None).await.1,
            json!([])
        );
        assert_eq!(
            call(&app, (a_id.as_str(), "wrong"), Method::GET, &q, None)
                .await
                .0,
            401
        );
        let r = app.client.get(app.url(&q)).send().await.unwrap();
        assert_eq!(r.status(), 401);
        // A's stream is unchanged, and A still reads it.
        let (status, mine) = call(&app, a, Method::GET, &q, None).await;
        assert_eq!(
            (status, mine["description"].as_str()),
            (200, Some("revocations"))
        );
        let (status, _) = call(&app, a, Method::DELETE, &q, None).await;
        assert_eq!(status, 204);
        assert_eq!(call(&app, a, Method::GET, &q, None).await.0, 404);
        app.stop().await;
    }
}

#[tokio::test]
async fn a_push_stream_retries_a_failing_receiver_queues_while_paused_and_drops_while_disabled() {
    if !joserfc_available() {
        eprintln!("python3 with joserfc not found: the SSF push test is skipped");
        return;
    }
    for backend in backends() {
        let (app, _clock) = spawn_with_clock(backend, |s| {
            s.webhooks.initial_backoff = "1s".parse().unwrap();
        })
        .await;
        let receiver = SetReceiver::start().await;
        let (id, secret) = client(&app, "ssf-push@fintech.example").await;
        let c = (id.as_str(), secret.as_str());
        let (status, stream) = call(
            &app,
            c,
            Method::POST,
            "/ssf/streams",
            Some(json!({
                "delivery": {
                    "method": "urn:ietf:rfc:8935",
                    "endpoint_url": receiver.url,
                    "authorization_header": "Bearer receiver-secret",
                },
                "events_requested": [GRANT_REVOKED],
            })),
        )
        .await;
        assert_eq!(status, 201, "{stream}");
        assert!(
            stream["delivery"].get("authorization_header").is_none(),
            "write-only"
        );
        let sid = stream["stream_id"].as_str().unwrap().to_string();
        let polled = call(
            &app,
            c,
            Method::POST,
            &format!("/ssf/poll/{sid}"),
            Some(json!({})),
        )
        .await;
        assert_eq!(
            polled.0, 400,
            "{backend:?}: a push stream is not polled: {}",
            polled.1
        );
        let grants = insert_grants(&app, &id, 6, Duration::days(30), Duration::days(1)).await;

        // The receiver fails: the SET comes again after the backoff, and once accepted, no more.
        receiver.answer(500);
        revoke_as_client(&app, c, &grants[0]).await;
        let got = receiver.wait_for(1, WAIT).await;
        assert_eq!(got.len(), 1, "{backend:?}");
        receiver.answer(202);
        let got = receiver.wait_for(2, WAIT).await;
        assert_eq!(got.len(), 2, "{backend:?}: retried");
        assert_eq!(got[0].set, got[1].set, "the same SET again (signed alike)");
        assert_eq!(got[1].content_type, "application/secevent+jwt");
        assert_eq!(got[1].authorization, "Bearer receiver-secret");
        tokio::time::sleep(StdDuration::from_secs(2)).await;
        assert_eq!(
            receiver.received().len(),
            2,
            "{backend:?}: accepted once, sent no more"
        );

        // Paused: queued, then delivered in order once enabled.
        let (status, _) = call(
            &app,
            c,
            Method::POST,
            "/ssf/status",
            Some(json!({ "stream_id": sid, "status": "paused", "reason": "maintenance" })),
        )
        .await;
        assert_eq!(status, 200);
        for g in &grants[1..4] {
            revoke_as_client(&app, c, g).await;
        }
        tokio::time::sleep(StdDuration::from_secs(1)).await;
        assert_eq!(
            receiver.received().len(),
            2,
            "{backend:?}: nothing while paused"
        );
        let (status, s) = call(
            &app,
            c,
            Method::GET,
            &format!("/ssf/status?stream_id={sid}"),
            None,
        )
        .await;
        assert_eq!(
            (status, s["status"].as_str(), s["reason"].as_str()),
            (200, Some("paused"), Some("maintenance"))
        );
        call(
            &app,
            c,
            Method::POST,
            "/ssf/status",
            Some(json!({ "stream_id": sid, "status": "enabled" })),
        )
        .await;
        let got = receiver.wait_for(5, WAIT).await;
        assert_eq!(got.len(), 5, "{backend:?}");
        let keys = jwks(&app).await;
        let sets: Vec<String> = got.iter().map(|p| p.set.clone()).collect();
        let verified = verify_sets(&keys, &sets, &app.address, &id).await.unwrap();
        let subjects: Vec<&str> = verified[2..]
            .iter()
            .map(|v| v["claims"]["sub_id"]["id"].as_str().unwrap())
            .collect();
        let expected: Vec<&str> = grants[1..4].iter().map(String::as_str).collect();
        assert_eq!(subjects, expected, "{backend:?}: in order");

        // Disabled: dropped, also after enabling again.
        call(
            &app,
            c,
            Method::POST,
            "/ssf/status",
            Some(json!({ "stream_id": sid, "status": "disabled" })),
        )
        .await;
        revoke_as_client(&app, c, &grants[4]).await;
        call(
            &app,
            c,
            Method::POST,
            "/ssf/status",
            Some(json!({ "stream_id": sid, "status": "enabled" })),
        )
        .await;
        revoke_as_client(&app, c, &grants[5]).await;
        let got = receiver.wait_for(6, WAIT).await;
        tokio::time::sleep(StdDuration::from_millis(800)).await;
        let got_now = receiver.received();
        assert_eq!(got_now.len(), 6, "{backend:?}: {got:?}");
        let last = verify_sets(&keys, &[got_now[5].set.clone()], &app.address, &id)
            .await
            .unwrap();
        assert_eq!(last[0]["claims"]["sub_id"]["id"], grants[5].as_str());

        // A receiver refusing a SET (400) is not retried: the next one goes.
        receiver.answer(400);
        let (status, _) = call(
            &app,
            c,
            Method::POST,
            "/ssf/verify",
            Some(json!({ "stream_id": sid })),
        )
        .await;
        assert_eq!(status, 204);
        receiver.wait_for(7, WAIT).await;
        tokio::time::sleep(StdDuration::from_millis(1500)).await;
        assert_eq!(
            receiver.received().len(),
            7,
            "{backend:?}: a refused SET is not sent again"
        );
        receiver.stop().await;
        app.stop().await;
    }
}

#[tokio::test]
async fn bad_stream_requests_are_refused_and_change_nothing() {
    let app = e2e_tests::spawn_app_with(
        e2e_tests::Backend::Sqlite,
        e2e_tests::lifecycle::clock_options(&Default::default()),
        |s| {
            s.webhooks.allow_private_targets = false;
        },
    )
    .await;
    let (id, secret) = client(&app, "ssf-bad@fintech.example").await;
    let c = (id.as_str(), secret.as_str());
    let refused = [
        // A receiver on a private address (literal or loopback), even for a sandbox client.
        json!({ "delivery": { "method": "urn:ietf:rfc:8935", "endpoint_url": "http://127.0.0.1:9/events" } }),
        json!({ "delivery": { "method": "urn:ietf:rfc:8935", "endpoint_url": "https://10.1.2.3/events" } }),
        json!({ "delivery": { "method": "urn:ietf:rfc:8935", "endpoint_url": "https://[::1]/events" } }),
        // No endpoint, not https, an unknown method.
        json!({ "delivery": { "method": "urn:ietf:rfc:8935" } }),
        json!({ "delivery": { "method": "urn:ietf:rfc:8935", "endpoint_url": "ftp://rs.example/x" } }),
        json!({ "delivery": { "method": "urn:example:carrier-pigeon" } }),
        // The revocation feed with other events; too many event types; oversized text.
        json!({ "delivery": { "method": "urn:ietf:rfc:8936" }, "events_requested": [REVOCATION, GRANT_REVOKED] }),
        json!({ "delivery": { "method": "urn:ietf:rfc:8936" }, "events_requested": vec!["urn:x"; 33] }),
        json!({ "delivery": { "method": "urn:ietf:rfc:8936" }, "description": "x".repeat(501) }),
        json!({ "delivery": { "method": "urn:ietf:rfc:8936", "authorization_header": "a\nb" } }),
        // Not the documented shape.
        json!({ "events_requested": [GRANT_REVOKED] }),
        json!({ "delivery": "poll" }),
    ];
    for body in refused {
        let (status, problem) =
            call(&app, c, Method::POST, "/ssf/streams", Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {problem}");
        assert!(
            problem["detail"].is_string() || problem["errors"].is_array(),
            "{problem}"
        );
    }
    assert_eq!(
        call(&app, c, Method::GET, "/ssf/streams", None).await.1,
        json!([]),
        "nothing created"
    );

    let poll = json!({ "delivery": { "method": "urn:ietf:rfc:8936" } });
    let (_, s) = call(&app, c, Method::POST, "/ssf/streams", Some(poll.clone())).await;
    let sid = s["stream_id"].as_str().unwrap().to_string();
    for bad in [
        json!({ "stream_id": sid, "status": "on" }),
        json!({ "stream_id": sid }),
        json!({ "stream_id": sid, "status": "paused", "reason": "x".repeat(501) }),
    ] {
        assert_eq!(
            call(&app, c, Method::POST, "/ssf/status", Some(bad.clone()))
                .await
                .0,
            400,
            "{bad}"
        );
    }
    let (_, st) = call(
        &app,
        c,
        Method::GET,
        &format!("/ssf/status?stream_id={sid}"),
        None,
    )
    .await;
    assert_eq!(st["status"], "enabled", "unchanged");
    for bad in [
        json!({ "maxEvents": -1 }),
        json!({ "ack": ["x".repeat(129)] }),
        json!({ "ack": vec!["j"; 1001] }),
        json!({ "ack": "all" }),
    ] {
        assert_eq!(
            call(
                &app,
                c,
                Method::POST,
                &format!("/ssf/poll/{sid}"),
                Some(bad.clone())
            )
            .await
            .0,
            400,
            "{bad}"
        );
    }
    assert_eq!(
        call(&app, c, Method::DELETE, "/ssf/streams", None).await.0,
        400,
        "stream_id required"
    );
    assert_eq!(
        call(
            &app,
            c,
            Method::PUT,
            "/ssf/streams",
            Some(json!({ "stream_id": sid }))
        )
        .await
        .0,
        400,
        "PUT needs delivery"
    );
    let (status, _) = call(
        &app,
        c,
        Method::POST,
        "/ssf/subjects:remove",
        Some(json!({
            "stream_id": sid, "subject": { "format": "email", "id": "a@b.example" },
        })),
    )
    .await;
    assert_eq!(status, 400);
    // At most five streams per client.
    for _ in 0..4 {
        assert_eq!(
            call(&app, c, Method::POST, "/ssf/streams", Some(poll.clone()))
                .await
                .0,
            201
        );
    }
    assert_eq!(
        call(&app, c, Method::POST, "/ssf/streams", Some(poll.clone()))
            .await
            .0,
        409
    );
    app.stop().await;
}

#[tokio::test]
async fn a_resource_server_keeps_its_revocation_list_from_a_poll_stream() {
    if !joserfc_available() {
        eprintln!("python3 with joserfc not found: the SSF feed test is skipped");
        return;
    }
    for backend in backends() {
        let (app, _clock) = spawn_with_clock(backend, |_| {}).await;
        let (rs_id, rs_secret) = client(&app, "ssf-rs@bank.example").await;
        let (f_id, f_secret) = client(&app, "ssf-fintech@fintech.example").await;
        let rs = (rs_id.as_str(), rs_secret.as_str());
        let grants = insert_grants(&app, &f_id, 3, Duration::days(30), Duration::days(1)).await;
        // Ended before the stream exists: a new resource server still learns of it.
        revoke_as_client(&app, (f_id.as_str(), f_secret.as_str()), &grants[0]).await;
        let (status, stream) = call(
            &app,
            rs,
            Method::POST,
            "/ssf/streams",
            Some(json!({
                "delivery": { "method": "urn:ietf:rfc:8936" },
                "events_requested": [REVOCATION],
            })),
        )
        .await;
        assert_eq!(status, 201, "{stream}");
        let sid = stream["stream_id"].as_str().unwrap().to_string();
        revoke_as_customer(&app, &grants[1]).await;

        let keys = jwks(&app).await;
        let read = |body: Value| {
            let app = &app;
            let sid = sid.clone();
            async move { poll(app, rs, &sid, body).await }
        };
        // The long poll returns as soon as something is there.
        let (jtis, sets, _) = read(json!({})).await;
        let verified = verify_sets(&keys, &sets, &app.address, &rs_id)
            .await
            .unwrap();
        let subjects: Vec<&str> = verified
            .iter()
            .map(|v| v["claims"]["sub_id"]["id"].as_str().unwrap())
            .collect();
        assert_eq!(
            subjects,
            vec![grants[0].as_str(), grants[1].as_str()],
            "{backend:?}: the feed, in order"
        );
        assert!(
            verified
                .iter()
                .all(|v| v["claims"]["events"].get(REVOCATION).is_some())
        );

        // A made-up acknowledgement far ahead cannot skip entries still to come.
        let ahead = format!("{sid}.999999999");
        let (none, _, _) =
            read(json!({ "returnImmediately": true, "ack": [jtis[1], ahead] })).await;
        assert!(none.is_empty(), "{backend:?}");
        revoke_as_client(&app, (f_id.as_str(), f_secret.as_str()), &grants[2]).await;
        let (_, sets, _) = read(json!({ "returnImmediately": true })).await;
        let verified = verify_sets(&keys, &sets, &app.address, &rs_id)
            .await
            .unwrap();
        assert_eq!(verified.len(), 1, "{backend:?}");
        assert_eq!(verified[0]["claims"]["sub_id"]["id"], grants[2].as_str());
        app.stop().await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Customer revocation to a poll receiver (a long poll waiting) and to a push receiver: p50 and
/// p99 in milliseconds, from just before the customer's DELETE to the SET in the receiver's
/// hands. A measurement, not a check: `cargo test -p e2e-tests --test integration
/// ssf::propagation -- --ignored --nocapture` (BENCHMARKS.md).
#[tokio::test]
#[ignore]
async fn propagation() {
    const N: usize = 200;
    for backend in backends() {
        let (app, _clock) = spawn_with_clock(backend, |_| {}).await;
        let receiver = SetReceiver::start().await;
        let (id, secret) = client(&app, "ssf-timing@fintech.example").await;
        let c = (id.as_str(), secret.as_str());
        let (_, polled) = call(
            &app,
            c,
            Method::POST,
            "/ssf/streams",
            Some(json!({
                "delivery": { "method": "urn:ietf:rfc:8936" }, "events_requested": [GRANT_REVOKED],
            })),
        )
        .await;
        call(
            &app,
            c,
            Method::POST,
            "/ssf/streams",
            Some(json!({
                "delivery": { "method": "urn:ietf:rfc:8935", "endpoint_url": receiver.url },
                "events_requested": [GRANT_REVOKED],
            })),
        )
        .await;
        let sid = polled["stream_id"].as_str().unwrap().to_string();
        let grants = insert_grants(&app, &id, N, Duration::days(30), Duration::days(1)).await;
        let web = e2e_tests::dashboard::customer_client(&app, "alice").await;
        let csrf = e2e_tests::dashboard::me_csrf(&app, &web).await;

        // A second poll stream, read through another instance (PostgreSQL + Redis: the
        // revocation channel wakes its long poll).
        let (_, other) = call(
            &app,
            c,
            Method::POST,
            "/ssf/streams",
            Some(json!({
                "delivery": { "method": "urn:ietf:rfc:8936" }, "events_requested": [GRANT_REVOKED],
            })),
        )
        .await;
        let b = app.another_instance().await;
        // The poll receivers: long polls back to back, acknowledging what they got.
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spawn_poller = |url: String| {
            let (http, id, secret, done) =
                (app.client.clone(), id.clone(), secret.clone(), done.clone());
            tokio::spawn(async move {
                let mut seen = std::collections::HashMap::new();
                let mut ack: Vec<String> = Vec::new();
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    let v: Value = http
                        .post(&url)
                        .basic_auth(&id, Some(&secret))
                        .json(&json!({ "maxEvents": 100, "ack": ack }))
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    let at = std::time::Instant::now();
                    ack = Vec::new();
                    for (jti, set) in v["sets"].as_object().unwrap() {
                        let grant =
                            e2e_tests::ssf::claims_of(set.as_str().unwrap())["sub_id"]["id"]
                                .as_str()
                                .unwrap()
                                .to_string();
                        seen.insert(grant, at);
                        ack.push(jti.clone());
                    }
                }
                seen
            })
        };
        let poller = spawn_poller(app.url(&format!("/ssf/poll/{sid}")));
        let remote = spawn_poller(b.url(&format!(
            "/ssf/poll/{}",
            other["stream_id"].as_str().unwrap()
        )));
        tokio::time::sleep(StdDuration::from_millis(300)).await;
        let mut started = std::collections::HashMap::new();
        // The floor: the revocation request itself (its 204), measured in the same run.
        let mut request_ms: Vec<f64> = Vec::new();
        for g in &grants {
            let t0 = std::time::Instant::now();
            started.insert(g.clone(), t0);
            let r = web
                .delete(app.url(&format!("/api/v1/me/grants/{g}")))
                .header("X-CSRF-Token", &csrf)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 204);
            request_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
            tokio::time::sleep(StdDuration::from_millis(20)).await;
        }
        receiver.wait_for(N, StdDuration::from_secs(60)).await;
        tokio::time::sleep(StdDuration::from_secs(1)).await;
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let polled_at = poller.await.unwrap();
        let remote_at = remote.await.unwrap();
        let ms = |at: std::time::Instant, g: &str| (at - started[g]).as_secs_f64() * 1000.0;
        let mut poll_ms: Vec<f64> = polled_at.iter().map(|(g, at)| ms(*at, g)).collect();
        let mut remote_ms: Vec<f64> = remote_at.iter().map(|(g, at)| ms(*at, g)).collect();
        let mut push_ms: Vec<f64> = receiver
            .received()
            .iter()
            .map(|p| {
                let g = e2e_tests::ssf::claims_of(&p.set)["sub_id"]["id"]
                    .as_str()
                    .unwrap()
                    .to_string();
                ms(p.at, &g)
            })
            .collect();
        assert_eq!(
            (poll_ms.len(), push_ms.len(), remote_ms.len()),
            (N, N, N),
            "{backend:?}"
        );
        for v in [&mut poll_ms, &mut push_ms, &mut remote_ms, &mut request_ms] {
            v.sort_by(f64::total_cmp);
        }
        let floor = percentile(&request_ms, 0.5);
        println!(
            "{backend:?}: p50 over the revocation request's p50 ({floor:.1} ms): poll {:.2}x, push {:.2}x, poll on another instance {:.2}x",
            percentile(&poll_ms, 0.5) / floor,
            percentile(&push_ms, 0.5) / floor,
            percentile(&remote_ms, 0.5) / floor,
        );
        println!(
            "{backend:?}: {N} customer revocations; poll p50 {:.1} ms p99 {:.1} ms; push p50 {:.1} ms p99 {:.1} ms; poll on another instance p50 {:.1} ms p99 {:.1} ms",
            percentile(&poll_ms, 0.5),
            percentile(&poll_ms, 0.99),
            percentile(&push_ms, 0.5),
            percentile(&push_ms, 0.99),
            percentile(&remote_ms, 0.5),
            percentile(&remote_ms, 0.99),
        );
        b.stop().await;
        receiver.stop().await;
        app.stop().await;
    }
}

/// A FAPI client (`private_key_jwt`, credentials in a form) manages its streams with a token of
/// the client_credentials grant (scope `ssf`); the token is good for the SSF API only, for its
/// own client's streams only, and nothing else is granted.
#[tokio::test]
async fn a_private_key_jwt_client_uses_a_client_credentials_token_for_the_ssf_api() {
    for backend in backends() {
        let (app, clock) = spawn_with_clock(backend, |_| {}).await;
        let fapi = e2e_tests::oauth::FapiClient::register(
            &app,
            "c_ssf_fapi",
            "sandbox",
            "https://fintech.example/cb",
        )
        .await;
        let form =
            |scope: &'static str| vec![("grant_type", "client_credentials"), ("scope", scope)];
        // Nothing but scope=ssf; no DPoP binding pretended; a bad assertion is a bad client.
        let r = fapi
            .post(&app, "/oauth2/token", &form("accounts:read"), false)
            .await;
        assert_eq!(r.status(), 400);
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_scope");
        let r = fapi.post(&app, "/oauth2/token", &form("ssf"), true).await;
        assert_eq!(
            r.status(),
            400,
            "{backend:?}: a DPoP proof is refused, not ignored"
        );
        let r = app
            .client
            .post(app.url("/oauth2/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("scope", "ssf"),
                ("client_assertion_type", e2e_tests::oauth::ASSERTION_TYPE),
                ("client_assertion", "e30.e30.x"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);

        let r = fapi.post(&app, "/oauth2/token", &form("ssf"), false).await;
        assert_eq!(r.status(), 200, "{backend:?}");
        assert_eq!(r.headers()["cache-control"], "no-store");
        let t: Value = r.json().await.unwrap();
        assert_eq!(
            (t["token_type"].as_str(), t["scope"].as_str()),
            (Some("Bearer"), Some("ssf"))
        );
        assert!(t.get("refresh_token").is_none() && t.get("grant_id").is_none());
        let token = t["access_token"].as_str().unwrap().to_string();
        let bearer = |m: Method, path: &str, token: &str| {
            app.client
                .request(m, app.url(path))
                .bearer_auth(token.to_string())
        };
        let r = bearer(Method::POST, "/ssf/streams", &token)
            .json(&json!({ "delivery": { "method": "urn:ietf:rfc:8936" } }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{backend:?}");
        let stream: Value = r.json().await.unwrap();
        assert_eq!(stream["aud"], "c_ssf_fapi");
        let sid = stream["stream_id"].as_str().unwrap();
        let r = bearer(Method::GET, &format!("/ssf/status?stream_id={sid}"), &token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);

        // Another client's token does not reach this stream.
        let (other, other_secret) = client(&app, "ssf-other@fintech.example").await;
        let r = app
            .client
            .post(app.url("/oauth2/token"))
            .basic_auth(&other, Some(&other_secret))
            .form(&[("grant_type", "client_credentials"), ("scope", "ssf")])
            .send()
            .await
            .unwrap();
        let other_token = r.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        let r = bearer(
            Method::GET,
            &format!("/ssf/streams?stream_id={sid}"),
            &other_token,
        )
        .send()
        .await
        .unwrap();
        assert_eq!(r.status(), 404);
        // The token is for the SSF API only.
        let r = bearer(Method::GET, "/oauth2/revocations", &token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let r = bearer(Method::GET, "/sandbox/v1/accounts", &token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        // A made-up or expired token is refused.
        let r = bearer(Method::GET, "/ssf/streams", "ssf_at_madeup")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        clock.advance(Duration::minutes(11));
        let r = bearer(Method::GET, &format!("/ssf/status?stream_id={sid}"), &token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{backend:?}: expired");
        app.stop().await;
    }
}

/// Ten creates at once for one client: five streams, five 409s (the limit holds under
/// concurrency, on PostgreSQL by a lock on the client's row).
/// The revocation feed goes by push only to production clients: a sandbox client (anyone may
/// sign up for one) cannot create a feed push stream, nor make one by changing the delivery or
/// the events of a stream it has, and nothing changes when refused. A production client can.
#[tokio::test]
async fn the_revocation_feed_is_pushed_only_to_production_clients() {
    for backend in backends() {
        let app = e2e_tests::spawn_app_with(backend, Default::default(), |s| {
            s.webhooks.allow_private_targets = false;
        })
        .await;
        let (id, secret) = client(&app, "ssf-feed@fintech.example").await;
        let c = (id.as_str(), secret.as_str());
        let push =
            json!({ "method": "urn:ietf:rfc:8935", "endpoint_url": "https://rs.example/events" });
        let poll = json!({ "method": "urn:ietf:rfc:8936" });
        let create = |body: Value| call(&app, c, Method::POST, "/ssf/streams", Some(body));

        let (status, problem) =
            create(json!({ "delivery": push, "events_requested": [REVOCATION] })).await;
        assert_eq!(status, 400, "{backend:?}: {problem}");
        assert_eq!(
            problem["errors"][0]["field"], "delivery.method",
            "{problem}"
        );

        // A poll feed stream, then push delivery asked for: refused, the stream as it was.
        let (status, feed) =
            create(json!({ "delivery": poll, "events_requested": [REVOCATION] })).await;
        assert_eq!(status, 201, "{feed}");
        let feed_id = feed["stream_id"].as_str().unwrap().to_string();
        let patch = json!({ "stream_id": feed_id, "delivery": push });
        let (status, _) = call(&app, c, Method::PATCH, "/ssf/streams", Some(patch)).await;
        assert_eq!(status, 400, "{backend:?}");
        // A push stream of the client's own events, then the feed asked for: refused too.
        let (status, own) =
            create(json!({ "delivery": push, "events_requested": [GRANT_REVOKED] })).await;
        assert_eq!(status, 201, "{own}");
        let own_id = own["stream_id"].as_str().unwrap().to_string();
        let patch = json!({ "stream_id": own_id, "events_requested": [REVOCATION] });
        let (status, _) = call(&app, c, Method::PATCH, "/ssf/streams", Some(patch)).await;
        assert_eq!(status, 400, "{backend:?}");
        let (_, streams) = call(&app, c, Method::GET, "/ssf/streams", None).await;
        let shapes: Vec<(Value, Value)> = streams
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["delivery"]["method"].clone(),
                    s["events_delivered"].clone(),
                )
            })
            .collect();
        assert!(
            shapes.contains(&(json!("urn:ietf:rfc:8936"), json!([REVOCATION])))
                && shapes.contains(&(json!("urn:ietf:rfc:8935"), json!([GRANT_REVOKED]))),
            "{backend:?}: unchanged: {streams}"
        );

        // A production client (KYC'd; FAPI: private_key_jwt) has the feed pushed.
        let fapi = e2e_tests::oauth::FapiClient::register(
            &app,
            "c_feed_prod",
            "production",
            "https://rs.example/cb",
        )
        .await;
        let form = [("grant_type", "client_credentials"), ("scope", "ssf")];
        let r = fapi.post(&app, "/oauth2/token", &form, false).await;
        assert_eq!(r.status(), 200, "{backend:?}");
        let token = r.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        let r = app
            .client
            .post(app.url("/ssf/streams"))
            .bearer_auth(token)
            .json(&json!({ "delivery": push, "events_requested": [REVOCATION] }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{backend:?}: {}", r.text().await.unwrap());
        app.stop().await;
    }
}

/// Production and sandbox streams are pushed in lanes that do not wait for each other: a
/// sandbox receiver that takes every request to the timeout does not hold up a production
/// client's resource server. Before, both were in one pass, which waited for its slowest
/// receiver, so the production SET waited for the sandbox timeout.
#[tokio::test]
async fn slow_sandbox_receivers_do_not_hold_up_production_streams() {
    use diesel::prelude::*;
    let backend = backends().into_iter().last().unwrap();
    let (app, _clock) = spawn_with_clock(backend, |s| {
        s.webhooks.timeout = "60s".parse().unwrap();
    })
    .await;
    let mut hanging = e2e_tests::webhooks::HangingReceiver::start().await;
    let (id, secret) = client(&app, "ssf-slow@fintech.example").await;
    let c = (id.as_str(), secret.as_str());
    let body =
        json!({ "delivery": { "method": "urn:ietf:rfc:8935", "endpoint_url": hanging.url } });
    let (status, slow) = call(&app, c, Method::POST, "/ssf/streams", Some(body)).await;
    assert_eq!(status, 201, "{slow}");
    let slow_id = slow["stream_id"].as_str().unwrap().to_string();

    // A production client's stream of its grants' events, to a receiver that answers at once
    // (pointed at the local receiver in the database: the API takes only https for production).
    let receiver = SetReceiver::start().await;
    e2e_tests::oauth::FapiClient::register(
        &app,
        "c_lane_prod",
        "production",
        "https://rs.example/cb",
    )
    .await;
    let grants = insert_grants(
        &app,
        "c_lane_prod",
        1,
        Duration::days(30),
        Duration::days(1),
    )
    .await;
    let url = receiver.url.clone();
    app.platform
        .db
        .write(move |c| {
            use platform::storage::schema::ssf_streams as s;
            let now = chrono::Utc::now().naive_utc();
            Ok(diesel::insert_into(s::table)
                .values((
                    s::id.eq("ssf_lane_prod"),
                    s::client_id.eq("c_lane_prod"),
                    s::delivery_method.eq("push"),
                    s::endpoint_url.eq(url),
                    s::events_requested.eq(format!("[\"{GRANT_REVOKED}\"]")),
                    s::events_delivered.eq(format!("[\"{GRANT_REVOKED}\"]")),
                    s::status.eq("enabled"),
                    s::push_failures.eq(0),
                    s::created_at.eq(now),
                    s::updated_at.eq(now),
                ))
                .execute(c)?)
        })
        .await
        .unwrap();

    // The sandbox stream's verification goes to the hanging receiver: its pass now waits.
    let verify = json!({ "stream_id": slow_id });
    let (status, _) = call(&app, c, Method::POST, "/ssf/verify", Some(verify)).await;
    assert_eq!(status, 204);
    hanging.accepted(WAIT).await;
    // Meanwhile a production grant ends: its SET arrives long before the sandbox timeout.
    revoke_as_customer(&app, &grants[0]).await;
    let got = receiver.wait_for(1, WAIT).await;
    assert_eq!(
        got.len(),
        1,
        "{backend:?}: the production SET waited for the sandbox pass"
    );
    // Hung up before the stop, which waits for deliveries in flight (up to the timeout).
    drop(hanging);
    receiver.stop().await;
    app.stop().await;
}

/// More push streams than a pass takes: a stream with something to send is pushed whatever the
/// others are. Before, a feed stream counted as having work on every pass, so the 20 oldest
/// (caught up, with nothing to send) took every pass and a newer stream was never pushed.
#[tokio::test]
async fn a_stream_with_work_is_pushed_however_many_streams_are_idle() {
    use diesel::prelude::*;
    let backend = backends().into_iter().last().unwrap();
    let (app, _clock) = spawn_with_clock(backend, |_| {}).await;
    let receiver = SetReceiver::start().await;
    let stream = |id: String, client: String, events: &str, cursor: Option<i64>, age: i64| {
        let (url, events) = (receiver.url.clone(), events.to_string());
        app.platform.db.write(move |c| {
            use platform::storage::schema::ssf_streams as s;
            let at = (chrono::Utc::now() - Duration::minutes(age)).naive_utc();
            Ok(diesel::insert_into(s::table)
                .values((
                    s::id.eq(id),
                    s::client_id.eq(client),
                    s::delivery_method.eq("push"),
                    s::endpoint_url.eq(url),
                    s::events_requested.eq(format!("[\"{events}\"]")),
                    s::events_delivered.eq(format!("[\"{events}\"]")),
                    s::status.eq("enabled"),
                    s::feed_cursor.eq(cursor),
                    s::push_failures.eq(0),
                    s::created_at.eq(at),
                    s::updated_at.eq(at),
                ))
                .execute(c)?)
        })
    };
    // Five production clients with five feed streams each, caught up with the feed.
    let head: i64 = app
        .platform
        .db
        .run(|c| {
            use platform::storage::schema::revocation_feed_head as h;
            Ok(h::table.select(h::last_position).first(c)?)
        })
        .await
        .unwrap();
    for n in 0..5 {
        let client = format!("c_idle_{n}");
        e2e_tests::oauth::FapiClient::register(
            &app,
            &client,
            "production",
            "https://rs.example/cb",
        )
        .await;
        for k in 0..5 {
            let id = format!("ssf_idle_{n}_{k}");
            stream(id, client.clone(), REVOCATION, Some(head), 60)
                .await
                .unwrap();
        }
    }
    // A newer production stream of a client's own grant events.
    e2e_tests::oauth::FapiClient::register(&app, "c_busy", "production", "https://rs.example/cb")
        .await;
    stream("ssf_busy".into(), "c_busy".into(), GRANT_REVOKED, None, 0)
        .await
        .unwrap();
    let grants = insert_grants(&app, "c_busy", 1, Duration::days(30), Duration::days(1)).await;
    // Its revocation is also a feed entry, which every feed stream then has to push: 26
    // streams with work, more than a pass takes.
    revoke_as_customer(&app, &grants[0]).await;
    let grant_revoked = |set: &str| {
        use base64::Engine;
        let claims = set.split('.').nth(1).unwrap_or_default();
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(claims)
            .unwrap_or_default();
        let claims: Value = serde_json::from_slice(&claims).unwrap_or_default();
        claims["events"].get(GRANT_REVOKED).is_some()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while !receiver.received().iter().any(|p| grant_revoked(&p.set)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{backend:?}: the stream of the client's own events was never pushed ({} feed SETs)",
            receiver.received().len()
        );
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    // And every feed stream got the entry, each once.
    let got = receiver.wait_for(26, WAIT).await;
    tokio::time::sleep(StdDuration::from_millis(500)).await;
    assert_eq!(
        (got.len(), receiver.received().len()),
        (26, 26),
        "{backend:?}"
    );
    receiver.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn concurrent_creates_stop_at_five_streams() {
    for backend in backends() {
        let (app, _clock) = spawn_with_clock(backend, |_| {}).await;
        let (id, secret) = client(&app, "ssf-race@fintech.example").await;
        let mut creates = tokio::task::JoinSet::new();
        for _ in 0..10 {
            let (http, url) = (app.client.clone(), app.url("/ssf/streams"));
            let (id, secret) = (id.clone(), secret.clone());
            creates.spawn(async move {
                http.post(url)
                    .basic_auth(&id, Some(&secret))
                    .json(&json!({ "delivery": { "method": "urn:ietf:rfc:8936" } }))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            });
        }
        let mut statuses = creates.join_all().await;
        statuses.sort();
        assert_eq!(statuses, [[201; 5], [409; 5]].concat(), "{backend:?}");
        let (_, list) = call(
            &app,
            (id.as_str(), secret.as_str()),
            Method::GET,
            "/ssf/streams",
            None,
        )
        .await;
        assert_eq!(list.as_array().unwrap().len(), 5, "{backend:?}");
        app.stop().await;
    }
}
