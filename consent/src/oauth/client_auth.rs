//! Client authentication at the token, introspection and revocation endpoints, with its
//! throttling: plain Rust over the OAuth service (no HTTP types). The handlers read the
//! credentials from the request ([`client_credentials`] does the parsing) and the caller's
//! address, then call these.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use platform::crypto::PlainToken;
use platform::ratelimit::{Decision, LoginAttempt, LoginLimits};
use platform::revocation::{self, Revocations};
use platform::storage::AnyConnection;
use platform::web::mtls::ClientCertificate;
use std::collections::HashMap;

use super::OAuthService;
use super::assertion::{ASSERTION_TYPE, claimed_client};
use super::clients::{self, ClientCredentials, OAuthClient};
use super::error::OAuthError;

/// One `application/x-www-form-urlencoded` value, as a Basic header carries the client id and
/// secret (RFC 6749 section 2.3.1): `+` is a space, `%XX` a byte, invalid UTF-8 replaced. The
/// whole value: a literal `&` or `=` in it is part of it.
fn form_decode(s: &str) -> String {
    let bytes: Vec<u8> = s
        .bytes()
        .map(|b| if b == b'+' { b' ' } else { b })
        .collect();
    percent_encoding::percent_decode(&bytes)
        .decode_utf8_lossy()
        .into_owned()
}

/// [`credentials`] without the request (`authorization` is the header's value, `certificate`
/// the connection's TLS client certificate), so that it can be tested and fuzzed on its own.
/// Removes `client_secret` from `form`. A certificate authenticates only when no other method is
/// used (RFC 8705 section 2: `client_id` in the form); otherwise it only binds tokens.
pub fn client_credentials(
    authorization: Option<&str>,
    form: &mut HashMap<String, String>,
    certificate: Option<ClientCertificate>,
) -> Result<ClientCredentials, OAuthError> {
    let basic = authorization.and_then(|v| {
        v.strip_prefix("Basic ")
            .or_else(|| v.strip_prefix("basic "))
    });
    let post_secret = form.remove("client_secret");
    let assertion_type = form.remove("client_assertion_type");
    let assertion = form.remove("client_assertion");
    match (assertion_type, assertion) {
        (None, None) => {}
        (Some(_), Some(_)) if basic.is_some() || post_secret.is_some() => {
            return Err(OAuthError::InvalidRequest(
                "use one client authentication method, not two".into(),
            ));
        }
        (Some(t), Some(assertion)) if t == ASSERTION_TYPE => {
            // RFC 7523 section 3: client_id is optional; the assertion names the client.
            let client_id = match form.get("client_id") {
                Some(id) => id.clone(),
                None => claimed_client(&assertion).unwrap_or_default(),
            };
            return Ok(ClientCredentials::Assertion {
                client_id,
                assertion,
            });
        }
        (Some(_), Some(_)) => {
            return Err(OAuthError::InvalidRequest(format!(
                "client_assertion_type must be {ASSERTION_TYPE}"
            )));
        }
        _ => {
            return Err(OAuthError::InvalidRequest(
                "client_assertion and client_assertion_type go together".into(),
            ));
        }
    }
    match (basic, post_secret) {
        (Some(_), Some(_)) => Err(OAuthError::InvalidRequest(
            "use one client authentication method, not two".into(),
        )),
        (Some(b64), None) => {
            let bad = || OAuthError::InvalidClient("client authentication failed".into());
            let decoded = STANDARD.decode(b64.trim()).map_err(|_| bad())?;
            let text = String::from_utf8(decoded).map_err(|_| bad())?;
            let (id, secret) = text.split_once(':').ok_or_else(bad)?;
            let (id, secret) = (form_decode(id), form_decode(secret));
            if form.get("client_id").is_some_and(|f| f != &id) {
                return Err(OAuthError::InvalidRequest(
                    "client_id does not match the authenticated client".into(),
                ));
            }
            Ok(ClientCredentials::Basic {
                client_id: id,
                secret: PlainToken::from_presented(&secret),
            })
        }
        (None, Some(secret)) => {
            let id = form.get("client_id").cloned().unwrap_or_default();
            Ok(ClientCredentials::Post {
                client_id: id,
                secret: PlainToken::from_presented(&secret),
            })
        }
        (None, None) => match (form.get("client_id"), certificate) {
            (Some(id), Some(certificate)) => Ok(ClientCredentials::Certificate {
                client_id: id.clone(),
                certificate,
            }),
            _ => Err(OAuthError::InvalidClient(
                "client authentication is required".into(),
            )),
        },
    }
}

/// Failed client authentications: 21 a minute from one address for one client id (then that
/// address waits out the minute for that id), 200 from one address in all. Never per client id alone: secrets are 256-bit (guessing is hopeless), and an
/// attacker failing on a fintech's client id must not block the fintech. Counted through the
/// rate limiter, which keeps counting in-process when Redis is down (the block holds, per
/// instance, instead of failing open).
const CLIENT_AUTH_LIMITS: LoginLimits = LoginLimits {
    per_pair: 21,
    per_address: 200,
    per_account: u64::MAX,
    window: std::time::Duration::from_secs(60),
    // No slowing down: secrets cannot be guessed, and a delay would only hold a fintech's
    // misconfigured calls (and connections) longer.
    free_failures: u64::MAX,
    first_delay: std::time::Duration::ZERO,
    max_delay: std::time::Duration::ZERO,
};

