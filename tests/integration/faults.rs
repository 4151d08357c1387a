//! Crash and fault safety, with real processes (issue 12): the server is the `consent` binary in
//! its own process, so it can be SIGKILLed under load and started again on the same storage;
//! Redis and PostgreSQL are private servers the test stops and starts (the shared ones serve
//! other tests at the same time). Helpers: `e2e_tests::faults`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e_tests::faults::*;
use e2e_tests::{Backend, PgTestDb, backends, redis_url};

/// The server binary (compiled from consent/src/main.rs, see tests/Cargo.toml).
const CONSENT: &str = env!("CARGO_BIN_EXE_consent-e2e");

fn invalid_grant<T: std::fmt::Debug>(a: &Answer<T>) -> bool {
    a.status() == Some(400) && a.json()["error"] == "invalid_grant"
}

// ---------------------------------------------------------------------------------------------
// SIGKILL under load

/// How a grant was revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Revocation {
    /// RFC 7009 `/oauth2/revoke` with the refresh token.
    Rfc7009,
    /// `DELETE /api/v1/grants/{id}` by the client.
    ClientApi,
    /// `DELETE /api/v1/me/grants/{id}` by the customer.
    Dashboard,
}

const REVOCATIONS: [Revocation; 3] = [
    Revocation::Rfc7009,
    Revocation::ClientApi,
    Revocation::Dashboard,
];

/// What the client knew of one grant when the server died.
#[derive(Debug, Default)]
struct Seen {
    grant_id: String,
    /// The access tokens 200s returned, newest last.
    access: Vec<String>,
    /// The refresh tokens 200s returned, newest last; every other one was used with a 200.
    refresh: Vec<String>,
    /// A revocation of it was answered with success.
    revoked: Option<Revocation>,
    /// A request about it got no answer (the kill came): its outcome is unknown.
    unknown: Option<&'static str>,
}

/// One customer's traffic until the server stops answering: consent flows, two refreshes of
/// each new grant, and every other grant revoked (by the three routes in turn). Records every
/// success answer; a refusal while the server runs fails the test.
async fn crash_worker(n: usize, base: String, connected: Arc<AtomicUsize>) -> Vec<Seen> {
    let api = Api::new(&base, Duration::from_secs(30));
    let mut seen: Vec<Seen> = Vec::new();
    let refused = |what: &str, a: &dyn std::fmt::Debug| -> ! {
        panic!("worker {n}: {what} refused while the server ran: {a:?}")
    };
    match api.login(["alice", "bob"][n % 2]).await {
        Answer::Done(()) => {}
        Answer::Lost(_) => return seen,
        other => refused("login", &other),
    }
    let csrf = match api.csrf().await {
        Answer::Done(c) => c,
        Answer::Lost(_) => return seen,
        other => refused("csrf", &other),
    };
    for round in 0usize.. {
        let tokens = match api.connect().await {
            Answer::Done(t) => t,
            Answer::Lost(_) => return seen,
            other => refused("consent flow", &other),
        };
        connected.fetch_add(1, Ordering::SeqCst);
        let mut s = Seen {
            grant_id: tokens.grant_id,
            access: vec![tokens.access_token],
            refresh: vec![tokens.refresh_token],
            ..Seen::default()
        };
        for _ in 0..2 {
            match api.refresh(s.refresh.last().unwrap()).await {
                Answer::Done(t) => {
                    s.access.push(t.access_token);
                    s.refresh.push(t.refresh_token);
                }
                Answer::Lost(_) => {
                    s.unknown = Some("refresh");
                    seen.push(s);
                    return seen;
                }
                other => refused("refresh", &other),
            }
        }
        if round % 2 == 1 {
            let how = REVOCATIONS[(n + round / 2) % 3];
            let answer = match how {
                Revocation::Rfc7009 => api.revoke_token(s.refresh.last().unwrap()).await,
                Revocation::ClientApi => api.client_revoke(&s.grant_id).await,
                Revocation::Dashboard => api.customer_revoke(&s.grant_id, &csrf).await,
            };
            match answer {
                Answer::Done(()) => s.revoked = Some(how),
                Answer::Lost(_) => {
                    s.unknown = Some("revocation");
                    seen.push(s);
                    return seen;
                }
                other => refused("revocation", &other),
            }
        }
        seen.push(s);
    }
    unreachable!()
}

