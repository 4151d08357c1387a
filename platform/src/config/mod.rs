//! Typed settings: built-in defaults -> optional TOML file -> `CONSENT_*` environment variables.
//!
//! Nested keys use a double underscore (`CONSENT_TOKENS__ACCESS_TOKEN_TTL=5m`); the documented
//! short names `CONSENT_DATABASE_URL`, `CONSENT_REDIS_URL`, `CONSENT_MASTER_KEY`, `CONSENT_BIND`,
//! `CONSENT_DATA_DIR`, `CONSENT_LOG_FORMAT`, `CONSENT_PUBLIC_URL`, `CONSENT_DEMO_PASSWORD`,
//! `CONSENT_DEMO_CLIENT_SECRET` and `CONSENT_PKCS11_{MODULE,TOKEN_LABEL,KEY_LABEL,PIN}` are
//! aliases. Secrets are wrapped in [`Secret`], whose Debug is
//! redacted, so a settings dump in a log never leaks them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

mod values;

pub use values::{Cidr, CidrList, ConfigDuration, Secret};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub security: SecuritySettings,
    pub tokens: TokenSettings,
    pub lifecycle: LifecycleSettings,
    pub webhooks: WebhookSettings,
    #[serde(default)]
    pub customer_login: CustomerLoginSettings,
    pub demo: DemoSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to listen on.
    pub bind: String,
    /// Data directory: SQLite file and generated master key in embedded mode.
    pub data_dir: PathBuf,
    /// Public base URL, used as the OAuth `issuer`. Defaults to `http://<bind>`.
    pub public_url: Option<String>,
    pub log_format: LogFormat,
    /// Worker threads for the HTTP server (0 = one per core).
    pub workers: usize,
    /// Threads that verify Biscuits (sandbox API, usage reports, introspection and revocation
    /// of attenuated tokens), apart from the HTTP workers (0 = one per core).
    pub verify_threads: usize,
    /// Verifications that may wait for those threads; beyond it requests get 503 with
    /// `Retry-After` (so a flood of expensive tokens cannot take more than that pool).
    pub verify_queue: usize,
    /// How often each instance syncs its revocation list from the database and links feed rows
    /// left unlinked (announced revocations arrive at once; this bounds the rest, such as a
    /// revocation committed by an instance that crashed before announcing it). At most 60 s;
    /// verification fails closed when the list is older than the longer of 10 s and three
    /// intervals.
    pub revocation_sync_interval: ConfigDuration,
    /// Seconds to let in-flight requests finish on shutdown.
    pub shutdown_timeout: ConfigDuration,
    /// `GET /metrics` answers only loopback callers; with this set, it answers only callers
    /// presenting it as `Authorization: Bearer` (for a scraper on another host).
    pub metrics_token: Option<Secret<String>>,
    /// Reverse proxies (CIDRs) whose forwarding header names the client's address. Requests
    /// from any other peer are keyed by their TCP peer address, whatever headers they send.
    /// Empty (the default): forwarding headers are never believed.
    pub trusted_proxies: CidrList,
    /// Which header those proxies set: `x-forwarded-for` (default) or `forwarded` (RFC 7239).
    /// Only the configured one is read, so a client cannot pick the other to smuggle an address.
    pub forwarded_header: ForwardedHeader,
    /// Terminate TLS here: the server's certificate chain (PEM). With `tls_key_file`, `serve`
    /// speaks HTTPS and asks every client for a certificate (never requires one): mutual TLS
    /// for `tls_client_auth`, `self_signed_tls_client_auth` and certificate-bound tokens
    /// (RFC 8705). Unset: plain HTTP, behind a TLS-terminating proxy.
    pub tls_cert_file: Option<PathBuf>,
    /// The server's private key (PEM, PKCS#8, SEC1 or PKCS#1), with `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// Certificate authorities (PEM) whose client certificates `tls_client_auth` clients may
    /// authenticate with (by subject DN). Unset: `tls_client_auth` authenticates nobody
    /// (`self_signed_tls_client_auth` needs no authority).
    pub client_ca_file: Option<PathBuf>,
    /// Behind a TLS-terminating proxy: the header in which it passes the client's certificate,
    /// RFC 9440 `Client-Cert` (`:<base64 DER>:`) or a URL-encoded PEM (nginx
    /// `$ssl_client_escaped_cert`), with `Client-Cert-Chain` for intermediates. Believed only
    /// from `trusted_proxies`, which must overwrite both on every request. Not with
    /// `tls_cert_file`. Unset: never read.
    pub client_cert_header: Option<String>,
}