impl OAuthService {
    /// Authenticates the client. Successful calls are not throttled (a fintech refreshes tokens for
    /// all its users); failed ones are (see [`CLIENT_AUTH_LIMITS`]).
    pub async fn authenticate(
        &self,
        creds: ClientCredentials,
        peer: &str,
        endpoint: &'static str,
    ) -> Result<OAuthClient, OAuthError> {
        self.with_client(creds, peer, endpoint, |_, _, client| Ok(client))
            .await
    }

    /// Authenticates the client and, if that succeeds, runs `then` with it on the same pooled
    /// connection (one trip to the blocking pool and one checkout per request, not two). What `then`
    /// revokes is announced once it returns.
    pub async fn with_client<T, F>(
        &self,
        creds: ClientCredentials,
        peer: &str,
        endpoint: &'static str,
        then: F,
    ) -> Result<T, OAuthError>
    where
        T: Send + 'static,
        F: FnOnce(&mut AnyConnection, &mut Revocations, OAuthClient) -> Result<T, OAuthError>
            + Send
            + 'static,
    {
        let then = move |c: &mut AnyConnection, r: &mut Revocations, creds: &ClientCredentials| {
            let client = clients::authenticate(c, creds)?;
            then(c, r, client)
        };
        self.with_credentials_or(creds, peer, endpoint, async |_| None, then)
            .await
    }

    /// Runs `then` with the presented client credentials on one pooled connection; `then` must
    /// authenticate them (through `oauth::clients`) before it decides or reveals anything. Blocked
    /// callers never reach it; an `invalid_client` it returns counts as a failed authentication.
    /// `answered` may answer first, without the pooled connection (from a cache, or through
    /// batched statements); it runs after the block check and must verify the credentials
    /// itself. `None` lets `then` decide; an `invalid_client` from either counts toward the block.
    /// What `then` revokes is announced once it returns.
    pub async fn with_credentials_or<T, A, F>(
        &self,
        creds: ClientCredentials,
        peer: &str,
        endpoint: &'static str,
        answered: A,
        then: F,
    ) -> Result<T, OAuthError>
    where
        T: Send + 'static,
        A: AsyncFnOnce(&ClientCredentials) -> Option<Result<T, OAuthError>>,
        F: FnOnce(
                &mut AnyConnection,
                &mut Revocations,
                &ClientCredentials,
            ) -> Result<T, OAuthError>
            + Send
            + 'static,
    {
        let limiter = &self.platform.rate_limiter;
        let attempt = LoginAttempt::new("client", creds.client_id(), peer);
        if let Decision::Limited { .. } = limiter.login_allowed(&CLIENT_AUTH_LIMITS, &attempt).await
        {
            return Err(OAuthError::AuthenticationBlocked(
                "too many failed authentication attempts; try again in a minute".into(),
            ));
        }
        // A private_key_jwt assertion is proven first (keys, signature, claims, single use);
        // the rest sees proven credentials only.
        let proven = match creds {
            ClientCredentials::Assertion {
                client_id,
                assertion,
            } => self.prove_assertion(client_id, assertion).await,
            other => Ok(other),
        };
        let result = match proven {
            Err(e) => Err(e),
            Ok(creds) => match answered(&creds).await {
                Some(done) => done,
                None => revocation::run(&self.platform, move |c, r| then(c, r, &creds)).await?,
            },
        };
        if let Err(e @ OAuthError::InvalidClient(_)) = &result {
            tracing::info!(endpoint, error = %e, "client authentication failed");
            metrics::counter!("consent_client_auth_failures_total", "endpoint" => endpoint)
                .increment(1);
            limiter.login_failed(&CLIENT_AUTH_LIMITS, &attempt).await;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(id: &str, secret: &str) -> String {
        format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
    }

    /// The id and secret in a Basic header are form-encoded (RFC 6749 section 2.3.1): decoded
    /// whole, `+` as a space, `%XX` as a byte, a literal `&` or `=` kept.
    #[test]
    fn basic_credentials_are_form_decoded_whole() {
        let cases = [
            ("c_demo", "cs_plain", "c_demo", "cs_plain"),
            ("c%3Aid", "a+b%2Bc", "c:id", "a b+c"),
            ("c_demo", "x&y=z", "c_demo", "x&y=z"),
            ("c_demo", "%FF%41", "c_demo", "\u{FFFD}A"),
            ("", "", "", ""),
        ];
        for (id, secret, want_id, want_secret) in cases {
            let creds =
                client_credentials(Some(&basic(id, secret)), &mut HashMap::new(), None).unwrap();
            let ClientCredentials::Basic { client_id, secret } = creds else {
                panic!("{id}:{secret} was not read as Basic credentials");
            };
            assert_eq!(client_id, want_id);
            assert_eq!(secret.expose(), want_secret);
        }
        // No colon, or not base64: refused as a failed authentication.
        for header in [
            format!("Basic {}", STANDARD.encode("nocolon")),
            "Basic %%".into(),
        ] {
            let err = client_credentials(Some(&header), &mut HashMap::new(), None).unwrap_err();
            assert!(matches!(err, OAuthError::InvalidClient(_)), "{err:?}");
        }
    }
}
