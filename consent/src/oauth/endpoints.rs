//! What the token, revocation and introspection endpoints do, as plain Rust over the OAuth
//! service (no HTTP types): the choice between the batched path (PostgreSQL, the plain cases)
//! and the transactional one, reuse of introspection answers, verification of attenuated
//! tokens on the verification pool. Client authentication and its throttling wrap every call
//! ([`super::client_auth`]). The handlers in `routes::oauth` parse the form, call these and
//! render the answer.

use std::collections::HashMap;

use ::grants::dpop::CheckedProof;
use chrono::{DateTime, Utc};
use platform::crypto::PlainToken;
use platform::revocation;

use super::OAuthService;
use super::answers::Answer;
use super::clients::{self, ClientCredentials};
use super::error::OAuthError;
use super::tokens::batched::{self, Batched};
use super::tokens::{self, Introspected, TokenResponse};
use crate::revocation_list::RevocationList;

/// A token request's grant, read from the form.
#[derive(Debug, Clone)]
pub enum TokenGrant {
    AuthorizationCode {
        code: Option<String>,
        redirect_uri: Option<String>,
        code_verifier: Option<String>,
    },
    RefreshToken {
        refresh_token: Option<String>,
    },
    /// A token for the SSF API (`crate::ssf::access`), not a grant's.
    ClientCredentials {
        scope: Option<String>,
    },
    /// Missing (empty) or unsupported `grant_type`.
    Other(String),
}

impl TokenGrant {
    /// Takes the grant's fields out of the form (client credentials stay for authentication).
    pub fn from_form(form: &mut HashMap<String, String>) -> Self {
        match form.get("grant_type").map(String::as_str).unwrap_or("") {
            "authorization_code" => TokenGrant::AuthorizationCode {
                code: form.remove("code"),
                redirect_uri: form.remove("redirect_uri"),
                code_verifier: form.remove("code_verifier"),
            },
            "refresh_token" => TokenGrant::RefreshToken {
                refresh_token: form.remove("refresh_token"),
            },
            "client_credentials" => TokenGrant::ClientCredentials {
                scope: form.remove("scope"),
            },
            other => TokenGrant::Other(other.to_string()),
        }
    }

    /// The `grant_type` label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            TokenGrant::AuthorizationCode { .. } => "authorization_code",
            TokenGrant::RefreshToken { .. } => "refresh_token",
            TokenGrant::ClientCredentials { .. } => "client_credentials",
            TokenGrant::Other(_) => "other",
        }
    }
}

