//! Fault injection: the real `consent` binary as a separate OS process (so a test can SIGKILL it
//! and start it again on the same storage), private Redis and PostgreSQL servers a test may stop
//! and restart without disturbing the shared ones, an HTTP client that tells a success answer
//! from a refusal and from no answer at all, and the storage invariants a crash must not break.
//!
//! The binary's path comes from the integration test (`env!("CARGO_BIN_EXE_consent-e2e")`, see
//! tests/Cargo.toml): cargo sets that variable only when it compiles an integration test.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use diesel::prelude::*;
use platform::storage::{AnyConnection, StorageResult};
use serde_json::{Value, json};

use crate::oauth::{
    DEMO_CLIENT, DEMO_PASSWORD, DEMO_REDIRECT, DEMO_SECRET, csrf_from, details, pkce, query_param,
};

/// The server's pool checkout timeout in these tests (`database.connect_timeout`): how long a
/// request may wait for a database connection before it is answered 503.
pub const DB_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// True when CI promised every service (`CONSENT_REQUIRE_SERVICES=1`): a missing one fails the
/// test instead of skipping it.
pub fn services_required() -> bool {
    std::env::var("CONSENT_REQUIRE_SERVICES").as_deref() == Ok("1")
}

/// Prints why a test does not run, or fails it when the services were promised.
pub fn skip(test: &str, reason: &str) {
    assert!(
        !services_required(),
        "{test}: CONSENT_REQUIRE_SERVICES=1 but {reason}"
    );
    eprintln!("{test}: skipped: {reason}");
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's effective user.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// An executable `name` on the PATH (or in /usr/sbin, /sbin, which a PATH may lack).
fn executable(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn runuser() -> Option<PathBuf> {
    executable("runuser")
}

/// A port nothing listens on now (bound, then released).
pub fn free_port() -> u16 {
    crate::lifecycle::free_port()
}

// ---------------------------------------------------------------------------------------------
// The consent server as a process

/// How to run `consent serve` (one instance, or several on shared storage).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub binary: PathBuf,
    /// `--data-dir`: the SQLite file and generated master key live here.
    pub data_dir: PathBuf,
    /// `CONSENT_DATABASE_URL` (`None`: SQLite in the data dir).
    pub database_url: Option<String>,
    /// `CONSENT_REDIS_URL` (`None`: the in-process cache).
    pub redis_url: Option<String>,
    pub redis_prefix: String,
    /// `CONSENT_MASTER_KEY`, shared by every instance of one database (`None`: generated into
    /// the data dir).
    pub master_key: Option<String>,
    /// Where each started process writes its log.
    pub logs: PathBuf,
    /// More environment for every process (e.g. `CONSENT_PKCS11_*`, `SOFTHSM2_CONF`).
    pub env: Vec<(String, String)>,
}

impl ServerConfig {
    /// The embedded default: SQLite in `dir`, in-process cache, master key generated there.
    pub fn new(binary: &str, dir: &Path) -> Self {
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs).expect("log dir");
        Self {
            binary: PathBuf::from(binary),
            data_dir: dir.join("data"),
            database_url: None,
            redis_url: None,
            redis_prefix: format!("faults:{}:", crate::random_suffix()),
            master_key: None,
            logs,
            env: Vec::new(),
        }
    }

    /// PostgreSQL at `url`, with a master key every instance shares.
    pub fn postgres(mut self, url: &str) -> Self {
        self.database_url = Some(url.to_string());
        let key: [u8; 32] = rand::random();
        self.master_key = Some(base64::engine::general_purpose::STANDARD.encode(key));
        self
    }

    pub fn redis(mut self, url: &str) -> Self {
        self.redis_url = Some(url.to_string());
        self
    }

    /// The master key the server uses (for the audit chain key).
    pub fn master_key(&self) -> platform::crypto::MasterKey {
        match &self.master_key {
            Some(encoded) => platform::crypto::MasterKey::from_base64(encoded).expect("master key"),
            None => {
                platform::crypto::MasterKey::load_or_generate(&self.data_dir.join("master.key"))
                    .expect("the server's generated master key")
            }
        }
    }

    /// The storage the server uses, for a test's own connection.
    pub fn storage_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            self.data_dir
                .join("consent.db")
                .to_string_lossy()
                .into_owned()
        })
    }

    fn command(&self, log: &Path) -> Command {
        let mut cmd = Command::new(&self.binary);
        // Only what this config says: no CONSENT_* setting of the environment the tests run in.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("CONSENT_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("RUST_LOG", "info,actix_server=warn,diesel=warn")
            .env("CONSENT_LOG_FORMAT", "json")
            .env("CONSENT_DEMO_PASSWORD", DEMO_PASSWORD)
            .env("CONSENT_DEMO_CLIENT_SECRET", DEMO_SECRET)
            .env("CONSENT_SERVER__WORKERS", "2")
            .env("CONSENT_SERVER__SHUTDOWN_TIMEOUT", "1s")
            .env("CONSENT_DATABASE__POOL_SIZE", "8")
            .env(
                "CONSENT_DATABASE__CONNECT_TIMEOUT",
                format!("{}s", DB_CONNECT_TIMEOUT.as_secs()),
            )
            .env("CONSENT_LIFECYCLE__AUDIT_CHAIN_INTERVAL", "1s")
            // The tests speak plain http to every instance (with or without --demo).
            .env("CONSENT_SECURITY__SECURE_COOKIES", "false")
            .env("CONSENT_REDIS__KEY_PREFIX", &self.redis_prefix);
        if let Some(url) = &self.database_url {
            cmd.env("CONSENT_DATABASE_URL", url);
        }
        if let Some(url) = &self.redis_url {
            cmd.env("CONSENT_REDIS_URL", url);
        }
        if let Some(key) = &self.master_key {
            cmd.env("CONSENT_MASTER_KEY", key);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let out = File::create(log).expect("log file");
        let err = out.try_clone().expect("log file");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        cmd
    }

    /// `consent migrate` (PostgreSQL: `serve` refuses a database with pending migrations).
    pub fn migrate(&self) {
        let log = self.logs.join("migrate.log");
        let status = self
            .command(&log)
            .arg("migrate")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .status()
            .expect("run consent migrate");
        assert!(
            status.success(),
            "consent migrate: {status}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Starts `consent serve` on a free port and waits until it listens. `name` labels its log.
    pub async fn start(&self, name: &str, demo: bool) -> ServerProcess {
        let log = self.logs.join(format!("{name}.log"));
        let mut cmd = self.command(&log);
        cmd.arg("serve")
            .arg("--bind")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&self.data_dir);
        if demo {
            cmd.arg("--demo");
        }
        let mut child = cmd.spawn().expect("spawn the consent binary");
        let deadline = Instant::now() + Duration::from_secs(120);
        let address = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(address) = listening_address(&text) {
                break address;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("server {name} exited ({status}) before listening:\n{text}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("server {name} did not listen within 120 s:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        ServerProcess {
            name: name.to_string(),
            child,
            base: format!("http://{address}"),
            log,
        }
    }
}

/// The address of the `consent listening` line of a JSON log.
fn listening_address(log: &str) -> Option<String> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "consent listening")
        .and_then(|v| v["address"].as_str().map(str::to_string))
}

/// A running `consent serve`. Dropping it kills the process.
#[derive(Debug)]
pub struct ServerProcess {
    pub name: String,
    child: Child,
    /// `http://127.0.0.1:<port>`
    pub base: String,
    log: PathBuf,
}

impl ServerProcess {
    /// SIGKILL, as a crash or the OOM killer would: no graceful shutdown, nothing flushed that
    /// was not already written.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The value of `name` in the running process's environment (Linux: /proc), as the server
    /// set it for itself.
    pub fn environment_variable(&self, name: &str) -> Option<String> {
        let environ = std::fs::read(format!("/proc/{}/environ", self.child.id())).ok()?;
        let prefix = format!("{name}=");
        environ
            .split(|b| *b == 0)
            .filter_map(|entry| std::str::from_utf8(entry).ok())
            .find_map(|entry| entry.strip_prefix(&prefix).map(str::to_string))
    }

    /// The process's log (stdout and stderr), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_json(&self) -> Vec<Value> {
        self.log()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect()
    }

    /// Log lines at ERROR level, except the request log's line for each 503 (a refusal the
    /// fault calls for): a 500, or a failure logged as unexpected.
    pub fn errors(&self) -> Vec<String> {
        self.log_json()
            .into_iter()
            .filter(|v| v["level"] == "ERROR")
            .filter(|v| {
                !(v["target"] == "tracing_actix_web::middleware"
                    && v["span"]["http.status_code"] == 503)
            })
            .map(|v| v.to_string())
            .collect()
    }

    /// The request log's lines for answers of 500 and above other than 503.
    pub fn server_errors(&self) -> Vec<String> {
        self.log_json()
            .into_iter()
            .filter(|v| {
                v["span"]["http.status_code"]
                    .as_u64()
                    .is_some_and(|s| s >= 500 && s != 503)
            })
            .map(|v| v.to_string())
            .collect()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// Private Redis and PostgreSQL (the shared ones serve other tests at the same time)

/// A `redis-server` of the test's own on a free port, without persistence. `None` from
/// [`PrivateRedis::binary`] when Redis is not installed.
#[derive(Debug)]
pub struct PrivateRedis {
    pub port: u16,
    binary: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateRedis {
    pub fn binary() -> Option<PathBuf> {
        executable("redis-server")
    }

    pub async fn start(binary: PathBuf) -> Self {
        let mut redis = Self {
            port: free_port(),
            binary,
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
        };
        redis.resume().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: every key is gone (no persistence) and every connection drops.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it (again) on the same port and waits until it answers PING.
    pub async fn resume(&mut self) {
        assert!(self.child.is_none(), "redis is running");
        let log = File::create(self.dir.path().join("redis.log")).expect("redis log");
        let child = Command::new(&self.binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("redis log"))
            .stderr(log)
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers_ping() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer on port {}: {}",
                self.port,
                std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A PostgreSQL cluster of the test's own (initdb in a temporary directory, its own port and
/// socket directory), which the test may stop and start under load.
#[derive(Debug)]
pub struct PrivateCluster {
    pub port: u16,
    bindir: PathBuf,
    root: tempfile::TempDir,
    /// initdb refuses to run as root: run the server binaries as `postgres` then.
    as_postgres: bool,
}

impl PrivateCluster {
    /// The PostgreSQL server binaries: `TEST_PG_BINDIR`, else the newest
    /// /usr/lib/postgresql/*/bin, else `initdb` on the PATH.
    pub fn bindir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("TEST_PG_BINDIR") {
            return Some(PathBuf::from(dir)).filter(|d| d.join("initdb").is_file());
        }
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
                Some((v, e.path().join("bin")))
            })
            .filter(|(_, bin)| bin.join("initdb").is_file())
            .collect();
        versions.sort();
        versions.pop().map(|(_, bin)| bin).or_else(|| {
            // A PATH entry may be a symlink farm (/usr/local/bin): the real directory holds
            // postgres itself.
            let initdb = std::fs::canonicalize(executable("initdb")?).ok()?;
            let dir = initdb.parent()?.to_path_buf();
            dir.join("pg_ctl").is_file().then_some(dir)
        })
    }

    /// Why this machine cannot run a private cluster, if it cannot.
    pub fn unavailable_reason() -> Option<String> {
        if Self::bindir().is_none() {
            return Some(
                "no PostgreSQL server binaries (initdb, pg_ctl; set TEST_PG_BINDIR)".into(),
            );
        }
        if running_as_root() && runuser().is_none() {
            return Some("running as root without runuser to run initdb as postgres".into());
        }
        None
    }

    /// initdb + start (about two seconds).
    pub async fn start() -> Self {
        let bindir = Self::bindir().expect("PostgreSQL binaries");
        let root = tempfile::tempdir().expect("tempdir");
        let as_postgres = running_as_root();
        if as_postgres {
            let status = Command::new("chown")
                .arg("postgres:")
                .arg(root.path())
                .status()
                .expect("chown");
            assert!(status.success(), "chown the cluster directory to postgres");
        }
        let cluster = Self {
            port: free_port(),
            bindir,
            root,
            as_postgres,
        };
        let data = cluster.data();
        cluster.run_blocking(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        cluster.resume().await;
        cluster
    }

    fn data(&self) -> String {
        self.root.path().join("data").to_string_lossy().into_owned()
    }

    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }

    fn command(&self, tool: &str) -> Command {
        let bin = self.bindir.join(tool);
        if self.as_postgres {
            let mut cmd = Command::new(runuser().expect("runuser"));
            cmd.args(["-u", "postgres", "--"]).arg(bin);
            cmd
        } else {
            Command::new(bin)
        }
    }

    fn run_blocking(&self, tool: &str, args: &[&str]) {
        let out = self
            .command(tool)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}\n{}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.root.path().join("postgres.log")).unwrap_or_default()
        );
    }

    async fn pg_ctl(&self, args: Vec<String>) {
        let mut cmd = self.command("pg_ctl");
        cmd.args(&args).stdin(Stdio::null());
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .expect("pg_ctl task")
            .expect("run pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl {args:?}: {}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.root.path().join("postgres.log")).unwrap_or_default()
        );
    }

    /// Stops the server with `mode` (`immediate`: as a crash, no checkpoint; `fast`: backends
    /// are terminated, then a checkpoint).
    pub async fn stop(&self, mode: &str) {
        self.pg_ctl(
            ["-D", &self.data(), "-m", mode, "-w", "stop"]
                .map(String::from)
                .to_vec(),
        )
        .await;
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub async fn resume(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off \
             -c shared_buffers=16MB -c max_connections=60",
            self.port,
            self.root.path().display()
        );
        let log = self.root.path().join("postgres.log");
        self.pg_ctl(vec![
            "-D".into(),
            self.data(),
            "-l".into(),
            log.to_string_lossy().into_owned(),
            "-w".into(),
            "-t".into(),
            "60".into(),
            "-o".into(),
            options,
            "start".into(),
        ])
        .await;
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D", &self.data(), "-m", "immediate", "-w", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP, as a client sees it

/// How a request ended, as the client saw it.
#[derive(Debug, Clone)]
pub enum Answer<T> {
    /// A success answer: what the server is then held to.
    Done(T),
    /// A definite answer that is not a success (`step` names the request of a flow).
    Refused {
        step: &'static str,
        status: u16,
        body: String,
    },
    /// No complete answer (connection refused or reset, timeout): the outcome is unknown.
    Lost(String),
}

impl<T> Answer<T> {
    /// The same answer with the success value mapped.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Answer<U> {
        match self {
            Answer::Done(v) => Answer::Done(f(v)),
            Answer::Refused { step, status, body } => Answer::Refused { step, status, body },
            Answer::Lost(e) => Answer::Lost(e),
        }
    }
}

impl<T: std::fmt::Debug> Answer<T> {
    pub fn is_done(&self) -> bool {
        matches!(self, Answer::Done(_))
    }

    pub fn is_lost(&self) -> bool {
        matches!(self, Answer::Lost(_))
    }

    /// The status of a refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            Answer::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The body of a refusal as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> Value {
        match self {
            Answer::Refused { body, .. } => serde_json::from_str(body).unwrap_or(Value::Null),
            _ => Value::Null,
        }
    }

    #[track_caller]
    pub fn done(self, what: &str) -> T {
        match self {
            Answer::Done(v) => v,
            other => panic!("{what}: expected success, got {other:?}"),
        }
    }
}

