//! `--demo`: seeds, idempotently, the data DESIGN.md names - customers `alice` and `bob` with
//! accounts and a year of transactions across 20 merchants; staff `ops1` and `ops2`; a KYC-approved
//! developer `demo@example.com` with the sandbox client `demo-client`.
//!
//! Data is inserted once (deterministic ids and a seeded RNG). Passwords and the client secret come
//! from `CONSENT_DEMO_PASSWORD` / `CONSENT_DEMO_CLIENT_SECRET`, or are generated at each start;
//! their hashes are refreshed on every start so the printed credentials always work.

use std::fmt;

use chrono::{Duration, NaiveDateTime, SubsecRound, Timelike};
use diesel::prelude::*;
use platform::Platform;
use platform::audit::{Actor, NewEvent, Target};
use platform::crypto::{PlainToken, hash_password};
use platform::storage::models::*;
use platform::storage::schema::*;
use platform::storage::{AnyConnection, StorageResult};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

pub const DEMO_CLIENT_ID: &str = "c_demo-client";
pub const DEMO_CLIENT_NAME: &str = "demo-client";
pub const DEMO_REDIRECT_URI: &str = "http://127.0.0.1:8081/callback";
pub const DEMO_DEVELOPER_EMAIL: &str = "demo@example.com";

/// (id, name, category, typical amount in minor units)
const MERCHANTS: [(&str, &str, &str, i64); 20] = [
    ("m_fresh_market", "Fresh Market", "groceries", 4_500),
    ("m_corner_grocer", "Corner Grocer", "groceries", 1_800),
    ("m_bean_there", "Bean There Coffee", "eating_out", 420),
    ("m_noodle_bar", "Noodle Bar", "eating_out", 1_650),
    ("m_pizza_piazza", "Pizza Piazza", "eating_out", 2_300),
    ("m_city_transit", "City Transit", "transport", 280),
    ("m_ride_now", "RideNow", "transport", 1_400),
    ("m_fuel_stop", "FuelStop", "transport", 6_000),
    ("m_stream_flix", "StreamFlix", "subscriptions", 1_299),
    ("m_tunes", "Tunes Unlimited", "subscriptions", 999),
    ("m_gym_plus", "Gym Plus", "health", 3_500),
    ("m_pharma_care", "PharmaCare", "health", 1_250),
    ("m_book_nook", "The Book Nook", "shopping", 1_900),
    ("m_tech_depot", "Tech Depot", "shopping", 8_900),
    ("m_style_co", "Style & Co", "shopping", 5_500),
    ("m_home_goods", "HomeGoods", "home", 3_200),
    ("m_power_co", "PowerCo Energy", "utilities", 7_800),
    ("m_net_fiber", "NetFiber", "utilities", 3_999),
    ("m_cinema_one", "Cinema One", "entertainment", 1_100),
    ("m_sky_travel", "SkyTravel", "travel", 24_000),
];

/// Accounts per customer: (slug, name, last digits, currency, opening balance).
const ALICE_ACCOUNTS: [(&str, &str, &str, &str, i64); 3] = [
    (
        "current",
        "Everyday current account",
        "4821",
        "EUR",
        254_310,
    ),
    ("savings", "Rainy-day savings", "9034", "EUR", 1_230_000),
    ("travel", "Travel card", "5517", "GBP", 48_250),
];
const BOB_ACCOUNTS: [(&str, &str, &str, &str, i64); 2] = [
    ("current", "Current account", "7712", "EUR", 98_765),
    ("joint", "Joint household account", "3390", "EUR", 310_400),
];

/// The demo's staff members (username, display name). Each gets a password of its own, generated
/// at every start: two staff members who share one password are one person, which would make the
/// four-eyes approvals between them meaningless.
pub const DEMO_STAFF: [(&str, &str); 2] = [("ops1", "Operations One"), ("ops2", "Operations Two")];

