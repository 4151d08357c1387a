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
    #[error(transparent)]
    DataKeys(#[from] crypto::DataKeyError),
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
    /// Where every password hash and check runs: a bounded number at once.
    pub passwords: crypto::PasswordWork,
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
                    // A master replaced by the HSM's can still open what it wrapped.
                    tracing::warn!(
                        path = %file.display(),
                        "the master key is in the HSM (security.pkcs11) but the data directory \
                         also has a master.key file: once the data keys are re-wrapped to the \
                         HSM (`consent keys rewrap`), destroy that file"
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
        open_data_keys(&db, &master_key, clock.now())?;
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
            passwords: crypto::PasswordWork::default(),
        })
    }

    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    /// Wraps the deployment's data keys under `new` instead of the current master, in one
    /// transaction with its audit event (`master_key.rewrapped`, by `actor`, with both masters'
    /// ids). No data is re-encrypted. This process keeps its open keys; every instance must be
    /// restarted with `new` configured (one that starts with the old master is refused).
    /// Blocking.
    pub fn rewrap_master_key(
        &self,
        new: &MasterKey,
        actor: audit::Actor,
    ) -> Result<crypto::Rewrapped, crypto::DataKeyError> {
        let now = self.now();
        self.db.run_blocking(|c| {
            Ok(storage::write_tx_as(c, |c| {
                let r = self.master_key.rewrap_data_keys(c, new, now)?;
                audit::NewEvent::new(
                    actor,
                    "master_key.rewrapped",
                    audit::Target::new("master_key", &r.to),
                )
                .details(serde_json::json!({
                    "from": r.from,
                    "to": r.to,
                    "to_hsm": new.hsm_location(),
                    "data_keys": r.keys,
                }))
                .record(c, now)?;
                // The new key's HSM operations, in the same transaction as what they served.
                if let Some(journal) = new.custody_journal() {
                    audit::record_custody(c, &journal.take())?;
                }
                Ok(r)
            }))
        })?
    }
}

/// Opens the deployment's data keys with `master_key` (adopting them at the first start, audited),
/// in one write transaction: refused (and nothing kept) when the master is not theirs. Instances
/// starting at once may both adopt: the one whose insert loses reads the winner's rows again.
fn open_data_keys(
    db: &Db,
    master_key: &MasterKey,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), InitError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match open_data_keys_once(db, master_key, now) {
            Err(crypto::DataKeyError::Storage(storage::StorageError::Conflict(_)))
                if attempt < 3 => {}
            other => return Ok(other?),
        }
    }
}

fn open_data_keys_once(
    db: &Db,
    master_key: &MasterKey,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), crypto::DataKeyError> {
    let opened: Result<crypto::OpenedKeys, crypto::DataKeyError> = db.run_blocking(|c| {
        Ok(storage::write_tx_as(c, |c| {
            let keys = master_key.open_data_keys(c, now)?;
            if keys.made > 0 {
                let (n, adopted) = (keys.made, keys.adopted);
                let id = master_key.key_id().unwrap_or_else(|_| "unknown".into());
                audit::NewEvent::new(
                    audit::Actor::system("start-up"),
                    "master_key.data_keys_made",
                    audit::Target::new("master_key", id),
                )
                .details(serde_json::json!({
                    "data_keys": n,
                    "origin": if adopted { "derived" } else { "random" },
                }))
                .record(c, now)?;
            }
            Ok(keys)
        }))
    })?;
    // In use only once committed: a retry after a lost race reads the winner's keys.
    let keys = opened?;
    let (made, adopted) = (keys.made, keys.adopted);
    master_key.use_data_keys(keys);
    match (made, adopted) {
        (0, _) => {}
        (n, true) => tracing::info!(
            data_keys = n,
            "data keys adopted from the master key, which now wraps them (data_keys)"
        ),
        (n, false) => tracing::info!(
            data_keys = n,
            "random data keys made, wrapped by the master key"
        ),
    }
    Ok(())
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