impl OAuthService {
    /// `POST /oauth2/token`. `proof` is the request's DPoP proof, checked for this endpoint; its
    /// single use is recorded once the client has authenticated (strangers' proofs are never
    /// stored), and the tokens are bound to its key. `certificate` is the thumbprint of the
    /// request's TLS client certificate: a certificate-bound client's tokens are bound to it.
    pub async fn token(
        &self,
        creds: ClientCredentials,
        peer: &str,
        grant: TokenGrant,
        proof: Option<CheckedProof>,
        certificate: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<TokenResponse, OAuthError> {
        let svc = self.clone();
        match grant {
            TokenGrant::AuthorizationCode {
                code,
                redirect_uri,
                code_verifier,
            } => {
                let (creds, proven_jkt) = self.pre_authenticated(creds, peer, proof, now).await?;
                let (fast_code, fast_svc) = (code.clone(), svc.clone());
                let (fast_redirect, fast_verifier, fast_jkt, fast_cert) = (
                    redirect_uri.clone(),
                    code_verifier.clone(),
                    proven_jkt.clone(),
                    certificate.clone(),
                );
                // The batched path first (PostgreSQL): the plain exchange; the rest below.
                let answered = async move |creds: &ClientCredentials| {
                    let (Some(batch), Some(code)) = (&fast_svc.batches, &fast_code) else {
                        return None;
                    };
                    let exchange = tokens::CodeExchange {
                        code,
                        redirect_uri: fast_redirect.as_deref(),
                        code_verifier: fast_verifier.as_deref(),
                        proven_jkt: fast_jkt.as_deref(),
                        certificate: fast_cert.as_deref(),
                    };
                    batched::exchange(&fast_svc, batch, creds, exchange, now).await
                };
                self.with_credentials_or(creds, peer, "token", answered, move |c, r, creds| {
                    let client = clients::authenticate(c, creds)?;
                    let code =
                        code.ok_or_else(|| OAuthError::InvalidRequest("code is required".into()))?;
                    tokens::exchange_code(
                        c,
                        r,
                        &svc,
                        &client,
                        tokens::CodeExchange {
                            code: &code,
                            redirect_uri: redirect_uri.as_deref(),
                            code_verifier: code_verifier.as_deref(),
                            proven_jkt: proven_jkt.as_deref(),
                            certificate: certificate.as_deref(),
                        },
                        now,
                    )
                })
                .await
            }
            TokenGrant::RefreshToken { refresh_token } => {
                let proven_jkt = proof.as_ref().map(|p| p.jkt().to_string());
                let (fast_svc, fast_rt) = (svc.clone(), refresh_token.clone());
                // The batched path first (PostgreSQL). A proof's use is recorded there once the
                // client has authenticated; when the request leaves it before that, here, after
                // authenticating the client, before the transactional path issues anything.
                let answered = async move |creds: &ClientCredentials| {
                    if let (Some(batch), Some(rt)) = (&fast_svc.batches, &fast_rt) {
                        match batched::refresh(&fast_svc, batch, creds, rt, proof.as_ref(), now)
                            .await
                        {
                            Batched::Answered(result) => return Some(result),
                            Batched::Declined {
                                proof_recorded: true,
                            } => return None,
                            Batched::Declined {
                                proof_recorded: false,
                            } => {}
                        }
                    }
                    let proof = proof?;
                    let known = creds.clone();
                    let authenticated = fast_svc
                        .platform
                        .db
                        .run(move |c| Ok(clients::authenticate(c, &known)))
                        .await;
                    match authenticated {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Some(Err(e)),
                        Err(e) => return Some(Err(e.into())),
                    }
                    fast_svc.record_proof(proof, now).await.err().map(Err)
                };
                self.with_credentials_or(creds, peer, "token", answered, move |c, r, creds| {
                    let Some(rt) = refresh_token else {
                        clients::authenticate(c, creds)?;
                        return Err(OAuthError::InvalidRequest(
                            "refresh_token is required".into(),
                        ));
                    };
                    let proven = ::grants::Confirmation {
                        jkt: proven_jkt.as_deref(),
                        x5t: certificate.as_deref(),
                    };
                    tokens::refresh(c, r, &svc, creds, &rt, proven, now)
                })
                .await
            }
            TokenGrant::ClientCredentials { .. } => {
                // Its answer is not a grant's tokens: `crate::ssf::access::issue` serves it.
                self.authenticate(creds, peer, "token").await?;
                Err(OAuthError::UnsupportedGrantType(
                    "client_credentials is answered by the token endpoint's SSF path".into(),
                ))
            }
            TokenGrant::Other(other) => {
                // Authenticate first, so an unauthenticated caller learns nothing about the
                // request.
                self.authenticate(creds, peer, "token").await?;
                Err(if other.is_empty() {
                    OAuthError::InvalidRequest("grant_type is required".into())
                } else {
                    OAuthError::UnsupportedGrantType(format!(
                        "grant_type {other:?} is not supported"
                    ))
                })
            }
        }
    }

    /// For a DPoP code exchange: authenticates the client (one indexed read) and records the
    /// proof's use before anything is issued, so strangers' proofs are never stored. An
    /// assertion is single use: the credentials come back proven for the second pass.
    async fn pre_authenticated(
        &self,
        creds: ClientCredentials,
        peer: &str,
        proof: Option<CheckedProof>,
        now: DateTime<Utc>,
    ) -> Result<(ClientCredentials, Option<String>), OAuthError> {
        let Some(proof) = proof else {
            return Ok((creds, None));
        };
        let client = self.authenticate(creds.clone(), peer, "token").await?;
        let jkt = self.record_proof(proof, now).await?;
        let creds = match creds {
            ClientCredentials::Assertion { .. } => ClientCredentials::Proven(clients::Proven {
                client_id: client.id,
            }),
            other => other,
        };
        Ok((creds, Some(jkt)))
    }

    /// `POST /oauth2/revoke` (RFC 7009).
    pub async fn revoke(
        &self,
        creds: ClientCredentials,
        peer: &str,
        token: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<(), OAuthError> {
        let client = self.authenticate(creds, peer, "revoke").await?;
        let token = token.ok_or_else(|| OAuthError::InvalidRequest("token is required".into()))?;
        // An access token is verified on the verification pool, before any connection is taken.
        let verified = tokens::verify_offline(self, &token, now).await?;
        revocation::run(&self.platform, move |c, r| {
            tokens::revoke(c, r, &client, &token, verified, now)
        })
        .await?
    }

    /// `POST /oauth2/introspect` (RFC 7662). Recent active answers for the same token may be
    /// reused (see `oauth::answers`), checked against this instance's revocation `list`.
    pub async fn introspect(
        &self,
        creds: ClientCredentials,
        peer: &str,
        token: Option<String>,
        list: &RevocationList,
        now: DateTime<Utc>,
    ) -> Result<Answer, OAuthError> {
        let svc = self.clone();
        let answers = self.answers.clone();
        let key = token
            .as_deref()
            .filter(|_| answers.enabled())
            .map(|t| PlainToken::from_presented(t).hash().into_string());
        let read = (answers.epoch(), std::time::Instant::now());
        let db_svc = svc.clone();
        let db_token = token.clone();
        let found = self
            .with_credentials_or(
                creds,
                peer,
                "introspect",
                async |creds| {
                    if let Some(key) = key.as_deref()
                        && let Some(a) = answers.get(key, creds, now, list)
                    {
                        return Some(Ok(Introspected::Reused(a)));
                    }
                    let (Some(batch), Some(token)) = (&self.batches, &token) else {
                        return None;
                    };
                    tokens::batched::introspect(self, batch, creds, token, now)
                        .await
                        .map(|r| r.map(|answer| Introspected::Answer(Box::new(answer))))
                },
                move |c, _, creds| {
                    let Some(token) = db_token else {
                        clients::authenticate(c, creds)?;
                        return Err(OAuthError::InvalidRequest("token is required".into()));
                    };
                    tokens::introspect(c, &db_svc, creds, &token, now)
                },
            )
            .await?;
        let (result, basis) = match found {
            Introspected::Reused(answer) => return Ok(answer),
            Introspected::Answer(answer) => *answer,
            Introspected::Unverified(client) => {
                // Attenuated tokens: verified on the verification pool, off the connection.
                let token = token.unwrap_or_default();
                let verified = tokens::verify_offline(&svc, &token, now).await?;
                self.platform
                    .db
                    .run(move |c| Ok(tokens::introspect_verified(c, &svc, *client, verified, now)))
                    .await??
            }
        };
        let result = Answer::new(result);
        if let (Some(key), Some(basis)) = (key, basis) {
            answers.put(key, result.clone(), basis, read);
        }
        Ok(result)
    }
}
