//! Test harness: [`spawn_app`] starts the real server on a random port with its own database
//! (a fresh SQLite file, or a fresh PostgreSQL database when `TEST_DATABASE_URL` is set) and its
//! own Redis key prefix (when `TEST_REDIS_URL` is set), and returns a [`TestApp`] with one helper
//! per endpoint.

pub mod browser;
pub mod dashboard;
pub mod faults;
pub mod idp;
pub mod lifecycle;
pub mod oauth;
pub mod portal;
pub mod ssf;
pub mod webhooks;

use std::time::Duration;

use consent::{Application, ServeOptions};
use diesel::prelude::*;
use platform::Platform;
use platform::config::{Secret, Settings};

/// Which storage a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite file + in-process cache (the embedded default).
    Sqlite,
    /// PostgreSQL (`TEST_DATABASE_URL`) + Redis (`TEST_REDIS_URL`, if set).
    Postgres,
}

/// SQLite always; PostgreSQL too when `TEST_DATABASE_URL` is set.
pub fn backends() -> Vec<Backend> {
    let mut v = vec![Backend::Sqlite];
    if std::env::var("TEST_DATABASE_URL").is_ok_and(|u| !u.is_empty()) {
        v.push(Backend::Postgres);
    }
    v
}

pub fn redis_url() -> Option<String> {
    std::env::var("TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

fn random_suffix() -> String {
    use rand_like::next;
    format!("{:016x}", next())
}

/// Tiny non-crypto uniqueness source for database names and key prefixes.
mod rand_like {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    pub fn next() -> u64 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        nanos
            ^ (u64::from(std::process::id()) << 32)
            ^ COUNTER
                .fetch_add(1, Ordering::SeqCst)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

/// A PostgreSQL database created for one test and dropped afterwards.
#[derive(Debug)]
pub struct PgTestDb {
    admin_url: String,
    pub name: String,
    pub url: String,
}

impl PgTestDb {
    pub fn create() -> Self {
        let admin_url = std::env::var("TEST_DATABASE_URL").expect("TEST_DATABASE_URL");
        let name = format!("consent_test_{}", random_suffix());
        let mut conn = diesel::PgConnection::establish(&admin_url).unwrap_or_else(|e| {
            panic!("TEST_DATABASE_URL is set but PostgreSQL is unreachable: {e}")
        });
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .expect("create test database");
        let mut url = url::Url::parse(&admin_url).expect("TEST_DATABASE_URL is a URL");
        url.set_path(&format!("/{name}"));
        Self {
            admin_url,
            name,
            url: url.to_string(),
        }
    }
}

impl Drop for PgTestDb {
    fn drop(&mut self) {
        if let Ok(mut conn) = diesel::PgConnection::establish(&self.admin_url) {
            let _ = diesel::sql_query(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut conn);
        }
    }
}

/// Settings for a test server: random port, its own data dir, database and key prefix.
pub fn test_settings(backend: Backend, dir: &std::path::Path, pg: Option<&PgTestDb>) -> Settings {
    let mut s = Settings::default();
    s.server.bind = "127.0.0.1:0".into();
    s.server.data_dir = dir.to_path_buf();
    s.server.workers = 2;
    s.server.shutdown_timeout = "1s".parse().expect("duration");
    s.database.pool_size = 8;
    s.lifecycle.audit_chain_interval = "1s".parse().expect("duration");
    // The tests' webhook receivers listen on 127.0.0.1 (one test turns this off again).
    s.webhooks.allow_private_targets = true;
    // The test client speaks plain http to 127.0.0.1 and would not send Secure cookies back
    // (the secure default is tested on its own in integration/operations.rs).
    s.security.secure_cookies = Some(false);
    s.demo.password = Some(Secret::new("demo-password-123".into()));
    s.demo.client_secret = Some(Secret::new("cs_test-demo-client-secret".into()));
    if backend == Backend::Postgres {
        s.database.url = pg.map(|p| Secret::new(p.url.clone()));
        if let Some(r) = redis_url() {
            s.redis.url = Some(Secret::new(r));
            s.redis.key_prefix = format!("test:{}:", random_suffix());
        }
    }
    s
}

/// A running server for one test.
pub struct TestApp {
    pub backend: Backend,
    /// `http://127.0.0.1:<port>` (`https://` when the test configured TLS)
    pub address: String,
    pub client: reqwest::Client,
    pub platform: Platform,
    /// The server's OAuth service (its batch counters, say).
    pub oauth: consent::oauth::OAuthService,
    /// The server's Shared Signals transmitter (its key ring, say).
    pub ssf: consent::ssf::SsfService,
    /// The server's copy of the revocation feed (what its offline verification consults).
    pub revocations: consent::revocation_list::RevocationList,
    pub demo: Option<String>,
    /// The settings it was started with (for [`TestApp::restart`]).
    pub settings: Settings,
    handle: actix_web::dev::ServerHandle,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
    // Declared last: dropped after the server is stopped.
    _pg: Option<PgTestDb>,
}

impl std::fmt::Debug for TestApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestApp")
            .field("backend", &self.backend)
            .field("address", &self.address)
            .finish()
    }
}

/// Starts a server on `backend` with the default test settings.
pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, ServeOptions::default(), |_| {}).await
}

