//! The batch statements' guards, driven directly (PostgreSQL only: set
//! `TEST_DATABASE_URL`). Over HTTP a request reaches the statement only with a token its read
//! found active, so these are the cases where something changed between read and write.

use super::statements::*;
use super::*;
use chrono::NaiveDateTime;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use platform::storage::AnyConnection;
use std::collections::HashSet;

struct TempDb {
    admin: String,
    name: String,
    url: String,
    db: Db,
}

impl Drop for TempDb {
    fn drop(&mut self) {
        if let Ok(mut c) = diesel::pg::PgConnection::establish(&self.admin) {
            let _ = c.batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", self.name));
        }
    }
}

fn temp_db() -> Option<TempDb> {
    let Some(admin) = std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        // CI promises PostgreSQL: there, a missing URL is an error, not a skip.
        assert!(
            std::env::var("CONSENT_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "CONSENT_REQUIRE_SERVICES=1 but TEST_DATABASE_URL is not set"
        );
        return None;
    };
    let name = format!("consent_unit_{}", random_id("").to_lowercase());
    let name: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    let mut c = diesel::pg::PgConnection::establish(&admin).expect("TEST_DATABASE_URL reachable");
    c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    let mut url = url::Url::parse(&admin).unwrap();
    url.set_path(&name);
    let db = Db::connect(url.as_str(), 2, std::time::Duration::from_secs(10)).unwrap();
    db.migrate().unwrap();
    Some(TempDb {
        admin,
        name,
        url: url.to_string(),
        db,
    })
}

/// A temporary database with customer `cust_1`, developer `dev_1`, its sandbox client `c_1` and
/// four grants of theirs (`g_live` and `g_live2` live, `g_revoked`, `g_expired`), then `rows` (the
/// test's refresh tokens); `None` (and a note) without PostgreSQL.
fn seeded(statement: &str, rows: &str) -> Option<TempDb> {
    let Some(t) = temp_db() else {
        eprintln!("TEST_DATABASE_URL is not set: the PostgreSQL {statement} is not tested");
        return None;
    };
    let fixture = "INSERT INTO customers VALUES ('cust_1', 'u', 'U', 'x', now()); \
        INSERT INTO developers VALUES ('dev_1', 'd@example.com', 'D', 'x', now()); \
        INSERT INTO clients (id, developer_id, name, environment, redirect_uris, auth_method, \
            secret_hash, allowed_actions, status, created_at, updated_at) \
            VALUES ('c_1', 'dev_1', 'App', 'sandbox', '[]', 'client_secret_basic', 'x', '[]', \
            'active', now(), now()); \
        INSERT INTO grants (id, customer_id, client_id, status, authorization_details, \
            created_at, expires_at, updated_at) VALUES \
            ('g_live', 'cust_1', 'c_1', 'authorized', '{}', now(), now() + interval '1 day', now()), \
            ('g_live2', 'cust_1', 'c_1', 'authorized', '{}', now(), now() + interval '1 day', now()), \
            ('g_revoked', 'cust_1', 'c_1', 'revoked', '{}', now(), now() + interval '1 day', now()), \
            ('g_expired', 'cust_1', 'c_1', 'authorized', '{}', now(), now() - interval '1 second', now());";
    t.db.run_blocking(|c| {
        c.batch_execute(fixture)?;
        c.batch_execute(rows)?;
        Ok(())
    })
    .unwrap();
    Some(t)
}

fn job(old_id: &str, grant_id: &str, at: NaiveDateTime) -> Rotation {
    Rotation {
        old_id: old_id.into(),
        new_id: random_id("rtk_"),
        new_hash: random_id("h_"),
        event_id: random_id("evt_"),
        refreshed: refreshed(grant_id, &format!("fam_{old_id}"), at, 1, 2),
    }
}

/// A job's common part: a refresh token living `days`, an access token with `blocks` revocation
/// ids.
fn refreshed(
    grant_id: &str,
    family: &str,
    at: NaiveDateTime,
    days: i64,
    blocks: usize,
) -> Refreshed {
    Refreshed {
        at,
        grant_id: grant_id.into(),
        family: family.into(),
        refresh_expires: at + chrono::Duration::days(days),
        access_hash: random_id("a_"),
        access_expires: at + chrono::Duration::minutes(10),
        revocation_ids: (0..blocks).map(|_| random_id("rid_")).collect(),
        event_at: at,
        client_id: "c_1".into(),
        details: "{}".into(),
    }
}

