//! The revocation feed never skips a committed row, whatever the commit order, stays bounded,
//! and reaches every instance quickly.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use e2e_tests::oauth::{DEMO_CLIENT, DEMO_SECRET};
use e2e_tests::{Backend, TestApp, backends, spawn_demo_app};
use platform::audit::Actor;
use platform::revocation::{Revocations, RevokedBy, collect, end_grants, link_feed_all, write};
use platform::storage::AnyConnection;
use serde_json::Value;

/// Reads the whole feed after `since` through the API, page by page.
async fn read_feed(app: &TestApp, since: i64) -> (Vec<Value>, i64) {
    let mut cursor = since;
    let mut all = Vec::new();
    loop {
        let r = app
            .client
            .get(app.url(&format!("/oauth2/revocations?since={cursor}&limit=1000")))
            .basic_auth(DEMO_CLIENT, Some(DEMO_SECRET))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let page: Value = r.json().await.unwrap();
        let entries = page["revocations"].as_array().unwrap().clone();
        for e in &entries {
            assert!(e["cursor"].as_i64().unwrap() > cursor, "cursors only grow");
        }
        cursor = page["next_cursor"].as_i64().unwrap();
        all.extend(entries);
        if !page["has_more"].as_bool().unwrap() {
            return (all, cursor);
        }
    }
}

fn grant_entries(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e["revocation_id"].is_null())
        .map(|e| e["grant_id"].as_str().unwrap().to_string())
        .collect()
}

/// A PostgreSQL connection of its own (not from the server's pool), for hand-made transactions.
fn own_connection(app: &TestApp) -> AnyConnection {
    let url = platform::database_url(&app.platform.settings);
    AnyConnection::Postgresql(diesel::PgConnection::establish(&url).unwrap())
}

/// Ends `ids` as staff would, in the caller's transaction (for [`collect`] or [`write`]).
fn end_by_staff(
    ids: &[String],
    now: chrono::DateTime<chrono::Utc>,
) -> impl FnOnce(&mut AnyConnection, &mut Revocations) -> platform::storage::StorageResult<Vec<String>>
+ use<> {
    let ids = ids.to_vec();
    move |c, r| {
        end_grants(
            c,
            r,
            &ids,
            RevokedBy::Staff,
            "test",
            &Actor::system("test"),
            now,
        )
    }
}

/// PostgreSQL: the transaction id of `c`'s open transaction (assigning one if it has none).
fn current_xid(c: &mut AnyConnection) -> i64 {
    diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
        "pg_current_xact_id()::text::bigint",
    ))
    .get_result(c)
    .unwrap()
}

/// `n` authorized grants of the demo client, expiring in 30 days, last used an hour ago.
async fn live_grants(app: &TestApp, n: usize) -> Vec<String> {
    e2e_tests::lifecycle::insert_grants(
        app,
        DEMO_CLIENT,
        n,
        chrono::Duration::days(30),
        chrono::Duration::hours(1),
    )
    .await
}

