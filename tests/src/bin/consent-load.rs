//! Load generator for the token endpoint and introspection (issue: authorization server).
//!
//! Starts the real server in-process (build with `--release`), prepares grants through the real
//! HTTP flow or storage, then drives one scenario with N concurrent HTTP/1.1 keep-alive clients
//! for a fixed time and prints throughput and latency percentiles. Client and server share the
//! machine's cores, as a wrk run on the same host would.
//!
//! ```sh
//! TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres TEST_REDIS_URL=redis://127.0.0.1:6379 \
//!     cargo run --release -p e2e-tests --bin consent-load -- --scenario refresh --seconds 10 --concurrency 64
//! ```
//! Without `TEST_DATABASE_URL` it runs on SQLite.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use e2e_tests::oauth::*;
use e2e_tests::{Backend, TestApp};
use platform::crypto::PlainToken;
use platform::storage::schema::{authorization_codes, grant_rows};
use serde_json::{Value, json};

#[path = "consent_load/statements.rs"]
mod statements;

struct Args {
    scenario: String,
    seconds: u64,
    concurrency: usize,
}

fn args() -> Args {
    let mut a = Args {
        scenario: "refresh".into(),
        seconds: 10,
        concurrency: 64,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().unwrap_or_default();
        match flag.as_str() {
            "--scenario" => a.scenario = v,
            "--seconds" => a.seconds = v.parse().unwrap_or(10),
            "--concurrency" => a.concurrency = v.parse().unwrap_or(64),
            _ => {
                eprintln!(
                    "usage: consent-load --scenario refresh|code|statements|introspect|dpop|propagation|hostile|revocation-memory|sweep|hold [--seconds N] [--concurrency N] (PostgreSQL via TEST_DATABASE_URL)"
                );
                std::process::exit(2);
            }
        }
    }
    a
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(1024)
        .build()
        .unwrap()
}

async fn token_call(http: &reqwest::Client, app: &TestApp, form: &[(&str, &str)]) -> Option<Value> {
    token_call_with(http, app, form, None).await
}

async fn token_call_with(
    http: &reqwest::Client,
    app: &TestApp,
    form: &[(&str, &str)],
    dpop: Option<&str>,
) -> Option<Value> {
    let mut req = http
        .post(app.url("/oauth2/token"))
        .basic_auth(DEMO_CLIENT, Some(DEMO_SECRET))
        .form(form);
    if let Some(p) = dpop {
        req = req.header("DPoP", p);
    }
    let r = req.send().await.ok()?;
    if r.status() != 200 {
        return None;
    }
    r.json().await.ok()
}

/// One real flow (PAR, authorize, consent, code exchange) -> the token response.
async fn real_flow(app: &TestApp) -> Value {
    real_flow_with(app, None).await
}

/// [`real_flow`], the code exchanged with a DPoP proof of `key` when given (the tokens, refresh
/// token included, are then bound to it).
async fn real_flow_with(app: &TestApp, key: Option<&grants::dpop::DpopKey>) -> Value {
    let (verifier, challenge) = pkce();
    let acc = app.account_ids("alice").await[0].clone();
    let rar = details(
        json!({"type": "account_access", "actions": ["accounts:read", "transactions:read"]}),
    );
    let loc = app
        .authorize_with_par(
            (DEMO_CLIENT, DEMO_SECRET),
            DEMO_REDIRECT,
            &rar,
            &challenge,
            &[
                ("decision", "approve"),
                ("account", &acc),
                ("action", "accounts:read"),
                ("action", "transactions:read"),
            ],
        )
        .await;
    let code = query_param(&loc, "code").unwrap();
    let proof = key.map(|k| {
        k.proof(
            "POST",
            &app.url("/oauth2/token"),
            None,
            None,
            chrono::Utc::now(),
        )
    });
    token_call_with(
        &app.client,
        app,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", DEMO_REDIRECT),
            ("code_verifier", &verifier),
        ],
        proof.as_deref(),
    )
    .await
    .expect("code exchange")
}

/// Distinct access tokens `hold` writes for introspection runs (`target/wrk/access_tokens.txt`).
const INTROSPECT_TOKENS: usize = 2_000;