/// A complete HTTP answer.
#[derive(Debug)]
struct Reply {
    status: u16,
    location: String,
    body: String,
}

impl Reply {
    fn refused<T>(self, step: &'static str) -> Answer<T> {
        Answer::Refused {
            step,
            status: self.status,
            body: self.body,
        }
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

async fn send(req: reqwest::RequestBuilder) -> Result<Reply, String> {
    let resp = req.send().await.map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = resp.text().await.map_err(|e| format!("{e:?}"))?;
    Ok(Reply {
        status,
        location,
        body,
    })
}

/// The reply, or the request's `Answer::Lost`.
macro_rules! reply {
    ($req:expr) => {
        match send($req).await {
            Ok(r) => r,
            Err(e) => return Answer::Lost(e),
        }
    };
}

/// Tokens from a 200 of the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    pub grant_id: String,
    pub access_token: String,
    pub refresh_token: String,
}

impl Tokens {
    fn from_json(v: &Value) -> Option<Self> {
        Some(Self {
            grant_id: v["grant_id"].as_str()?.to_string(),
            access_token: v["access_token"].as_str()?.to_string(),
            refresh_token: v["refresh_token"].as_str()?.to_string(),
        })
    }
}

/// A client of one server by base URL: the demo client's calls, and a customer's (its cookie
/// jar holds the session). [`Api::at`] points the same client at another instance.
#[derive(Debug, Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

const DEMO: (&str, &str) = (DEMO_CLIENT, DEMO_SECRET);

impl Api {
    /// Requests time out after `timeout` (an answer that late counts as none).
    pub fn new(base: &str, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .cookie_store(true)
            .timeout(timeout)
            .build()
            .expect("http client");
        Self {
            base: base.to_string(),
            http,
        }
    }

