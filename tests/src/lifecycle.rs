//! Helpers for the lifecycle, webhook and extension tests: a server on a controllable clock and
//! grants with a chosen age and expiry written straight to storage (history the clock alone
//! cannot produce).

use std::sync::Arc;

use chrono::Duration;
use diesel::prelude::*;
use platform::clock::OffsetClock;
use platform::config::Settings;
use platform::storage::schema::grant_rows;

use crate::{Backend, TestApp, spawn_app_with};

/// A demo server whose clock the test moves. The periodic sweep stays out of the way (the tests
/// run passes themselves); `customize` adjusts anything else.
pub async fn spawn_with_clock(
    backend: Backend,
    customize: impl FnOnce(&mut Settings),
) -> (TestApp, OffsetClock) {
    let clock = OffsetClock::default();
    let app = spawn_app_with(backend, clock_options(&clock), |s| {
        s.lifecycle.sweep_interval = "1h".parse().expect("duration");
        customize(s);
    })
    .await;
    (app, clock)
}

/// Start options with the demo seed and `clock` (also for [`TestApp::restart`]).
pub fn clock_options(clock: &OffsetClock) -> consent::ServeOptions {
    consent::ServeOptions {
        demo: true,
        clock: Some(Arc::new(clock.clone())),
        ..Default::default()
    }
}

/// `n` authorized grants of alice for `client`, authorized and last used `last_used_ago`,
/// expiring in `expires_in`.
pub async fn insert_grants(
    app: &TestApp,
    client: &str,
    n: usize,
    expires_in: Duration,
    last_used_ago: Duration,
) -> Vec<String> {
    let customer = crate::oauth::customer_id(app, "alice").await;
    let client = client.to_string();
    let now = app.platform.now();
    app.platform
        .db
        .write(move |c| {
            let mut ids = Vec::new();
            for _ in 0..n {
                let id = platform::crypto::random_id("g_");
                diesel::insert_into(grant_rows::table)
                    .values((
                        grant_rows::id.eq(&id),
                        grant_rows::customer_id.eq(&customer),
                        grant_rows::client_id.eq(&client),
                        grant_rows::status.eq("authorized"),
                        grant_rows::authorization_details.eq("[]"),
                        grant_rows::created_at.eq((now - last_used_ago).naive_utc()),
                        grant_rows::authorized_at.eq((now - last_used_ago).naive_utc()),
                        grant_rows::last_used_at.eq((now - last_used_ago).naive_utc()),
                        grant_rows::expires_at.eq((now + expires_in).naive_utc()),
                        grant_rows::updated_at.eq(now.naive_utc()),
                    ))
                    .execute(c)?;
                ids.push(id);
            }
            Ok(ids)
        })
        .await
        .expect("grants inserted")
}

/// A local port nothing listens on (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}