fn count(c: &mut AnyConnection, sql: &str) -> i64 {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query(sql).get_result::<N>(c).unwrap().n
}

fn keep(token_id: &str, grant_id: &str, at: NaiveDateTime) -> Keep {
    Keep {
        key: random_id("evt_"),
        token_id: token_id.into(),
        jkt: "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I".into(),
        refreshed: refreshed(grant_id, "f", at, 2, 1),
    }
}

/// The keep statement: only active, bound tokens of their stated, live grant count; a token
/// refreshed twice in one batch counts twice; nothing is rotated or spent.
#[test]
fn only_bound_active_tokens_of_live_grants_are_kept() {
    let Some(t) = seeded(
        "keep statement",
        "INSERT INTO refresh_tokens (id, token_hash, grant_id, family_id, status, created_at, expires_at, dpop_jkt) VALUES \
                 ('rt_bound', 'h1', 'g_live', 'f', 'active', now(), now() + interval '1 hour', 'k'), \
                 ('rt_bearer', 'h2', 'g_live', 'f', 'active', now(), now() + interval '1 hour', NULL), \
                 ('rt_revoked', 'h3', 'g_live', 'f', 'revoked', now(), now() + interval '1 hour', 'k'), \
                 ('rt_ended', 'h4', 'g_revoked', 'f', 'active', now(), now() + interval '1 hour', 'k'), \
                 ('rt_bound2', 'h5', 'g_live2', 'f', 'active', now(), now() + interval '1 hour', 'k');",
    ) else {
        return;
    };
    let now = chrono::Utc::now().naive_utc().trunc_subsecs(6);
    // (token, the grant the job states)
    let jobs: Vec<Keep> = [
        ("rt_bound", "g_live"),
        ("rt_bound", "g_live"),
        ("rt_bearer", "g_live"),
        ("rt_revoked", "g_live"),
        ("rt_ended", "g_revoked"),
        ("rt_bound", "g_revoked"),
        ("rt_unknown", "g_live"),
    ]
    .into_iter()
    .map(|(token, grant)| keep(token, grant, now))
    .collect();
    let out = keep_batch(&t.db, &jobs).unwrap();
    assert_eq!(out, [true, true, false, false, false, false, false]);
    t.db.run_blocking(|c| {
        let extended = "SELECT count(*) AS n FROM refresh_tokens WHERE id = 'rt_bound' \
            AND status = 'active' AND expires_at > now() + interval '1 day'";
        assert_eq!(count(c, extended), 1);
        let untouched = "SELECT count(*) AS n FROM refresh_tokens \
            WHERE id <> 'rt_bound' AND expires_at < now() + interval '2 hours'";
        assert_eq!(count(c, untouched), 4);
        assert_eq!(count(c, "SELECT count(*) AS n FROM refresh_tokens"), 5);
        let issued = "SELECT count(*) AS n FROM issued_tokens WHERE dpop_jkt IS NOT NULL \
            AND token_hash IS NOT NULL AND grant_id = 'g_live'";
        assert_eq!(count(c, issued), 2);
        assert_eq!(count(c, "SELECT count(*) AS n FROM issued_tokens"), 2);
        let events = "SELECT count(*) AS n FROM audit_events \
            WHERE action = 'token.refreshed' AND target_id = 'g_live'";
        assert_eq!(count(c, events), 2);
        Ok(())
    })
    .unwrap();
    // A bound token locked elsewhere: the batch passes over its job and keeps the other.
    passes_over_what_is_locked(
        &t,
        "refresh_tokens WHERE id = 'rt_bound'",
        || {
            keep_batch(
                &t.db,
                &[
                    keep("rt_bound", "g_live", now),
                    keep("rt_bound2", "g_live2", now),
                ],
            )
            .unwrap()
        },
        || keep_batch(&t.db, &[keep("rt_bound", "g_live", now)]).unwrap(),
    );
}

