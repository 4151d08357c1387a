//! `--scenario statements`: the database statements of one whole consent flow, counted.
//!
//! Every statement a connection sends is counted through diesel's instrumentation (installed
//! for every connection before the server opens any), by its SQL text. One flow is PAR, the
//! authorization request, the consent page (which sends the customer to log in), the login
//! page and form, the consent page again, the decision and the code exchange, each request by a
//! new browser (its own cookies). Background jobs run meanwhile; their statements are measured
//! over an idle period as long as the flows took and subtracted.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use diesel::connection::{Instrumentation, InstrumentationEvent};
use e2e_tests::TestApp;
use e2e_tests::oauth::*;
use serde_json::{Value, json};

static COUNTS: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

/// Counts `StartQuery` events by statement (the SQL text up to its first 90 characters).
struct Counter;

impl Instrumentation for Counter {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        if let InstrumentationEvent::StartQuery { query, .. } = event {
            let text = query.to_string();
            let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
            let key: String = text.chars().take(90).collect();
            *COUNTS.lock().unwrap().entry(key).or_default() += 1;
        }
    }
}

/// Installs the counter for every connection opened from now on (call before the server
/// starts).
pub fn install() {
    diesel::connection::set_default_instrumentation(|| Some(Box::new(Counter)))
        .expect("diesel instrumentation");
}

fn snapshot() -> BTreeMap<String, u64> {
    COUNTS.lock().unwrap().clone()
}

fn delta(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, i64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), *v as i64 - *before.get(k).unwrap_or(&0) as i64))
        .filter(|(_, d)| *d != 0)
        .collect()
}

fn total(d: &BTreeMap<String, i64>) -> i64 {
    d.values().sum()
}

/// One whole consent flow by a new browser; returns the statements of each step.
async fn flow(app: &TestApp, account: &str) -> Vec<(&'static str, BTreeMap<String, i64>)> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .build()
        .unwrap();
    let mut steps = Vec::new();
    let mut mark = snapshot();
    let mut step = |name: &'static str, steps: &mut Vec<_>| {
        let now = snapshot();
        steps.push((name, delta(&now, &mark)));
        mark = now;
    };
    let (verifier, challenge) = pkce();
    let rar = details(
        json!({"type": "account_access", "actions": ["accounts:read", "transactions:read"]}),
    );
    let par: Value = http
        .post(app.url("/oauth2/par"))
        .basic_auth(DEMO_CLIENT, Some(DEMO_SECRET))
        .form(&par_form(DEMO_REDIRECT, &challenge, &rar))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    step("PAR", &mut steps);
    let request_uri = par["request_uri"].as_str().expect("PAR accepted");
    let auth = url::Url::parse_with_params(
        &app.url("/oauth2/authorize"),
        &[("client_id", DEMO_CLIENT), ("request_uri", request_uri)],
    )
    .unwrap();
    let r = http.get(auth).send().await.unwrap();
    assert_eq!(r.status(), 303, "authorize");
    let consent = location(&r);
    step("authorization request", &mut steps);
    let r = http.get(app.url(&consent)).send().await.unwrap();
    assert_eq!(r.status(), 303, "consent page sends to login");
    let login = location(&r);
    step("consent page (not logged in)", &mut steps);
    let page = http.get(app.url(&login)).send().await.unwrap();
    let page = page.text().await.unwrap();
    step("login page", &mut steps);
    let next = url::Url::parse(&app.url(&login))
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "next")
        .map(|(_, v)| v.to_string())
        .unwrap_or(consent.clone());
    let r = http
        .post(app.url("/login"))
        .form(&[
            ("csrf_token", csrf_from(&page).as_str()),
            ("username", "alice"),
            ("password", DEMO_PASSWORD),
            ("next", &next),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "login");
    step("login", &mut steps);
    let r = http.get(app.url(&consent)).send().await.unwrap();
    assert_eq!(r.status(), 200, "consent page");
    let html = r.text().await.unwrap();
    step("consent page", &mut steps);
    let r = http
        .post(app.url(&consent))
        .form(&[
            ("csrf_token", csrf_from(&html).as_str()),
            ("decision", "approve"),
            ("account", account),
            ("action", "accounts:read"),
            ("action", "transactions:read"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "decision");
    let code = query_param(&location(&r), "code").expect("a code");
    step("decision", &mut steps);
    let r = http
        .post(app.url("/oauth2/token"))
        .basic_auth(DEMO_CLIENT, Some(DEMO_SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", DEMO_REDIRECT),
            ("code_verifier", verifier.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "code exchange");
    step("code exchange", &mut steps);
    steps
}

/// Runs `flows` flows one after another and prints the statements per flow, by step and by
/// statement.
pub async fn run(app: &TestApp, flows: usize) {
    let account = app.account_ids("alice").await[0].clone();
    // Warm up (prepared statements, caches), then let the start-up jobs finish.
    flow(app, &account).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let before = snapshot();
    let started = Instant::now();
    let mut by_step: Vec<(&'static str, i64)> = Vec::new();
    for _ in 0..flows {
        for (i, (name, d)) in flow(app, &account).await.into_iter().enumerate() {
            if by_step.len() <= i {
                by_step.push((name, 0));
            }
            by_step[i].1 += total(&d);
        }
    }
    let took = started.elapsed();
    let during = delta(&snapshot(), &before);
    let idle_start = snapshot();
    tokio::time::sleep(took).await;
    let idle = delta(&snapshot(), &idle_start);

    let n = flows as f64;
    let per_flow = (total(&during) - total(&idle)) as f64 / n;
    println!(
        "scenario=statements backend={:?} flows={flows} statements_per_flow={per_flow:.1} (counted {} during the flows, {} by background jobs in as long idle)",
        app.backend,
        total(&during),
        total(&idle)
    );
    println!("\nby step (per flow, background jobs included):");
    for (name, count) in &by_step {
        println!("  {:>5.1}  {name}", *count as f64 / n);
    }
    println!("\nby statement (per flow, idle subtracted; BEGIN/COMMIT included):");
    let mut rows: Vec<(f64, &String)> = during
        .iter()
        .map(|(k, v)| ((*v - idle.get(k).copied().unwrap_or(0)) as f64 / n, k))
        .filter(|(v, _)| v.abs() >= 0.05)
        .collect();
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (v, k) in rows {
        println!("  {v:>5.2}  {k}");
    }
}
