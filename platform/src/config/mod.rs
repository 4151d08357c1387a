//! Typed settings: built-in defaults -> optional TOML file -> `CONSENT_*` environment variables.
//!
//! Nested keys use a double underscore (`CONSENT_TOKENS__ACCESS_TOKEN_TTL=5m`); the documented
//! short names `CONSENT_DATABASE_URL`, `CONSENT_REDIS_URL`, `CONSENT_MASTER_KEY`, `CONSENT_BIND`,
//! `CONSENT_DATA_DIR`, `CONSENT_LOG_FORMAT`, `CONSENT_PUBLIC_URL`, `CONSENT_DEMO_PASSWORD`,
//! `CONSENT_DEMO_CLIENT_SECRET` and `CONSENT_PKCS11_{MODULE,TOKEN_LABEL,KEY_LABEL,PIN}` are
//! aliases. Secrets are wrapped in [`Secret`], whose Debug is
//! redacted, so a settings dump in a log never leaks them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

mod load;
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
    /// How long a staff member's four-eyes credential (reading a customer's grants or a KYC
    /// submission, rotating signing keys) is valid once taken: 1 to 60 minutes.
    pub staff_credential_ttl: ConfigDuration,
    /// How long after its approval a request can still be turned into a credential: 1 to 60
    /// minutes (an approval is for the need at hand, not a standing permission).
    pub staff_redeem_window: ConfigDuration,
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
                staff_redeem_window: ConfigDuration::minutes(15),
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

impl Settings {
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

#[cfg(test)]
mod tests;