#[test]
fn only_active_tokens_of_live_grants_rotate_and_nothing_else_is_written() {
    let Some(t) = seeded(
        "rotation statement",
        "INSERT INTO refresh_tokens (id, token_hash, grant_id, family_id, status, created_at, expires_at) VALUES \
                 ('rt_a', 'ha', 'g_live', 'f', 'active', now(), now() + interval '1 day'), \
                 ('rt_b', 'hb', 'g_live', 'f', 'active', now(), now() + interval '1 day'), \
                 ('rt_used', 'hu', 'g_live', 'f', 'used', now(), now() + interval '1 day'), \
                 ('rt_rev', 'hr', 'g_revoked', 'f', 'active', now(), now() + interval '1 day'), \
                 ('rt_exp', 'he', 'g_expired', 'f', 'active', now(), now() + interval '1 day'), \
                 ('rt_c', 'hc', 'g_live', 'f', 'active', now(), now() + interval '1 day'), \
                 ('rt_d', 'hd', 'g_live2', 'f', 'active', now(), now() + interval '1 day');",
    ) else {
        return;
    };
    let now = chrono::Utc::now().naive_utc().trunc_subsecs(6);
    let jobs = vec![
        job("rt_a", "g_live", now),
        // The same token twice in one batch: the first use only.
        job("rt_a", "g_live", now),
        // Used by a request that committed since this one's read.
        job("rt_used", "g_live", now),
        // Grant revoked, or expired, since the read.
        job("rt_rev", "g_revoked", now),
        job("rt_exp", "g_expired", now),
        // A token stated with another grant than its own.
        job("rt_b", "g_live2", now),
        job("rt_unknown", "g_live", now),
    ];
    let out = rotate_batch(&t.db, &jobs).unwrap();
    assert_eq!(out, [true, false, false, false, false, false, false]);
    // rt_b was left as it was by the job naming another grant.
    let rt_b = [job("rt_b", "g_live", now)];
    assert_eq!(rotate_batch(&t.db, &rt_b).unwrap(), [true]);
    t.db.run_blocking(|c| {
        let statuses = "SELECT count(*) AS n FROM refresh_tokens WHERE \
            (id IN ('rt_a', 'rt_b', 'rt_used') AND status = 'used') OR \
            (id IN ('rt_rev', 'rt_exp') AND status = 'active')";
        assert_eq!(count(c, statuses), 5);
        // Two new refresh tokens, in their families, with everything that goes with them.
        let fresh = "SELECT count(*) AS n FROM refresh_tokens WHERE status = 'active' \
            AND grant_id = 'g_live' AND family_id IN ('fam_rt_a', 'fam_rt_b')";
        assert_eq!(count(c, fresh), 2);
        assert_eq!(count(c, "SELECT count(*) AS n FROM refresh_tokens"), 9);
        assert_eq!(count(c, "SELECT count(*) AS n FROM issued_tokens"), 4);
        let hashed = "SELECT count(*) AS n FROM issued_tokens WHERE token_hash IS NOT NULL";
        assert_eq!(count(c, hashed), 2);
        let events = "SELECT count(*) AS n FROM audit_events \
            WHERE action = 'token.refreshed' AND target_id = 'g_live' AND actor_id = 'c_1'";
        assert_eq!(count(c, events), 2);
        assert_eq!(count(c, "SELECT count(*) AS n FROM audit_events"), 2);
        Ok(())
    })
    .unwrap();
    // A batch with nothing to rotate writes nothing and says so.
    let again = rotate_batch(&t.db, &jobs[..1]).unwrap();
    assert_eq!(again, [false]);
    // Settling an unknown outcome: the rotations that committed are found by their
    // successors, the others (the duplicate of rt_a, used, revoked, ...) are not.
    let settled = committed(&t.db, jobs[1..].iter().chain(&rt_b)).unwrap();
    assert_eq!(settled, HashSet::from(["rt_b".to_string()]));
    let settled = committed(&t.db, jobs[..1].iter()).unwrap();
    assert_eq!(settled, HashSet::from(["rt_a".to_string()]));

    // A token locked elsewhere (a long revocation, say): the batch passes over its job, whose
    // request takes the transactional path (which waits for the lock), and rotates the others
    // without waiting; once the lock is gone the token rotates.
    passes_over_what_is_locked(
        &t,
        "refresh_tokens WHERE id = 'rt_c'",
        || {
            rotate_batch(
                &t.db,
                &[job("rt_c", "g_live", now), job("rt_d", "g_live2", now)],
            )
            .unwrap()
        },
        || rotate_batch(&t.db, &[job("rt_c", "g_live", now)]).unwrap(),
    );
}