/// `--scenario hold`: prepares tokens for an external load tool (wrk), writes its Lua scripts to
/// `target/wrk/`, prints the commands, and keeps the server up for `seconds`. `n` refresh tokens
/// are seeded (each used once, spread over 64 real grants), so wrk needs no response parsing.
async fn hold(app: &TestApp, seconds: u64, n: usize) {
    use platform::storage::schema::refresh_tokens;
    let n = n.max(1_000) + INTROSPECT_TOKENS;
    let mut grant_ids = Vec::new();
    let mut access = String::new();
    for _ in 0..64 {
        let t = real_flow(app).await;
        grant_ids.push(t["grant_id"].as_str().unwrap().to_string());
        access = t["access_token"].as_str().unwrap().to_string();
    }
    let tokens: Vec<PlainToken> = (0..n).map(|_| PlainToken::generate("rt_")).collect();
    let rows: Vec<(String, String)> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (grant_ids[i % 64].clone(), t.hash().as_str().to_string()))
        .collect();
    let now = chrono::Utc::now().naive_utc();
    app.platform
        .db
        .write(move |c| {
            let rows: Vec<_> = rows
                .iter()
                .map(|(gid, hash)| {
                    (
                        refresh_tokens::id.eq(platform::crypto::random_id("rtk_")),
                        refresh_tokens::token_hash.eq(hash),
                        refresh_tokens::grant_id.eq(gid),
                        refresh_tokens::family_id.eq(platform::crypto::random_id("fam_")),
                        refresh_tokens::status.eq("active"),
                        refresh_tokens::created_at.eq(now),
                        refresh_tokens::expires_at.eq(now + chrono::Duration::days(1)),
                    )
                })
                .collect();
            platform::insert_rows!(c, refresh_tokens::table, &rows);
            Ok(())
        })
        .await
        .unwrap();
    // Distinct access tokens (from refreshing the last tokens seeded), so that introspection
    // can be measured without every request asking about the same token.
    let (tokens, spare) = tokens.split_at(n - INTROSPECT_TOKENS);
    let mut access_list = Vec::with_capacity(INTROSPECT_TOKENS);
    for t in spare {
        let r = app
            .post_token(
                (DEMO_CLIENT, DEMO_SECRET),
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", t.expose()),
                ],
            )
            .await;
        assert_eq!(r.status(), 200, "refresh for the introspection token list");
        let body: serde_json::Value = r.json().await.unwrap();
        access_list.push(body["access_token"].as_str().unwrap().to_string());
    }
    let dir = std::path::Path::new("target/wrk");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("access_tokens.txt"), access_list.join("\n")).unwrap();
    let list: Vec<String> = tokens.iter().map(|t| t.expose().to_string()).collect();
    std::fs::write(dir.join("refresh_tokens.txt"), list.join("\n")).unwrap();
    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{DEMO_CLIENT}:{DEMO_SECRET}"),
    );
    std::fs::write(
        dir.join("introspect.lua"),
        format!(
            "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/x-www-form-urlencoded\"\n\
             wrk.headers[\"Authorization\"] = \"Basic {basic}\"\nwrk.body = \"token={access}\"\n\
             done = function(summary, latency, requests)\n  io.write(string.format(\"non2xx=%d errors=%d\\n\", summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))\nend\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("introspect-many.lua"),
        format!(
            "local tokens = {{}}\nfor line in io.lines(\"target/wrk/access_tokens.txt\") do tokens[#tokens + 1] = line end\n\
             local counter = 0\n\
             setup = function(thread) counter = counter + 1; thread:set(\"tid\", counter) end\n\
             init = function(args) i = tid * 997 end\n\
             request = function()\n  i = i + 1\n  local t = tokens[(i % #tokens) + 1]\n\
               return wrk.format(\"POST\", \"/oauth2/introspect\", {{[\"Content-Type\"] = \"application/x-www-form-urlencoded\", [\"Authorization\"] = \"Basic {basic}\"}}, \"token=\" .. t)\nend\n\
             done = function(summary, latency, requests)\n  io.write(string.format(\"non2xx=%d errors=%d\\n\", summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))\nend\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("refresh.lua"),
        format!(
            "local tokens = {{}}\nfor line in io.lines(\"target/wrk/refresh_tokens.txt\") do tokens[#tokens + 1] = line end\n\
             local counter = 0\n\
             setup = function(thread) counter = counter + 1; thread:set(\"tid\", counter) end\n\
             init = function(args) i = tid end\n\
             request = function()\n  local t = tokens[i] or \"exhausted\"\n  i = i + NTHREADS\n\
               return wrk.format(\"POST\", \"/oauth2/token\", {{[\"Content-Type\"] = \"application/x-www-form-urlencoded\", [\"Authorization\"] = \"Basic {basic}\"}}, \"grant_type=refresh_token&refresh_token=\" .. t)\nend\n\
             done = function(summary, latency, requests)\n  io.write(string.format(\"non2xx=%d errors=%d\\n\", summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))\nend\n"
        ),
    )
    .unwrap();
    // One-use authorization codes (half as many as refresh tokens), each of its own grant, valid
    // for the whole hold, one PKCE verifier for all.
    let (verifier, challenge) = pkce();
    let codes = seed_codes(app, n / 2, &challenge, Duration::from_secs(seconds)).await;
    std::fs::write(dir.join("codes.txt"), codes.join("\n")).unwrap();
    // Table statistics as a running deployment has them (autovacuum would gather them within
    // minutes of a bulk load; until then the planner takes the seeded tables for nearly empty).
    app.platform
        .db
        .run(|c| Ok(diesel::sql_query("ANALYZE").execute(c)?))
        .await
        .unwrap();
    std::fs::write(
        dir.join("code.lua"),
        format!(
            "local tokens = {{}}\nfor line in io.lines(\"target/wrk/codes.txt\") do tokens[#tokens + 1] = line end\n\
             local counter = 0\n\
             setup = function(thread) counter = counter + 1; thread:set(\"tid\", counter) end\n\
             init = function(args) i = tid end\n\
             request = function()\n  local t = tokens[i] or \"exhausted\"\n  i = i + NTHREADS\n\
               return wrk.format(\"POST\", \"/oauth2/token\", {{[\"Content-Type\"] = \"application/x-www-form-urlencoded\", [\"Authorization\"] = \"Basic {basic}\"}}, \"grant_type=authorization_code&redirect_uri={redirect}&code_verifier={verifier}&code=\" .. t)\nend\n\
             done = function(summary, latency, requests)\n  io.write(string.format(\"non2xx=%d errors=%d\\n\", summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))\nend\n",
            redirect = url::form_urlencoded::byte_serialize(DEMO_REDIRECT.as_bytes()).collect::<String>(),
        ),
    )
    .unwrap();
    // Whole flows (benchmarks/flows.mjs): the demo client and customer.
    let account = app.account_ids("alice").await[0].clone();
    std::fs::write(
        dir.join("flow.json"),
        json!({
            "kind": "ours", "client_id": DEMO_CLIENT, "client_secret": DEMO_SECRET,
            "redirect_uri": DEMO_REDIRECT, "username": "alice", "password": DEMO_PASSWORD,
            "account": account, "token_path": "/oauth2/token",
        })
        .to_string(),
    )
    .unwrap();
    // The sandbox API with a two-block token: the holder narrowed its token to one account
    // offline (the resource server verifies both blocks; the token is reused, as holders do).
    let two_blocks = grants::attenuate(
        &access,
        &grants::Attenuation::new().accounts([grants::AccountId::parse(&account).unwrap()]),
        false,
    )
    .unwrap();
    std::fs::write(
        dir.join("sandbox.lua"),
        format!(
            "wrk.method = \"GET\"\nwrk.path = \"/sandbox/v1/accounts/{account}/transactions\"\n\
             wrk.headers[\"Authorization\"] = \"Bearer {two_blocks}\"\n\
             done = function(summary, latency, requests)\n  io.write(string.format(\"non2xx=%d errors=%d\\n\", summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))\nend\n"
        ),
    )
    .unwrap();
    println!(
        "server {} up for {seconds}s with {} one-use refresh tokens and {} codes; from another shell:\n  \
         sed 's/NTHREADS/2/' target/wrk/refresh.lua > target/wrk/refresh2.lua && wrk -t2 -c64 -d10s --latency -s target/wrk/refresh2.lua {}\n  \
         wrk -t2 -c64 -d10s --latency -s target/wrk/introspect.lua {}/oauth2/introspect\n  \
         wrk -t2 -c64 -d10s --latency -s target/wrk/introspect-many.lua {}   # {INTROSPECT_TOKENS} distinct tokens",
        app.address,
        list.len(),
        codes.len(),
        app.address,
        app.address,
        app.address
    );
    if stop_requested_within(Duration::from_secs(seconds)).await {
        println!("stopping: signal received");
    }
}

/// Waits `d`, or less if SIGTERM or SIGINT arrives (then `true`). The server the tool runs in
/// process would otherwise swallow SIGTERM for its own graceful shutdown and leave the tool
/// sleeping (and holding its memory) until `d` ran out.
async fn stop_requested_within(d: Duration) -> bool {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tokio::time::sleep(d).await;
        return false;
    };
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = term.recv() => true,
        _ = int.recv() => true,
    }
}

