//! The `consent` binary: loads configuration, sets up logging, and dispatches a subcommand.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use consent::{Application, ServeOptions};
use platform::config::Settings;

#[derive(Debug, Parser)]
#[command(
    name = "consent",
    version,
    about = "Granular, time-boxed consent service (OAuth2 + Biscuit)"
)]
struct Cli {
    /// TOML configuration file (defaults -> this file -> CONSENT_* environment variables).
    #[arg(long, global = true, env = "CONSENT_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (applies migrations in embedded SQLite mode).
    Serve {
        /// Seed demo customers, staff, developer and client (idempotent) and print how to log in.
        #[arg(long)]
        demo: bool,
        /// With --demo on PostgreSQL: seed even though the database is not empty, and reset the
        /// demo accounts' credentials (refused without it, so a real database never gets them).
        #[arg(long, requires = "demo")]
        demo_reset: bool,
        /// Address to listen on [default: 127.0.0.1:8080].
        #[arg(long)]
        bind: Option<String>,
        /// Data directory (SQLite file, generated master key) [default: ./data].
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Apply pending database migrations and exit.
    Migrate {
        /// Data directory, for the embedded SQLite database.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Print the OpenAPI document.
    Openapi,
    /// Run one grant lifecycle pass (expiry and dormancy) and exit; `serve` runs it periodically.
    Sweep {
        /// Data directory, for the embedded SQLite database.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Staff administration.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// The audit log's keyed hash chain.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Link pending events, verify the whole chain and print a signed checkpoint of its head
    /// (JSON). Ship it somewhere the database's writers cannot reach.
    Checkpoint {
        /// Data directory, for the embedded SQLite database.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Verify the chain (every event's keyed hash and link); with --checkpoint, also that every
    /// event up to that signed checkpoint is still there, unaltered and in order. Exits 1 when
    /// it does not verify.
    Verify {
        /// A checkpoint printed by `consent audit checkpoint`.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Data directory, for the embedded SQLite database.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
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
    /// For a new deployment: data under an earlier master key is not re-encrypted.
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
enum RotatedKey {
    Biscuit,
    SecurityEvents,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create a staff user (password from CONSENT_ADMIN_PASSWORD, else generated and printed once)
    /// and print the one-time enrolment code their first login needs.
    Create {
        #[arg(long)]
        username: String,
        #[arg(long)]
        display_name: String,
        /// What they may approve, comma-separated: support (asks, approves nothing),
        /// compliance (access to customers' data, client suspensions), security (key rotation,
        /// client suspensions).
        #[arg(long, default_value = "support")]
        roles: String,
        /// Data directory, for the embedded SQLite database.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Replace a staff member's roles (see `create --roles`). Audited.
    SetStaffRoles {
        #[arg(long)]
        username: String,
        #[arg(long)]
        roles: String,
        /// Data directory, for the embedded SQLite database.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Remove a staff member's authenticator and recovery codes (lost phone) and end their
    /// sessions: the next login enrols a new one, with the enrolment code printed. Audited.
    ResetSecondFactor {
        #[arg(long)]
        username: String,
        /// Data directory, for the embedded SQLite database.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

/// The enrolment code, for the operator to hand over (separately from the password if they can).
fn enrolment_code_line(code: &str) -> String {
    let hours = developer_portal::second_factor::ENROLMENT_CODE_LIFETIME.num_hours();
    format!(
        "\nenrolment code (shown once, good for {hours} hours; the first login needs it to set up \
         an authenticator): {code}"
    )
}

fn load(
    cli_config: Option<&std::path::Path>,
    bind: Option<String>,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<Settings> {
    let mut settings = Settings::load(cli_config)?;
    if let Some(bind) = bind {
        settings.server.bind = bind;
    }
    if let Some(dir) = data_dir {
        settings.server.data_dir = dir;
    }
    consent::telemetry::init_tracing(settings.server.log_format);
    Ok(settings)
}

/// Opens storage for a one-off command: migrates an embedded SQLite database, but requires a
/// shared PostgreSQL one to be migrated already (as `serve` does).
fn init_platform(settings: Settings) -> anyhow::Result<platform::Platform> {
    let policy = if settings.uses_postgres() {
        platform::MigrationPolicy::Require
    } else {
        platform::MigrationPolicy::Apply
    };
    Ok(platform::Platform::init(
        settings,
        std::sync::Arc::new(platform::clock::SystemClock),
        policy,
    )?)
}

/// `security.pkcs11`, which the HSM commands need.
fn pkcs11_settings(settings: &Settings) -> anyhow::Result<platform::config::Pkcs11Settings> {
    settings.security.pkcs11.clone().ok_or_else(|| {
        anyhow::anyhow!(
            "security.pkcs11 is not configured: set module, token_label, key_label and pin \
             (CONSENT_PKCS11_MODULE, CONSENT_PKCS11_TOKEN_LABEL, CONSENT_PKCS11_KEY_LABEL, \
             CONSENT_PKCS11_PIN)"
        )
    })
}

/// Links everything pending in the audit chain (one-off commands write events too), after
/// writing the HSM operations this command did.
fn link_audit(platform: &platform::Platform) -> anyhow::Result<()> {
    platform.audit.flush_custody_blocking()?;
    let key = platform.audit.key().clone();
    platform
        .db
        .run_blocking(move |c| platform::audit::link_all(c, &key))?;
    Ok(())
}

fn audit(cli_config: Option<&std::path::Path>, command: AuditCommand) -> anyhow::Result<()> {
    let (data_dir, checkpoint_file) = match &command {
        AuditCommand::Checkpoint { data_dir } => (data_dir.clone(), None),
        AuditCommand::Verify {
            checkpoint,
            data_dir,
        } => (data_dir.clone(), checkpoint.clone()),
    };
    let settings = load(cli_config, None, data_dir)?;
    // Never migrate here, even on SQLite: a migration could change what is being verified
    // (the keyed-chain migration relinks the whole chain). `consent migrate` first.
    let platform = platform::Platform::init(
        settings,
        std::sync::Arc::new(platform::clock::SystemClock),
        platform::MigrationPolicy::Require,
    )?;
    let key = platform.audit.key().clone();
    match command {
        AuditCommand::Checkpoint { .. } => {
            let now = platform.now();
            match platform
                .db
                .run_blocking(|c| platform::audit::checkpoint(c, &key, now))?
            {
                Ok(cp) => {
                    println!("{}", serde_json::to_string_pretty(&cp)?);
                    Ok(())
                }
                Err(report) => {
                    eprintln!("{}", serde_json::to_string_pretty(&report)?);
                    anyhow::bail!("the audit chain does not verify; no checkpoint signed")
                }
            }
        }
        AuditCommand::Verify { .. } => {
            let report = match checkpoint_file {
                Some(path) => {
                    let raw = std::fs::read_to_string(&path)
                        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
                    let cp: platform::audit::Checkpoint =
                        serde_json::from_str(&raw).map_err(|e| {
                            anyhow::anyhow!("{} is not a checkpoint: {e}", path.display())
                        })?;
                    platform
                        .db
                        .run_blocking(|c| platform::audit::verify_against(c, &key, &cp))?
                }
                None => platform
                    .db
                    .run_blocking(|c| platform::audit::verify(c, &key))?,
            };
            println!("{}", serde_json::to_string_pretty(&report)?);
            if !report.valid {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

fn portal_error(e: developer_portal::PortalError) -> anyhow::Error {
    anyhow::anyhow!("{}", developer_portal::describe(&e))
}

fn staff_roles(raw: &str) -> anyhow::Result<Vec<developer_portal::StaffRole>> {
    developer_portal::StaffRole::parse_list(raw).map_err(|m| anyhow::anyhow!("--roles: {m}"))
}

fn admin(cli_config: Option<&std::path::Path>, command: AdminCommand) -> anyhow::Result<()> {
    let message = match command {
        AdminCommand::Create {
            username,
            display_name,
            roles,
            data_dir,
        } => {
            let roles = staff_roles(&roles)?;
            // The admin password is this command's input, not a server setting.
            let mut settings = Settings::load_from(
                cli_config,
                std::env::vars().filter(|(k, _)| k != "CONSENT_ADMIN_PASSWORD"),
            )?;
            if let Some(dir) = data_dir {
                settings.server.data_dir = dir;
            }
            consent::telemetry::init_tracing(settings.server.log_format);
            let platform = init_platform(settings)?;
            let (password, generated) = match std::env::var("CONSENT_ADMIN_PASSWORD") {
                Ok(p) if !p.is_empty() => (p, false),
                _ => (
                    platform::crypto::PlainToken::generate("")
                        .expose()
                        .chars()
                        .take(24)
                        .collect::<String>(),
                    true,
                ),
            };
            let (staff, enrolment_code) = developer_portal::create_staff_user(
                &platform,
                &username,
                &display_name,
                &password,
                &roles,
            )
            .map_err(portal_error)?;
            platform.audit.flush_custody_blocking()?;
            let mut message = format!("created staff user {} ({})", staff.username, staff.id);
            if generated {
                message.push_str(&format!("\npassword (shown once): {password}"));
            }
            message.push_str(&enrolment_code_line(&enrolment_code));
            message
        }
        AdminCommand::ResetSecondFactor { username, data_dir } => {
            let platform = init_platform(load(cli_config, None, data_dir)?)?;
            let (staff, enrolment_code) =
                developer_portal::second_factor::reset_staff(&platform, &username)
                    .map_err(portal_error)?;
            platform.audit.flush_custody_blocking()?;
            format!(
                "second factor of staff user {} ({}) removed; their next login sets up a new one{}",
                staff.username,
                staff.id,
                enrolment_code_line(&enrolment_code)
            )
        }
        AdminCommand::SetStaffRoles {
            username,
            roles,
            data_dir,
        } => {
            let roles = staff_roles(&roles)?;
            let platform = init_platform(load(cli_config, None, data_dir)?)?;
            developer_portal::set_staff_roles(&platform, &username, &roles)
                .map_err(portal_error)?;
            platform.audit.flush_custody_blocking()?;
            format!(
                "staff user {username} now has the roles {}",
                developer_portal::StaffRole::list(&roles)
            )
        }
    };
    println!("{message}");
    Ok(())
}

/// glibc's malloc raises its mmap threshold to the largest block freed (up to 32 MiB): after one
/// Argon2 hash (19 MiB of working memory), later hashes in a thread are served from its heap and
/// stay resident once freed, up to one copy per thread that hashed. A fixed threshold keeps every
/// large block in its own mapping, returned to the system when freed (idle RSS after
/// `serve --demo`: 69 MB -> 31 MB, BENCHMARKS.md). glibc reads it only at start-up, from the
/// environment, so the server starts itself again with it set (the same process: `exec`), unless
/// the operator set it. Memory-safe, unlike calling `mallopt`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn with_fixed_mmap_threshold() {
    use std::os::unix::process::CommandExt;
    const VAR: &str = "MALLOC_MMAP_THRESHOLD_";
    if std::env::var_os(VAR).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let error = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(VAR, "131072")
        .exec();
    // Only reached when exec failed (the binary was replaced on disk, say): carry on as is.
    eprintln!("note: running with glibc's default mmap threshold ({error})");
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn with_fixed_mmap_threshold() {}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Audit { command } => audit(cli.config.as_deref(), command),
        Command::Openapi => {
            println!("{}", consent::openapi::spec_json());
            Ok(())
        }
        Command::Sweep { data_dir } => {
            let settings = load(cli.config.as_deref(), None, data_dir)?;
            let platform = init_platform(settings)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let report = runtime.block_on(consent::lifecycle::run_once(&platform))?;
            link_audit(&platform)?;
            println!(
                "expired: {}, dormant: {}, approval requests expired: {}",
                report.expired, report.dormant, report.approvals_expired
            );
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::Rotate { data_dir, purpose },
        } => {
            let purpose = match purpose {
                RotatedKey::Biscuit => consent::oauth::keys::KeyPurpose::Biscuit,
                RotatedKey::SecurityEvents => consent::oauth::keys::KeyPurpose::SecurityEvents,
            };
            let settings = load(cli.config.as_deref(), None, data_dir)?;
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
        Command::Keys {
            command: KeysCommand::HsmGenerate { data_dir },
        } => {
            let settings = load(cli.config.as_deref(), None, data_dir)?;
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
        Command::Keys {
            command:
                KeysCommand::Rewrap {
                    data_dir,
                    to_master_key_file,
                    to_pkcs11_module,
                    to_pkcs11_token_label,
                    to_pkcs11_key_label,
                },
        } => {
            let settings = load(cli.config.as_deref(), None, data_dir)?;
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
        Command::Keys {
            command: KeysCommand::HsmStatus,
        } => {
            let settings = load(cli.config.as_deref(), None, None)?;
            let report = platform::crypto::hsm::inspect_key(&pkcs11_settings(&settings)?)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            if let Err(e) = report.check() {
                eprintln!("{e}");
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Admin { command } => admin(cli.config.as_deref(), command),
        Command::Migrate { data_dir } => {
            let settings = load(cli.config.as_deref(), None, data_dir)?;
            let applied = consent::migrate(&settings)?;
            if applied.is_empty() {
                println!("database is up to date");
            } else {
                println!("applied migrations: {}", applied.join(", "));
            }
            Ok(())
        }
        Command::Serve {
            demo,
            demo_reset,
            bind,
            data_dir,
        } => {
            with_fixed_mmap_threshold();
            let settings = load(cli.config.as_deref(), bind, data_dir)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let app = Application::build(
                    settings,
                    ServeOptions {
                        demo,
                        demo_reset,
                        ..Default::default()
                    },
                )
                .await?;
                if let Some(report) = app.demo_report() {
                    println!("{report}");
                }
                tracing::info!(address = %app.address(), "consent listening");
                app.run_until_stopped().await?;
                Ok(())
            })
        }
    }
}