/// With the rows of `locked` (`table WHERE ..`) locked by another transaction, a batch of two
/// jobs (`both`), the first of which needs those rows, does the second only: it neither waits
/// for the lock (past the statement's lock timeout it would do nothing at all) nor fails. Once
/// the rows are free, the first job alone (`first`) succeeds.
fn passes_over_what_is_locked(
    t: &TempDb,
    locked: &str,
    both: impl Fn() -> Vec<bool>,
    first: impl Fn() -> Vec<bool>,
) {
    let mut locker = diesel::pg::PgConnection::establish(&t.url).unwrap();
    locker
        .batch_execute(&format!("BEGIN; SELECT 1 FROM {locked} FOR UPDATE;"))
        .unwrap();
    assert_eq!(both(), [false, true]);
    locker.batch_execute("ROLLBACK").unwrap();
    assert_eq!(first(), [true]);
}

fn exchange_job(code_hash: &str, grant_id: &str, at: NaiveDateTime, jkt: Option<&str>) -> Exchange {
    Exchange {
        code_hash: code_hash.into(),
        refresh_id: random_id("rtk_"),
        refresh_hash: random_id("h_"),
        event_id: random_id("evt_"),
        jkt: jkt.map(Into::into),
        refreshed: refreshed(grant_id, &format!("fam_{code_hash}"), at, 1, 2),
    }
}