/// The forwarding header trusted proxies set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardedHeader {
    XForwardedFor,
    Forwarded,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `postgres://...` selects PostgreSQL; `sqlite://path` or a plain path selects SQLite.
    /// Unset: `<data_dir>/consent.db`.
    pub url: Option<Secret<String>>,
    pub pool_size: u32,
    pub connect_timeout: ConfigDuration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://...`; unset means the in-process cache (single instance only).
    pub url: Option<Secret<String>>,
    /// Prefix of every key and channel, so several deployments (or tests) can share a server.
    pub key_prefix: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecuritySettings {
    /// Base64 (standard or url-safe) of 32 random bytes. Unset: read or generate
    /// `<data_dir>/master.key` (unless `pkcs11` is set). Every instance sharing a database needs
    /// the same key.
    pub master_key: Option<Secret<String>>,
    /// Keep the master key in an HSM instead (PKCS#11): it never leaves the token; each purpose's
    /// key is derived inside it. Not together with `master_key`.
    pub pkcs11: Option<Pkcs11Settings>,
    /// Session and CSRF cookies are `Secure` and `__Host-` prefixed unless this is `false`, a
    /// development setting for plain-http clients (`serve --demo` on a loopback address sets it
    /// when unset). Refused together with an https `public_url`.
    pub secure_cookies: Option<bool>,
    /// How long a staff member's four-eyes credential (reading a customer's grants, rotating
    /// signing keys) is valid once taken: 1 to 60 minutes.
    pub staff_credential_ttl: ConfigDuration,
}

/// Where the HSM-held master key is: `consent keys hsm-generate` creates it there.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Settings {
    /// The PKCS#11 module (shared library), e.g. `/usr/lib/softhsm/libsofthsm2.so`. Loaded at
    /// start-up; nothing of it is needed to build.
    pub module: std::path::PathBuf,
    /// The token's label. A label rather than a slot number: slot ids are not stable (SoftHSM2
    /// picks a new one whenever a token is initialised, and HSMs renumber slots when partitions
    /// change), and exactly one token must carry the label.
    pub token_label: String,
    /// The label (CKA_LABEL) of the secret key on that token.
    pub key_label: String,
    /// The user PIN of the token.
    pub pin: Secret<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSettings {
    pub access_token_ttl: ConfigDuration,
    pub refresh_token_ttl: ConfigDuration,
    pub code_ttl: ConfigDuration,
    pub par_ttl: ConfigDuration,
    /// How long an instance may reuse an active introspection answer (0 = never); see
    /// `consent::oauth::answers`. At most 10 s.
    pub introspection_cache_ttl: ConfigDuration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleSettings {
    pub max_grant_lifetime: ConfigDuration,
    pub dormancy_period: ConfigDuration,
    pub warning_lead_time: ConfigDuration,
    pub sweep_interval: ConfigDuration,
    /// How often the audit chainer links newly written events.
    pub audit_chain_interval: ConfigDuration,
}

/// Webhook delivery (the outbox worker in every `consent serve`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// How often each instance looks for due deliveries.
    pub delivery_interval: ConfigDuration,
    /// Per-attempt HTTP timeout (connect + response).
    pub timeout: ConfigDuration,
    /// Delay before the first retry; doubles with each failed attempt (with jitter).
    pub initial_backoff: ConfigDuration,
    /// Longest delay between two attempts.
    pub max_backoff: ConfigDuration,
    /// Attempts before an event is marked `failed` (it stays visible in the portal).
    pub max_attempts: u32,
    /// Deliver to loopback, private, link-local and other non-public addresses. Off by default:
    /// webhook URLs are chosen by developers, and the server must not become their way into the
    /// bank's network (SSRF). Turn on only for local development and tests.
    pub allow_private_targets: bool,
    /// The staff channel: every privileged staff request, decision, credential and use (and
    /// second-factor lockouts and resets) is POSTed here as it is linked into the audit chain,
    /// signed per Standard Webhooks with `staff_secret`. Chosen by the bank's operators, so it
    /// may be an internal address. Unset: no broadcast.
    pub staff_url: Option<String>,
    /// `whsec_` + base64 of the signing key shared with the staff channel (secret).
    pub staff_secret: Option<Secret<String>>,
}

