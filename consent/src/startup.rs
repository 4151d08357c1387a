//! Building one server instance: storage, migrations, demo seed, signing keys, the revocation
//! list, the HTTP server with every route, and the background jobs (audit linker, key refresh,
//! revocation-list sync, lifecycle sweeper, webhook delivery). `main.rs` loads configuration and
//! calls [`Application`]; tests start it the same way.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use platform::clock::{SharedClock, SystemClock};
use platform::config::Settings;
use platform::{MigrationPolicy, Platform};
use tokio::sync::watch;

use crate::state::AppState;
use crate::{
    customer_login, demo, http, lifecycle, oauth, openapi, revocation_list, routes, ssf, telemetry,
    verification, webhooks,
};

/// Options of one server start beyond the settings.
#[derive(Debug, Default, Clone)]
pub struct ServeOptions {
    /// Seed the demo data and print the credentials.
    pub demo: bool,
    /// With `demo`: seed even a non-empty PostgreSQL database (and reset the demo accounts'
    /// credentials there).
    pub demo_reset: bool,
    /// Time source (tests pass a controllable clock).
    pub clock: Option<SharedClock>,
    /// Override the migration policy (default: apply on SQLite, require on PostgreSQL).
    pub migrations: Option<MigrationPolicy>,
}

/// Whether a bind address (`127.0.0.1:8080`, `[::1]:80`, `localhost:8080`) is loopback only.
fn is_loopback(bind: &str) -> bool {
    match bind.parse::<std::net::SocketAddr>() {
        Ok(addr) => addr.ip().is_loopback(),
        Err(_) => bind
            .rsplit_once(':')
            .is_some_and(|(host, _)| host.eq_ignore_ascii_case("localhost")),
    }
}

/// Applies pending migrations (`consent migrate`).
pub fn migrate(settings: &Settings) -> anyhow::Result<Vec<String>> {
    let db = platform::storage::Db::connect(
        &platform::database_url(settings),
        2,
        settings.database.connect_timeout.get(),
    )?;
    Ok(db.migrate()?)
}

/// A bound, not yet running, server.
pub struct Application {
    port: u16,
    address: String,
    server: Server,
    state: AppState,
    demo_report: Option<demo::DemoReport>,
    shutdown: watch::Sender<bool>,
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Application listening on {}", self.address)
    }
}