/// Inserts `n` authorized grants with fresh codes (valid for `valid`) directly in storage
/// (preparation only), a thousand rows per statement on PostgreSQL.
async fn seed_codes(app: &TestApp, n: usize, challenge: &str, valid: Duration) -> Vec<String> {
    let template: (String, String) = app
        .platform
        .db
        .run(|c| {
            Ok(grant_rows::table
                .select((grant_rows::customer_id, grant_rows::authorization_details))
                .first(c)?)
        })
        .await
        .unwrap();
    let codes: Vec<PlainToken> = (0..n).map(|_| PlainToken::generate("ac_")).collect();
    let rows: Vec<(String, String)> = codes
        .iter()
        .map(|c| {
            (
                platform::crypto::random_id("g_"),
                c.hash().as_str().to_string(),
            )
        })
        .collect();
    let challenge = challenge.to_string();
    let now = chrono::Utc::now().naive_utc();
    let expires = now + chrono::Duration::from_std(valid).unwrap();
    app.platform
        .db
        .write(move |c| {
            for chunk in rows.chunks(1_000) {
                let grants: Vec<_> = chunk
                    .iter()
                    .map(|(gid, _)| {
                        (
                            grant_rows::id.eq(gid),
                            grant_rows::customer_id.eq(&template.0),
                            grant_rows::client_id.eq(DEMO_CLIENT),
                            grant_rows::status.eq("authorized"),
                            grant_rows::authorization_details.eq(&template.1),
                            grant_rows::created_at.eq(now),
                            grant_rows::authorized_at.eq(now),
                            grant_rows::expires_at.eq(now + chrono::Duration::days(30)),
                            grant_rows::updated_at.eq(now),
                        )
                    })
                    .collect();
                platform::insert_rows!(c, grant_rows::table, &grants);
                let codes: Vec<_> = chunk
                    .iter()
                    .map(|(gid, hash)| {
                        (
                            authorization_codes::code_hash.eq(hash),
                            authorization_codes::grant_id.eq(gid),
                            authorization_codes::client_id.eq(DEMO_CLIENT),
                            authorization_codes::redirect_uri.eq(DEMO_REDIRECT),
                            authorization_codes::code_challenge.eq(&challenge),
                            authorization_codes::created_at.eq(now),
                            authorization_codes::expires_at.eq(expires),
                        )
                    })
                    .collect();
                platform::insert_rows!(c, authorization_codes::table, &codes);
            }
            Ok(())
        })
        .await
        .unwrap();
    codes.into_iter().map(|c| c.expose().to_string()).collect()
}

