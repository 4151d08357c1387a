//! Domain types that validate on construction (the only way in) and import no framework.

use std::fmt;

use platform::problem::FieldError;

use crate::countries::is_iso3166_alpha2;

/// Collects field errors so a request reports every problem at once.
#[derive(Debug, Default)]
pub struct Errors(pub Vec<FieldError>);

impl Errors {
    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    /// Records `r`'s error under `field`, returning its value if it was valid.
    pub fn check<T>(&mut self, field: &str, r: Result<T, String>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(m) => {
                self.push(field, m);
                None
            }
        }
    }

    pub fn into_result(self) -> Result<(), crate::PortalError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(crate::PortalError::Validation(self.0))
        }
    }
}

fn has_control(s: &str) -> bool {
    s.chars().any(|c| c.is_control())
}

/// A single-line, trimmed, bounded text field.
pub fn text(value: &str, max: usize) -> Result<String, String> {
    let v = value.trim();
    if v.is_empty() {
        return Err("must not be empty".into());
    }
    if v.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    if has_control(v) {
        return Err("must not contain control characters".into());
    }
    Ok(v.to_string())
}

/// A developer's email address, trimmed and lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let e = raw.trim().to_lowercase();
        if e.is_empty() {
            return Err("must not be empty".into());
        }
        if e.len() > 254 {
            return Err("must be at most 254 characters".into());
        }
        let bad = || Err("must be an email address like name@example.com".to_string());
        let Some((local, domain)) = e.split_once('@') else {
            return bad();
        };
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c));
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if local_ok && domain_ok {
            Ok(Self(e))
        } else {
            bad()
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub const PASSWORD_MIN: usize = 12;
pub const PASSWORD_MAX: usize = 256;

/// A new password that meets the policy (12 to 256 characters). Debug is redacted.
pub struct NewPassword(String);

impl fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NewPassword([REDACTED])")
    }
}

impl NewPassword {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let n = raw.chars().count();
        if n < PASSWORD_MIN {
            return Err(format!("must be at least {PASSWORD_MIN} characters"));
        }
        if n > PASSWORD_MAX {
            return Err(format!("must be at most {PASSWORD_MAX} characters"));
        }
        if raw.trim().is_empty() {
            return Err("must not be only whitespace".into());
        }
        Ok(Self(raw.to_string()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// sandbox | production
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Sandbox,
    Production,
}

impl Environment {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "sandbox" => Ok(Self::Sandbox),
            "production" => Ok(Self::Production),
            _ => Err("must be \"sandbox\" or \"production\"".into()),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sandbox => "sandbox",
            Self::Production => "production",
        }
    }
}

/// How a client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
    /// RFC 7523 assertions signed with a key of the client's registered JWK Set (FAPI 2.0).
    PrivateKeyJwt,
    /// RFC 8705 2.1: mutual TLS with a certificate from an authority the bank trusts, carrying
    /// the registered subject DN.
    TlsClientAuth,
    /// RFC 8705 2.2: mutual TLS with a certificate the client registered (x5c in its JWK Set).
    SelfSignedTlsClientAuth,
}

impl AuthMethod {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "client_secret_basic" => Ok(Self::ClientSecretBasic),
            "client_secret_post" => Ok(Self::ClientSecretPost),
            "private_key_jwt" => Ok(Self::PrivateKeyJwt),
            "tls_client_auth" => Ok(Self::TlsClientAuth),
            "self_signed_tls_client_auth" => Ok(Self::SelfSignedTlsClientAuth),
            _ => Err("must be \"client_secret_basic\", \"client_secret_post\", \
                 \"private_key_jwt\", \"tls_client_auth\" or \"self_signed_tls_client_auth\""
                .into()),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::PrivateKeyJwt => "private_key_jwt",
            Self::TlsClientAuth => "tls_client_auth",
            Self::SelfSignedTlsClientAuth => "self_signed_tls_client_auth",
        }
    }
    /// Whether the client holds a shared secret (as opposed to a registered key or certificate).
    pub fn uses_secret(self) -> bool {
        matches!(self, Self::ClientSecretBasic | Self::ClientSecretPost)
    }
    /// Checks the JWK Set this method registers: signing keys for `private_key_jwt`,
    /// certificates (`x5c`) for `self_signed_tls_client_auth`. `Err` for methods that register
    /// none, or for a set that does not fit.
    pub fn check_jwks(self, value: &serde_json::Value) -> Result<String, String> {
        match self {
            Self::PrivateKeyJwt => jwks(value),
            Self::SelfSignedTlsClientAuth => {
                platform::web::mtls::registered_certificates(value)?;
                Ok(value.to_string())
            }
            _ => Err(
                "keys are registered only with token_endpoint_auth_method private_key_jwt or \
                 self_signed_tls_client_auth"
                    .into(),
            ),
        }
    }
    /// Whether this method needs a registered JWK Set.
    pub fn needs_jwks(self) -> bool {
        matches!(self, Self::PrivateKeyJwt | Self::SelfSignedTlsClientAuth)
    }
}