/// Starts a server with the demo data seeded.
pub async fn spawn_demo_app(backend: Backend) -> TestApp {
    spawn_app_with(
        backend,
        ServeOptions {
            demo: true,
            ..Default::default()
        },
        |_| {},
    )
    .await
}

pub async fn spawn_app_with(
    backend: Backend,
    mut options: ServeOptions,
    customize: impl FnOnce(&mut Settings),
) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let pg = (backend == Backend::Postgres).then(PgTestDb::create);
    let mut settings = test_settings(backend, dir.path(), pg.as_ref());
    customize(&mut settings);
    if backend == Backend::Postgres && options.migrations.is_none() {
        // A fresh test database: migrate it, as `consent migrate` would.
        options.migrations = Some(platform::MigrationPolicy::Apply);
    }
    start(backend, settings, options, dir, pg).await
}

async fn start(
    backend: Backend,
    settings: Settings,
    options: ServeOptions,
    dir: tempfile::TempDir,
    pg: Option<PgTestDb>,
) -> TestApp {
    let app = Application::build(settings.clone(), options)
        .await
        .expect("server starts");
    let scheme = match settings.server.tls_cert_file {
        Some(_) => "https",
        None => "http",
    };
    let address = format!("{scheme}://{}", app.address());
    let platform = app.state().platform.clone();
    let oauth = app.state().oauth.clone();
    let ssf = app.state().ssf.clone();
    let revocations = app.state().revocations.clone();
    let demo = app.demo_report().map(|r| r.to_string());
    let handle = app.handle();
    let task = tokio::spawn(app.run_until_stopped());
    // Pooled connections are dropped well before the server's keep-alive (actix: 5s) closes
    // them: otherwise, under load, a request can be written to a connection the server is
    // closing, and a DELETE (not retried) fails with IncompleteMessage.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .no_proxy()
        .pool_idle_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client");
    TestApp {
        backend,
        address,
        client,
        platform,
        oauth,
        ssf,
        revocations,
        demo,
        settings,
        handle,
        task: Some(task),
        _dir: dir,
        _pg: pg,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// A browser-like client of its own (cookies, no redirects) connecting from another loopback
    /// address (`127.0.0.2`, `127.0.0.3`, ...), as a second person would, for address-keyed
    /// limits.
    pub fn client_from(&self, address: &str) -> reqwest::Client {
        reqwest::Client::builder()
            .local_address(Some(address.parse().expect("an IP address")))
            .redirect(reqwest::redirect::Policy::none())
            .cookie_store(true)
            .no_proxy()
            .pool_idle_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request")
    }

    pub async fn get_healthz(&self) -> reqwest::Response {
        self.get("/healthz").await
    }

    pub async fn get_readyz(&self) -> reqwest::Response {
        self.get("/readyz").await
    }

    pub async fn get_metrics(&self) -> reqwest::Response {
        self.get("/metrics").await
    }

    pub async fn get_openapi(&self) -> reqwest::Response {
        self.get("/openapi.json").await
    }

    /// The server's revocation list.
    pub fn state_revocations(&self) -> consent::revocation_list::RevocationList {
        self.revocations.clone()
    }

    /// A second instance on the same database, Redis key prefix and master key (what a fleet
    /// of servers behind a load balancer shares), with its own port and data directory.
    pub async fn another_instance(&self) -> TestApp {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut settings = self.settings.clone();
        settings.server.data_dir = dir.path().to_path_buf();
        settings.database.url = Some(Secret::new(platform::database_url(&self.settings)));
        // An HSM-held key is shared through the cloned `security.pkcs11` instead.
        settings.security.master_key = self.platform.master_key.to_base64().map(Secret::new);
        let options = ServeOptions {
            migrations: Some(platform::MigrationPolicy::Require),
            ..Default::default()
        };
        start(self.backend, settings, options, dir, None).await
    }

    /// Stops the server and starts a new one on the same database, data directory (master key)
    /// and settings: what a process restart does.
    pub async fn restart(mut self, options: ServeOptions) -> TestApp {
        self.handle.stop(true).await;
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let dir = std::mem::replace(&mut self._dir, tempfile::tempdir().expect("tempdir"));
        let pg = self._pg.take();
        // The demo data of this same deployment is already there: re-seeding it is asked for.
        let options = ServeOptions {
            demo_reset: options.demo,
            ..options
        };
        start(self.backend, self.settings.clone(), options, dir, pg).await
    }

    /// Stops the server gracefully and waits for its background jobs.
    pub async fn stop(mut self) {
        self.handle.stop(true).await;
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Tests that do not call `stop` still release the port and database connections.
        let handle = self.handle.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { handle.stop(false).await });
        }
    }
}

/// Runs the `consent` binary at `binary` (an integration test's
/// `env!("CARGO_BIN_EXE_consent-e2e")`) on the embedded database in `data_dir`, with none of the
/// caller's `CONSENT_*` variables but `envs`.
pub fn run_consent(
    binary: &str,
    data_dir: &std::path::Path,
    envs: &[(&str, &str)],
    args: &[&str],
) -> std::process::Output {
    let mut cmd = std::process::Command::new(binary);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CONSENT_") {
            cmd.env_remove(key);
        }
    }
    cmd.envs(envs.iter().copied())
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .expect("run consent")
}