#[tokio::main]
async fn main() {
    // The server's own log lines, when asked for (`RUST_LOG=info`, say).
    if std::env::var_os("RUST_LOG").is_some() {
        consent::telemetry::init_tracing(platform::config::LogFormat::Text);
    }
    let a = args();
    if a.scenario == "revocation-memory-child" {
        revocation_memory_child();
        return;
    }
    let backend = *e2e_tests::backends().last().unwrap_or(&Backend::Sqlite);
    let holding = a.scenario == "hold";
    if a.scenario == "statements" {
        // Before the server opens its first connection.
        statements::install();
    }
    let app = e2e_tests::spawn_app_with(
        backend,
        consent::ServeOptions {
            demo: true,
            ..Default::default()
        },
        |s| {
            s.server.workers = 2;
            s.database.pool_size = std::env::var("CONSENT_LOAD_POOL")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(32);
            // `0s` measures introspection without reusing answers.
            if let Ok(ttl) = std::env::var("CONSENT_LOAD_INTROSPECTION_CACHE_TTL") {
                s.tokens.introspection_cache_ttl = ttl.parse().expect("a duration, e.g. 0s");
            }
            // The sweep benchmark writes webhook events; nobody delivers them during the run.
            s.webhooks.delivery_interval = "1h".parse().unwrap();
            // Whole flows (benchmarks/flows.mjs) come from many customers behind one reverse
            // proxy, as in a deployment: each flow names its own address in X-Forwarded-For, so
            // the per-address limits (120 authorization requests a minute) apply per customer.
            if holding {
                s.server.trusted_proxies = "127.0.0.1/32".parse().unwrap();
            }
        },
    )
    .await;
    app.login_customer("alice").await;
    let first = real_flow(&app).await;

    if a.scenario == "statements" {
        statements::run(&app, a.concurrency.clamp(1, 100)).await;
        return;
    }
    if a.scenario == "sweep" {
        sweep_bench(&app, a.concurrency).await;
        return;
    }
    if a.scenario == "hold" {
        hold(&app, a.seconds, a.concurrency).await;
        // A graceful stop (as `kill` expects): the server's workers and tasks end here.
        app.stop().await;
        return;
    }
    if a.scenario == "propagation" {
        propagation(&app, backend, a.concurrency.clamp(10, 1000)).await;
        return;
    }
    if a.scenario == "revocation-memory" {
        revocation_memory(&app, a.concurrency).await;
        return;
    }
    if a.scenario == "hostile" {
        hostile(&app, backend, a.seconds, a.concurrency, &first).await;
        return;
    }
    if a.scenario == "dpop" {
        dpop_bench(&app, backend, a.seconds, a.concurrency).await;
        return;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(std::sync::Mutex::new(Vec::<u32>::new()));
    let app = Arc::new(app);
    let mut tasks = Vec::new();
    let (verifier, challenge) = pkce();
    let codes = if a.scenario == "code" {
        let n = 40_000usize;
        let c = seed_codes(&app, n, &challenge, Duration::from_secs(60)).await;
        Arc::new(std::sync::Mutex::new(c))
    } else {
        Arc::new(std::sync::Mutex::new(vec![]))
    };
    // Refresh chains: one real grant per worker.
    let mut chains = Vec::new();
    if a.scenario == "refresh" {
        for _ in 0..a.concurrency {
            chains.push(
                real_flow(&app).await["refresh_token"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
    }
    let access = first["access_token"].as_str().unwrap().to_string();
    // When the code scenario runs out of codes: the run ends there, not at the timer.
    let exhausted = Arc::new(std::sync::OnceLock::<Instant>::new());
    let started = Instant::now();
    for w in 0..a.concurrency {
        let exhausted = exhausted.clone();
        let (app, stop, done, failed, lat, codes) = (
            app.clone(),
            stop.clone(),
            done.clone(),
            failed.clone(),
            latencies.clone(),
            codes.clone(),
        );
        let scenario = a.scenario.clone();
        let mut rt = chains.get(w).cloned().unwrap_or_default();
        let access = access.clone();
        let verifier = verifier.clone();
        tasks.push(tokio::spawn(async move {
            let http = client();
            let mut local = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let ok = match scenario.as_str() {
                    "refresh" => match token_call(
                        &http,
                        &app,
                        &[("grant_type", "refresh_token"), ("refresh_token", &rt)],
                    )
                    .await
                    {
                        Some(v) => {
                            rt = v["refresh_token"].as_str().unwrap_or_default().to_string();
                            true
                        }
                        None => false,
                    },
                    "code" => {
                        let Some(code) = codes.lock().unwrap().pop() else {
                            exhausted.get_or_init(Instant::now);
                            break;
                        };
                        token_call(
                            &http,
                            &app,
                            &[
                                ("grant_type", "authorization_code"),
                                ("code", &code),
                                ("redirect_uri", DEMO_REDIRECT),
                                ("code_verifier", &verifier),
                            ],
                        )
                        .await
                        .is_some()
                    }
                    _ => {
                        let r = http
                            .post(app.url("/oauth2/introspect"))
                            .basic_auth(DEMO_CLIENT, Some(DEMO_SECRET))
                            .form(&[("token", access.as_str())])
                            .send()
                            .await;
                        match r {
                            Ok(r) => r
                                .json::<Value>()
                                .await
                                .map(|v| v["active"] == true)
                                .unwrap_or(false),
                            Err(_) => false,
                        }
                    }
                };
                local.push(t.elapsed().as_micros() as u32);
                if ok {
                    done.fetch_add(1, Ordering::Relaxed)
                } else {
                    failed.fetch_add(1, Ordering::Relaxed)
                };
            }
            lat.lock().unwrap().extend(local);
        }));
    }
    stop_requested_within(Duration::from_secs(a.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let ended = exhausted.get().copied().unwrap_or_else(Instant::now);
    let elapsed = ended.duration_since(started).as_secs_f64();
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    let ok = done.load(Ordering::Relaxed);
    println!(
        "scenario={} backend={:?} concurrency={} seconds={:.1} ok={} failed={} rate={:.0}/s p50={:.2}ms p99={:.2}ms",
        a.scenario,
        backend,
        a.concurrency,
        elapsed,
        ok,
        failed.load(Ordering::Relaxed),
        ok as f64 / elapsed,
        pct(0.50),
        pct(0.99)
    );
}

/// Hostile holders next to ordinary ones, on the sandbox API: `concurrency` clients list
/// accounts with an ordinary attenuated token while 8 more send hostile tokens (the reported
/// combinatorial block, refused at admission, and the most expensive block the limits admit,
/// alternately), in phases without and with them, interleaved A-B-A-B (`seconds` in all).
/// Then revocation propagation between two instances with the hostile clients still running.
async fn hostile(app: &TestApp, backend: Backend, seconds: u64, concurrency: usize, first: &Value) {
    let access = first["access_token"].as_str().unwrap().to_string();
    let acc = app.account_ids("alice").await[0].clone();
    let ordinary = ::grants::attenuate(
        &access,
        &::grants::Attenuation::new().accounts([::grants::AccountId::parse(acc).unwrap()]),
        false,
    )
    .unwrap();
    let (reported, worst) = hostile_tokens(app, &access);
    let http = client();
    for (name, t) in [
        ("ordinary", &ordinary),
        ("reported", &reported),
        ("worst admissible", &worst),
    ] {
        let r = http
            .get(app.url("/sandbox/v1/accounts"))
            .bearer_auth(t)
            .send()
            .await
            .unwrap();
        println!("{name}: {} ({} bytes)", r.status(), t.len());
    }
    let phase = Duration::from_secs_f64((seconds as f64 / 4.0).max(1.0));
    let mut results: Vec<(bool, Vec<u32>, u64)> = Vec::new();
    for hostile_on in [false, true, false, true] {
        let stop = Arc::new(AtomicBool::new(false));
        let attackers = if hostile_on {
            spawn_attackers(app, &[reported.clone(), worst.clone()], stop.clone())
        } else {
            vec![]
        };
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let (url, token, stop) = (
                app.url("/sandbox/v1/accounts"),
                ordinary.clone(),
                stop.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let http = client();
                let mut lat = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let r = http.get(&url).bearer_auth(&token).send().await.unwrap();
                    assert_eq!(r.status(), 200);
                    let _ = r.bytes().await;
                    lat.push(t.elapsed().as_micros() as u32);
                }
                lat
            }));
        }
        tokio::time::sleep(phase).await;
        stop.store(true, Ordering::Relaxed);
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await.unwrap());
        }
        let mut hostile_done = 0;
        for t in attackers {
            hostile_done += t.await.unwrap();
        }
        lat.sort_unstable();
        results.push((hostile_on, lat, hostile_done));
    }
    let pct = |lat: &[u32], p: f64| {
        lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] as f64 / 1000.0
    };
    for (on, lat, h) in &results {
        println!(
            "scenario=hostile backend={backend:?} phase={} ordinary_requests={} rate={:.0}/s p50={:.2}ms p99={:.2}ms hostile_requests={h}",
            if *on { "with-8-hostile" } else { "baseline" },
            lat.len(),
            lat.len() as f64 / phase.as_secs_f64(),
            pct(lat, 0.5),
            pct(lat, 0.99)
        );
    }
    let p99 = |on: bool| {
        let v: Vec<f64> = results
            .iter()
            .filter(|r| r.0 == on)
            .map(|r| pct(&r.1, 0.99))
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    println!(
        "ratio p99 with/without hostile: {:.2}",
        p99(true) / p99(false)
    );
    // Propagation while the attackers keep going (on both instances: `propagation` starts B).
    let stop = Arc::new(AtomicBool::new(false));
    let attackers = spawn_attackers(app, &[reported, worst], stop.clone());
    propagation(app, backend, 100).await;
    stop.store(true, Ordering::Relaxed);
    for t in attackers {
        let _ = t.await;
    }
}