/// Credentials to print at start-up.
pub struct DemoReport {
    pub password: String,
    pub password_generated: bool,
    /// (username, password) of each demo staff member.
    pub staff_passwords: Vec<(&'static str, String)>,
    /// The enrolment code of each demo staff member without an authenticator yet (new at every
    /// start), by username.
    pub staff_enrolment_codes: Vec<(&'static str, String)>,
    pub client_secret: String,
    pub client_secret_generated: bool,
    pub seeded_now: bool,
}

impl fmt::Debug for DemoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DemoReport")
            .field("seeded_now", &self.seeded_now)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for DemoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origin = |generated: bool, var: &str| {
            if generated {
                format!("generated for this run; set {var} to choose it")
            } else {
                format!("from {var}")
            }
        };
        writeln!(
            f,
            "=== Demo data {} ===",
            if self.seeded_now {
                "seeded"
            } else {
                "already present"
            }
        )?;
        writeln!(
            f,
            "Password of the demo customers and developer: {}  ({})",
            self.password,
            origin(self.password_generated, "CONSENT_DEMO_PASSWORD")
        )?;
        writeln!(
            f,
            "  customers: alice, bob         -> log in at /login, see /account/apps"
        )?;
        for (username, password) in &self.staff_passwords {
            writeln!(
                f,
                "  staff:     {username} password {password}  -> staff pages under /developers/staff \
                 (generated for this run, one per staff member)"
            )?;
            if let Some((_, code)) = self.staff_enrolment_codes.iter().find(|s| s.0 == *username) {
                writeln!(
                    f,
                    "             {username} enrolment code {code}  (the first login needs it to \
                     set up an authenticator)"
                )?;
            }
        }
        writeln!(f, "  developer: {DEMO_DEVELOPER_EMAIL} -> /developers")?;
        writeln!(
            f,
            "Client '{DEMO_CLIENT_NAME}' (sandbox): client_id={DEMO_CLIENT_ID}"
        )?;
        writeln!(
            f,
            "  client_secret={}  ({})",
            self.client_secret,
            origin(self.client_secret_generated, "CONSENT_DEMO_CLIENT_SECRET")
        )?;
        write!(f, "  redirect_uri={DEMO_REDIRECT_URI}")
    }
}

fn stable_id(prefix: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("consent-demo:{name}").as_bytes());
    format!("{prefix}{}", &hex::encode(digest)[..20])
}

pub fn customer_id(username: &str) -> String {
    stable_id("cust_", username)
}

pub fn account_id(username: &str, slug: &str) -> String {
    stable_id("acc_", &format!("{username}/{slug}"))
}