    /// The same client (and customer session) against the server at `base`.
    pub fn at(&self, base: &str) -> Self {
        Self {
            base: base.to_string(),
            http: self.http.clone(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn client_post(&self, path: &str, form: &[(&str, &str)]) -> reqwest::RequestBuilder {
        self.http
            .post(self.url(path))
            .basic_auth(DEMO.0, Some(DEMO.1))
            .form(form)
    }

    /// Logs a demo customer in on this client.
    pub async fn login(&self, username: &str) -> Answer<()> {
        let page = reply!(self.http.get(self.url("/login")));
        if page.status != 200 {
            return page.refused("login page");
        }
        let csrf = csrf_from(&page.body);
        let form = [
            ("csrf_token", csrf.as_str()),
            ("username", username),
            ("password", DEMO_PASSWORD),
            ("next", "/"),
        ];
        let r = reply!(self.http.post(self.url("/login")).form(&form));
        if r.status != 303 {
            return r.refused("login");
        }
        Answer::Done(())
    }

    /// The logged-in customer's CSRF token for the JSON API.
    pub async fn csrf(&self) -> Answer<String> {
        let r = reply!(self.http.get(self.url("/api/v1/me")));
        match r.json()["csrf_token"].as_str() {
            Some(t) if r.status == 200 => Answer::Done(t.to_string()),
            _ => r.refused("me"),
        }
    }

    /// PAR as the demo client for `accounts:read`; the `request_uri`.
    pub async fn par(&self, challenge: &str) -> Answer<String> {
        let rar = details(json!({ "type": "account_access", "actions": ["accounts:read"] }));
        let form = [
            ("response_type", "code"),
            ("redirect_uri", DEMO_REDIRECT),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
            ("state", "faults"),
            ("authorization_details", rar.as_str()),
        ];
        let r = reply!(self.client_post("/oauth2/par", &form));
        match r.json()["request_uri"].as_str() {
            Some(uri) if r.status == 201 => Answer::Done(uri.to_string()),
            _ => r.refused("par"),
        }
    }

    /// `/oauth2/authorize` with a pushed request: the consent page's path.
    pub async fn authorize(&self, request_uri: &str) -> Answer<String> {
        let r = reply!(
            self.http
                .get(self.url("/oauth2/authorize"))
                .query(&[("client_id", DEMO_CLIENT), ("request_uri", request_uri)])
        );
        if r.status != 303 || !r.location.starts_with("/oauth2/consent/") {
            return r.refused("authorize");
        }
        Answer::Done(r.location)
    }

    /// The whole consent flow for the logged-in customer: PAR, authorize, the consent page,
    /// approval of the first account offered, and the code exchange.
    pub async fn connect(&self) -> Answer<Tokens> {
        let (verifier, challenge) = pkce();
        let request_uri = match self.par(&challenge).await {
            Answer::Done(uri) => uri,
            other => return other.map(|_| unreachable!()),
        };
        let path = match self.authorize(&request_uri).await {
            Answer::Done(p) => p,
            other => return other.map(|_| unreachable!()),
        };
        let page = reply!(self.http.get(self.url(&path)));
        if page.status != 200 {
            return page.refused("consent page");
        }
        let csrf = csrf_from(&page.body);
        let Some(account) = first_value(&page.body, "account") else {
            return page.refused("consent page without an account");
        };
        let form = [
            ("csrf_token", csrf.as_str()),
            ("decision", "approve"),
            ("account", account.as_str()),
            ("action", "accounts:read"),
        ];
        let r = reply!(self.http.post(self.url(&path)).form(&form));
        let Some(code) = query_param(&r.location, "code").filter(|_| r.status == 303) else {
            return r.refused("consent");
        };
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", DEMO_REDIRECT),
            ("code_verifier", verifier.as_str()),
        ];
        let r = reply!(self.client_post("/oauth2/token", &form));
        match Tokens::from_json(&r.json()) {
            Some(t) if r.status == 200 => Answer::Done(t),
            _ => r.refused("code exchange"),
        }
    }

    /// `grant_type=refresh_token`.
    pub async fn refresh(&self, refresh_token: &str) -> Answer<Tokens> {
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ];
        let r = reply!(self.client_post("/oauth2/token", &form));
        match Tokens::from_json(&r.json()) {
            Some(t) if r.status == 200 => Answer::Done(t),
            _ => r.refused("refresh"),
        }
    }

    /// RFC 7009 revocation of a refresh token (ends its grant).
    pub async fn revoke_token(&self, refresh_token: &str) -> Answer<()> {
        let r = reply!(self.client_post("/oauth2/revoke", &[("token", refresh_token)]));
        if r.status != 200 {
            return r.refused("revoke");
        }
        Answer::Done(())
    }

    /// `DELETE /api/v1/grants/{id}` as the demo client.
    pub async fn client_revoke(&self, grant_id: &str) -> Answer<()> {
        let r = reply!(
            self.http
                .delete(self.url(&format!("/api/v1/grants/{grant_id}")))
                .basic_auth(DEMO.0, Some(DEMO.1))
        );
        if r.status != 204 {
            return r.refused("client revoke");
        }
        Answer::Done(())
    }

    /// `DELETE /api/v1/me/grants/{id}` as the logged-in customer.
    pub async fn customer_revoke(&self, grant_id: &str, csrf: &str) -> Answer<()> {
        let r = reply!(
            self.http
                .delete(self.url(&format!("/api/v1/me/grants/{grant_id}")))
                .header("X-CSRF-Token", csrf)
        );
        if r.status != 204 {
            return r.refused("customer revoke");
        }
        Answer::Done(())
    }

    /// RFC 7662 introspection: `active`.
    pub async fn introspect(&self, token: &str) -> Answer<bool> {
        let r = reply!(self.client_post("/oauth2/introspect", &[("token", token)]));
        match r.json()["active"].as_bool() {
            Some(active) if r.status == 200 => Answer::Done(active),
            _ => r.refused("introspect"),
        }
    }

    /// The sandbox bank's `GET /sandbox/v1/accounts` with an access token (offline verification
    /// against the instance's copy of the revocation feed).
    pub async fn sandbox_accounts(&self, access_token: &str) -> Answer<()> {
        let r = reply!(
            self.http
                .get(self.url("/sandbox/v1/accounts"))
                .bearer_auth(access_token)
        );
        if r.status != 200 {
            return r.refused("sandbox accounts");
        }
        Answer::Done(())
    }

    /// `GET /readyz`: (status, body).
    pub async fn readyz(&self) -> Answer<Value> {
        let r = reply!(self.http.get(self.url("/readyz")));
        if r.status != 200 {
            return r.refused("readyz");
        }
        Answer::Done(r.json())
    }
}

/// The `value` of the first `<input name="{name}" value="...">` of a page.
fn first_value(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    html[start..].split('"').next().map(str::to_string)
}

// ---------------------------------------------------------------------------------------------
// Storage invariants

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = diesel::sql_types::Text)]
    id: String,
}

