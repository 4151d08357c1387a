//! Verification for resource servers: signature, revocation, Datalog authorization and the
//! effective scope to filter data with.
//!
//! - this file: the public API ([`Request`], [`Verifier`], [`Authorization`], [`EffectiveScope`])
//!   and the order of the steps of [`Verifier::verify`];
//! - `revocation`: the [`RevocationCheck`] a verifier consults;
//! - `eval`: one Datalog run of the whole token with the verifier's request facts and rules,
//!   charged against the work budget before it runs;
//! - `resolve`: deciding the request and computing the effective scope, in one run for the
//!   documented check forms or one run per candidate value otherwise;
//! - `inspect`: reading a token without verifying it.

mod cache;
mod eval;
mod inspect;
mod resolve;
mod revocation;

use std::cell::Cell;
use std::sync::Arc;

use biscuit_auth::error::{Format, Token};
use biscuit_auth::{Biscuit, BlockBuilder};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::admission::{self, Limits, Program};
use crate::authority::{Authority, Hints, parse_authority};
use crate::dpop::{ProofContext, ReplayStore};
use crate::error::{DenyReason, VerifyError};
use crate::keys::{KeyProvider, PublicKey};
use crate::time::TxWindow;
use crate::{AccountId, Action, ClientId, Environment, GrantId, MerchantId, SubjectId};

use cache::{BlocksRefused, Decoded};
pub use cache::{CacheStats, DecodeCache};
use eval::Evaluation;
pub use inspect::{GrantSummary, TokenInfo, inspect};
use revocation::hex_ids;
pub use revocation::{NoRevocationCheck, RevocationCheck};

/// What a resource server is about to do, on whose behalf, and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The action (`operation` fact).
    pub operation: Action,
    /// The account concerned; `None` for listings (the allowed accounts are returned).
    pub account: Option<AccountId>,
    /// The transaction date range asked for; `None` = "whatever the token allows" (the
    /// effective window is returned for filtering).
    pub tx_range: Option<TxWindow>,
    /// The merchant asked for; `None` = "whatever the token allows".
    pub merchant: Option<MerchantId>,
    /// The verifier's clock.
    pub now: DateTime<Utc>,
    /// The thumbprint ([`crate::mtls::certificate_thumbprint`]) of the TLS client certificate
    /// the request's connection presented, if any: a certificate-bound token (`cnf_x5t`) verifies
    /// only with the same one.
    pub client_certificate: Option<String>,
}

impl Request {
    /// A request for `operation` at `now`, not yet narrowed to an account, range or merchant.
    pub fn new(operation: Action, now: DateTime<Utc>) -> Self {
        Self {
            operation,
            account: None,
            tx_range: None,
            merchant: None,
            now,
            client_certificate: None,
        }
    }
    /// About this account.
    pub fn account(mut self, account: AccountId) -> Self {
        self.account = Some(account);
        self
    }
    /// For transactions in this range.
    pub fn tx_range(mut self, range: TxWindow) -> Self {
        self.tx_range = Some(range);
        self
    }
    /// For this merchant.
    pub fn merchant(mut self, merchant: MerchantId) -> Self {
        self.merchant = Some(merchant);
        self
    }
    /// Over a TLS connection that presented the certificate with this thumbprint (mTLS).
    pub fn client_certificate(mut self, thumbprint: impl Into<String>) -> Self {
        self.client_certificate = Some(thumbprint.into());
        self
    }
}

/// What the token allows for the request: the resource server filters its data with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EffectiveScope {
    /// The grant the token was minted for.
    pub grant: GrantId,
    /// The client.
    pub client: ClientId,
    /// The customer.
    pub subject: SubjectId,
    /// Accounts allowed: the request's account, or for a listing every granted account that
    /// the attenuation blocks still allow.
    pub accounts: Vec<AccountId>,
    /// Actions the token still allows on these accounts.
    pub actions: Vec<Action>,
    /// Transaction dates allowed (`None` = no limit): the request's range if it gave one.
    pub window: Option<TxWindow>,
    /// Merchants allowed (`None` = no limit): the request's merchant if it gave one.
    pub merchants: Option<Vec<MerchantId>>,
    /// When the token stops working (the earliest of token, grant and attenuated expiry).
    #[serde(serialize_with = "crate::time::serialize_ts")]
    pub expires_at: DateTime<Utc>,
}