/// Seeds the demo data (once) and refreshes demo credentials (every time).
///
/// A PostgreSQL database is shared and long-lived: seeding it is refused when it already holds
/// customers, staff, developers or clients (it may be a real deployment, whose people must not
/// get demo credentials), unless `reset` (`serve --demo-reset`) says so. The embedded SQLite
/// database is the developer's own data directory and is seeded (or refreshed) freely.
pub async fn seed(platform: &Platform, reset: bool) -> anyhow::Result<DemoReport> {
    if platform.settings.uses_postgres() && !reset {
        let people: i64 = platform
            .db
            .run(|c| {
                Ok(customers::table.count().get_result::<i64>(c)?
                    + staff::table.count().get_result::<i64>(c)?
                    + developers::table.count().get_result::<i64>(c)?
                    + clients::table.count().get_result::<i64>(c)?)
            })
            .await?;
        if people > 0 {
            anyhow::bail!(
                "refusing to seed demo data: the PostgreSQL database is not empty ({people} \
                 customers, staff, developers and clients). Demo data and demo credentials \
                 belong in an empty database; run with --demo-reset to seed anyway and reset \
                 the demo accounts' credentials"
            );
        }
    }
    let (password, password_generated) = match &platform.settings.demo.password {
        Some(p) => (p.expose().clone(), false),
        None => (
            PlainToken::generate("").expose().chars().take(16).collect(),
            true,
        ),
    };
    let (client_secret, client_secret_generated) = match &platform.settings.demo.client_secret {
        Some(s) => (s.expose().clone(), false),
        None => (PlainToken::generate("cs_").expose().to_string(), true),
    };
    if password.len() < 8 {
        anyhow::bail!("CONSENT_DEMO_PASSWORD must be at least 8 characters");
    }
    let staff_passwords: Vec<(&'static str, String)> = DEMO_STAFF
        .iter()
        .map(|(username, _)| {
            let generated: String = PlainToken::generate("").expose().chars().take(16).collect();
            (*username, generated)
        })
        .collect();
    // argon2 is deliberately slow: hash off the async executor.
    let pw = password.clone();
    let password_hash = tokio::task::spawn_blocking(move || hash_password(&pw)).await??;
    let mut staff_hashes: Vec<(&'static str, String)> = Vec::new();
    for (username, password) in &staff_passwords {
        let pw = password.clone();
        staff_hashes.push((
            username,
            tokio::task::spawn_blocking(move || hash_password(&pw)).await??,
        ));
    }
    let secret_hash = PlainToken::from_presented(&client_secret)
        .hash()
        .into_string();
    let now = platform.now();
    let pii = platform.master_key.cipher("kyc-pii");
    let webhook = platform.master_key.cipher("webhook-secrets");
    let webhook_secret = webhook.encrypt_str(
        PlainToken::generate("whsec_").expose(),
        &format!("clients.webhook_secret:{DEMO_CLIENT_ID}"),
    )?;
    let kyc_id = stable_id("kyc_", DEMO_DEVELOPER_EMAIL);
    let enc = |field: &str, value: &str| {
        pii.encrypt_str(value, &format!("kyc_submissions.{field}:{kyc_id}"))
    };
    let kyc_fields = [
        enc("legal_name", "Demo Fintech Ltd")?,
        enc("registration_number", "DE-HRB-000000")?,
        enc("address", "1 Example Street, 10115 Berlin")?,
        enc("contact", "Dana Developer <demo@example.com>")?,
        enc(
            "documents",
            r#"[{"kind":"certificate_of_incorporation","filename":"incorporation.pdf","sha256":"demo"}]"#,
        )?,
    ];

    let seeded_now = platform
        .db
        .write(move |conn| {
            let now_naive = now.naive_utc().trunc_subsecs(0);
            let exists: i64 = customers::table
                .filter(customers::username.eq("alice"))
                .count()
                .get_result(conn)?;
            let seeded_now = exists == 0;
            if seeded_now {
                insert_data(
                    conn,
                    now_naive,
                    &password_hash,
                    &secret_hash,
                    &webhook_secret,
                    &kyc_id,
                    kyc_fields,
                )?;
                NewEvent::new(
                    Actor::system("demo-seed"),
                    "demo.seeded",
                    Target::new("deployment", "demo"),
                )
                .record(conn, now)?;
            }
            refresh_credentials(conn, &password_hash, &staff_hashes, &secret_hash)?;
            NewEvent::new(
                Actor::system("demo-seed"),
                "demo.credentials_set",
                Target::new("deployment", "demo"),
            )
            .record(conn, now)?;
            Ok(seeded_now)
        })
        .await?;
    let mut staff_enrolment_codes = Vec::new();
    for (username, _) in DEMO_STAFF {
        let id = stable_id("staff_", username);
        let actor = Actor::system("demo-seed");
        let code = developer_portal::second_factor::enrolment_code_if_unenrolled(
            platform,
            actor,
            platform::session::SessionKind::Staff,
            id,
        )
        .await
        .map_err(|e| anyhow::anyhow!("demo enrolment code: {e}"))?;
        if let Some(code) = code {
            staff_enrolment_codes.push((username, code.to_string()));
        }
    }

    Ok(DemoReport {
        password,
        password_generated,
        staff_passwords,
        staff_enrolment_codes,
        client_secret,
        client_secret_generated,
        seeded_now,
    })
}

fn refresh_credentials(
    conn: &mut AnyConnection,
    password_hash: &str,
    staff_hashes: &[(&str, String)],
    secret_hash: &str,
) -> StorageResult<()> {
    // By the demo's own stable ids, never by name: a real customer called alice, or staff member
    // called ops1, must not get demo credentials. The demo customers are test customers.
    diesel::update(
        customers::table.filter(customers::id.eq_any([customer_id("alice"), customer_id("bob")])),
    )
    .set((
        customers::password_hash.eq(password_hash),
        customers::is_test.eq(true),
    ))
    .execute(conn)?;
    for (username, hash) in staff_hashes {
        diesel::update(staff::table.filter(staff::id.eq(stable_id("staff_", username))))
            .set(staff::password_hash.eq(hash))
            .execute(conn)?;
    }
    diesel::update(
        developers::table.filter(developers::id.eq(stable_id("dev_", DEMO_DEVELOPER_EMAIL))),
    )
    .set(developers::password_hash.eq(password_hash))
    .execute(conn)?;
    diesel::update(clients::table.filter(clients::id.eq(DEMO_CLIENT_ID)))
        .set(clients::secret_hash.eq(secret_hash))
        .execute(conn)?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn insert_data(
    conn: &mut AnyConnection,
    now: NaiveDateTime,
    password_hash: &str,
    secret_hash: &str,
    webhook_secret_enc: &str,
    kyc_id: &str,
    kyc: [String; 5],
) -> StorageResult<()> {
    let merchants_rows: Vec<Merchant> = MERCHANTS
        .iter()
        .map(|(id, name, category, _)| Merchant {
            id: (*id).into(),
            name: (*name).into(),
            category: (*category).into(),
        })
        .collect();
    // MultiConnection has no batch insert; rows go one by one inside the one transaction.
    for row in &merchants_rows {
        diesel::insert_into(merchants::table)
            .values(row)
            .execute(conn)?;
    }

    let mut rng = StdRng::seed_from_u64(0x5eed);
    for (username, display, accounts_spec) in [
        ("alice", "Alice Andersson", &ALICE_ACCOUNTS[..]),
        ("bob", "Bob Brennan", &BOB_ACCOUNTS[..]),
    ] {
        let cid = customer_id(username);
        diesel::insert_into(customers::table)
            .values(Customer {
                id: cid.clone(),
                username: username.into(),
                display_name: display.into(),
                password_hash: password_hash.into(),
                created_at: now,
                is_test: true,
            })
            .execute(conn)?;
        for (slug, name, last4, currency, balance) in accounts_spec {
            let aid = account_id(username, slug);
            diesel::insert_into(accounts::table)
                .values(Account {
                    id: aid.clone(),
                    customer_id: cid.clone(),
                    name: (*name).into(),
                    masked_number: format!("•••• {last4}"),
                    currency: (*currency).into(),
                    balance_minor: *balance,
                    created_at: now,
                })
                .execute(conn)?;
            let txs = year_of_transactions(&mut rng, &aid, currency, now);
            for tx in &txs {
                diesel::insert_into(transactions::table)
                    .values(tx)
                    .execute(conn)?;
            }
        }
    }

    for (username, display) in DEMO_STAFF {
        // The password is set right after, per staff member (refresh_credentials).
        diesel::insert_into(staff::table)
            .values(Staff {
                id: stable_id("staff_", username),
                username: username.into(),
                display_name: display.into(),
                password_hash: String::new(),
                status: "active".into(),
                created_at: now,
                // The demo shows four-eyes decisions between its two staff members.
                roles: "support,compliance,security".into(),
            })
            .execute(conn)?;
    }

    let dev_id = stable_id("dev_", DEMO_DEVELOPER_EMAIL);
    diesel::insert_into(developers::table)
        .values(Developer {
            id: dev_id.clone(),
            email: DEMO_DEVELOPER_EMAIL.into(),
            display_name: "Dana Developer".into(),
            password_hash: password_hash.into(),
            created_at: now,
        })
        .execute(conn)?;
    let [
        legal_name_enc,
        registration_number_enc,
        address_enc,
        contact_enc,
        documents_enc,
    ] = kyc;
    diesel::insert_into(kyc_submissions::table)
        .values(KycSubmission {
            id: kyc_id.into(),
            developer_id: dev_id.clone(),
            status: "approved".into(),
            legal_name_enc,
            registration_number_enc,
            country: "DE".into(),
            address_enc,
            contact_enc,
            documents_enc,
            decision_reason: None,
            created_at: now,
            updated_at: now,
            submitted_at: Some(now),
            decided_at: Some(now),
        })
        .execute(conn)?;
    for staff_user in ["ops1", "ops2"] {
        diesel::insert_into(kyc_reviews::table)
            .values(KycReview {
                id: stable_id("rev_", staff_user),
                submission_id: kyc_id.into(),
                staff_id: stable_id("staff_", staff_user),
                decision: "approve".into(),
                justification: "Demo data: documents checked against the demo registry.".into(),
                round: 1,
                created_at: now,
            })
            .execute(conn)?;
    }
    diesel::insert_into(clients::table)
        .values(Client {
            id: DEMO_CLIENT_ID.into(),
            developer_id: dev_id,
            name: DEMO_CLIENT_NAME.into(),
            environment: "sandbox".into(),
            redirect_uris: serde_json::json!([DEMO_REDIRECT_URI]).to_string(),
            auth_method: "client_secret_basic".into(),
            secret_hash: secret_hash.into(),
            allowed_actions: serde_json::json!([
                "accounts:read",
                "balances:read",
                "transactions:read"
            ])
            .to_string(),
            webhook_url: None,
            webhook_secret_enc: Some(webhook_secret_enc.into()),
            dormancy_days: None,
            dormancy_since: None,
            status: "active".into(),
            created_at: now,
            updated_at: now,
            jwks: None,
            dpop_bound_access_tokens: false,
            tls_client_auth_subject_dn: None,
            tls_client_certificate_bound_access_tokens: false,
        })
        .execute(conn)?;
    Ok(())
}

/// Roughly one to two card payments a day for a year, plus monthly subscriptions and bills.
fn year_of_transactions(
    rng: &mut StdRng,
    account_id: &str,
    currency: &str,
    now: NaiveDateTime,
) -> Vec<Transaction> {
    let start = (now - Duration::days(365)).with_hour(0).unwrap_or(now);
    let mut out = Vec::new();
    for day in 0..365 {
        let date = start + Duration::days(day);
        let count = rng.gen_range(0..=2);
        for _ in 0..count {
            let (mid, name, _, typical) = MERCHANTS[rng.gen_range(0..MERCHANTS.len())];
            let amount = -(typical / 2 + rng.gen_range(0..=typical));
            let when = date + Duration::minutes(rng.gen_range(7 * 60..22 * 60));
            out.push(Transaction {
                id: format!("tx_{}_{:05}", &account_id[4..14], out.len()),
                account_id: account_id.into(),
                booked_at: when,
                amount_minor: amount,
                currency: currency.into(),
                merchant_id: mid.into(),
                description: format!("Card payment - {name}"),
            });
        }
        if day % 30 == 0 {
            out.push(Transaction {
                id: format!("tx_{}_{:05}", &account_id[4..14], out.len()),
                account_id: account_id.into(),
                booked_at: date + Duration::hours(9),
                amount_minor: 250_000,
                currency: currency.into(),
                merchant_id: "m_power_co".into(),
                description: "Incoming transfer - salary".into(),
            });
        }
    }
    out
}