impl Application {
    /// Connects storage, migrates, seeds (if asked), binds the listener (port 0 picks a free port)
    /// and starts background jobs. Must be called inside a tokio runtime.
    pub async fn build(mut settings: Settings, options: ServeOptions) -> anyhow::Result<Self> {
        // Not behind a proxy nor served as https: then the demo is public in fact.
        if options.demo
            && settings.security.secure_cookies.is_none()
            && is_loopback(&settings.server.bind)
            && settings.server.trusted_proxies.is_empty()
            && !settings
                .server
                .public_url
                .as_deref()
                .is_some_and(|u| u.starts_with("https://"))
        {
            // The demo is browsed at http://127.0.0.1: cookies marked Secure (and `__Host-`)
            // would work in browsers, which treat loopback as secure, but not in curl or other
            // HTTP clients. Anything not on loopback keeps the secure default.
            settings.security.secure_cookies = Some(false);
        }
        let policy = options.migrations.unwrap_or(if settings.uses_postgres() {
            MigrationPolicy::Require
        } else {
            MigrationPolicy::Apply
        });
        let clock = options
            .clock
            .clone()
            .unwrap_or_else(|| Arc::new(SystemClock));
        let bind = settings.server.bind.clone();
        let workers = settings.server.workers;
        let shutdown_timeout = settings.server.shutdown_timeout.get().as_secs();
        let chain_interval = settings.lifecycle.audit_chain_interval.get();
        let sweep_interval = settings.lifecycle.sweep_interval.get();
        let platform =
            tokio::task::spawn_blocking(move || Platform::init(settings, clock, policy)).await??;

        let demo_report = if options.demo {
            Some(demo::seed(&platform, options.demo_reset).await?)
        } else {
            None
        };

        let listener = TcpListener::bind(&bind)?;
        let local = listener.local_addr()?;
        let address = local.to_string();
        let issuer = platform.settings.public_url(&address);
        let keys = {
            let p = platform.clone();
            let now = p.now();
            p.db.run(move |c| {
                oauth::keys::load_or_init(c, &p.master_key, now, oauth::keys::KeyPurpose::Biscuit)
            })
            .await?
        };
        let event_keys = {
            let p = platform.clone();
            let now = p.now();
            p.db.run(move |c| {
                oauth::keys::load_or_init(
                    c,
                    &p.master_key,
                    now,
                    oauth::keys::KeyPurpose::SecurityEvents,
                )
            })
            .await?
        };
        let batches =
            oauth::tokens::batched::TokenBatches::start(&platform.db)?.map(std::sync::Arc::new);
        let revocations = revocation_list::RevocationList::default();
        {
            // Rows a crashed instance committed but did not link get their positions first.
            let list = revocations.clone();
            platform
                .db
                .run(move |c| {
                    platform::revocation::link_feed_all(c)?;
                    list.sync(c)
                })
                .await?;
        }
        let state = AppState {
            revocations,
            ssf: ssf::SsfService::new(
                platform.clone(),
                oauth::keys::KeyRing::new(event_keys),
                issuer.clone(),
            ),
            oauth: oauth::OAuthService::new(oauth::OAuthParts {
                platform: platform.clone(),
                keys: oauth::keys::KeyRing::new(keys),
                issuer: issuer.clone(),
                answers: std::sync::Arc::new(oauth::answers::AnswerCache::new(
                    platform.settings.tokens.introspection_cache_ttl.get(),
                    platform.revocation_signals.clone(),
                )),
                batches,
                verify: verification::VerifyPool::new(
                    platform.settings.server.verify_threads,
                    platform.settings.server.verify_queue,
                )?,
                decoded: ::grants::DecodeCache::default(),
            }),
            customer_login: customer_login::Upstream::from_settings(
                &platform.settings.customer_login,
                &issuer,
            )?,
            issuer,
            platform,
            metrics: telemetry::metrics_handle(),
        };

        // The HSM derivations of start-up (seed, signing keys) are in the audit log before the
        // server answers anything; later ones are written by each linking pass.
        state.platform.audit.flush_custody().await?;

        let data = web::Data::new(state.clone());
        let platform_data = web::Data::new(state.platform.clone());
        let https = state.issuer.starts_with("https://");
        // `server.tls_cert_file`: HTTPS here, client certificates asked for (RFC 8705).
        let server_settings = &state.platform.settings.server;
        let tls = match (
            &server_settings.tls_cert_file,
            &server_settings.tls_key_file,
        ) {
            (Some(cert), Some(key)) => Some(platform::web::mtls::server_config(cert, key)?),
            _ => None,
        };
        let trust = state.platform.certificate_trust.clone();
        let mut server = HttpServer::new(move || {
            App::new()
                .wrap(http::error_normalizer())
                .wrap(actix_web::middleware::from_fn(http::record_metrics))
                .wrap(actix_web::middleware::from_fn(http::docs_policy))
                .wrap(http::security_headers(https))
                .wrap(tracing_actix_web::TracingLogger::<telemetry::RequestSpan>::new())
                .app_data(data.clone())
                .app_data(platform_data.clone())
                .configure(http::extractor_config)
                .configure(routes::configure)
                .configure(developer_portal::configure)
                .service(openapi::document())
                .service(openapi::swagger_ui())
                .default_service(web::to(http::not_found))
        })
        .on_connect(platform::web::mtls::on_connect(trust));
        server = match tls {
            Some(config) => server.listen_rustls_0_23(listener, config)?,
            None => server.listen(listener)?,
        };
        let mut server = server.shutdown_timeout(shutdown_timeout);
        if workers > 0 {
            server = server.workers(workers);
        }
        let server = server.run();

        let (shutdown, shutdown_rx) = watch::channel(false);
        let background = vec![
            state
                .platform
                .audit
                .spawn_linker(chain_interval, shutdown_rx.clone()),
            spawn_key_refresh(state.clone(), shutdown_rx.clone()),
            ssf::push::spawn_delivery(state.ssf.clone(), shutdown_rx.clone()),
            state
                .revocations
                .spawn_sync(state.platform.clone(), shutdown_rx.clone()),
            lifecycle::spawn_sweeper(state.platform.clone(), sweep_interval, shutdown_rx.clone()),
            crate::staff_broadcast::spawn(state.platform.clone(), shutdown_rx.clone()),
            state
                .platform
                .rate_limiter
                .spawn_failure_watch(shutdown_rx.clone()),
            platform::crypto::spawn_argon2_memory_release(shutdown_rx.clone()),
            webhooks::spawn_delivery(state.platform.clone(), shutdown_rx),
        ];

        Ok(Self {
            port: local.port(),
            address,
            server,
            state,
            demo_report,
            shutdown,
            background,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// How to log in to the demo, when started with `--demo`.
    pub fn demo_report(&self) -> Option<&demo::DemoReport> {
        self.demo_report.as_ref()
    }

    /// A handle that stops the server gracefully.
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGINT/SIGTERM (or a handle stops it), lets in-flight requests finish, then
    /// stops background jobs (the audit linker links what is pending before it exits).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        let _ = self.shutdown.send(true);
        for job in self.background {
            let _ = job.await;
        }
        tracing::info!("consent stopped");
        result
    }
}

/// Reloads signing keys (Biscuit and Security Event Token keys) every 30 s, so a rotation made by
/// `consent keys rotate` or another instance is picked up (old keys stay published, so what is in
/// flight keeps verifying).
fn spawn_key_refresh(
    state: AppState,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    use oauth::keys::KeyPurpose;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            for purpose in [KeyPurpose::Biscuit, KeyPurpose::SecurityEvents] {
                reload_keys(&state, purpose).await;
            }
        }
    })
}

/// Reloads this instance's keys of `purpose` from the database (after a rotation here, or
/// periodically for rotations elsewhere); on failure the current keys stay.
pub async fn reload_keys(state: &AppState, purpose: oauth::keys::KeyPurpose) {
    let ring = match purpose {
        oauth::keys::KeyPurpose::Biscuit => &state.oauth.keys,
        oauth::keys::KeyPurpose::SecurityEvents => &state.ssf.keys,
    };
    let p = state.platform.clone();
    let now = p.now();
    match p
        .db
        .run(move |c| oauth::keys::load(c, &p.master_key.cipher("signing-keys"), now, purpose))
        .await
    {
        Ok(keys) => ring.replace(keys),
        Err(e) => tracing::warn!(
            error = %e,
            purpose = purpose.as_str(),
            "signing key refresh failed; keeping current keys"
        ),
    }
}