/// The reported combinatorial token, and the most expensive token of its family that the
/// default limits still admit (largest fact count for a two-way join that matches nothing).
fn hostile_tokens(app: &TestApp, access: &str) -> (String, String) {
    let key = app.oauth.keys.current();
    let root = biscuit_auth::PublicKey::from_bytes(
        &key.active.public_key().to_bytes(),
        biscuit_auth::Algorithm::Ed25519,
    )
    .unwrap();
    let append = |src: &str| {
        let b = biscuit_auth::Biscuit::from_base64(access, root).unwrap();
        b.append(biscuit_auth::BlockBuilder::new().code(src).unwrap())
            .unwrap()
            .to_base64()
            .unwrap()
    };
    let facts = |n: usize| (0..n).map(|i| format!("n({i});")).collect::<String>();
    let reported = append(&format!(
        "{} check if n($a), n($b), n($c), n($d), $a + $b + $c + $d < 0;",
        facts(120)
    ));
    let verifier = ::grants::Verifier::new(key.keyset.clone(), ::grants::NoRevocationCheck);
    let admitted = |t: &str| {
        !matches!(
            verifier.verify_listing(t, ::grants::Action::AccountsRead, chrono::Utc::now()),
            Err(::grants::error::VerifyError::Inadmissible(_)
                | ::grants::error::VerifyError::OverLimits(_))
        )
    };
    let shape = |n: usize| append(&format!("{} check if n($a), n($b), $a + $b < 0;", facts(n)));
    let (mut lo, mut hi) = (1, 64);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if admitted(&shape(mid)) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    println!("worst admissible two-way join: {lo} facts");
    (reported, shape(lo))
}