/// Holds the restarted server to every answer the killed one gave.
async fn check_after_restart(api: &Api, seen: &[Seen]) {
    for (i, s) in seen.iter().enumerate() {
        let g = &s.grant_id;
        let access = s.access.last().unwrap();
        let newest = s.refresh.last().unwrap();
        if let Some(op) = s.unknown {
            // Whichever way the lost request went, the newest refresh token works at most once.
            let first = api.refresh(newest).await;
            assert!(
                first.is_done() || invalid_grant(&first),
                "{g}: after a lost {op}: {first:?}"
            );
            let again = api.refresh(newest).await;
            assert!(
                invalid_grant(&again),
                "{g}: refresh token reused: {again:?}"
            );
            continue;
        }
        if let Some(how) = s.revoked {
            let active = api.introspect(access).await.done("introspection");
            assert!(
                !active,
                "{g}: revoked ({how:?}, 2xx) yet active after the crash"
            );
            let r = api.sandbox_accounts(access).await;
            assert_eq!(
                r.status(),
                Some(401),
                "{g}: revoked ({how:?}) yet the sandbox: {r:?}"
            );
            let r = api.refresh(newest).await;
            assert!(
                invalid_grant(&r),
                "{g}: revoked ({how:?}) yet refresh: {r:?}"
            );
            continue;
        }
        // Consented, exchanged and refreshed with 200s: all of it durable.
        let active = api.introspect(access).await.done("introspection");
        assert!(
            active,
            "{g}: answered 200 before the crash, inactive after it"
        );
        api.sandbox_accounts(access)
            .await
            .done(&format!("{g}: sandbox after the crash"));
        if i % 2 == 0 && s.refresh.len() >= 2 {
            // A refresh token used with a 200 stays used: presenting it again is a replay.
            let used = &s.refresh[s.refresh.len() - 2];
            let r = api.refresh(used).await;
            assert!(
                invalid_grant(&r),
                "{g}: a used refresh token works again: {r:?}"
            );
        } else {
            // The newest refresh token works exactly once.
            api.refresh(newest)
                .await
                .done(&format!("{g}: the newest refresh token after the crash"));
            let r = api.refresh(newest).await;
            assert!(invalid_grant(&r), "{g}: refresh token worked twice: {r:?}");
        }
    }
}