/// The exchange statement: a code is spent only if unused, unexpired, of the stated grant, and
/// that grant is live; only spent codes get tokens, the grant's use and an audit event; a code
/// twice in one batch is spent once; a grant locked elsewhere makes the batch pass over its code.
#[test]
fn only_unused_codes_of_live_grants_are_exchanged_and_nothing_else_is_written() {
    let Some(t) = seeded(
        "code exchange statement",
        "INSERT INTO authorization_codes (code_hash, grant_id, client_id, redirect_uri, \
            code_challenge, created_at, expires_at, used_at) VALUES \
            ('ca', 'g_live', 'c_1', 'r', 'x', now(), now() + interval '1 minute', NULL), \
            ('cb', 'g_live', 'c_1', 'r', 'x', now(), now() + interval '1 minute', NULL), \
            ('cd', 'g_live2', 'c_1', 'r', 'x', now(), now() + interval '1 minute', NULL), \
            ('cu', 'g_live', 'c_1', 'r', 'x', now(), now() + interval '1 minute', now()), \
            ('cexp', 'g_live2', 'c_1', 'r', 'x', now(), now() - interval '1 second', NULL), \
            ('crev', 'g_revoked', 'c_1', 'r', 'x', now(), now() + interval '1 minute', NULL), \
            ('cend', 'g_expired', 'c_1', 'r', 'x', now(), now() + interval '1 minute', NULL), \
            ('ce', 'g_live2', 'c_1', 'r', 'x', now(), now() + interval '1 minute', NULL);",
    ) else {
        return;
    };
    let now = chrono::Utc::now().naive_utc().trunc_subsecs(6);
    let jkt = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I";
    let jobs = vec![
        exchange_job("ca", "g_live", now, None),
        // The same code twice in one batch: the first exchange only.
        exchange_job("ca", "g_live", now, None),
        // Spent by a request that committed since this one's read.
        exchange_job("cu", "g_live", now, None),
        // Expired since the read; grant revoked, or expired, since the read.
        exchange_job("cexp", "g_live2", now, None),
        exchange_job("crev", "g_revoked", now, None),
        exchange_job("cend", "g_expired", now, None),
        // A code stated with another grant than its own.
        exchange_job("cb", "g_live2", now, None),
        exchange_job("unknown", "g_live", now, None),
        exchange_job("cd", "g_live2", now, Some(jkt)),
    ];
    let out = exchange_batch(&t.db, &jobs).unwrap();
    assert_eq!(
        out,
        [true, false, false, false, false, false, false, false, true]
    );
    t.db.run_blocking(|c| {
        let spent = "SELECT count(*) AS n FROM authorization_codes WHERE used_at IS NOT NULL";
        assert_eq!(count(c, spent), 3, "ca, cd and the one used before");
        let fresh = "SELECT count(*) AS n FROM refresh_tokens WHERE status = 'active' AND \
            ((family_id = 'fam_ca' AND grant_id = 'g_live' AND dpop_jkt IS NULL) OR \
             (family_id = 'fam_cd' AND grant_id = 'g_live2' AND dpop_jkt IS NOT NULL))";
        assert_eq!(count(c, fresh), 2);
        assert_eq!(count(c, "SELECT count(*) AS n FROM refresh_tokens"), 2);
        let issued = "SELECT count(*) AS n FROM issued_tokens WHERE \
            (grant_id = 'g_live' AND dpop_jkt IS NULL) OR (grant_id = 'g_live2' AND dpop_jkt IS NOT NULL)";
        assert_eq!(count(c, issued), 4);
        let hashed = "SELECT count(*) AS n FROM issued_tokens WHERE token_hash IS NOT NULL";
        assert_eq!(count(c, hashed), 2);
        let used = "SELECT count(*) AS n FROM grants WHERE last_used_at IS NOT NULL";
        assert_eq!(count(c, used), 2, "g_live and g_live2");
        let events = "SELECT count(*) AS n FROM audit_events WHERE action = 'token.issued' \
            AND actor_id = 'c_1' AND target_id IN ('g_live', 'g_live2')";
        assert_eq!(count(c, events), 2);
        assert_eq!(count(c, "SELECT count(*) AS n FROM audit_events"), 2);
        Ok(())
    })
    .unwrap();
    // Spent is spent: the same code again exchanges nothing.
    assert_eq!(exchange_batch(&t.db, &jobs[..1]).unwrap(), [false]);

    // A grant locked elsewhere (a revocation, say): the batch passes over the exchange of its
    // code, whose request takes the transactional path, and spends the other grant's code; once
    // the lock is gone the code is spent.
    passes_over_what_is_locked(
        &t,
        "grants WHERE id = 'g_live'",
        || {
            let jobs = [
                exchange_job("cb", "g_live", now, None),
                exchange_job("ce", "g_live2", now, None),
            ];
            exchange_batch(&t.db, &jobs).unwrap()
        },
        || exchange_batch(&t.db, &[exchange_job("cb", "g_live", now, None)]).unwrap(),
    );
}

/// A relayed connection's service side, and whether it carried bytes since [`Relay::mark`].
type Links = std::sync::Arc<
    std::sync::Mutex<
        Vec<(
            std::net::TcpStream,
            std::sync::Arc<std::sync::atomic::AtomicBool>,
        )>,
    >,
>;

/// A TCP relay to PostgreSQL that can cut the connections that carried a statement, on the
/// service's side only: the server process behind a cut connection does not notice (its socket
/// stays open and read), as when a proxy or the network drops a connection mid-statement.
struct Relay {
    addr: std::net::SocketAddr,
    links: Links,
}