/// 8 clients sending `tokens` in turn to the sandbox API until `stop`; each returns its count.
fn spawn_attackers(
    app: &TestApp,
    tokens: &[String],
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<u64>> {
    (0..8)
        .map(|i| {
            let (url, tokens, stop) = (
                app.url("/sandbox/v1/accounts"),
                tokens.to_vec(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let http = client();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let t = &tokens[(n as usize + i) % tokens.len()];
                    if let Ok(r) = http.get(&url).bearer_auth(t).send().await {
                        let _ = r.bytes().await;
                    }
                    n += 1;
                }
                n
            })
        })
        .collect()
}

/// Memory of an instance's revocation list: `n` thousand token revocations and a tenth as many
/// grant revocations written to the feed and linked; then a fresh process (this binary again,
/// so nothing the seeding allocated is counted) syncs them into a new list and prints the
/// resident memory that added (Linux /proc/self/statm), and what pruning the expired half
/// leaves.
async fn revocation_memory(app: &TestApp, thousands: usize) {
    use platform::storage::schema::revocations as r;
    let n = thousands.max(1) * 1_000;
    let now = app.platform.now();
    let live = (now + chrono::Duration::minutes(10)).naive_utc();
    let gone = (now - chrono::Duration::hours(2)).naive_utc();
    let started = Instant::now();
    app.platform
        .db
        .write(move |c| {
            for chunk in (0..n + n / 10).collect::<Vec<_>>().chunks(5_000) {
                let rows: Vec<_> = chunk
                    .iter()
                    .map(|&i| {
                        let token = i < n;
                        // Revocation ids are hex of 64-byte signatures: random-looking.
                        let id = {
                            use sha2::Digest;
                            let d = sha2::Sha512::digest(i.to_le_bytes());
                            d.iter().map(|b| format!("{b:02x}")).collect::<String>()
                        };
                        (
                            r::grant_id.eq(format!("g_{:022}", i % (n / 10).max(1))),
                            r::revocation_id.eq(token.then_some(id)),
                            r::reason.eq("load"),
                            r::revoked_at.eq(now.naive_utc()),
                            // Half of them already expired (what pruning drops).
                            r::expires_at.eq(if i % 2 == 0 { live } else { gone }),
                        )
                    })
                    .collect();
                platform::insert_rows!(c, r::table, &rows);
            }
            Ok(())
        })
        .await
        .unwrap();
    app.platform
        .db
        .run(platform::revocation::link_feed_all)
        .await
        .unwrap();
    println!(
        "wrote and linked {} rows in {:?}",
        n + n / 10,
        started.elapsed()
    );
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--scenario", "revocation-memory-child"])
        .env(
            "CONSENT_LOAD_DATABASE",
            platform::database_url(&app.platform.settings),
        )
        .status()
        .unwrap();
    assert!(status.success());
}

/// The measuring half of [`revocation_memory`], in a process of its own.
fn revocation_memory_child() {
    let url = std::env::var("CONSENT_LOAD_DATABASE").expect("CONSENT_LOAD_DATABASE");
    let db = platform::storage::Db::connect(&url, 1, Duration::from_secs(5)).unwrap();
    let rss = || {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let pages: u64 = statm
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        pages * 4096
    };
    let list = consent::revocation_list::RevocationList::default();
    let before = rss();
    let started = Instant::now();
    db.run_blocking(|c| list.sync(c)).unwrap();
    let synced = started.elapsed();
    let after = rss();
    let size = list.size();
    let entries = (size.tokens + size.grants) as f64;
    println!(
        "scenario=revocation-memory tokens={} grants={} sync={synced:?} rss_added={:.1} MiB ({:.0} bytes per entry, {:.1} MiB per million)",
        size.tokens,
        size.grants,
        (after - before) as f64 / 1048576.0,
        (after - before) as f64 / entries,
        (after - before) as f64 / entries * 1e6 / 1048576.0,
    );
    let dropped = list.prune(chrono::Utc::now());
    let size = list.size();
    println!(
        "pruned {dropped} expired entries, {} left; rss {:.1} MiB above the start",
        size.tokens + size.grants,
        rss().saturating_sub(before) as f64 / 1048576.0
    );
}