async fn sigkill_run(backend: Backend) {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let pg = (backend == Backend::Postgres).then(PgTestDb::create);
    let mut config = ServerConfig::new(CONSENT, dir.path());
    if let Some(pg) = &pg {
        config = config.postgres(&pg.url);
        if let Some(url) = redis_url() {
            config = config.redis(&url);
        }
        config.migrate();
    }
    let mut server = config.start("before-kill", true).await;
    // The server started itself again (same process) with a fixed glibc mmap threshold, so
    // Argon2's working memory is returned once freed (consent/src/main.rs). The process
    // listening is the one that was spawned: the tests signal and kill it by its pid.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    assert_eq!(
        server
            .environment_variable("MALLOC_MMAP_THRESHOLD_")
            .as_deref(),
        Some("131072"),
        "{backend:?}"
    );

    let connected = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..4)
        .map(|n| tokio::spawn(crash_worker(n, server.base.clone(), connected.clone())))
        .collect();
    // Kill while every worker has a request in flight, once there is something to lose.
    let deadline = Instant::now() + Duration::from_secs(60);
    while connected.load(Ordering::SeqCst) < 24 && !workers.iter().any(|w| w.is_finished()) {
        assert!(
            Instant::now() < deadline,
            "{backend:?}: too little progress in 60 s:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill();
    let mut seen = Vec::new();
    for w in workers {
        seen.extend(w.await.expect("worker"));
    }
    let killed_after = started.elapsed();

    // The storage as the crash left it: nothing half-written, the linked chain intact.
    assert_storage_consistent(&config, None, &format!("{backend:?} after SIGKILL")).await;

    let server = config.start("after-kill", false).await;
    let api = Api::new(&server.base, Duration::from_secs(30));
    check_after_restart(&api, &seen).await;
    // Restarted, it links what the dead process left unlinked; the whole chain verifies.
    assert_storage_consistent(
        &config,
        Some(Duration::from_secs(10)),
        &format!("{backend:?} after restart"),
    )
    .await;
    assert!(
        server.errors().is_empty(),
        "{backend:?}: errors logged after the restart:\n{}",
        server.errors().join("\n")
    );
    let count = |f: &dyn Fn(&Seen) -> bool| seen.iter().filter(|s| f(s)).count();
    println!(
        "{backend:?}: SIGKILL after {killed_after:?} with {} grants answered ({} revoked, {} in \
         flight: {:?}); checked in {:?}",
        seen.len(),
        count(&|s| s.revoked.is_some()),
        count(&|s| s.unknown.is_some()),
        seen.iter().filter_map(|s| s.unknown).collect::<Vec<_>>(),
        started.elapsed()
    );
    assert!(
        count(&|s| s.revoked.is_some()) >= 3 && count(&|s| s.unknown.is_none()) >= 6,
        "{backend:?}: too little was answered before the kill to check anything"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_answered_write() {
    for backend in backends() {
        sigkill_run(backend).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Redis outage

/// How long a revocation may take to reach another instance's offline verifier (its copy of the
/// revocation feed syncs from the database every second) or its introspection answers (reused
/// for `tokens.introspection_cache_ttl`, 1 s), plus a margin for a busy machine.
const PROPAGATION: Duration = Duration::from_secs(3);

/// Every Redis call is bounded (500 ms per command, 1 s in all): nothing waits long on a dead
/// Redis. A request makes one or two such calls; the rest is a margin for a busy machine.
const QUICK: Duration = Duration::from_secs(5);

/// A grant the Redis test works with, and where its tokens stand.
#[derive(Debug, Clone)]
struct Live {
    grant_id: String,
    access: String,
    refresh: String,
}

/// A revocation by an instance: when it was answered with success (`None`: not yet).
#[derive(Debug, Clone, Copy)]
struct Revoked {
    at: Option<Instant>,
    by: usize,
}

type Revocations = Arc<Mutex<HashMap<String, Revoked>>>;

/// Records a revocation by instance `by` as sent (before the request), then as answered.
fn mark(revoked: &Revocations, grant: &str, by: usize, answered: bool) {
    let at = answered.then(Instant::now);
    revoked
        .lock()
        .unwrap()
        .insert(grant.to_string(), Revoked { at, by });
}

/// Something a probe saw that must not happen.
#[derive(Debug)]
struct Violation {
    what: String,
}

/// Probes every known access token on every instance (sandbox API and introspection) until
/// `stop`. Violations: a token admitted after its revocation was answered (beyond the
/// propagation allowance), a token never revoked refused, a slow answer, a 500.
async fn probe(
    apis: Vec<Api>,
    tokens: Arc<Mutex<Vec<(String, String)>>>,
    revoked: Revocations,
    stop: Arc<AtomicBool>,
) -> (usize, Vec<Violation>) {
    let mut violations = Vec::new();
    let mut probes = 0;
    while !stop.load(Ordering::SeqCst) {
        let snapshot = tokens.lock().unwrap().clone();
        for (grant, access) in snapshot {
            for (i, api) in apis.iter().enumerate() {
                let sent = Instant::now();
                let (sandbox, introspection) =
                    tokio::join!(api.sandbox_accounts(&access), api.introspect(&access));
                probes += 2;
                let took = sent.elapsed();
                let ended = revoked.lock().unwrap().get(&grant).copied();
                for (kind, admitted, answer) in [
                    ("sandbox", sandbox.is_done(), format!("{sandbox:?}")),
                    (
                        "introspection",
                        matches!(introspection, Answer::Done(true)),
                        format!("{introspection:?}"),
                    ),
                ] {
                    let what = |s: &str| Violation {
                        what: format!("instance {i} {kind} of {grant}: {s}: {answer}"),
                    };
                    if answer.contains("status: 500") || answer.starts_with("Lost") {
                        violations.push(what("failed"));
                    }
                    if took > QUICK {
                        violations.push(what(&format!("took {took:?}")));
                    }
                    let (at, by) = match ended {
                        None if !admitted => {
                            violations.push(what("refused, never revoked"));
                            continue;
                        }
                        Some(Revoked { at: Some(at), by }) => (at, by),
                        // Live, or its revocation is in flight.
                        _ => continue,
                    };
                    // Introspection on the revoking instance reads the database: at once.
                    // Elsewhere, within the revocation feed's delay.
                    let allowance = if kind == "introspection" && by == i {
                        Duration::ZERO
                    } else {
                        PROPAGATION
                    };
                    if admitted && sent > at + allowance {
                        violations.push(what(&format!(
                            "admitted {:?} after the revocation (by instance {by}) was answered",
                            sent - at
                        )));
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (probes, violations)
}

/// Polls until `check` holds (the instances recover by themselves), at most `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let started = Instant::now();
    loop {
        match check().await {
            Ok(()) => return started.elapsed(),
            Err(e) if started.elapsed() > within => panic!("{what} not within {within:?}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn redis_outage_run(backend: Backend, redis_server: std::path::PathBuf) {
    let started = Instant::now();
    let mut redis = PrivateRedis::start(redis_server).await;
    let dir = tempfile::tempdir().unwrap();
    let pg = (backend == Backend::Postgres).then(PgTestDb::create);
    let mut config = ServerConfig::new(CONSENT, dir.path()).redis(&redis.url());
    if let Some(pg) = &pg {
        config = config.postgres(&pg.url);
        config.migrate();
    }
    // Two instances on one database and one Redis (on SQLite, one database file).
    let a = config.start("instance-a", true).await;
    let b = config.start("instance-b", false).await;
    let customer = Api::new(&a.base, Duration::from_secs(15));
    customer.login("alice").await.done("login");
    let csrf = customer.csrf().await.done("csrf");
    let apis = [customer.clone(), customer.at(&b.base)];

    // Six grants, three through each instance.
    let mut live = Vec::new();
    for i in 0..6 {
        let t = apis[i % 2].connect().await.done("consent flow");
        live.push(Live {
            grant_id: t.grant_id,
            access: t.access_token,
            refresh: t.refresh_token,
        });
    }
    let tokens = Arc::new(Mutex::new(
        live.iter()
            .map(|l| (l.grant_id.clone(), l.access.clone()))
            .collect::<Vec<_>>(),
    ));
    let revoked: Revocations = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let prober = tokio::spawn(probe(
        apis.to_vec(),
        tokens.clone(),
        revoked.clone(),
        stop.clone(),
    ));
    let pushed_before = apis[0]
        .par(&e2e_tests::oauth::pkce().1)
        .await
        .done("PAR before the outage");
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Redis dies (SIGKILL: its keys and every connection are gone).
    redis.stop();
    let outage = Instant::now();
    let timed = |took: Duration, what: &str| {
        assert!(
            took < QUICK,
            "{backend:?}: {what} took {took:?} with Redis down"
        );
    };
    // Revocations need only the database: answered with success on either instance, by every
    // route, and from then on the token is refused (the probes watch both instances).
    for (i, how) in REVOCATIONS.iter().enumerate() {
        let (by, grant) = (i % 2, &live[i]);
        mark(&revoked, &grant.grant_id, by, false);
        let sent = Instant::now();
        let answer = match how {
            Revocation::Rfc7009 => apis[by].revoke_token(&grant.refresh).await,
            Revocation::ClientApi => apis[by].client_revoke(&grant.grant_id).await,
            Revocation::Dashboard => apis[by].customer_revoke(&grant.grant_id, &csrf).await,
        };
        timed(sent.elapsed(), &format!("revocation by {how:?}"));
        answer.done(&format!(
            "{backend:?}: revocation by {how:?} with Redis down"
        ));
        mark(&revoked, &grant.grant_id, by, true);
    }
    for (i, api) in apis.iter().enumerate() {
        // Once a Redis call has failed, the circuit breaker answers the next ones at once for a
        // second: a client-authenticated request (which checks the client's brute-force block
        // in Redis) costs milliseconds, not a wait on reconnect attempts each time.
        let mut slow = Vec::new();
        for _ in 0..6 {
            let sent = Instant::now();
            api.introspect(&live[5].access).await.done("introspection");
            slow.extend(Some(sent.elapsed()).filter(|t| *t > Duration::from_millis(400)));
        }
        assert!(
            slow.len() <= 2,
            "{backend:?}: instance {i}: {} of 6 introspections slow with Redis down: {slow:?}",
            slow.len()
        );
        // What works from the database keeps working: refresh, introspection, login.
        let sent = Instant::now();
        let t = api.refresh(&live[3 + i].refresh).await;
        timed(sent.elapsed(), "refresh");
        let t = t.done(&format!(
            "{backend:?}: refresh on instance {i} with Redis down"
        ));
        live[3 + i].refresh = t.refresh_token;
        assert!(api.introspect(&t.access_token).await.done("introspection"));
        let fresh = Api::new(&api.base, Duration::from_secs(15));
        fresh.login("bob").await.done("login with Redis down");
        let ready = api.readyz().await.done("readyz with Redis down");
        assert_eq!(ready["cache"], "degraded", "{ready}");

        // What needs Redis fails closed, quickly, with a clear error: PAR (request_uri state
        // lives in Redis) is a 503 `temporarily_unavailable`.
        let sent = Instant::now();
        let par = api.par(&e2e_tests::oauth::pkce().1).await;
        timed(sent.elapsed(), "PAR");
        assert_eq!(
            par.status(),
            Some(503),
            "{backend:?}: PAR with Redis down: {par:?}"
        );
        assert_eq!(par.json()["error"], "temporarily_unavailable", "{par:?}");
        // A request_uri pushed before the outage cannot be read: refused, never a consent page.
        let sent = Instant::now();
        let authorize = api.authorize(&pushed_before).await;
        timed(sent.elapsed(), "authorize");
        let Answer::Refused { status, body, .. } = &authorize else {
            panic!("{backend:?}: authorize with Redis down: {authorize:?}")
        };
        assert_eq!(
            *status, 503,
            "{backend:?}: authorize with Redis down: {authorize:?}"
        );
        assert!(body.contains("temporarily unavailable"), "{body}");
    }
    // Let the outage last past the revocations' propagation allowance, so the probes check
    // the database-only path on both instances.
    let until = outage + PROPAGATION + Duration::from_secs(1);
    tokio::time::sleep(until.saturating_duration_since(Instant::now())).await;
    let outage_lasted = outage.elapsed();

    // Redis is back (empty). Both instances recover without a restart: PAR works again and
    // readiness reports the cache ok.
    redis.resume().await;
    let mut recovered = Vec::new();
    for api in &apis {
        recovered.push(
            eventually(
                Duration::from_secs(15),
                "recovery after Redis restart",
                || async {
                    let par = api.par(&e2e_tests::oauth::pkce().1).await;
                    let ready = api.readyz().await;
                    match (&par, &ready) {
                        (Answer::Done(_), Answer::Done(r)) if r["cache"] == "ok" => Ok(()),
                        _ => Err(format!("{par:?} {ready:?}")),
                    }
                },
            )
            .await,
        );
    }
    // A whole consent flow on each instance, and a revocation after recovery that reaches the
    // other instance.
    for i in 0..2 {
        let t = apis[i].connect().await.done("consent flow after recovery");
        tokens
            .lock()
            .unwrap()
            .push((t.grant_id.clone(), t.access_token.clone()));
        apis[1 - i]
            .sandbox_accounts(&t.access_token)
            .await
            .done("sandbox");
        mark(&revoked, &t.grant_id, i, false);
        apis[i]
            .client_revoke(&t.grant_id)
            .await
            .done("revocation after recovery");
        mark(&revoked, &t.grant_id, i, true);
    }
    tokio::time::sleep(PROPAGATION + Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let (probes, violations) = prober.await.expect("prober");
    assert!(
        violations.is_empty(),
        "{backend:?}: {} violations in {probes} probes:\n{}",
        violations.len(),
        violations
            .iter()
            .take(20)
            .map(|v| v.what.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Finally, on both instances: every revoked grant is refused everywhere, the others work.
    let ended = revoked.lock().unwrap().clone();
    let all = tokens.lock().unwrap().clone();
    for api in &apis {
        for (grant, access) in &all {
            let sandbox = api.sandbox_accounts(access).await;
            let active = api.introspect(access).await.done("introspection");
            if ended.contains_key(grant) {
                assert_eq!(sandbox.status(), Some(401), "{grant}: {sandbox:?}");
                assert!(!active, "{grant} revoked yet active");
            } else {
                assert!(sandbox.is_done() && active, "{grant}: {sandbox:?} {active}");
            }
        }
        for l in &live[..3] {
            let r = api.refresh(&l.refresh).await;
            assert!(
                invalid_grant(&r),
                "{}: revoked yet refresh: {r:?}",
                l.grant_id
            );
        }
    }
    for server in [&a, &b] {
        let errors = server.errors();
        assert!(
            errors.is_empty(),
            "{backend:?}: {} logged errors:\n{}",
            server.name,
            errors.join("\n")
        );
    }
    println!(
        "{backend:?}: Redis outage of {outage_lasted:?}, {probes} probes, recovered after \
         {recovered:?}; {:?} in all",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_admits_no_revoked_token_and_instances_recover() {
    let Some(redis_server) = PrivateRedis::binary() else {
        skip("redis outage", "redis-server is not installed");
        return;
    };
    for backend in backends() {
        redis_outage_run(backend, redis_server.clone()).await;
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL restart

/// One answer of the PostgreSQL test's load.
#[derive(Debug)]
struct Sample {
    kind: &'static str,
    sent: Instant,
    took: Duration,
    /// `Some(status)` of a refusal, `None` for a success; a lost answer fails at once.
    refused: Option<u16>,
    body: String,
}

/// Longest a request may take while PostgreSQL is down: the pool checkout timeout
/// (`database.connect_timeout`) and a margin for a busy machine; a consent flow is five
/// requests. A refresh waits up to three checkout timeouts: its read batch waits for a
/// connection (behind the batch before it, on the batch thread), and when that fails the request
/// takes the transactional path, which waits again. (Reported with these tests: the batched path
/// could answer 503 at once when its batch found the database unavailable.)
fn bound(kind: &str) -> Duration {
    let margin = Duration::from_secs(3);
    let one = DB_CONNECT_TIMEOUT + margin;
    match kind {
        "consent flow" => one * 5,
        k if k.starts_with("refresh") => DB_CONNECT_TIMEOUT * 3 + margin,
        _ => one,
    }
}

/// A refresh retried after a 503 and refused as a replay: the rotation had committed.
const RETRIED: &str = "refresh (retry after unknown outcome)";

/// The client gives up after this: an answer this late is a hang.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);

/// Requests of every kind that need the database, in a loop until `stop`: refreshes (the
/// worker's own grant, rotating), introspection, the sandbox API, readiness, and whole consent
/// flows. A refresh refused with 503 is retried with the same token (what a client does).
async fn pg_worker(
    n: usize,
    api: Api,
    mut tokens: Tokens,
    stop: Arc<AtomicBool>,
) -> (Vec<Sample>, Tokens) {
    let mut samples = Vec::new();
    let mut record = |kind, sent: Instant, answer: Answer<()>| {
        let (refused, body) = match answer {
            Answer::Done(()) => (None, String::new()),
            Answer::Refused { status, body, .. } => (Some(status), body),
            Answer::Lost(e) => panic!("worker {n}: {kind}: no answer in the client's time: {e}"),
        };
        samples.push(Sample {
            kind,
            sent,
            took: sent.elapsed(),
            refused,
            body,
        });
    };
    let mut round = 0usize;
    while !stop.load(Ordering::SeqCst) {
        round += 1;
        let sent = Instant::now();
        let r = api.refresh(&tokens.refresh_token).await;
        if let Answer::Done(t) = &r {
            tokens = t.clone();
        }
        if invalid_grant(&r) {
            // The rotation committed though its answer was a 503 (an unknown outcome): the
            // retry is a replay, which ends the grant. Carry on with a new grant.
            record(RETRIED, sent, r.map(|_| ()));
            if let Answer::Done(t) = api.connect().await {
                tokens = t;
            }
            continue;
        }
        record("refresh", sent, r.map(|_| ()));
        let sent = Instant::now();
        let r = match api.introspect(&tokens.access_token).await {
            Answer::Done(false) => Answer::Refused {
                step: "introspect",
                status: 200,
                body: "inactive".into(),
            },
            other => other.map(|_| ()),
        };
        record("introspection", sent, r);
        let sent = Instant::now();
        record(
            "sandbox",
            sent,
            api.sandbox_accounts(&tokens.access_token).await,
        );
        let sent = Instant::now();
        record("readyz", sent, api.readyz().await.map(|_| ()));
        if (round + n).is_multiple_of(4) {
            let sent = Instant::now();
            record("consent flow", sent, api.connect().await.map(|_| ()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (samples, tokens)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_under_load_fails_fast_and_recovers() {
    const TEST: &str = "postgres restart";
    if !backends().contains(&Backend::Postgres) {
        eprintln!("{TEST}: PostgreSQL tests run when TEST_DATABASE_URL is set");
        return;
    }
    if let Some(reason) = PrivateCluster::unavailable_reason() {
        skip(TEST, &reason);
        return;
    }
    let started = Instant::now();
    let cluster = PrivateCluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(CONSENT, dir.path()).postgres(&cluster.url());
    config.migrate();
    let server = config.start("on-private-cluster", true).await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for n in 0..3 {
        // Requests are bounded client-side too: a hang shows as a lost answer.
        let api = Api::new(&server.base, CLIENT_TIMEOUT);
        api.login(["alice", "bob"][n % 2]).await.done("login");
        let tokens = api.connect().await.done("consent flow");
        workers.push(tokio::spawn(pg_worker(n, api, tokens, stop.clone())));
    }
    let customer = Api::new(&server.base, CLIENT_TIMEOUT);
    customer.login("alice").await.done("login");
    let pushed = customer.par(&e2e_tests::oauth::pkce().1).await.done("PAR");
    tokio::time::sleep(Duration::from_secs(1)).await;

    // PostgreSQL crashes (immediate shutdown: backends killed, no checkpoint) and stays down
    // a while; then it starts again, with crash recovery.
    let stopping = Instant::now();
    cluster.stop("immediate").await;
    let down = Instant::now();
    // The authorization endpoint with a request pushed before: refused quickly and clearly,
    // as a 503 page (retry later), not as a bad request.
    let sent = Instant::now();
    let authorize = customer.authorize(&pushed).await;
    assert!(sent.elapsed() < bound("authorize"), "{:?}", sent.elapsed());
    let Answer::Refused { status, body, .. } = &authorize else {
        panic!("authorize with the database down: {authorize:?}")
    };
    assert!(
        *status == 503 && body.contains("temporarily unavailable"),
        "authorize with the database down: {authorize:?}"
    );
    tokio::time::sleep((down + DB_CONNECT_TIMEOUT * 2).saturating_duration_since(Instant::now()))
        .await;
    let restarting = Instant::now();
    cluster.resume().await;
    let up = Instant::now();

    // The pool recovers without a server restart: every kind of request succeeds again.
    let recovered = eventually(Duration::from_secs(20), "recovery", || async {
        let api = Api::new(&server.base, CLIENT_TIMEOUT);
        let ready = api.readyz().await;
        if !ready.is_done() {
            return Err(format!("{ready:?}"));
        }
        if let Answer::Refused { .. } | Answer::Lost(_) = api.login("alice").await {
            return Err("login".into());
        }
        let t = match api.connect().await {
            Answer::Done(t) => t,
            other => return Err(format!("{other:?}")),
        };
        let t = match api.refresh(&t.refresh_token).await {
            Answer::Done(t) => t,
            other => return Err(format!("{other:?}")),
        };
        match api.sandbox_accounts(&t.access_token).await {
            Answer::Done(()) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // Let the load run on the recovered pool for a moment.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    let mut samples = Vec::new();
    let api = Api::new(&server.base, CLIENT_TIMEOUT);
    for w in workers {
        let (s, tokens) = w.await.expect("worker");
        samples.extend(s);
        // The last refresh token a 200 returned (before, during or after the crash) works once.
        api.refresh(&tokens.refresh_token)
            .await
            .done("the newest refresh token after the restart");
        let again = api.refresh(&tokens.refresh_token).await;
        assert!(invalid_grant(&again), "refresh token reused: {again:?}");
    }

    let slow: Vec<&Sample> = samples.iter().filter(|s| s.took > bound(s.kind)).collect();
    assert!(
        slow.is_empty(),
        "answers slower than their bound: {slow:#?}"
    );
    let failed: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.refused.is_some_and(|st| st >= 500 && st != 503))
        .collect();
    assert!(
        failed.is_empty(),
        "server errors: {failed:#?}\nlogged:\n{}",
        server.server_errors().join("\n")
    );
    // From the stop until PostgreSQL was back, what was refused was refused with 503 and a
    // clear error (problem details, an OAuth error, or readiness `not_ready`).
    // (A retried refresh whose first answer was a 503 although the rotation had committed is
    // refused as a replay: an unknown outcome, counted below, not a refusal to judge.)
    let judged = |s: &&Sample| s.kind != RETRIED;
    let during: Vec<&Sample> = samples
        .iter()
        .filter(judged)
        .filter(|s| s.sent >= stopping && s.sent + s.took <= up)
        .collect();
    let refused_503 = during.iter().filter(|s| s.refused == Some(503)).count();
    assert!(
        refused_503 >= 3,
        "too few requests answered 503 during the outage: {during:#?}"
    );
    for s in &during {
        if let Some(status) = s.refused {
            assert_eq!(status, 503, "during the outage: {s:?}");
            assert!(
                s.body.contains("unavailable") || s.body.contains("not_ready"),
                "unclear error during the outage: {s:?}"
            );
        }
    }
    // While it was down, nothing that needs it succeeded; introspection may answer from its
    // one-second answer cache.
    let impossible: Vec<&&Sample> = during
        .iter()
        .filter(|s| s.sent >= down && s.sent + s.took <= restarting && s.refused.is_none())
        .filter(|s| !(s.kind == "introspection" && s.sent < down + Duration::from_secs(2)))
        .collect();
    assert!(
        impossible.is_empty(),
        "succeeded with the database down: {impossible:#?}"
    );
    // After recovery, nothing is refused any more (sent once the pool was back).
    let back = up + recovered;
    let after: Vec<&Sample> = samples
        .iter()
        .filter(judged)
        .filter(|s| s.sent > back)
        .collect();
    assert!(!after.is_empty(), "no load after the recovery");
    let refused_after: Vec<&&Sample> = after.iter().filter(|s| s.refused.is_some()).collect();
    assert!(
        refused_after.is_empty(),
        "refused after the recovery: {refused_after:#?}"
    );
    let unknown = samples.iter().filter(|s| s.kind == RETRIED).count();
    println!(
        "postgres restart: stop took {:?}, down {:?}, start took {:?}, recovered {recovered:?} \
         after; {} answers ({} during the outage, {refused_503} of them 503; {unknown} refreshes \
         whose 503 hid a committed rotation); {:?} in all",
        down - stopping,
        restarting - down,
        up - restarting,
        samples.len(),
        during.len(),
        started.elapsed()
    );
    // A database outage is logged at ERROR (each refused request, each failed connection
    // attempt); no request was answered with a server error.
    assert!(
        server.server_errors().is_empty(),
        "server errors logged:\n{}",
        server.server_errors().join("\n")
    );
}
