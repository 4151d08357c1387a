//! Shared foundation of the consent service, used by the `consent` server and the
//! `developer-portal` crate (it exists so that neither depends on the other for storage):
//!
//! - [`config`]: typed settings (defaults -> TOML -> `CONSENT_*` env), secrets redacted;
//! - [`storage`]: diesel over SQLite or PostgreSQL behind one connection type, migrations;
//! - [`cache`]: Redis or in-process cache behind the [`cache::Cache`] trait;
//! - [`crypto`]: master key (in memory, or in an HSM through PKCS#11), field encryption, token
//!   hashing, passwords;
//! - [`audit`]: the hash-chained audit log;
//! - [`problem`]: RFC 9457 problem details, the one error shape of the JSON APIs;
//! - [`ratelimit`], [`clock`].
//!
//! Only [`problem`] knows about HTTP (it implements actix's `ResponseError`); everything else is
//! plain Rust that services call.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::todo)
)]

pub mod audit;
pub mod cache;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod problem;
pub mod ratelimit;
pub mod revocation;
pub mod session;
pub mod ssf;
pub mod storage;
pub mod totp;
pub mod values;
pub mod web;
pub mod webhooks;

use std::sync::Arc;

use cache::Cache;
use clock::SharedClock;
use config::Settings;
use crypto::MasterKey;
use storage::{Backend, Db};

/// What start-up does about pending migrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationPolicy {
    /// Apply them (embedded mode, tests, `consent migrate`).
    Apply,
    /// Refuse to start while any is pending (shared PostgreSQL: migrate once, explicitly).
    Require,
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    #[error(transparent)]
    Crypto(#[from] crypto::CryptoError),
    /// The HSM holding the master key (`security.pkcs11`): module, token, PIN or key.
    #[error(transparent)]
    Hsm(#[from] crypto::HsmError),
    #[error(transparent)]
    Cache(#[from] cache::CacheError),
    #[error("the database has pending migrations; run `consent migrate` first")]
    PendingMigrations,
    #[error(transparent)]
    Tls(#[from] web::mtls::TlsError),
}

/// The shared services every handler and background job works with.
#[derive(Debug, Clone)]
pub struct Platform {
    pub settings: Arc<Settings>,
    pub db: Db,
    pub cache: Arc<dyn Cache>,
    pub master_key: MasterKey,
    pub clock: SharedClock,
    pub audit: audit::AuditLog,
    pub rate_limiter: ratelimit::RateLimiter,
    /// This instance's revocation announcements (epoch and local wake-ups).
    pub revocation_signals: Arc<revocation::Signals>,
    /// The authorities of `tls_client_auth` certificates (`server.client_ca_file`).
    pub certificate_trust: web::mtls::CertificateTrust,
}

impl Platform {
    /// Connects the database and cache, loads (or, in embedded mode, generates) the master key
    /// or opens it in the HSM, and handles migrations per `policy`.
    pub fn init(
        settings: Settings,
        clock: SharedClock,
        policy: MigrationPolicy,
    ) -> Result<Self, InitError> {
        let db_url = database_url(&settings);
        let db = Db::connect(
            &db_url,
            settings.database.pool_size,
            settings.database.connect_timeout.get(),
        )?;
        match policy {
            MigrationPolicy::Apply => {
                let applied = db.migrate()?;
                if !applied.is_empty() {
                    tracing::info!(?applied, "database migrations applied");
                }
            }
            MigrationPolicy::Require => {
                if db.has_pending_migrations()? {
                    return Err(InitError::PendingMigrations);
                }
            }
        }
        let master_key = match (&settings.security.master_key, &settings.security.pkcs11) {
            (Some(encoded), _) => MasterKey::from_base64(encoded.expose())?,
            (None, Some(hsm)) => {
                let file = settings.server.data_dir.join("master.key");
                if file.exists() {
                    // Data written under that key cannot be read under the HSM's.
                    tracing::warn!(
                        path = %file.display(),
                        "the master key is in the HSM (security.pkcs11) but the data directory \
                         also has a master.key file: data encrypted under that file key will not \
                         decrypt (there is no migration between the two)"
                    );
                }
                MasterKey::open_pkcs11(hsm)?
            }
            (None, None) => {
                if db.backend() == Backend::Postgres {
                    tracing::warn!(
                        "no CONSENT_MASTER_KEY configured: using the data directory's key; every \
                         instance sharing this database must use the same master key"
                    );
                }
                MasterKey::load_or_generate(&settings.server.data_dir.join("master.key"))?
            }
        };
        let cache = cache::build(
            settings.redis.url.as_ref().map(|u| u.expose().as_str()),
            &settings.redis.key_prefix,
        )?;
        let certificate_trust =
            web::mtls::CertificateTrust::load(settings.server.client_ca_file.as_deref())?;
        // Derived here (not lazily) so that an HSM that cannot derive stops start-up.
        let audit = audit::AuditLog::new(db.clone(), audit::ChainKey::try_derive(&master_key)?)
            .with_custody(master_key.custody_journal().cloned());
        // The derivations so far (the chain key's), now that the log exists; later ones are
        // written by each linking pass.
        audit.flush_custody_blocking()?;
        Ok(Self {
            certificate_trust,
            audit,
            rate_limiter: ratelimit::RateLimiter::new(cache.clone()),
            settings: Arc::new(settings),
            db,
            cache,
            master_key,
            clock,
            revocation_signals: Arc::default(),
        })
    }

    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }
}

/// The configured database URL, or the embedded SQLite file in the data directory.
pub fn database_url(settings: &Settings) -> String {
    match &settings.database.url {
        Some(url) => url.expose().clone(),
        None => settings
            .server
            .data_dir
            .join("consent.db")
            .to_string_lossy()
            .into_owned(),
    }
}