/// A successful verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorization {
    /// What the token allows for this request.
    pub scope: EffectiveScope,
    /// The key id that verified the signature.
    pub kid: u32,
    /// Number of blocks (1 = not attenuated).
    pub blocks: usize,
    /// Revocation ids (hex), one per block.
    pub revocation_ids: Vec<String>,
    /// Work units the verification was charged (see [`Limits::max_work`]).
    pub work: u64,
    /// The environment of the client the grant was given to (`environment` fact).
    pub environment: Environment,
    /// The DPoP key thumbprint the token is bound to (`cnf_jkt` fact), proven by the request.
    pub cnf_jkt: Option<String>,
    /// The TLS client certificate thumbprint the token is bound to (`cnf_x5t` fact), presented
    /// by the request's connection.
    pub cnf_x5t: Option<String>,
    /// `scope` is exactly what the token allows for the dimensions the request left open: its
    /// attenuation blocks (if any) use only the documented check forms, as [`Attenuation`]
    /// writes them (the flag errs on the side of `false`). Other Datalog is
    /// resolved one open dimension at a time, and `scope` may then be wider than any single
    /// request can use (see the crate documentation); the decision itself is always exact.
    pub exact: bool,
}

/// Verifies tokens against a key provider and a revocation check, within [`Limits`].
#[derive(Clone, Debug)]
pub struct Verifier<K, R> {
    keys: K,
    revocation: R,
    limits: Limits,
    environment: Option<Environment>,
    cache: Option<DecodeCache>,
}

impl<K: KeyProvider, R: RevocationCheck> Verifier<K, R> {
    /// A verifier with default [`Limits`].
    pub fn new(keys: K, revocation: R) -> Self {
        Self {
            keys,
            revocation,
            limits: Limits::default(),
            environment: None,
            cache: None,
        }
    }

    /// Accepts only tokens of grants given to `environment`'s clients. A production resource
    /// server sets [`Environment::Production`]: sandbox clients need no KYC and may only be used
    /// by test customers, and their tokens (`environment("sandbox")`) are refused. Unset, tokens
    /// of both are accepted (a sandbox API that also serves production apps' tests).
    pub fn environment(mut self, environment: Environment) -> Self {
        self.environment = Some(environment);
        self
    }

    /// Replaces the limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The key provider.
    pub fn keys(&self) -> &K {
        &self.keys
    }