/// A client's public keys for `private_key_jwt`: an RFC 7517 JWK Set given inline (never a URL
/// to fetch), 1 to 10 public P-256 or Ed25519 signing keys. Returns it as stored (compact JSON).
pub fn jwks(value: &serde_json::Value) -> Result<String, String> {
    grants::jws::JwkSet::parse(value).map_err(|e| e.to_string())?;
    Ok(value.to_string())
}

/// Actions a client may be allowed to request.
pub const ACTIONS: [&str; 3] = ["accounts:read", "balances:read", "transactions:read"];

/// A non-empty subset of [`ACTIONS`], deduplicated, in canonical order.
pub fn allowed_actions(list: &[String]) -> Result<Vec<String>, String> {
    if list.is_empty() {
        return Err("must list at least one action".into());
    }
    for a in list {
        if !ACTIONS.contains(&a.as_str()) {
            return Err(format!(
                "unknown action {a:?}; allowed: {}",
                ACTIONS.join(", ")
            ));
        }
    }
    Ok(ACTIONS
        .iter()
        .filter(|a| list.iter().any(|x| x == *a))
        .map(|a| a.to_string())
        .collect())
}

pub const MAX_REDIRECT_URIS: usize = 10;
pub const MAX_URI_LEN: usize = 512;

fn is_loopback_host(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(d) => *d == "localhost",
        url::Host::Ipv4(ip) => *ip == std::net::Ipv4Addr::LOCALHOST,
        url::Host::Ipv6(ip) => *ip == std::net::Ipv6Addr::LOCALHOST,
    }
}

