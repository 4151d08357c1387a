//! The `consent` binary: loads configuration, sets up logging, and dispatches a subcommand.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use consent::{Application, ServeOptions};
use platform::config::Settings;

mod cli {
    pub mod keys;
}

use cli::keys::KeysCommand;

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
    /// Signing keys and the master key.
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
/// the operator set it. Memory-safe, unlike calling `mallopt`. That mapping is what made every
/// hash fault in and zero 19 MiB afresh; Argon2's working memory is now kept between checks and
/// released after two idle seconds instead (`platform::crypto`, `argon2_memory`).
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
        Command::Keys { command } => cli::keys::run(cli.config.as_deref(), command),
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
