//! Loading: the built-in defaults, the TOML file and the `CONSENT_*` variables (with their short
//! aliases) layered into [`Settings`], then checked as a whole.

use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};

use super::{ConfigError, Settings};

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
        for (name, d) in [
            ("staff_credential_ttl", self.security.staff_credential_ttl),
            ("staff_redeem_window", self.security.staff_redeem_window),
        ] {
            if d.get() < Duration::from_secs(60) || d.get() > Duration::from_secs(3_600) {
                return Err(ConfigError(format!(
                    "security.{name} must be between 1m and 60m"
                )));
            }
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
