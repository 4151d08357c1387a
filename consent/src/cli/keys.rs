//! `consent keys`: signing-key rotation, the HSM-held master key, and replacing the master by
//! re-wrapping the data keys.

use std::path::PathBuf;

use clap::Subcommand;

use crate::{init_platform, link_audit, load, pkcs11_settings};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a new active Ed25519 signing key; the old one stays published until every token it
    /// signed has expired. Running instances pick the new key up within 30 seconds.
    Rotate {
        /// Data directory, for the embedded SQLite database.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Which key: `biscuit` (tokens) or `security-events` (Shared Signals SETs).
        #[arg(long, value_enum, default_value_t = RotatedKey::Biscuit)]
        purpose: RotatedKey,
    },
    /// Create the master key inside the HSM that `security.pkcs11` names (PKCS#11 C_GenerateKey):
    /// 256 bits, sensitive, never extractable, usable only for HMAC. Refused when a key with that
    /// label exists. Prints the token's view of the key (JSON) and records it in the audit log.
    /// An existing deployment moves onto it with `consent keys rewrap`.
    HsmGenerate {
        /// Data directory, for the embedded SQLite database (the audit log).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Print what the HSM reports about the master key (type, sensitive, extractable, whether
    /// its value can be read) as JSON; exits 1 when it could leave the token. Uses no key
    /// material.
    HsmStatus,
    /// Replace the master key: wrap the data keys (which protect all data) under a new master,
    /// in one audited transaction; no data is re-encrypted. The current master is the configured
    /// one. Then configure the new master and restart every instance: one started with the old
    /// master is refused.
    Rewrap {
        /// Data directory, for the embedded SQLite database.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The new master: a key file (base64 of 32 bytes; created, mode 0600, if absent).
        #[arg(
            long,
            conflicts_with = "to_pkcs11_module",
            required_unless_present = "to_pkcs11_module"
        )]
        to_master_key_file: Option<PathBuf>,
        /// The new master in an HSM: its PKCS#11 module (with the two labels below; the PIN
        /// from CONSENT_NEW_PKCS11_PIN, never an argument). `consent keys hsm-generate` makes
        /// the key.
        #[arg(long, requires_all = ["to_pkcs11_token_label", "to_pkcs11_key_label"])]
        to_pkcs11_module: Option<PathBuf>,
        #[arg(long)]
        to_pkcs11_token_label: Option<String>,
        #[arg(long)]
        to_pkcs11_key_label: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum RotatedKey {
    Biscuit,
    SecurityEvents,
}

pub fn run(cli_config: Option<&std::path::Path>, command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Rotate { data_dir, purpose } => {
            let purpose = match purpose {
                RotatedKey::Biscuit => consent::oauth::keys::KeyPurpose::Biscuit,
                RotatedKey::SecurityEvents => consent::oauth::keys::KeyPurpose::SecurityEvents,
            };
            let settings = load(cli_config, None, data_dir)?;
            let access_ttl = settings.tokens.access_token_ttl.as_chrono();
            let platform = init_platform(settings)?;
            let now = platform.now();
            let kid = platform.db.run_blocking(|c| {
                consent::oauth::keys::load_or_init(c, &platform.master_key, now, purpose)?;
                platform::storage::write_tx(c, |c| {
                    consent::oauth::keys::rotate(
                        c,
                        &platform.master_key,
                        now,
                        access_ttl,
                        purpose,
                        platform::audit::Actor::system("cli"),
                    )
                })
            })?;
            link_audit(&platform)?;
            println!(
                "new active {} signing key: kid {kid} (the previous key stays published for {} minutes)",
                purpose.as_str(),
                access_ttl.num_minutes() + 1
            );
            Ok(())
        }
        KeysCommand::HsmGenerate { data_dir } => {
            let settings = load(cli_config, None, data_dir)?;
            let hsm = pkcs11_settings(&settings)?;
            let (report, event) = platform::crypto::hsm::generate_key(&hsm)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            // Opening the platform on the new key also proves it derives.
            let opened = init_platform(settings.clone());
            let wrapped_by_another = |e: &anyhow::Error| {
                matches!(
                    e.downcast_ref::<platform::InitError>(),
                    Some(platform::InitError::DataKeys(
                        platform::crypto::DataKeyError::WrongMaster { .. }
                    ))
                )
            };
            if let Err(e) = opened.as_ref()
                && wrapped_by_another(e)
            {
                // An existing deployment's data keys are wrapped by its current master: the
                // generation is recorded all the same (the linker chains it later), and the
                // operator told what comes next.
                let db = platform::storage::Db::connect(
                    &platform::database_url(&settings),
                    1,
                    settings.database.connect_timeout.get(),
                )?;
                db.write_blocking(|c| platform::audit::record_custody(c, &[event]))?;
                anyhow::bail!(
                    "the key was generated (and recorded in the audit log), but the deployment \
                     does not start on it: {e}. To move an existing deployment onto it, re-wrap \
                     its data keys with the current master configured: `consent keys rewrap \
                     --to-pkcs11-module ...`"
                );
            }
            let platform = opened.map_err(|e| {
                anyhow::anyhow!(
                    "the key was generated, but starting on it to record that in the audit log \
                     failed: {e}"
                )
            })?;
            platform
                .db
                .write_blocking(|c| platform::audit::record_custody(c, &[event]))?;
            link_audit(&platform)?;
            Ok(())
        }
        KeysCommand::Rewrap {
            data_dir,
            to_master_key_file,
            to_pkcs11_module,
            to_pkcs11_token_label,
            to_pkcs11_key_label,
        } => {
            let settings = load(cli_config, None, data_dir)?;
            let new = match (to_master_key_file, to_pkcs11_module) {
                (Some(file), _) => platform::crypto::MasterKey::load_or_generate(&file)?,
                (None, module) => {
                    let pin = std::env::var("CONSENT_NEW_PKCS11_PIN").unwrap_or_default();
                    if pin.is_empty() {
                        anyhow::bail!("set CONSENT_NEW_PKCS11_PIN to the new token's user PIN");
                    }
                    platform::crypto::MasterKey::open_pkcs11(&platform::config::Pkcs11Settings {
                        module: module.unwrap_or_default(),
                        token_label: to_pkcs11_token_label.unwrap_or_default(),
                        key_label: to_pkcs11_key_label.unwrap_or_default(),
                        pin: platform::config::Secret::new(pin),
                    })?
                }
            };
            let platform = init_platform(settings)?;
            let r = platform
                .rewrap_master_key(&new, platform::audit::Actor::system("cli"))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            link_audit(&platform)?;
            println!(
                "{} data keys re-wrapped: master {} -> {}. Configure the new master key and \
                 restart every instance (one started with the old key is refused).",
                r.keys, r.from, r.to
            );
            Ok(())
        }
        KeysCommand::HsmStatus => {
            let settings = load(cli_config, None, None)?;
            let report = platform::crypto::hsm::inspect_key(&pkcs11_settings(&settings)?)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            if let Err(e) = report.check() {
                eprintln!("{e}");
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