    /// Shares `cache` of decoded tokens with this verifier (see [`DecodeCache`]): a token seen
    /// before skips its signature checks and block parsing; everything that depends on the
    /// request or the time is still checked every time. Servers that build a verifier per
    /// request keep one cache for the process and pass it to each.
    pub fn with_cache(mut self, cache: DecodeCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The token decoded: from the cache when it has seen these bytes under these limits and
    /// the key that verified them still verifies tokens at `now`, otherwise afresh.
    fn decoded(&self, token: &str, now: DateTime<Utc>) -> Result<Arc<Decoded>, VerifyError> {
        let token = token.trim();
        if token.len() > self.limits.max_token_len {
            return Err(VerifyError::TooLarge {
                max: self.limits.max_token_len,
            });
        }
        let key = self.cache.as_ref().map(|_| DecodeCache::key(token));
        if let (Some(cache), Some(key)) = (&self.cache, &key)
            && let Some(found) = cache.get(key, &self.limits)
        {
            match self.keys.public_key(found.kid, now) {
                Some(root) if root == found.root => return Ok(found),
                // Another key under the same id: verify afresh.
                Some(_) => {}
                None => return Err(VerifyError::UnknownKid(found.kid)),
            }
        }
        let (parsed, kid, root) = self.decode(token, now)?;
        let source = |i: usize| {
            parsed
                .print_block_source(i)
                .map_err(|e| VerifyError::Malformed(e.to_string()))
        };
        let authority = parse_authority(&source(0)?).map_err(VerifyError::InvalidAuthority)?;
        let admitted = self.admit(&parsed, &authority);
        let decoded = Arc::new(Decoded {
            revocation_ids: hex_ids(&parsed.revocation_identifiers()),
            token: parsed,
            kid,
            root,
            authority,
            admitted,
            limits: self.limits.clone(),
        });
        if let (Some(cache), Some(key)) = (&self.cache, key) {
            cache.put(key, token.len(), decoded.clone());
        }
        Ok(decoded)
    }

    /// Reads the attenuation blocks and admits them before anything else looks at them.
    fn admit(
        &self,
        token: &Biscuit,
        authority: &Authority,
    ) -> Result<(Hints, Program), BlocksRefused> {
        let mut blocks = Vec::with_capacity(token.block_count().saturating_sub(1));
        for i in 1..token.block_count() {
            let source = token
                .print_block_source(i)
                .map_err(|e| BlocksRefused::Unreadable(e.to_string()))?;
            blocks.push(
                BlockBuilder::new()
                    .code(&source)
                    .map_err(|e| BlocksRefused::Unreadable(format!("unreadable block {i}: {e}")))?,
            );
        }
        let (program, mentions) = admission::admit(&blocks, authority.elements(), &self.limits)
            .map_err(BlocksRefused::Inadmissible)?;
        Ok((Hints::new(blocks, mentions), program))
    }

    /// Decodes and checks the signature with the key chosen by the token's kid; returns the
    /// token, the kid and the key that verified it.
    fn decode(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<(Biscuit, u32, PublicKey), VerifyError> {
        let key_error: Cell<Option<VerifyError>> = Cell::new(None);
        let used: Cell<Option<(u32, PublicKey)>> = Cell::new(None);
        let provider = |kid: Option<u32>| -> Result<biscuit_auth::PublicKey, Format> {
            let Some(kid) = kid else {
                key_error.set(Some(VerifyError::MissingKid));
                return Err(Format::UnknownPublicKey);
            };
            match self.keys.public_key(kid, now) {
                Some(key) => {
                    used.set(Some((kid, key)));
                    Ok(key.0)
                }
                None => {
                    key_error.set(Some(VerifyError::UnknownKid(kid)));
                    Err(Format::UnknownPublicKey)
                }
            }
        };
        let parsed = Biscuit::from_base64(token, provider).map_err(|e| match e {
            Token::Base64(_) => VerifyError::BadEncoding,
            Token::Format(Format::UnknownPublicKey) => key_error
                .take()
                .unwrap_or(VerifyError::Malformed("unknown public key".into())),
            Token::Format(Format::Signature(_) | Format::SealedSignature) => {
                VerifyError::BadSignature
            }
            other => VerifyError::Malformed(other.to_string()),
        })?;
        if parsed.block_count() > self.limits.max_blocks {
            return Err(VerifyError::TooManyBlocks {
                count: parsed.block_count(),
                max: self.limits.max_blocks,
            });
        }
        let (kid, root) = used
            .take()
            .ok_or_else(|| VerifyError::Malformed("no root key was asked for".into()))?;
        Ok((parsed, kid, root))
    }

    /// Verifies `token` for `request`. `Ok` means allowed, with the scope to filter data by;
    /// every `Err` means refuse. A token bound to a DPoP key is refused here
    /// ([`VerifyError::ProofRequired`]): use [`Verifier::verify_dpop`].
    pub fn verify(&self, token: &str, request: &Request) -> Result<Authorization, VerifyError> {
        self.verify_bound(token, request, Binding::Bearer)
    }

    /// Every check of [`Verifier::verify`] except the DPoP binding, which is reported instead
    /// (`Authorization::cnf_jkt`): for the authorization server that minted the token, answering
    /// introspection (RFC 7662 `cnf`, which the resource server enforces) or revoking. A resource
    /// server serving a request never calls this.
    pub fn verify_reporting_binding(
        &self,
        token: &str,
        request: &Request,
    ) -> Result<Authorization, VerifyError> {
        self.verify_bound(token, request, Binding::Reported)
    }

    /// Verifies a token presented with a DPoP proof (`Authorization: DPoP <token>` and
    /// `DPoP: <proof>`): the proof must verify for `ctx` (method, URL, time) and name this token,
    /// its `jti` must be new to `replay`, and the token must be bound (`cnf_jkt`) to the key
    /// that signed it. An unbound token presented this way is refused too.
    pub fn verify_dpop(
        &self,
        token: &str,
        request: &Request,
        proof: &str,
        ctx: ProofContext<'_>,
        replay: &dyn ReplayStore,
    ) -> Result<Authorization, VerifyError> {
        let now = ctx.now;
        self.verify_dpop_pending(token, request, proof, ctx)?
            .record(replay, now)
    }

    /// [`Verifier::verify_dpop`] for servers whose replay store is asynchronous (Redis): every
    /// check but single use, which the caller records with [`PendingDpop::replay_entry`] before
    /// [`PendingDpop::accept`] gives the authorization. The `jti` is due for recording only for a
    /// proof that opened its token: anyone can sign proofs with a key of their own, and recording
    /// those would let them fill the store.
    pub fn verify_dpop_pending(
        &self,
        token: &str,
        request: &Request,
        proof: &str,
        ctx: ProofContext<'_>,
    ) -> Result<PendingDpop, VerifyError> {
        let token = token.trim();
        let ctx = ctx.for_token(token);
        let proof = crate::dpop::check_proof(proof, &ctx)?;
        let authorization = self.verify_bound(token, request, Binding::Proven(proof.jkt()))?;
        Ok(PendingDpop {
            authorization,
            proof,
        })
    }

    fn verify_bound(
        &self,
        token: &str,
        request: &Request,
        binding: Binding<'_>,
    ) -> Result<Authorization, VerifyError> {
        let now = request.now;
        let decoded = self.decoded(token, now)?;
        let authority = &decoded.authority;
        match (authority.cnf_jkt.as_deref(), binding) {
            (_, Binding::Reported) | (None, Binding::Bearer) => {}
            (Some(_), Binding::Bearer) => return Err(VerifyError::ProofRequired),
            (Some(bound), Binding::Proven(proven)) if bound == proven => {}
            (Some(_), Binding::Proven(_)) => {
                return Err(crate::dpop::DpopError::KeyMismatch.into());
            }
            (None, Binding::Proven(_)) => return Err(VerifyError::NotBound),
        }
        // The certificate binding is independent of the DPoP one: both, when a token has both.
        if !matches!(binding, Binding::Reported)
            && let Some(bound) = authority.cnf_x5t.as_deref()
        {
            match request.client_certificate.as_deref() {
                None => return Err(VerifyError::CertificateRequired),
                Some(presented) if presented == bound => {}
                Some(_) => return Err(VerifyError::CertificateMismatch),
            }
        }
        if let Some(expected) = self.environment
            && authority.environment != expected
        {
            return Err(VerifyError::WrongEnvironment {
                token: authority.environment,
                expected,
            });
        }
        let (hints, program) = decoded.admitted.as_ref().map_err(BlocksRefused::error)?;
        if now > authority.expires_at {
            return Err(VerifyError::Expired);
        }
        let revocation_ids = decoded.revocation_ids.clone();
        match self
            .revocation
            .is_revoked(&authority.grant, &revocation_ids)
        {
            Ok(false) => {}
            Ok(true) => return Err(VerifyError::Revoked),
            Err(e) => return Err(VerifyError::RevocationUnavailable(e.0)),
        }
        precheck(authority, request)?;

        let mut eval = Evaluation {
            token: &decoded.token,
            authority,
            limits: &self.limits,
            program,
            runs: 0,
            work: 0,
        };
        let exact = !hints.any() || {
            let literals = hints.literals();
            literals.simple.is_some() && literals.simple_expiry.is_some()
        };
        let scope = resolve::resolve(&mut eval, authority, hints, request)?;
        Ok(Authorization {
            exact,
            scope,
            kid: decoded.kid,
            blocks: decoded.token.block_count(),
            revocation_ids,
            work: eval.work,
            environment: authority.environment,
            cnf_jkt: authority.cnf_jkt.clone(),
            cnf_x5t: authority.cnf_x5t.clone(),
        })
    }

    /// Verifies `token` for a listing (no account named) and returns the accounts the
    /// resource server may list, in `scope.accounts` (never empty on success).
    pub fn verify_listing(
        &self,
        token: &str,
        operation: Action,
        now: DateTime<Utc>,
    ) -> Result<Authorization, VerifyError> {
        self.verify(token, &Request::new(operation, now))
    }
}

/// Authority-level checks in Rust, for precise reasons (the Datalog repeats them).
fn precheck(authority: &Authority, request: &Request) -> Result<(), DenyReason> {
    if !authority.rights.contains(&request.operation) {
        return Err(DenyReason::ActionNotGranted(request.operation.to_string()));
    }
    if let Some(a) = &request.account
        && !authority.accounts.contains(a)
    {
        return Err(DenyReason::AccountNotGranted(a.to_string()));
    }
    if let (Some(r), Some(w)) = (&request.tx_range, &authority.window)
        && !w.contains_window(r)
    {
        return Err(DenyReason::OutsideWindow {
            from: crate::time::format_timestamp(r.from()),
            until: crate::time::format_timestamp(r.until()),
        });
    }
    if let Some(m) = &request.merchant
        && !authority.merchants.is_empty()
        && !authority.merchants.contains(m)
    {
        return Err(DenyReason::MerchantNotGranted(m.to_string()));
    }
    Ok(())
}

/// What a verification demands of a token's DPoP binding (`cnf_jkt`).
#[derive(Debug, Clone, Copy)]
enum Binding<'a> {
    /// Presented as a bearer token: a bound token is refused.
    Bearer,
    /// Presented with a proof from this key: the token must be bound to it.
    Proven(&'a str),
    /// Not enforced, only reported (the authorization server's own introspection).
    Reported,
}

/// A DPoP-presented token that verified, waiting for its proof's single use to be recorded (see
/// [`Verifier::verify_dpop_pending`]).
#[derive(Debug)]
#[must_use = "the authorization is given only once the proof's jti is recorded"]
pub struct PendingDpop {
    authorization: Authorization,
    proof: crate::dpop::CheckedProof,
}

impl PendingDpop {
    /// What to record, and until when (see [`crate::dpop::CheckedProof::replay_entry`]).
    pub fn replay_entry(&self) -> (&str, DateTime<Utc>) {
        self.proof.replay_entry()
    }

    /// The authorization, given whether recording [`Self::replay_entry`] found the proof new.
    pub fn accept(self, first_use: bool) -> Result<Authorization, VerifyError> {
        self.proof.recorded(first_use)?;
        Ok(self.authorization)
    }

    /// Records the use in a synchronous store at the verifier's clock `now`.
    pub fn record(
        self,
        replay: &dyn ReplayStore,
        now: DateTime<Utc>,
    ) -> Result<Authorization, VerifyError> {
        self.proof.record(replay, now)?;
        Ok(self.authorization)
    }
}