impl Relay {
    fn start(upstream: String) -> Self {
        use std::io::{Read, Write};
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let links = Links::default();
        let kept = links.clone();
        std::thread::spawn(move || {
            for service in listener.incoming() {
                let Ok(service) = service else { return };
                let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                    return;
                };
                let used = std::sync::Arc::new(AtomicBool::new(false));
                kept.lock()
                    .unwrap()
                    .push((service.try_clone().unwrap(), used.clone()));
                let (mut from, mut to) =
                    (service.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let mut buf = [0u8; 8192];
                    while let Ok(n @ 1..) = from.read(&mut buf) {
                        used.store(true, Ordering::SeqCst);
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    // The server's side stays open: the other thread still holds and reads it.
                });
                let (mut from, mut to) = (server, service);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 8192];
                    // Reads until the server closes, whatever became of the service's side.
                    while let Ok(n @ 1..) = from.read(&mut buf) {
                        let _ = to.write_all(&buf[..n]);
                    }
                });
            }
        });
        Self { addr, links }
    }

    /// Forgets which connections carried bytes so far.
    fn mark(&self) {
        for (_, used) in self.links.lock().unwrap().iter() {
            used.store(false, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Cuts, on the service's side, every connection that carried bytes since [`Relay::mark`].
    fn cut_used(&self) -> usize {
        let mut cut = 0;
        for (service, used) in self.links.lock().unwrap().iter() {
            if used.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = service.shutdown(std::net::Shutdown::Both);
                cut += 1;
            }
        }
        cut
    }
}

/// Polls `done` every 20 ms; fails after 10 s.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !done() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{what}: timed out"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A rotation whose connection is cut while PostgreSQL still runs it: the batch reads its
/// outcome only after ending that server process, so the statement cannot commit after the
/// request was declined (the transactional path would then find the token spent and take the
/// request for a replay that ends the customer's grant).
#[test]
fn a_statement_cut_off_mid_way_is_ended_before_its_outcome_is_read() {
    let Some(t) = seeded(
        "rotation statement",
        "INSERT INTO refresh_tokens (id, token_hash, grant_id, family_id, status, created_at, expires_at) VALUES \
                 ('rt_w', 'hw', 'g_live', 'f', 'active', now(), now() + interval '1 day'), \
                 ('rt_x', 'hx', 'g_live', 'f', 'active', now(), now() + interval '1 day');",
    ) else {
        return;
    };
    let url = url::Url::parse(&t.url).unwrap();
    let upstream = format!(
        "{}:{}",
        url.host_str().unwrap_or("127.0.0.1"),
        url.port().unwrap_or(5432)
    );
    let relay = Relay::start(upstream);
    let mut relayed = url.clone();
    relayed.set_host(Some("127.0.0.1")).unwrap();
    relayed.set_port(Some(relay.addr.port())).unwrap();
    // One connection, on which the statement is prepared by a first rotation: the next one is
    // only executed (bind, execute), so once it has its locks it runs to its commit whether or
    // not anyone reads the answer. (A statement still being prepared would wait for the next
    // message instead.)
    let db = Db::connect(relayed.as_str(), 1, std::time::Duration::from_secs(10)).unwrap();
    let now = chrono::Utc::now().naive_utc().trunc_subsecs(6);
    assert_eq!(
        rotate_batch(&db, &[job("rt_w", "g_live", now)]).unwrap(),
        [true]
    );
    // The statement waits for this lock, which its execution takes as it starts (before its
    // own lock timeout is set).
    let mut locker = diesel::pg::PgConnection::establish(&t.url).unwrap();
    locker
        .batch_execute("BEGIN; LOCK TABLE audit_events IN SHARE MODE;")
        .unwrap();
    relay.mark();
    let running = std::thread::spawn(move || rotate_batch(&db, &[job("rt_x", "g_live", now)]));
    // The batch statements running in the test's database.
    let running_statements = || {
        let sql = "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() \
            AND query LIKE 'WITH input AS%' AND state = 'active'";
        t.db.run_blocking(|c| Ok(count(c, sql))).unwrap()
    };
    wait_until("the statement waits for its lock", || {
        running_statements() == 1
    });
    assert_eq!(relay.cut_used(), 1);
    // Not done: the request takes the transactional path.
    assert_eq!(running.join().unwrap().unwrap(), [false]);
    locker.batch_execute("ROLLBACK").unwrap();
    // Had the server process lived on, it would now rotate the token.
    wait_until("no statement runs", || running_statements() == 0);
    std::thread::sleep(std::time::Duration::from_millis(200));
    t.db.run_blocking(|c| {
        let active =
            "SELECT count(*) AS n FROM refresh_tokens WHERE id = 'rt_x' AND status = 'active'";
        assert_eq!(
            count(c, active),
            1,
            "the cut-off statement committed after all"
        );
        assert_eq!(count(c, "SELECT count(*) AS n FROM refresh_tokens"), 3);
        Ok(())
    })
    .unwrap();
}