/// What must hold of the stored grants, codes, tokens, revocation feed and audit events at any
/// moment, a crash included: every write commits whole or not at all. Each entry is a
/// description and a query for the ids that break it (plain SQL for SQLite and PostgreSQL).
///
/// The counting rules assume the traffic of these tests: every code exchange presents the right
/// verifier within the code's lifetime, no access token is revoked on its own, and nothing
/// expires.
const INVARIANTS: &[(&str, &str)] = &[
    (
        "authorized grant without authorized_at, or with revoked_at",
        "SELECT id FROM grants WHERE status = 'authorized' \
         AND (authorized_at IS NULL OR revoked_at IS NOT NULL)",
    ),
    (
        "revoked grant without revoked_at or revoked_by",
        "SELECT id FROM grants WHERE status = 'revoked' \
         AND (revoked_at IS NULL OR revoked_by IS NULL)",
    ),
    (
        "grant without the decided authorization request it came from",
        "SELECT g.id FROM grants g WHERE NOT EXISTS (SELECT 1 FROM authorization_requests r \
         WHERE r.grant_id = g.id AND r.status = \
         CASE WHEN g.status = 'rejected' THEN 'denied' ELSE 'approved' END)",
    ),
    (
        "decided authorization request whose grant is missing",
        "SELECT r.id FROM authorization_requests r WHERE r.status IN ('approved', 'denied') \
         AND NOT EXISTS (SELECT 1 FROM grants g WHERE g.id = r.grant_id)",
    ),
    (
        "approved grant without exactly one authorization code",
        "SELECT g.id FROM grants g WHERE g.authorized_at IS NOT NULL \
         AND (SELECT COUNT(*) FROM authorization_codes a WHERE a.grant_id = g.id) <> 1",
    ),
    (
        "grant without exactly one consent decision in the audit log",
        "SELECT g.id FROM grants g WHERE (SELECT COUNT(*) FROM audit_events e \
         WHERE e.target_type = 'grant' AND e.target_id = g.id \
         AND e.action IN ('consent.approved', 'consent.denied')) <> 1",
    ),
    (
        "code used, but not exactly one token family issued from it (or tokens without a used code)",
        "SELECT g.id FROM grants g WHERE \
         (SELECT COUNT(*) FROM authorization_codes a WHERE a.grant_id = g.id \
          AND a.used_at IS NOT NULL) \
         <> (SELECT COUNT(*) FROM audit_events e WHERE e.target_type = 'grant' \
          AND e.target_id = g.id AND e.action = 'token.issued') \
         OR (SELECT COUNT(DISTINCT family_id) FROM refresh_tokens t WHERE t.grant_id = g.id) \
         <> (SELECT COUNT(*) FROM audit_events e WHERE e.target_type = 'grant' \
          AND e.target_id = g.id AND e.action = 'token.issued')",
    ),
    (
        "refresh tokens and their token.issued/token.refreshed audit events differ in number",
        "SELECT g.id FROM grants g WHERE \
         (SELECT COUNT(*) FROM refresh_tokens t WHERE t.grant_id = g.id) \
         <> (SELECT COUNT(*) FROM audit_events e WHERE e.target_type = 'grant' \
          AND e.target_id = g.id AND e.action IN ('token.issued', 'token.refreshed'))",
    ),
    (
        "refresh tokens and minted access tokens differ in number",
        "SELECT g.id FROM grants g WHERE \
         (SELECT COUNT(*) FROM refresh_tokens t WHERE t.grant_id = g.id) \
         <> (SELECT COUNT(*) FROM issued_tokens i WHERE i.grant_id = g.id \
          AND i.token_hash IS NOT NULL)",
    ),
    (
        "used refresh tokens and token.refreshed audit events differ in number",
        "SELECT g.id FROM grants g WHERE \
         (SELECT COUNT(*) FROM refresh_tokens t WHERE t.grant_id = g.id \
          AND t.used_at IS NOT NULL) \
         <> (SELECT COUNT(*) FROM audit_events e WHERE e.target_type = 'grant' \
          AND e.target_id = g.id AND e.action = 'token.refreshed')",
    ),
    (
        "refresh token marked used without used_at (or the reverse on a live grant)",
        "SELECT t.id FROM refresh_tokens t JOIN grants g ON g.id = t.grant_id WHERE \
         (t.status = 'used' AND t.used_at IS NULL) \
         OR (g.status = 'authorized' AND t.status = 'active' AND t.used_at IS NOT NULL)",
    ),
    (
        "authorized grant with tokens but not exactly one active refresh token",
        "SELECT g.id FROM grants g WHERE g.status = 'authorized' \
         AND EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.grant_id = g.id) \
         AND (SELECT COUNT(*) FROM refresh_tokens t WHERE t.grant_id = g.id \
          AND t.status = 'active') <> 1",
    ),
    (
        "ended grant with a refresh token that is not revoked",
        "SELECT g.id FROM grants g WHERE g.status IN ('revoked', 'expired') \
         AND EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.grant_id = g.id \
          AND t.status <> 'revoked')",
    ),
    (
        "ended grant without exactly one grant entry in the revocation feed",
        "SELECT g.id FROM grants g WHERE g.status IN ('revoked', 'expired') \
         AND (SELECT COUNT(*) FROM revocations r WHERE r.grant_id = g.id \
          AND r.revocation_id IS NULL) <> 1",
    ),
    (
        "ended grant whose minted tokens are not all in the revocation feed",
        "SELECT g.id FROM grants g WHERE g.status IN ('revoked', 'expired') \
         AND (SELECT COUNT(*) FROM revocations r WHERE r.grant_id = g.id \
          AND r.revocation_id IS NOT NULL) \
         <> (SELECT COUNT(*) FROM issued_tokens i WHERE i.grant_id = g.id)",
    ),
    (
        "live grant in the revocation feed",
        "SELECT g.id FROM grants g WHERE g.status = 'authorized' \
         AND EXISTS (SELECT 1 FROM revocations r WHERE r.grant_id = g.id)",
    ),
    (
        "ended grant without exactly one grant.revoked/grant.expired audit event",
        "SELECT g.id FROM grants g WHERE g.status IN ('revoked', 'expired') \
         AND (SELECT COUNT(*) FROM audit_events e WHERE e.target_type = 'grant' \
          AND e.target_id = g.id AND e.action IN ('grant.revoked', 'grant.expired')) <> 1",
    ),
];