#[tokio::test]
async fn a_transaction_that_commits_late_is_not_skipped() {
    for backend in backends() {
        let app = spawn_demo_app(backend).await;
        let ids = live_grants(&app, 2).await;
        let (early, late) = (ids[0].clone(), ids[1].clone());
        let (_, start) = read_feed(&app, 0).await;
        let now = app.platform.now();
        let end = |id: &str| end_by_staff(&[id.to_string()], now);
        // PostgreSQL: two connections of our own, so A can insert first (the lower seq) and
        // commit after B. SQLite serializes writers (B could not even start while A is open),
        // so there the commit order is the insert order; the same reads must still hold.
        let mut pg =
            (backend == Backend::Postgres).then(|| (own_connection(&app), own_connection(&app)));
        let mut pending = None;
        if let Some((a, b)) = &mut pg {
            a.batch_execute("BEGIN").unwrap();
            let (ended, early_pending) = collect(a, end(&early));
            assert_eq!(ended.unwrap(), vec![early.clone()]);
            b.batch_execute("BEGIN").unwrap();
            let (ended, late_pending) = collect(b, end(&late));
            assert_eq!(ended.unwrap(), vec![late.clone()]);
            b.batch_execute("COMMIT").unwrap();
            late_pending.announce(&app.platform).await;
            pending = Some(early_pending);
        } else {
            let ended = write(&app.platform, end(&late)).await.unwrap();
            assert_eq!(ended, vec![late.clone()]);
        }
        // A reader (and every instance's linker) runs now: it sees B and moves its cursor.
        app.platform.db.run(link_feed_all).await.unwrap();
        let (seen, cursor) = read_feed(&app, start).await;
        assert_eq!(grant_entries(&seen), vec![late.clone()], "{backend:?}");
        if let Some((a, _)) = &mut pg {
            a.batch_execute("COMMIT").unwrap();
            if let Some(p) = pending.take() {
                p.announce(&app.platform).await;
            }
        } else {
            let ended = write(&app.platform, end(&early)).await.unwrap();
            assert_eq!(ended, vec![early.clone()]);
        }
        // The late commit is still ahead of the cursor (linked by this instance's own sync loop
        // within a second, or at once here).
        app.platform.db.run(link_feed_all).await.unwrap();
        let (after, _) = read_feed(&app, cursor).await;
        assert_eq!(grant_entries(&after), vec![early.clone()], "{backend:?}");
        // And the instance's own list, which reads the same cursor, has both.
        let list = app.state_revocations();
        let deadline = Instant::now() + Duration::from_secs(5);
        while list.is_revoked(&early, &[]) != Ok(true) {
            assert!(
                Instant::now() < deadline,
                "{backend:?}: the list skipped the late row"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(list.is_revoked(&late, &[]), Ok(true));
    }
}

/// PostgreSQL: a writer left open holds the linker's floor back (its row is never passed), while
/// rows committed after it, more than one linking pass takes, get their positions at once; a
/// writer that rolls back leaves nothing behind.
#[tokio::test]
async fn a_writer_left_open_holds_the_floor_and_later_rows_still_get_positions() {
    let Some(backend) = backends().into_iter().find(|b| *b == Backend::Postgres) else {
        return;
    };
    let app = spawn_demo_app(backend).await;
    let ids = live_grants(&app, 27).await;
    let (_, start) = read_feed(&app, 0).await;
    let now = app.platform.now();
    let end = |ids: &[String]| end_by_staff(ids, now);
    let (mut a, mut b, mut aborted) = (
        own_connection(&app),
        own_connection(&app),
        own_connection(&app),
    );
    // A writes first (the lowest xid and seq) and stays open.
    a.batch_execute("BEGIN").unwrap();
    let (ended, a_pending) = collect(&mut a, end(&ids[..1]));
    assert_eq!(ended.unwrap().len(), 1);
    let a_xid = current_xid(&mut a);
    // A third writer rolls back.
    aborted.batch_execute("BEGIN").unwrap();
    let (ended, aborted_pending) = collect(&mut aborted, end(&ids[1..2]));
    assert_eq!(ended.unwrap().len(), 1);
    aborted.batch_execute("ROLLBACK").unwrap();
    drop(aborted_pending);
    // B commits 25 rows: three passes of 10 (this instance's own sync loop may take some too).
    b.batch_execute("BEGIN").unwrap();
    let (ended, b_pending) = collect(&mut b, end(&ids[2..]));
    assert_eq!(ended.unwrap().len(), 25);
    b.batch_execute("COMMIT").unwrap();
    drop(b_pending);
    let app_db = app.platform.db.clone();
    let app_link = move |batch: i64| {
        let db = app_db.clone();
        async move {
            db.run(move |c| platform::revocation::link_feed(c, batch))
                .await
                .unwrap()
        }
    };
    for _ in 0..5 {
        if app_link(10).await == 0 {
            break;
        }
    }
    let (seen, cursor) = read_feed(&app, start).await;
    let mut got = grant_entries(&seen);
    got.sort();
    let mut want = ids[2..].to_vec();
    want.sort();
    assert_eq!(got, want, "B's rows, and neither A's nor the aborted one's");
    let floor: (i64, i64) = app
        .platform
        .db
        .run(|c| {
            use platform::storage::schema::revocation_feed_head as h;
            Ok(h::table
                .select((h::link_floor_xid, h::link_floor_seq))
                .first(c)?)
        })
        .await
        .unwrap();
    assert!(
        floor <= (a_xid, 0),
        "the floor {floor:?} passed the open writer {a_xid}"
    );
    // A commits: its row gets the next position, after B's (from this pass or the sync loop's).
    a.batch_execute("COMMIT").unwrap();
    drop(a_pending);
    app_link(10).await;
    let (after, _) = read_feed(&app, cursor).await;
    assert_eq!(grant_entries(&after), vec![ids[0].clone()]);
    // Nothing else is pending, and nothing was given two positions.
    assert_eq!(app_link(10).await, 0);
    let (all, _) = read_feed(&app, start).await;
    assert_eq!(all.len(), 26);
}

/// PostgreSQL: rows linked while an unrelated transaction was open leave the floor below them;
/// once it ends, a pass that links nothing still moves the floor (of the feed and of the audit
/// chain) past them, so later passes do not read them again.
#[tokio::test]
async fn a_floor_left_behind_moves_up_once_the_old_transaction_ends() {
    let Some(backend) = backends().into_iter().find(|b| *b == Backend::Postgres) else {
        return;
    };
    let app = spawn_demo_app(backend).await;
    let n = platform::storage::commit_order::STALE_FLOOR_ROWS as usize + 20;
    let ids = live_grants(&app, n).await;
    // A transaction that holds an xid and writes no feed row or event.
    let mut old = own_connection(&app);
    old.batch_execute("BEGIN").unwrap();
    let old_xid = current_xid(&mut old);
    let ended = write(&app.platform, end_by_staff(&ids, app.platform.now()))
        .await
        .unwrap();
    assert_eq!(ended.len(), n);
    app.platform.db.run(link_feed_all).await.unwrap();
    app.platform.audit.link_now().await.unwrap();
    let floors = || async {
        app.platform
            .db
            .run(|c| {
                use platform::storage::schema::{audit_chain_head as a, revocation_feed_head as f};
                let feed: (i64, i64) = f::table
                    .select((f::link_floor_xid, f::link_floor_seq))
                    .first(c)?;
                let audit: (i64, i64) = a::table
                    .select((a::link_floor_xid, a::link_floor_seq))
                    .first(c)?;
                Ok((feed, audit))
            })
            .await
            .unwrap()
    };
    let (feed, audit) = floors().await;
    assert!(feed <= (old_xid, 0), "{feed:?} passed {old_xid}");
    assert!(audit <= (old_xid, 0), "{audit:?} passed {old_xid}");
    old.batch_execute("COMMIT").unwrap();
    // Nothing is pending; the passes move the floors anyway. (The oldest running transaction is
    // cluster-wide: another test's open transaction can hold the floors for a moment.)
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert_eq!(app.platform.db.run(link_feed_all).await.unwrap(), 0);
        app.platform.audit.link_now().await.unwrap();
        let (feed, audit) = floors().await;
        if feed.0 > old_xid && audit.0 > old_xid {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the floors stayed at {feed:?} (feed) and {audit:?} (chain), below {old_xid}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let report = app.platform.audit.verify().await.unwrap();
    assert!(report.valid, "{report:?}");
}

#[tokio::test]
async fn feed_entries_expire_with_their_tokens_and_are_purged() {
    for backend in backends() {
        let (app, clock) = e2e_tests::lifecycle::spawn_with_clock(backend, |_| {}).await;
        app.login_customer("alice").await;
        let tokens = app.approved_tokens().await;
        let grant = tokens["grant_id"].as_str().unwrap().to_string();
        let access = tokens["access_token"].as_str().unwrap().to_string();
        let info = grants::inspect(&access).unwrap();
        let token_expiry = info.grant.as_ref().unwrap().expires_at;
        let r = app
            .client
            .delete(app.url(&format!("/api/v1/grants/{grant}")))
            .basic_auth(DEMO_CLIENT, Some(DEMO_SECRET))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        let (entries, _) = read_feed(&app, 0).await;
        let mine: Vec<&Value> = entries.iter().filter(|e| e["grant_id"] == grant).collect();
        assert_eq!(
            mine.len(),
            2,
            "the grant and its one access token: {mine:?}"
        );
        for e in &mine {
            // Both matter exactly until the access token expires.
            assert_eq!(
                e["expires_at"].as_str().unwrap(),
                token_expiry.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "{backend:?}"
            );
        }
        let list = app.state_revocations();
        let deadline = Instant::now() + Duration::from_secs(5);
        while list.is_revoked(&grant, &[]) != Ok(true) {
            assert!(
                Instant::now() < deadline,
                "{backend:?}: the list never synced"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(list.size().grants >= 1);
        // Past expiry plus the margin, the sweep purges the rows and the list drops them.
        clock.advance(
            chrono::Duration::minutes(10)
                + chrono::Duration::hours(1)
                + chrono::Duration::seconds(5),
        );
        let report = consent::lifecycle::run_once(&app.platform).await.unwrap();
        assert!(report.purged >= 2, "{report:?}");
        // Their positions went with them.
        let orphans: i64 = app
            .platform
            .db
            .run(|c| {
                use platform::storage::schema::{revocation_positions as p, revocations as r};
                Ok(p::table
                    .left_join(r::table)
                    .filter(r::seq.nullable().is_null())
                    .count()
                    .get_result(c)?)
            })
            .await
            .unwrap();
        assert_eq!(orphans, 0, "{backend:?}");
        let (entries, _) = read_feed(&app, 0).await;
        assert!(entries.iter().all(|e| e["grant_id"] != grant));
        assert!(list.prune(app.platform.now()) >= 2);
        assert_eq!(list.is_revoked(&grant, &info.revocation_ids), Ok(false));
        // The token itself is of course refused anyway: it expired.
        let r = app
            .client
            .get(app.url("/sandbox/v1/accounts"))
            .bearer_auth(&access)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        // New revocations continue after the purged positions (readers' cursors stay valid).
        app.login_customer("alice").await;
        let tokens = app.approved_tokens().await;
        let second = tokens["grant_id"].as_str().unwrap().to_string();
        let r = app
            .client
            .delete(app.url(&format!("/api/v1/grants/{second}")))
            .basic_auth(DEMO_CLIENT, Some(DEMO_SECRET))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        let positions: Vec<i64> = mine.iter().map(|e| e["cursor"].as_i64().unwrap()).collect();
        let (entries, _) = read_feed(&app, *positions.iter().max().unwrap()).await;
        assert_eq!(grant_entries(&entries), vec![second], "{backend:?}");
    }
}

/// Grants of `client` with one recorded access token each, written directly (the flow would take
/// minutes for thousands). Returns (grant id, token).
async fn grants_with_tokens(app: &TestApp, client: &str, n: usize) -> Vec<(String, String)> {
    let ids = e2e_tests::lifecycle::insert_grants(
        app,
        client,
        n,
        chrono::Duration::days(30),
        chrono::Duration::hours(1),
    )
    .await;
    let key = app.oauth.keys.current().active;
    let now = app.platform.now();
    let customer = e2e_tests::oauth::customer_id(app, "alice").await;
    let accounts = app.account_ids("alice").await;
    let client = client.to_string();
    let minted: Vec<(String, String, String)> = tokio::task::spawn_blocking(move || {
        ids.iter()
            .map(|id| {
                let grant = grants::Grant {
                    id: grants::GrantId::parse(id.as_str()).unwrap(),
                    client: grants::ClientId::parse(client.as_str()).unwrap(),
                    subject: grants::SubjectId::parse(customer.as_str()).unwrap(),
                    environment: grants::Environment::Production,
                    scope: grants::GrantScope::new(
                        vec![grants::AccountId::parse(accounts[0].as_str()).unwrap()],
                        vec![grants::Action::AccountsRead],
                        None,
                        None,
                        now + chrono::Duration::days(30),
                    )
                    .unwrap(),
                };
                let t =
                    grants::mint(&key, &grant, now + chrono::Duration::minutes(10), now).unwrap();
                (id.clone(), t.token, t.revocation_ids[0].clone())
            })
            .collect()
    })
    .await
    .unwrap();
    let rows = minted.clone();
    let expires = (now + chrono::Duration::minutes(10)).naive_utc();
    app.platform
        .db
        .write(move |c| {
            use platform::storage::schema::issued_tokens as t;
            for chunk in rows.chunks(1_000) {
                let values: Vec<_> = chunk
                    .iter()
                    .map(|(g, _, rid)| {
                        (
                            t::revocation_id.eq(rid.clone()),
                            t::grant_id.eq(g.clone()),
                            t::expires_at.eq(expires),
                        )
                    })
                    .collect();
                platform::insert_rows!(c, t::table, &values);
            }
            Ok(())
        })
        .await
        .unwrap();
    minted.into_iter().map(|(g, t, _)| (g, t)).collect()
}

#[tokio::test]
async fn two_instances_refuse_every_revoked_token_within_two_seconds() {
    if !backends().contains(&Backend::Postgres) {
        eprintln!(
            "SKIPPED two_instances_...: needs TEST_DATABASE_URL (several instances share PostgreSQL)"
        );
        return;
    }
    let a = spawn_demo_app(Backend::Postgres).await;
    let b = a.another_instance().await;
    // A fintech whose client holds 10,000 grants, deleted while 1,000 other grants are revoked
    // one by one through the client API, on both instances at once.
    let developer = a.developer_token("bulk@example.com").await;
    let (bulk_client, _) = a.sandbox_client(&developer).await;
    let bulk = grants_with_tokens(&a, &bulk_client, 10_000).await;
    let single = grants_with_tokens(&a, DEMO_CLIENT, 1_000).await;
    let keys_a = a.oauth.keys.current().keyset;
    let verify = |app: &TestApp, token: &str| {
        let list = app.state_revocations();
        grants::Verifier::new(
            keys_a.clone(),
            move |g: &grants::GrantId, ids: &[String]| {
                list.is_revoked(g.as_str(), ids) != Ok(false)
            },
        )
        .verify_listing(token, grants::Action::AccountsRead, app.platform.now())
    };
    assert!(verify(&b, &single[0].1).is_ok(), "valid before");

    let started = Instant::now();
    let deletion = {
        let a_url = a.url(&format!("/api/v1/clients/{bulk_client}"));
        let http = a.client.clone();
        let developer = developer.clone();
        tokio::spawn(async move {
            http.delete(a_url)
                .bearer_auth(developer)
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    let mut revocations = tokio::task::JoinSet::new();
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
    for (i, (grant, _)) in single.iter().enumerate() {
        let target = if i % 2 == 0 { &a } else { &b };
        let url = target.url(&format!("/api/v1/grants/{grant}"));
        let http = target.client.clone();
        let gate = gate.clone();
        revocations.spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            http.delete(url)
                .basic_auth(DEMO_CLIENT, Some(DEMO_SECRET))
                .send()
                .await
                .unwrap()
                .status()
        });
    }
    while let Some(status) = revocations.join_next().await {
        assert_eq!(status.unwrap(), 204);
    }
    assert_eq!(deletion.await.unwrap(), 204);
    let acknowledged = Instant::now();
    eprintln!(
        "1,000 revocations and a 10,000-grant deletion acknowledged in {:?}",
        acknowledged - started
    );

    // Within 2 s of the last acknowledgement, both instances refuse every one of the 11,000.
    let all: Vec<&(String, String)> = bulk.iter().chain(&single).collect();
    for app in [&a, &b] {
        let list = app.state_revocations();
        loop {
            let open = all
                .iter()
                .filter(|(g, _)| list.is_revoked(g, &[]) != Ok(true))
                .count();
            if open == 0 {
                break;
            }
            assert!(
                acknowledged.elapsed() < Duration::from_secs(2),
                "{open} revoked grants still accepted by an instance after 2 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    eprintln!(
        "propagated to both instances {:?} after the last acknowledgement",
        acknowledged.elapsed()
    );
    // Every token is refused by full verification too, and over HTTP for a sample.
    for (_, token) in &all {
        assert!(verify(&a, token).is_err() && verify(&b, token).is_err());
    }
    let http = reqwest::Client::new();
    for (_, token) in all.iter().step_by(500) {
        for app in [&a, &b] {
            let r = http
                .get(app.url("/sandbox/v1/accounts"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 401);
        }
    }
    // The feed lists every revoked grant exactly once.
    let (entries, _) = read_feed(&a, 0).await;
    let mut count: HashMap<String, usize> = HashMap::new();
    for g in grant_entries(&entries) {
        *count.entry(g).or_default() += 1;
    }
    for (g, _) in &all {
        assert_eq!(count.get(g), Some(&1), "{g} in the feed");
    }
    b.stop().await;
}
