//! A new client's registration, validated: its name, environment, redirect URIs, authentication
//! method and key material.

use crate::domain::{self, AuthMethod, Environment, Errors};
use crate::error::PortalResult;

/// A validated new client.
#[derive(Debug, Clone)]
pub struct NewClient {
    pub name: String,
    pub environment: Environment,
    pub redirect_uris: Vec<String>,
    pub auth_method: AuthMethod,
    pub allowed_actions: Vec<String>,
    pub webhook_url: Option<String>,
    /// The JWK Set of a `private_key_jwt` or `self_signed_tls_client_auth` client (validated
    /// JSON).
    pub jwks: Option<String>,
    pub dpop_bound_access_tokens: bool,
    /// The subject DN of a `tls_client_auth` client (canonical RFC 4514).
    pub tls_client_auth_subject_dn: Option<String>,
    pub tls_client_certificate_bound_access_tokens: bool,
}

impl NewClient {
    /// Adds the key material (see [`Self::parse`]): a `private_key_jwt` client registers its
    /// signing keys, a `self_signed_tls_client_auth` client its certificates (JWK Set with
    /// `x5c`), a `tls_client_auth` client its certificate's subject DN; other clients none.
    pub fn with_keys(mut self, keys: &KeyMaterial<'_>) -> PortalResult<Self> {
        let mut e = Errors::default();
        let method = self.auth_method;
        self.jwks = match (method.needs_jwks(), keys.jwks) {
            (_, Some(j)) => e.check("jwks", method.check_jwks(j)),
            (true, None) => {
                e.push(
                    "jwks",
                    format!("{} needs the client's keys", method.as_str()),
                );
                None
            }
            (false, None) => None,
        };
        self.tls_client_auth_subject_dn = match (method, keys.tls_client_auth_subject_dn) {
            (AuthMethod::TlsClientAuth, Some(dn)) => e.check(
                "tls_client_auth_subject_dn",
                platform::web::mtls::canonical_dn(dn),
            ),
            (AuthMethod::TlsClientAuth, None) => {
                e.push(
                    "tls_client_auth_subject_dn",
                    "tls_client_auth needs the subject DN of the client's certificate",
                );
                None
            }
            (_, Some(_)) => {
                e.push(
                    "tls_client_auth_subject_dn",
                    "a subject DN is registered only with token_endpoint_auth_method \
                     tls_client_auth",
                );
                None
            }
            (_, None) => None,
        };
        e.into_result()?;
        self.dpop_bound_access_tokens = keys.dpop_bound_access_tokens;
        self.tls_client_certificate_bound_access_tokens =
            keys.tls_client_certificate_bound_access_tokens;
        Ok(self)
    }

    pub fn parse(
        name: &str,
        environment: &str,
        redirect_uris: &[String],
        auth_method: Option<&str>,
        allowed_actions: Option<&[String]>,
        webhook_url: Option<&str>,
    ) -> PortalResult<Self> {
        let mut e = Errors::default();
        let name = e.check("name", domain::text(name, 100));
        let environment = e.check("environment", Environment::parse(environment));
        let env = environment.unwrap_or(Environment::Sandbox);
        let redirect_uris = domain::redirect_uris(redirect_uris, env, &mut e);
        let auth_method = e.check(
            "auth_method",
            AuthMethod::parse(auth_method.unwrap_or("client_secret_basic")),
        );
        let allowed_actions = e.check(
            "allowed_actions",
            match allowed_actions {
                Some(list) => domain::allowed_actions(list),
                None => Ok(domain::ACTIONS.iter().map(|a| a.to_string()).collect()),
            },
        );
        let webhook_url = match webhook_url {
            Some(w) => e.check("webhook_url", domain::webhook_url(w, env)),
            None => None,
        };
        e.into_result()?;
        Ok(Self {
            name: name.unwrap_or_default(),
            environment: env,
            redirect_uris,
            auth_method: auth_method.unwrap_or(AuthMethod::ClientSecretBasic),
            allowed_actions: allowed_actions.unwrap_or_default(),
            webhook_url,
            jwks: None,
            dpop_bound_access_tokens: false,
            tls_client_auth_subject_dn: None,
            tls_client_certificate_bound_access_tokens: false,
        })
    }
}

/// What a client registers besides its shared secret, if any (RFC 7591 names).
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyMaterial<'a> {
    pub jwks: Option<&'a serde_json::Value>,
    pub dpop_bound_access_tokens: bool,
    pub tls_client_auth_subject_dn: Option<&'a str>,
    pub tls_client_certificate_bound_access_tokens: bool,
}