/// An absolute URL the server will send a browser (redirect) or a request (webhook) to. Stored
/// exactly as given, since redirect URIs are compared by exact string match.
fn checked_url(raw: &str, env: Environment, what: &str) -> Result<String, String> {
    if raw.is_empty() {
        return Err("must not be empty".into());
    }
    if raw.len() > MAX_URI_LEN {
        return Err(format!("must be at most {MAX_URI_LEN} characters"));
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace".into());
    }
    if raw.contains('#') {
        return Err(format!("{what} must not contain a fragment"));
    }
    if raw.contains('*') {
        return Err(format!("{what} must not contain wildcards"));
    }
    let url = url::Url::parse(raw).map_err(|_| format!("{what} must be an absolute URL"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{what} must not contain user information"));
    }
    let Some(host) = url.host() else {
        return Err(format!("{what} must have a host"));
    };
    match url.scheme() {
        "https" => Ok(raw.to_string()),
        "http" if is_loopback_host(&host) => {
            if env == Environment::Sandbox {
                Ok(raw.to_string())
            } else {
                Err(format!(
                    "{what} must use https for production clients (http is allowed only on \
                     loopback for sandbox clients)"
                ))
            }
        }
        _ => Err(format!(
            "{what} must use https (http only on 127.0.0.1, [::1] or localhost, sandbox only)"
        )),
    }
}

/// Validates a list of redirect URIs (1 to 10, each valid, no duplicates). Errors are reported
/// per index as `redirect_uris[i]`.
pub fn redirect_uris(list: &[String], env: Environment, errors: &mut Errors) -> Vec<String> {
    if list.is_empty() {
        errors.push("redirect_uris", "must list at least one redirect URI");
    }
    if list.len() > MAX_REDIRECT_URIS {
        errors.push(
            "redirect_uris",
            format!("at most {MAX_REDIRECT_URIS} redirect URIs"),
        );
        return vec![];
    }
    let mut out: Vec<String> = Vec::new();
    for (i, raw) in list.iter().enumerate() {
        let field = format!("redirect_uris[{i}]");
        if let Some(u) = errors.check(&field, checked_url(raw, env, "redirect URI")) {
            if out.contains(&u) {
                errors.push(field, "duplicate redirect URI");
            } else {
                out.push(u);
            }
        }
    }
    out
}

/// A webhook URL (same rules as a redirect URI).
pub fn webhook_url(raw: &str, env: Environment) -> Result<String, String> {
    checked_url(raw, env, "webhook URL")
}

/// ISO 3166-1 alpha-2 country code (upper-cased).
pub fn country(raw: &str) -> Result<String, String> {
    let c = raw.trim().to_ascii_uppercase();
    if c.len() == 2 && is_iso3166_alpha2(&c) {
        Ok(c)
    } else {
        Err("must be an ISO 3166-1 alpha-2 country code such as \"DE\"".into())
    }
}

/// Staff usernames: 3 to 64 of `a-z 0-9 . _ @ -`, lower-cased.
pub fn staff_username(raw: &str) -> Result<String, String> {
    let u = raw.trim().to_lowercase();
    if u.len() < 3 || u.len() > 64 {
        return Err("must be 3 to 64 characters".into());
    }
    if !u
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c))
    {
        return Err("may contain only letters, digits, '.', '_', '@' and '-'".into());
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_validated() {
        assert_eq!(
            Email::parse("  Dev@Example.COM ").unwrap().as_str(),
            "dev@example.com"
        );
        for bad in [
            "",
            "x",
            "@example.com",
            "a@",
            "a@b",
            "a b@example.com",
            "a@@example.com",
            "a@-x.com",
            ".a@example.com",
            "a..b@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn password_policy() {
        assert!(NewPassword::parse("short").is_err());
        assert!(NewPassword::parse(&"x".repeat(257)).is_err());
        assert!(NewPassword::parse(&" ".repeat(20)).is_err());
        assert!(NewPassword::parse("correct horse battery").is_ok());
        assert_eq!(
            format!("{:?}", NewPassword::parse("correct horse battery").unwrap()),
            "NewPassword([REDACTED])"
        );
    }

    #[test]
    fn redirect_uri_rules() {
        let ok = |u: &str, env| checked_url(u, env, "redirect URI").is_ok();
        assert!(ok("https://app.example.com/cb", Environment::Production));
        assert!(ok("http://127.0.0.1:8081/callback", Environment::Sandbox));
        assert!(ok("http://[::1]:9000/cb", Environment::Sandbox));
        assert!(ok("http://localhost/cb", Environment::Sandbox));
        assert!(!ok("http://127.0.0.1/cb", Environment::Production));
        assert!(!ok("http://example.com/cb", Environment::Sandbox));
        assert!(!ok("https://app.example.com/cb#x", Environment::Sandbox));
        assert!(!ok("https://*.example.com/cb", Environment::Sandbox));
        assert!(!ok("https://u:p@example.com/cb", Environment::Sandbox));
        assert!(!ok("https://u@example.com/cb", Environment::Sandbox));
        assert!(!ok("/relative", Environment::Sandbox));
        assert!(!ok("javascript:alert(1)", Environment::Sandbox));
        assert!(!ok(
            &format!("https://example.com/{}", "a".repeat(600)),
            Environment::Sandbox
        ));
        let mut e = Errors::default();
        let many: Vec<String> = (0..11).map(|i| format!("https://e.com/{i}")).collect();
        redirect_uris(&many, Environment::Sandbox, &mut e);
        assert!(!e.0.is_empty());
    }

    #[test]
    fn actions_and_countries() {
        assert_eq!(
            allowed_actions(&["transactions:read".into(), "accounts:read".into()]).unwrap(),
            vec!["accounts:read", "transactions:read"]
        );
        assert!(allowed_actions(&["payments:write".into()]).is_err());
        assert!(allowed_actions(&[]).is_err());
        assert_eq!(country("de").unwrap(), "DE");
        assert!(country("XX").is_err());
        assert!(country("DEU").is_err());
    }
}