/// Revocation propagation between two instances on one database (+ Redis when configured):
/// revoke on A, poll B's sandbox API until it refuses the token; `n` samples.
async fn propagation(a: &TestApp, backend: Backend, n: usize) {
    let settings = &a.platform.settings;
    let (db, prefix, master) = (
        platform::database_url(settings),
        settings.redis.key_prefix.clone(),
        a.platform
            .master_key
            .to_base64()
            .expect("the test servers' master key is in memory"),
    );
    let b = e2e_tests::spawn_app_with(backend, Default::default(), |s| {
        s.database.url = Some(platform::config::Secret::new(db.clone()));
        s.redis.key_prefix = prefix.clone();
        s.security.master_key = Some(platform::config::Secret::new(master.clone()));
    })
    .await;
    let http = client();
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = real_flow(a).await;
        let (token, grant) = (
            t["access_token"].as_str().unwrap().to_string(),
            t["grant_id"].as_str().unwrap().to_string(),
        );
        let ok = http
            .get(b.url("/sandbox/v1/accounts"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(ok, 200, "B accepts the token before revocation");
        let r = http
            .delete(a.url(&format!("/api/v1/grants/{grant}")))
            .basic_auth(DEMO_CLIENT, Some(DEMO_SECRET))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        let started = Instant::now();
        loop {
            let s = http
                .get(b.url("/sandbox/v1/accounts"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .status();
            if s == 401 {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(5), "not propagated");
        }
        samples.push(started.elapsed());
    }
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "scenario=propagation backend={backend:?} samples={} p50={:?} p99={:?} max={:?}",
        samples.len(),
        pct(0.50),
        pct(0.99),
        samples[samples.len() - 1]
    );
}

/// Lifecycle sweep of `n` authorized grants of which 10% are dormant (PostgreSQL only: the rows
/// are generated server-side with generate_series). Prints the sweep time.
async fn sweep_bench(app: &TestApp, n: usize) {
    use diesel::sql_types::{BigInt, Text, Timestamp};
    if app.platform.db.backend() != platform::storage::Backend::Postgres {
        eprintln!("the sweep scenario needs TEST_DATABASE_URL (PostgreSQL)");
        return;
    }
    let customer = e2e_tests::oauth::customer_id(app, "alice").await;
    let now = chrono::Utc::now();
    let started = Instant::now();
    app.platform
        .db
        .run(move |c| {
            diesel::sql_query(
                "INSERT INTO grants (id, customer_id, client_id, status, authorization_details, created_at, \
                 authorized_at, last_used_at, expires_at, updated_at) \
                 SELECT 'g_bench_' || i, $1, 'c_demo-client', 'authorized', '[]', $2, $2, \
                        CASE WHEN i % 10 = 0 THEN $3 ELSE $2 END, $4, $2 \
                 FROM generate_series(1, $5) AS i",
            )
            .bind::<Text, _>(customer)
            .bind::<Timestamp, _>((now - chrono::Duration::days(1)).naive_utc())
            .bind::<Timestamp, _>((now - chrono::Duration::days(100)).naive_utc())
            .bind::<Timestamp, _>((now + chrono::Duration::days(100)).naive_utc())
            .bind::<BigInt, _>(n as i64)
            .execute(c)?;
            // The client has a webhook: every ending also writes an outbox event.
            diesel::sql_query(
                "UPDATE clients SET webhook_url = 'https://hooks.example/consent' \
                 WHERE id = 'c_demo-client'",
            )
            .execute(c)?;
            diesel::sql_query("ANALYZE grants").execute(c)?;
            Ok(())
        })
        .await
        .unwrap();
    eprintln!("seeded {n} grants in {:?}", started.elapsed());
    let started = Instant::now();
    let report = consent::lifecycle::run_once(&app.platform).await.unwrap();
    let took = started.elapsed();
    // What the background chainer had not linked yet when the sweep returned, linked now: the
    // sweep's audit events are only done once they are in the chain.
    let started = Instant::now();
    app.platform.audit.link_now().await.unwrap();
    let chained = started.elapsed();
    // Likewise the revocation feed: rows without a position yet, given theirs now.
    let started = Instant::now();
    let positioned = app
        .platform
        .db
        .run(platform::revocation::link_feed_all)
        .await
        .unwrap();
    let fed = started.elapsed();
    println!(
        "scenario=sweep backend=Postgres grants={n} dormant={} expired={} dormancy_warnings={} seconds={:.2} rate={:.0} transitions/s chain_catch_up_seconds={:.2} feed_catch_up_seconds={:.2} feed_rows_caught_up={positioned}",
        report.dormant,
        report.expired,
        report.dormancy_warnings,
        took.as_secs_f64(),
        report.dormant as f64 / took.as_secs_f64(),
        chained.as_secs_f64(),
        fed.as_secs_f64()
    );
}

/// `--scenario dpop`: the token endpoint (refresh) and the sandbox API with bearer tokens and
/// with DPoP-bound tokens, interleaved A-B-A-B in one server (`seconds` per phase), so the
/// ratio is measured under the same conditions. Proofs are signed before each phase (a client
/// signs on its own machine; here it would take the server's cores), one per request.
async fn dpop_bench(app: &TestApp, backend: Backend, seconds: u64, concurrency: usize) {
    let key = grants::dpop::DpopKey::generate_es256();
    let mut bearer_rts = Vec::new();
    let mut dpop_rts = Vec::new();
    for _ in 0..concurrency {
        bearer_rts.push(
            real_flow(app).await["refresh_token"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        dpop_rts.push(
            real_flow_with(app, Some(&key)).await["refresh_token"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let bearer_access = real_flow(app).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let dpop_access = real_flow_with(app, Some(&key)).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let key = Arc::new(key);
    let mut rates: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    for round in 0..2 {
        for phase in [
            "refresh bearer",
            "refresh dpop",
            "sandbox bearer",
            "sandbox dpop",
        ] {
            // Proofs for this phase: generously more than it can use.
            let budget = 4_000 * seconds as usize;
            let proofs: Vec<String> = match phase {
                "refresh dpop" => {
                    let url = app.url("/oauth2/token");
                    (0..budget)
                        .map(|_| key.proof("POST", &url, None, None, chrono::Utc::now()))
                        .collect()
                }
                "sandbox dpop" => {
                    let url = app.url("/sandbox/v1/accounts");
                    (0..budget)
                        .map(|_| {
                            key.proof("GET", &url, Some(&dpop_access), None, chrono::Utc::now())
                        })
                        .collect()
                }
                _ => vec![],
            };
            let proofs = Arc::new(std::sync::Mutex::new(proofs));
            let stop = Arc::new(AtomicBool::new(false));
            let done = Arc::new(AtomicU64::new(0));
            let failed = Arc::new(AtomicU64::new(0));
            let mut tasks = Vec::new();
            let started = Instant::now();
            for w in 0..concurrency {
                let (stop, done, failed, proofs) =
                    (stop.clone(), done.clone(), failed.clone(), proofs.clone());
                let base = app.address.clone();
                let mut rt = match phase {
                    "refresh bearer" => bearer_rts[w].clone(),
                    _ => dpop_rts[w].clone(),
                };
                let (bearer_access, dpop_access) = (bearer_access.clone(), dpop_access.clone());
                tasks.push(tokio::spawn(async move {
                    let http = client();
                    while !stop.load(Ordering::Relaxed) {
                        let proof = match phase {
                            "refresh dpop" | "sandbox dpop" => match proofs.lock().unwrap().pop() {
                                Some(p) => Some(p),
                                None => break,
                            },
                            _ => None,
                        };
                        let req = match phase {
                            "refresh bearer" | "refresh dpop" => http
                                .post(format!("{base}/oauth2/token"))
                                .basic_auth(DEMO_CLIENT, Some(DEMO_SECRET))
                                .form(&[("grant_type", "refresh_token"), ("refresh_token", &rt)]),
                            "sandbox bearer" => http
                                .get(format!("{base}/sandbox/v1/accounts"))
                                .bearer_auth(&bearer_access),
                            _ => http
                                .get(format!("{base}/sandbox/v1/accounts"))
                                .header("authorization", format!("DPoP {dpop_access}")),
                        };
                        let req = match &proof {
                            Some(p) => req.header("DPoP", p),
                            None => req,
                        };
                        let ok = match req.send().await {
                            Ok(r) if r.status() == 200 => {
                                if phase == "refresh bearer" {
                                    let v: Value = r.json().await.unwrap_or_default();
                                    rt =
                                        v["refresh_token"].as_str().unwrap_or_default().to_string();
                                } else {
                                    let _ = r.bytes().await;
                                }
                                true
                            }
                            _ => false,
                        };
                        if ok {
                            done.fetch_add(1, Ordering::Relaxed);
                        } else {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    rt
                }));
            }
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            stop.store(true, Ordering::Relaxed);
            for (w, t) in tasks.into_iter().enumerate() {
                // Bearer refresh tokens rotate: the next round continues each worker's chain.
                if let (Ok(rt), "refresh bearer") = (t.await, phase) {
                    bearer_rts[w] = rt;
                }
            }
            let elapsed = started.elapsed().as_secs_f64();
            let ok = done.load(Ordering::Relaxed);
            let rate = ok as f64 / elapsed;
            println!(
                "scenario=dpop backend={backend:?} round={round} phase=\"{phase}\" ok={ok} failed={} rate={rate:.0}/s",
                failed.load(Ordering::Relaxed)
            );
            rates.entry(phase).or_default().push(rate);
        }
    }
    let mean = |p: &str| rates[p].iter().sum::<f64>() / rates[p].len() as f64;
    println!(
        "scenario=dpop backend={backend:?} concurrency={concurrency} token endpoint dpop/bearer = {:.2}; sandbox API dpop/bearer = {:.2}",
        mean("refresh dpop") / mean("refresh bearer"),
        mean("sandbox dpop") / mean("sandbox bearer"),
    );
}