/// How customers log in: through the bank's own OpenID Connect provider (authorization code +
/// PKCE, ID token checked with its `nonce`), with a password of this service's own (the embedded
/// demo), or both.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CustomerLoginSettings {
    /// Customers may log in with a password stored here. Switch off when the bank's provider is
    /// the only way in.
    pub passwords: bool,
    /// The provider's issuer URL (discovery at `<issuer>/.well-known/openid-configuration`);
    /// unset: no provider login. https, except on a loopback address.
    pub oidc_issuer: Option<String>,
    /// This service's client id at the provider; its redirect URI is
    /// `<public_url>/login/oidc/callback`.
    pub oidc_client_id: Option<String>,
    /// Its client secret (client_secret_basic).
    pub oidc_client_secret: Option<Secret<String>>,
    /// The ID token claim that names the customer's username here (`sub`,
    /// `preferred_username` or `email`), used to link a subject at its first login.
    pub oidc_username_claim: String,
    /// A subject with no customer record gets one at its first login (otherwise refused).
    pub oidc_create_customers: bool,
    /// When set, sent as `acr_values` and required in the ID token's `acr`.
    pub oidc_required_acr: Option<String>,
    /// The login page's button text.
    pub oidc_label: String,
}

impl Default for CustomerLoginSettings {
    fn default() -> Self {
        Self {
            passwords: true,
            oidc_issuer: None,
            oidc_client_id: None,
            oidc_client_secret: None,
            oidc_username_claim: "sub".into(),
            oidc_create_customers: false,
            oidc_required_acr: None,
            oidc_label: "Log in with your bank".into(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoSettings {
    /// Password of the demo customers, staff and developer (generated when unset).
    pub password: Option<Secret<String>>,
    /// Secret of the demo client (generated when unset).
    pub client_secret: Option<Secret<String>>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            server: ServerSettings {
                bind: "127.0.0.1:8080".into(),
                data_dir: PathBuf::from("./data"),
                public_url: None,
                log_format: LogFormat::Text,
                workers: 0,
                verify_threads: 0,
                verify_queue: 256,
                revocation_sync_interval: ConfigDuration::secs(1),
                shutdown_timeout: ConfigDuration::secs(10),
                metrics_token: None,
                trusted_proxies: CidrList::default(),
                forwarded_header: ForwardedHeader::XForwardedFor,
                tls_cert_file: None,
                tls_key_file: None,
                client_ca_file: None,
                client_cert_header: None,
            },
            database: DatabaseSettings {
                url: None,
                pool_size: 16,
                connect_timeout: ConfigDuration::secs(5),
            },
            redis: RedisSettings {
                url: None,
                key_prefix: "consent:".into(),
            },
            security: SecuritySettings {
                master_key: None,
                pkcs11: None,
                staff_credential_ttl: ConfigDuration::minutes(15),
                secure_cookies: None,
            },
            tokens: TokenSettings {
                access_token_ttl: ConfigDuration::minutes(10),
                refresh_token_ttl: ConfigDuration::days(30),
                code_ttl: ConfigDuration::secs(60),
                par_ttl: ConfigDuration::secs(60),
                introspection_cache_ttl: ConfigDuration::secs(1),
            },
            lifecycle: LifecycleSettings {
                max_grant_lifetime: ConfigDuration::days(180),
                dormancy_period: ConfigDuration::days(90),
                warning_lead_time: ConfigDuration::days(7),
                sweep_interval: ConfigDuration::minutes(5),
                audit_chain_interval: ConfigDuration::secs(1),
            },
            webhooks: WebhookSettings {
                delivery_interval: ConfigDuration::secs(1),
                timeout: ConfigDuration::secs(10),
                initial_backoff: ConfigDuration::secs(30),
                max_backoff: ConfigDuration::secs(6 * 3_600),
                max_attempts: 12,
                allow_private_targets: false,
                staff_url: None,
                staff_secret: None,
            },
            customer_login: CustomerLoginSettings::default(),
            demo: DemoSettings::default(),
        }
    }
}

/// Configuration could not be loaded or is invalid.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(String);

const ALIASES: &[(&str, &str)] = &[
    ("database_url", "database.url"),
    ("redis_url", "redis.url"),
    ("master_key", "security.master_key"),
    ("pkcs11_module", "security.pkcs11.module"),
    ("pkcs11_token_label", "security.pkcs11.token_label"),
    ("pkcs11_key_label", "security.pkcs11.key_label"),
    ("pkcs11_pin", "security.pkcs11.pin"),
    ("bind", "server.bind"),
    ("data_dir", "server.data_dir"),
    ("log_format", "server.log_format"),
    ("public_url", "server.public_url"),
    ("demo_password", "demo.password"),
    ("demo_client_secret", "demo.client_secret"),
];

impl Settings {
    /// Defaults, then `file` (if given; it must exist), then `CONSENT_*` variables from the
    /// process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// Like [`Settings::load`] with an explicit environment (tests use this instead of mutating
    /// the process environment).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        // figment's `Env` provider only reads the process environment; taking the pairs as an
        // argument keeps tests free of global state, so the mapping is done here.
        let mut overrides = figment::value::Dict::new();
        for (key, value) in env {
            let Some(rest) = key.strip_prefix("CONSENT_") else {
                continue;
            };
            let rest = rest.to_ascii_lowercase();
            let path = ALIASES
                .iter()
                .find(|(alias, _)| *alias == rest)
                .map(|(_, p)| (*p).to_string())
                .unwrap_or_else(|| rest.replace("__", "."));
            // Only `SECTION__KEY` names and the aliases are settings; other CONSENT_* variables
            // (CONSENT_CONFIG, CONSENT_ADMIN_PASSWORD, test switches) belong to other tools.
            // Within a section an unknown key is still an error, so typos do not pass silently.
            if !path.contains('.') {
                continue;
            }
            insert_path(&mut overrides, &path, &value);
        }
        figment = figment.merge(Serialized::defaults(overrides));
        let settings: Settings = figment
            .extract_lossy()
            .map_err(|e| ConfigError(e.to_string().replace('\n', "; ")))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate_customer_login(&self) -> Result<(), ConfigError> {
        let l = &self.customer_login;
        let Some(issuer) = &l.oidc_issuer else {
            if !l.passwords {
                return Err(ConfigError(
                    "customer_login.passwords = false needs customer_login.oidc_issuer: \
                     customers would have no way in"
                        .into(),
                ));
            }
            return Ok(());
        };
        let url = url::Url::parse(issuer).map_err(|_| {
            ConfigError("customer_login.oidc_issuer must be an absolute URL".into())
        })?;
        let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
        if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
            return Err(ConfigError(
                "customer_login.oidc_issuer must be https (http only on a loopback address)".into(),
            ));
        }
        if l.oidc_client_id.as_deref().is_none_or(str::is_empty) || l.oidc_client_secret.is_none() {
            return Err(ConfigError(
                "customer_login.oidc_issuer needs oidc_client_id and oidc_client_secret".into(),
            ));
        }
        if !matches!(
            l.oidc_username_claim.as_str(),
            "sub" | "preferred_username" | "email"
        ) {
            return Err(ConfigError(
                "customer_login.oidc_username_claim must be sub, preferred_username or email"
                    .into(),
            ));
        }
        Ok(())
    }

    fn validate_key_custody(&self) -> Result<(), ConfigError> {
        let Some(p) = &self.security.pkcs11 else {
            return Ok(());
        };
        if self.security.master_key.is_some() {
            return Err(ConfigError(
                "security.master_key and security.pkcs11 are exclusive: the master key is either \
                 given or kept in the HSM"
                    .into(),
            ));
        }
        if p.module.as_os_str().is_empty() {
            return Err(ConfigError(
                "security.pkcs11.module must name the PKCS#11 library".into(),
            ));
        }
        // PKCS#11 labels are 32-byte fields (token) or free-form (key); empty matches anything.
        if p.token_label.is_empty() || p.token_label.len() > 32 {
            return Err(ConfigError(
                "security.pkcs11.token_label must be 1 to 32 bytes".into(),
            ));
        }
        if p.key_label.is_empty() {
            return Err(ConfigError(
                "security.pkcs11.key_label must not be empty".into(),
            ));
        }
        if p.pin.expose().is_empty() {
            return Err(ConfigError("security.pkcs11.pin must not be empty".into()));
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.server.verify_queue == 0 {
            return Err(ConfigError("server.verify_queue must be at least 1".into()));
        }
        let sync = self.server.revocation_sync_interval.get();
        // Each periodic sync is a database round trip (and a feed link) per instance.
        if sync < Duration::from_millis(100) || sync > Duration::from_secs(60) {
            return Err(ConfigError(
                "server.revocation_sync_interval must be between 100ms and 60s".into(),
            ));
        }
        // The staff channel needs both its address and its key, and a URL it can post to.
        match (&self.webhooks.staff_url, &self.webhooks.staff_secret) {
            (None, None) => {}
            (Some(url), Some(secret)) => {
                let ok = url::Url::parse(url)
                    .is_ok_and(|u| matches!(u.scheme(), "https" | "http") && u.host().is_some());
                if !ok {
                    return Err(ConfigError(
                        "webhooks.staff_url must be an http(s) URL".into(),
                    ));
                }
                if !secret.expose().starts_with("whsec_") || secret.expose().len() < 30 {
                    return Err(ConfigError(
                        "webhooks.staff_secret must be whsec_ followed by base64 (24 bytes or more)"
                            .into(),
                    ));
                }
            }
            _ => {
                return Err(ConfigError(
                    "webhooks.staff_url and webhooks.staff_secret go together".into(),
                ));
            }
        }
        self.validate_customer_login()?;
        let ttl = self.security.staff_credential_ttl.get();
        if ttl < Duration::from_secs(60) || ttl > Duration::from_secs(3_600) {
            return Err(ConfigError(
                "security.staff_credential_ttl must be between 1m and 60m".into(),
            ));
        }
        self.validate_key_custody()?;
        if self.database.pool_size == 0 {
            return Err(ConfigError("database.pool_size must be at least 1".into()));
        }
        if self.tokens.code_ttl.get() > Duration::from_secs(60) {
            return Err(ConfigError(
                "tokens.code_ttl must be at most 60s (RFC 9700)".into(),
            ));
        }
        if self.tokens.introspection_cache_ttl.get() > Duration::from_secs(10) {
            return Err(ConfigError(
                "tokens.introspection_cache_ttl must be at most 10s".into(),
            ));
        }
        if self.tokens.par_ttl.get() > Duration::from_secs(60) {
            return Err(ConfigError("tokens.par_ttl must be at most 60s".into()));
        }
        if self.tokens.access_token_ttl.get().is_zero() {
            return Err(ConfigError(
                "tokens.access_token_ttl must be positive".into(),
            ));
        }
        if self.lifecycle.warning_lead_time.get() >= self.lifecycle.dormancy_period.get() {
            return Err(ConfigError(
                "lifecycle.warning_lead_time must be shorter than dormancy_period".into(),
            ));
        }
        if self.lifecycle.warning_lead_time.get() >= self.lifecycle.max_grant_lifetime.get() {
            return Err(ConfigError(
                "lifecycle.warning_lead_time must be shorter than max_grant_lifetime".into(),
            ));
        }
        let w = &self.webhooks;
        if w.delivery_interval.get().is_zero()
            || w.timeout.get().is_zero()
            || w.initial_backoff.get().is_zero()
            || w.max_backoff.get() < w.initial_backoff.get()
            || w.max_attempts == 0
        {
            return Err(ConfigError(
                "webhooks: intervals, timeout and max_attempts must be positive and \
                 max_backoff at least initial_backoff"
                    .into(),
            ));
        }
        let s = &self.server;
        if s.tls_cert_file.is_some() != s.tls_key_file.is_some() {
            return Err(ConfigError(
                "server.tls_cert_file and server.tls_key_file go together".into(),
            ));
        }
        if s.client_cert_header.is_some() && s.tls_cert_file.is_some() {
            // A proxy that passes TLS through cannot strip a header inside the encrypted
            // stream: anyone behind it could name any (public) certificate.
            return Err(ConfigError(
                "server.client_cert_header is for a TLS-terminating proxy; it cannot be used \
                 with server.tls_cert_file"
                    .into(),
            ));
        }
        if let Some(h) = &s.client_cert_header {
            if actix_web::http::header::HeaderName::from_bytes(h.as_bytes()).is_err() {
                return Err(ConfigError(format!(
                    "server.client_cert_header {h:?} is not a header name"
                )));
            }
            if s.trusted_proxies.is_empty() {
                return Err(ConfigError(
                    "server.client_cert_header is read only from trusted_proxies: set                      server.trusted_proxies too"
                        .into(),
                ));
            }
        }
        if let Some(url) = &self.server.public_url {
            url::Url::parse(url)
                .map_err(|e| ConfigError(format!("server.public_url is not a URL: {e}")))?;
            if url.starts_with("https://") && self.security.secure_cookies == Some(false) {
                return Err(ConfigError(
                    "security.secure_cookies = false is a development setting; it cannot be \
                     used with an https public_url"
                        .into(),
                ));
            }
        }
        Ok(())
    }

    /// The OAuth issuer identifier / public base URL, without a trailing slash.
    pub fn public_url(&self, bound: &str) -> String {
        self.server
            .public_url
            .clone()
            .unwrap_or_else(|| match self.server.tls_cert_file {
                Some(_) => format!("https://{bound}"),
                None => format!("http://{bound}"),
            })
            .trim_end_matches('/')
            .to_string()
    }

    /// Whether clients can present TLS certificates to this server: it terminates TLS itself, or
    /// trusted proxies pass them on.
    pub fn mtls_available(&self) -> bool {
        self.server.tls_cert_file.is_some() || self.server.client_cert_header.is_some()
    }

    /// Whether the database URL selects PostgreSQL.
    pub fn uses_postgres(&self) -> bool {
        self.database
            .url
            .as_ref()
            .is_some_and(|u| crate::storage::is_postgres_url(u.expose()))
    }
}

fn insert_path(dict: &mut figment::value::Dict, path: &str, value: &str) {
    use figment::value::Value;
    let mut parts = path.splitn(2, '.');
    let head = parts.next().unwrap_or_default().to_string();
    match parts.next() {
        None => {
            // Kept as a string: `extract_lossy` turns "16" into a number only where the
            // field is numeric, so a numeric-looking password stays a string.
            dict.insert(head, Value::from(value.to_string()));
        }
        Some(rest) => {
            let entry = dict
                .entry(head)
                .or_insert_with(|| Value::from(figment::value::Dict::new()));
            if let Value::Dict(_, inner) = entry {
                insert_path(inner, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests;