/// The [`INVARIANTS`] that do not hold, each with (up to five of) the ids that break it.
pub fn broken_invariants(c: &mut AnyConnection) -> StorageResult<Vec<String>> {
    let mut broken = Vec::new();
    for (what, sql) in INVARIANTS {
        let ids: Vec<Id> = diesel::sql_query(*sql).load(c)?;
        if !ids.is_empty() {
            let some: Vec<&str> = ids.iter().take(5).map(|i| i.id.as_str()).collect();
            broken.push(format!(
                "{what}: {} ({} in all)",
                some.join(", "),
                ids.len()
            ));
        }
    }
    Ok(broken)
}

/// Opens the server's storage from the test and checks [`INVARIANTS`] and the audit chain (every
/// linked event verifies). With `linked_within`, also waits (that long at most) until the chain
/// has linked every event: a running server links them each second.
pub async fn assert_storage_consistent(
    config: &ServerConfig,
    linked_within: Option<Duration>,
    context: &str,
) {
    let url = config.storage_url();
    let db =
        platform::storage::Db::connect(&url, 2, Duration::from_secs(10)).expect("open storage");
    // The chain's key is a data key the master wraps: opened from the server's `data_keys`.
    let master = config.master_key();
    let opened = master.clone();
    let keys = db
        .write(move |c| {
            opened
                .open_data_keys(c, chrono::Utc::now())
                .map_err(|e| platform::storage::StorageError::Conflict(e.to_string()))
        })
        .await
        .expect("the server's data keys open with its master key");
    assert_eq!(keys.made, 0, "{context}: the server made its data keys");
    master.use_data_keys(keys);
    let key = platform::audit::ChainKey::try_derive(&master).unwrap();
    let broken = db.run(broken_invariants).await.expect("invariant queries");
    assert!(
        broken.is_empty(),
        "{context}: storage is inconsistent:\n{}",
        broken.join("\n")
    );
    let deadline = Instant::now() + linked_within.unwrap_or_default();
    loop {
        let key = key.clone();
        let report = db
            .run(move |c| platform::audit::verify(c, &key))
            .await
            .expect("audit verify");
        assert!(report.valid, "{context}: audit chain broken: {report:?}");
        assert!(
            report.events_checked + report.unlinked_events > 0,
            "{context}: no audit events"
        );
        if linked_within.is_none() || report.unlinked_events == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{context}: events still unlinked after {linked_within:?}: {report:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
