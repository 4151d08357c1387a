//! # grants: the capability model and Biscuit tokens of the consent service
//!
//! A customer's consent is a [`Grant`]: a client, a subject and a [`GrantScope`] (accounts,
//! actions, an optional transaction window, optional merchants, an expiry). The authorization
//! server [`mint`]s short-lived Biscuit access tokens from it; holders may [`attenuate`] them
//! offline; resource servers [`Verifier::verify`] them against the published keys
//! ([`BiscuitKeys`], served at `GET /.well-known/biscuit-keys`) and a revocation check, and get
//! back the [`EffectiveScope`] to filter their data with.
//!
//! ## Token vocabulary
//! The authority block carries exactly these facts and checks (names are a public contract):
//! ```text
//! grant("g_..."); client("c_..."); subject("cust_...");
//! right("accounts:read"); ...           account("acc_..."); ...
//! tx_window(<from>, <until>);           // only if the window is limited
//! merchant("m_..."); ...                // only if merchants are limited
//! environment("sandbox");               // only for a sandbox client's grant
//! cnf_jkt("<RFC 7638 thumbprint>");     // only for a DPoP-bound token (see [`dpop`])
//! cnf_x5t("<certificate thumbprint>");  // only for a certificate-bound token (see [`mtls`])
//! check if time($t), $t <= <access token expiry>;
//! check if time($t), $t <= <grant expiry>;
//! ```
//! A grant always lists its accounts; no `merchant` fact means no merchant limit; no
//! `tx_window` means no window limit. The verifier supplies request facts with distinct names:
//! `time`, `operation`, `req_account`, `req_tx_range`, `req_merchant`. Attenuation blocks only
//! add `check if` on those request facts (see [`Attenuation`]), so they can only narrow; facts
//! an attenuation block adds are never trusted by the verifier's policy.
//!
//! Sandbox clients (a developer's test apps: no KYC, only test customers may consent to them)
//! get tokens with `environment("sandbox")`. A production resource server builds its verifier
//! with `.environment(Environment::Production)` and such tokens are refused
//! (`VerifyError::WrongEnvironment`); a verifier written with another Biscuit library adds
//! `reject if environment("sandbox")` to its authorizer. The fact sits in the signed authority
//! block, so a holder can neither remove it nor, by adding one in an attenuation block, change
//! what the verifier reads.
//!
//! ## Effective scope
//! [`Verifier::verify`] decides with one Datalog evaluation of the whole token plus the
//! verifier's rules (the authorizer trusts only the authority block and itself). When the
//! request leaves a dimension open (no account: a listing; no range; no merchant) and an
//! attenuation block mentions that dimension, the token is evaluated once per candidate value
//! (the authority's accounts/merchants, or the literals in the blocks when the grant is
//! unlimited; for the window, the candidate dates found in the blocks) and only values the
//! Datalog allows are reported. Blocks made only of the documented check forms (everything
//! [`Attenuation`] writes, and the DESIGN vocabulary) are decided in one run instead, and the
//! reported scope is exact. For other Datalog the per-candidate scope is an approximation: a
//! check that ties two dimensions together (say, an action allowed only on one account) can make
//! the listing report each dimension's allowed values separately, wider than any single request
//! may use. The decision on a concrete request is always exact: it is one evaluation of that
//! request. Unattenuated tokens need a single evaluation.
//!
//! ## Errors and limits
//! Every refusal is a [`error::VerifyError`]: unknown kid, bad signature, bad encoding,
//! malformed or incomplete authority block, expired, revoked, revocation store unavailable
//! (fail closed), an attenuation block outside the [`Limits`] (`Inadmissible`), an evaluation
//! that could exceed the work budget (`OverLimits`), or [`error::DenyReason`] with the failing
//! check.
//!
//! Anyone holding a token can append a block, so a resource server must bound what a block
//! can cost before evaluating it: biscuit-auth checks its time limit only between fixpoint
//! iterations, so one check joining a few predicates over a few dozen facts can run for
//! seconds, and a check that derives nothing never trips the fact limit. [`Verifier::verify`]
//! therefore
//! 1. refuses attenuation blocks outside the static limits (facts, rules, checks, queries per
//!    check, predicates per body, variables, expression size, closure nesting, string and
//!    collection sizes, recursive rules, foreign functions, `matches` patterns that are not
//!    literals or compile large) with the reason, before any Datalog runs; then
//! 2. charges every Datalog run of the verification, *before* running it, with an upper bound on
//!    the work biscuit-auth's nested-loop evaluation can do for these blocks and this request's
//!    facts, and refuses once the total would pass [`Limits::max_work`].
//!
//! The defaults admit everything [`Attenuation`] writes (up to [`MAX_ACCOUNTS`] accounts and
//! [`MAX_MERCHANTS`] merchants) and what a reasonable hand-written block needs; the worst token
//! they admit costs a few milliseconds (BENCHMARKS.md, `cargo bench -p grants --bench hostile`).
//!
//! ## Golden samples
//! `tests/golden/tokens.json` holds tokens minted with a seeded key and seeded block keys, with
//! their verdicts for a table of requests. After an intended format change, regenerate with
//! `GRANTS_REGENERATE_GOLDEN=1 cargo test -p grants --test integration golden` and review the diff.
//!
//! ## Interoperability
//! Attenuation blocks use only Datalog 3.0 features (sets, `contains`, dates), so biscuit-python,
//! biscuit-wasm and others can read and write them. The integration test `python_interop`
//! attenuates with biscuit-python and checks the verdicts equal this crate's; it skips when
//! `python3 -c "import biscuit_auth"` fails, unless `GRANTS_REQUIRE_PYTHON=1`.
//!
//! ## Walk-through
//! ```
//! use chrono::{Duration, TimeZone, Utc};
//! use grants::{
//!     AccountId, Action, Attenuation, ClientId, Environment, Grant, GrantId, GrantScope, KeySet,
//!     Request, SigningKey, SubjectId, Verifier, error::{DenyReason, VerifyError},
//! };
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let now = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
//! // Authorization server: a signing key (kid 1) and the grant the customer approved.
//! let key = SigningKey::generate(1);
//! let grant = Grant {
//!     id: GrantId::parse("g_42")?,
//!     client: ClientId::parse("c_budgetapp")?,
//!     subject: SubjectId::parse("cust_7f3a")?,
//!     environment: Environment::Production,
//!     scope: GrantScope::new(
//!         vec![AccountId::parse("acc_1")?, AccountId::parse("acc_2")?],
//!         vec![Action::AccountsRead, Action::BalancesRead, Action::TransactionsRead],
//!         None,
//!         None,
//!         now + Duration::days(90),
//!     )?,
//! };
//! let minted = grants::mint(&key, &grant, now + Duration::minutes(10), now)?;
//! // ... and the keys document it publishes.
//! let keys_json = serde_json::to_string(&grants::BiscuitKeys { keys: vec![key.published(None, None)] })?;
//!
//! // Fintech: hand a sub-service a token for balances of acc_1 only.
//! let narrowed = grants::attenuate(
//!     &minted.token,
//!     &Attenuation::new()
//!         .accounts([AccountId::parse("acc_1")?])
//!         .actions([Action::BalancesRead]),
//!     false,
//! )?;
//!
//! // Resource server: verify with the published keys and a revocation check.
//! let verifier = Verifier::new(KeySet::from_json(&keys_json)?, |_: &GrantId, _: &[String]| false);
//! let ok = verifier.verify(
//!     &narrowed,
//!     &Request::new(Action::BalancesRead, now).account(AccountId::parse("acc_1")?),
//! )?;
//! assert_eq!(ok.scope.grant.as_str(), "g_42");
//! assert_eq!(ok.scope.actions, vec![Action::BalancesRead]);
//!
//! let refused = verifier.verify(
//!     &narrowed,
//!     &Request::new(Action::BalancesRead, now).account(AccountId::parse("acc_2")?),
//! );
//! assert!(matches!(refused, Err(VerifyError::Denied(DenyReason::Attenuation { .. }))));
//!
//! // A listing reports only the accounts the attenuation left.
//! let listing = verifier.verify_listing(&narrowed, Action::BalancesRead, now)?;
//! assert_eq!(listing.scope.accounts, vec![AccountId::parse("acc_1")?]);
//! # Ok(())
//! # }
//! ```
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::todo)
)]

mod action;
mod admission;
mod attenuate;
mod authority;
pub mod dpop;
pub mod error;
mod ids;
pub mod jws;
mod keys;
mod mint;
pub mod mtls;
mod scope;
pub mod staff;
mod time;
mod verify;
mod vocab;

pub use action::{Action, OtherAction};
pub use admission::Limits;
pub use attenuate::{Attenuation, attenuate, attenuate_with_rng};
pub use ids::{AccountId, ClientId, GrantId, MAX_ID_LEN, MerchantId, SubjectId};
pub use keys::{
    BiscuitKeys, KeyAlgorithm, KeyProvider, KeySet, PublicKey, PublishedKey, SigningKey,
};
pub use mint::{
    Confirmation, Environment, Grant, MintedToken, mint, mint_bound, mint_confirmed, mint_with_rng,
};
pub use scope::{GrantScope, MAX_ACCOUNTS, MAX_ACTIONS, MAX_MERCHANTS};
pub use time::{TxWindow, format_timestamp, parse_timestamp};
pub use verify::{
    Authorization, CacheStats, DecodeCache, EffectiveScope, GrantSummary, NoRevocationCheck,
    PendingDpop, Request, RevocationCheck, TokenInfo, Verifier, inspect,
};
