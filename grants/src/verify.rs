//! Verification for resource servers: signature, revocation, Datalog authorization and the
//! effective scope to filter data with.

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::Duration;

use biscuit_auth::builder::{Check, Fact, Policy, Term};
use biscuit_auth::error::{FailedCheck, Format, Logic, RunLimit, Token};
use biscuit_auth::{AuthorizerBuilder, AuthorizerLimits, Biscuit, BlockBuilder};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::admission::{self, OwnQuery, Program, RunFactCounts};
use crate::authority::{Authority, Hints, Narrowing, parse_authority};
use crate::error::{DenyReason, RevocationLookupError, VerifyError};
use crate::keys::KeyProvider;
use crate::time::{MAX_SECS, TxWindow, from_secs, to_secs};
use crate::vocab;
use crate::{AccountId, Action, ClientId, GrantId, MerchantId, SubjectId};

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
}

/// Answers "is this grant or token revoked?". Errors fail closed.
pub trait RevocationCheck {
    /// `revocation_ids` are the token's, hex, one per block.
    fn is_revoked(
        &self,
        grant: &GrantId,
        revocation_ids: &[String],
    ) -> Result<bool, RevocationLookupError>;
}

impl<F> RevocationCheck for F
where
    F: Fn(&GrantId, &[String]) -> bool,
{
    fn is_revoked(
        &self,
        grant: &GrantId,
        revocation_ids: &[String],
    ) -> Result<bool, RevocationLookupError> {
        Ok(self(grant, revocation_ids))
    }
}

/// Treats nothing as revoked. Only for offline tooling and tests: a resource server must
/// consult the revocation feed.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoRevocationCheck;

impl RevocationCheck for NoRevocationCheck {
    fn is_revoked(&self, _: &GrantId, _: &[String]) -> Result<bool, RevocationLookupError> {
        Ok(false)
    }
}

/// Bounds on the work one verification may do. The static limits apply to attenuation blocks
/// (the authority block is the server's own) and are checked before any Datalog runs; the work
/// limit bounds the whole verification, every Datalog run of it charged in advance (see the
/// crate documentation, "Errors and limits"). The defaults admit everything [`crate::Attenuation`]
/// writes and what a reasonable biscuit-python or biscuit-wasm user writes by hand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted token (base64 characters).
    pub max_token_len: usize,
    /// Most blocks (authority included).
    pub max_blocks: usize,
    /// Most facts in one attenuation block.
    pub max_block_facts: usize,
    /// Most rules in one attenuation block (rules must not be recursive).
    pub max_block_rules: usize,
    /// Most checks in one attenuation block.
    pub max_block_checks: usize,
    /// Most alternative queries (`or`) in one check.
    pub max_check_queries: usize,
    /// Most predicates in one rule or check body (the join width).
    pub max_body_predicates: usize,
    /// Most distinct variables in one rule or check.
    pub max_rule_variables: usize,
    /// Most expression operations in one rule or check.
    pub max_expression_ops: usize,
    /// Deepest nesting of closures (`.all($x -> ...)`, `.any(...)`).
    pub max_closure_depth: usize,
    /// Longest string or byte array literal (bytes).
    pub max_string_len: usize,
    /// Most elements of one set, array or map literal.
    pub max_collection_len: usize,
    /// Most work units one verification may do, summed over its Datalog runs and charged
    /// before each run from the blocks' shape (about 8 units per fact visited while matching a
    /// rule body; see the crate documentation).
    pub max_work: u64,
    /// Datalog: most facts per run.
    pub max_facts: u64,
    /// Datalog: most rule iterations per run.
    pub max_iterations: u64,
    /// Datalog: longest run.
    pub max_time: Duration,
    /// Most Datalog runs per verification (effective-scope evaluation runs one per candidate).
    pub max_runs: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_token_len: 16 * 1024,
            max_blocks: 8,
            max_block_facts: 64,
            max_block_rules: 16,
            max_block_checks: 32,
            max_check_queries: 8,
            max_body_predicates: 4,
            max_rule_variables: 8,
            max_expression_ops: 64,
            max_closure_depth: 1,
            max_string_len: 256,
            max_collection_len: 256,
            max_work: DEFAULT_MAX_WORK,
            max_facts: 1_000,
            max_iterations: 100,
            // The work limit bounds the work deterministically; the wall-clock limit is a
            // backstop. It is generous because a preempted thread on a loaded machine can take
            // milliseconds for a run that normally needs ~20 µs (seen at 5 ms in benches).
            max_time: Duration::from_millis(20),
            max_runs: 256,
        }
    }
}

/// See [`Limits::max_work`].
const DEFAULT_MAX_WORK: u64 = 1_000_000;

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
}

/// Verifies tokens against a key provider and a revocation check, within [`Limits`].
#[derive(Clone, Debug)]
pub struct Verifier<K, R> {
    keys: K,
    revocation: R,
    limits: Limits,
}

/// Request facts for one Datalog run. Several values in a dimension mean "any of them".
#[derive(Clone, Debug, Default)]
struct RunFacts {
    time: u64,
    operation: String,
    accounts: Vec<String>,
    ranges: Vec<(u64, u64)>,
    merchants: Vec<String>,
}

enum Outcome {
    Allowed,
    Denied(DenyReason),
}

struct Evaluation<'a> {
    token: &'a Biscuit,
    authority: &'a Authority,
    limits: &'a Limits,
    program: &'a Program,
    runs: usize,
    /// Work units charged so far (see [`Limits::max_work`]).
    work: u64,
}

/// The verifier's own queries, as admission charges them: the authority block's two expiry
/// checks, the account, window and merchant checks and the allow policy.
const OWN_QUERIES: &[OwnQuery] = &[
    OwnQuery {
        body: &[vocab::TIME],
    },
    OwnQuery {
        body: &[vocab::TIME],
    },
    OwnQuery {
        body: &[vocab::REQ_ACCOUNT, vocab::ACCOUNT],
    },
    OwnQuery {
        body: &[vocab::REQ_TX_RANGE, vocab::TX_WINDOW],
    },
    OwnQuery {
        body: &[vocab::REQ_MERCHANT, vocab::MERCHANT],
    },
    OwnQuery {
        body: &[
            vocab::GRANT,
            vocab::CLIENT,
            vocab::SUBJECT,
            vocab::OPERATION,
            vocab::RIGHT,
        ],
    },
];

impl Evaluation<'_> {
    /// Facts by name that a run with request facts `f` holds besides the attenuation blocks.
    fn fact_counts(&self, f: &RunFacts) -> RunFactCounts {
        let a = self.authority;
        let n = |len: usize| len as u64;
        RunFactCounts(std::collections::HashMap::from([
            (vocab::GRANT, 1),
            (vocab::CLIENT, 1),
            (vocab::SUBJECT, 1),
            (vocab::RIGHT, n(a.rights.len())),
            (vocab::ACCOUNT, n(a.accounts.len())),
            (vocab::TX_WINDOW, u64::from(a.window.is_some())),
            (vocab::MERCHANT, n(a.merchants.len())),
            (vocab::TIME, 1),
            (vocab::OPERATION, 1),
            (vocab::REQ_ACCOUNT, n(f.accounts.len())),
            (vocab::REQ_TX_RANGE, n(f.ranges.len())),
            (vocab::REQ_MERCHANT, n(f.merchants.len())),
        ]))
    }

    fn run(&mut self, f: &RunFacts) -> Result<Outcome, VerifyError> {
        self.runs += 1;
        if self.runs > self.limits.max_runs {
            return Err(VerifyError::OverLimits(format!(
                "more than {} evaluations",
                self.limits.max_runs
            )));
        }
        // Charged before running: a run that could exceed the budget never starts.
        let cost = self.program.run_cost(&self.fact_counts(f), OWN_QUERIES);
        self.work = self.work.saturating_add(cost);
        if self.work > self.limits.max_work {
            return Err(VerifyError::OverLimits(format!(
                "evaluating the attenuation blocks could take {} work units, more than {}",
                self.work, self.limits.max_work
            )));
        }
        let mut result = self.authorize(f);
        if matches!(result, Err(Token::RunLimit(RunLimit::Timeout))) {
            // A wall-clock timeout can be a scheduling stall on a loaded machine rather than
            // an expensive token: retry once. An expensive token times out twice (and the
            // fact and iteration limits, which are deterministic, are never retried).
            self.runs += 1;
            result = self.authorize(f);
        }
        match result {
            Ok(()) => Ok(Outcome::Allowed),
            Err(Token::RunLimit(limit)) => Err(VerifyError::OverLimits(limit.to_string())),
            Err(Token::FailedLogic(logic)) => Ok(Outcome::Denied(deny_reason(&logic))),
            Err(Token::Execution(e)) => Ok(Outcome::Denied(DenyReason::Policy(format!(
                "Datalog evaluation error: {e}"
            )))),
            Err(other) => Err(VerifyError::Internal(other.to_string())),
        }
    }

    fn authorize(&self, f: &RunFacts) -> Result<(), Token> {
        let str_fact = |name: &str, v: &str| Fact::new(name.into(), vec![Term::Str(v.into())]);
        let mut b = AuthorizerBuilder::new()
            .set_limits(AuthorizerLimits {
                max_facts: self.limits.max_facts,
                max_iterations: self.limits.max_iterations,
                max_time: self.limits.max_time,
            })
            .fact(Fact::new(vocab::TIME.into(), vec![Term::Date(f.time)]))?
            .fact(str_fact(vocab::OPERATION, &f.operation))?;
        for a in &f.accounts {
            b = b.fact(str_fact(vocab::REQ_ACCOUNT, a))?;
        }
        for (from, until) in &f.ranges {
            b = b.fact(Fact::new(
                vocab::REQ_TX_RANGE.into(),
                vec![Term::Date(*from), Term::Date(*until)],
            ))?;
        }
        for m in &f.merchants {
            b = b.fact(str_fact(vocab::REQ_MERCHANT, m))?;
        }
        // Authority-level rules. The authorizer trusts only the authority block and itself,
        // so token facts added by attenuation blocks (e.g. `account("acc_9")`) are invisible.
        let rules = verifier_rules()?;
        if !f.accounts.is_empty() {
            b = b.check(rules.account.clone())?;
        }
        if !f.ranges.is_empty() && self.authority.window.is_some() {
            b = b.check(rules.window.clone())?;
        }
        if !f.merchants.is_empty() && !self.authority.merchants.is_empty() {
            b = b.check(rules.merchant.clone())?;
        }
        b = b.policy(rules.allow.clone())?;
        b.build(self.token)?.authorize().map(|_| ())
    }

    fn allowed(&mut self, f: &RunFacts) -> Result<bool, VerifyError> {
        Ok(matches!(self.run(f)?, Outcome::Allowed))
    }
}

/// The verifier's own Datalog, parsed once per process.
struct VerifierRules {
    account: Check,
    window: Check,
    merchant: Check,
    allow: Policy,
}

fn verifier_rules() -> Result<&'static VerifierRules, Token> {
    static RULES: OnceLock<Result<VerifierRules, Token>> = OnceLock::new();
    RULES
        .get_or_init(|| {
            Ok(VerifierRules {
                account: Check::try_from("check if req_account($a), account($a)")?,
                window: Check::try_from(
                    "check if req_tx_range($f, $u), tx_window($wf, $wu), $f >= $wf, $u <= $wu",
                )?,
                merchant: Check::try_from("check if req_merchant($m), merchant($m)")?,
                allow: Policy::try_from(
                    "allow if grant($g), client($c), subject($s), operation($op), right($op)",
                )?,
            })
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn deny_reason(logic: &Logic) -> DenyReason {
    let checks = match logic {
        Logic::Unauthorized { checks, .. } | Logic::NoMatchingPolicy { checks } => checks,
        other => return DenyReason::Policy(other.to_string()),
    };
    match checks.first() {
        Some(FailedCheck::Block(c)) => DenyReason::Attenuation {
            block: c.block_id,
            check: c.rule.clone(),
        },
        Some(FailedCheck::Authorizer(c)) => DenyReason::Policy(c.rule.clone()),
        None => DenyReason::Policy("no allow policy matched".into()),
    }
}

fn check_capacity(n: usize, limits: &Limits) -> Result<(), VerifyError> {
    if n > limits.max_runs {
        return Err(VerifyError::OverLimits(format!(
            "{n} candidate values, more than {}",
            limits.max_runs
        )));
    }
    Ok(())
}

impl<K: KeyProvider, R: RevocationCheck> Verifier<K, R> {
    /// A verifier with default [`Limits`].
    pub fn new(keys: K, revocation: R) -> Self {
        Self {
            keys,
            revocation,
            limits: Limits::default(),
        }
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

    /// Decodes and checks the signature with the key chosen by the token's kid.
    fn decode(&self, token: &str, now: DateTime<Utc>) -> Result<Biscuit, VerifyError> {
        let token = token.trim();
        if token.len() > self.limits.max_token_len {
            return Err(VerifyError::TooLarge {
                max: self.limits.max_token_len,
            });
        }
        let key_error: Cell<Option<VerifyError>> = Cell::new(None);
        let provider = |kid: Option<u32>| -> Result<biscuit_auth::PublicKey, Format> {
            let Some(kid) = kid else {
                key_error.set(Some(VerifyError::MissingKid));
                return Err(Format::UnknownPublicKey);
            };
            match self.keys.public_key(kid, now) {
                Some(key) => Ok(key.0),
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
        Ok(parsed)
    }

    /// Verifies `token` for `request`. `Ok` means allowed, with the scope to filter data by;
    /// every `Err` means refuse.
    pub fn verify(&self, token: &str, request: &Request) -> Result<Authorization, VerifyError> {
        let now = request.now;
        let token = self.decode(token, now)?;
        let source = token
            .print_block_source(0)
            .map_err(|e| VerifyError::Malformed(e.to_string()))?;
        let authority = parse_authority(&source).map_err(VerifyError::InvalidAuthority)?;
        // Attenuation blocks are read and admitted before anything else looks at them.
        let mut blocks = Vec::with_capacity(token.block_count().saturating_sub(1));
        for i in 1..token.block_count() {
            let src = token
                .print_block_source(i)
                .map_err(|e| VerifyError::Malformed(e.to_string()))?;
            blocks.push(
                BlockBuilder::new()
                    .code(&src)
                    .map_err(|e| VerifyError::Malformed(format!("unreadable block {i}: {e}")))?,
            );
        }
        let (program, mentions) = admission::admit(&blocks, authority.elements(), &self.limits)
            .map_err(VerifyError::Inadmissible)?;
        let mut hints = Hints::new(blocks, mentions);
        if now > authority.expires_at {
            return Err(VerifyError::Expired);
        }
        let revocation_ids: Vec<String> = token
            .revocation_identifiers()
            .iter()
            .map(hex::encode)
            .collect();
        match self
            .revocation
            .is_revoked(&authority.grant, &revocation_ids)
        {
            Ok(false) => {}
            Ok(true) => return Err(VerifyError::Revoked),
            Err(e) => return Err(VerifyError::RevocationUnavailable(e.0)),
        }
        precheck(&authority, request)?;

        let mut eval = Evaluation {
            token: &token,
            authority: &authority,
            limits: &self.limits,
            program: &program,
            runs: 0,
            work: 0,
        };
        let scope = resolve(&mut eval, &authority, &mut hints, request)?;
        Ok(Authorization {
            scope,
            kid: token.root_key_id().unwrap_or_default(),
            blocks: token.block_count(),
            revocation_ids,
            work: eval.work,
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

/// Decides the request and computes the effective scope, for blocks made only of the documented
/// check forms ([`Narrowing`]): one Datalog run decides, with the request's own values and, for
/// each dimension it leaves open, the values every check allows (computed here: a value is
/// allowed exactly when it is in every set and within every bound).
fn resolve_simple(
    eval: &mut Evaluation<'_>,
    authority: &Authority,
    n: &Narrowing,
    simple_expiry: Option<u64>,
    request: &Request,
) -> Result<EffectiveScope, VerifyError> {
    let kept = |set: &Option<std::collections::BTreeSet<String>>, v: &str| {
        set.as_ref().is_none_or(|s| s.contains(v))
    };
    let accounts: Vec<AccountId> = match &request.account {
        Some(a) => vec![a.clone()],
        None => authority
            .accounts
            .iter()
            .filter(|a| kept(&n.accounts, a.as_str()))
            .cloned()
            .collect(),
    };
    if accounts.is_empty() {
        return Err(DenyReason::NothingLeft("account").into());
    }
    let merchants: Option<Vec<MerchantId>> = match (&request.merchant, &n.merchants) {
        (Some(m), _) => Some(vec![m.clone()]),
        (None, None) => (!authority.merchants.is_empty()).then(|| authority.merchants.clone()),
        (None, Some(set)) if authority.merchants.is_empty() => Some(
            set.iter()
                .filter_map(|s| MerchantId::parse(s.as_str()).ok())
                .collect(),
        ),
        (None, Some(set)) => Some(
            authority
                .merchants
                .iter()
                .filter(|m| set.contains(m.as_str()))
                .cloned()
                .collect(),
        ),
    };
    if merchants.as_ref().is_some_and(Vec::is_empty) {
        return Err(DenyReason::NothingLeft("merchant").into());
    }
    let narrowed_window = n.range_from.is_some() || n.range_until.is_some();
    let window = match &request.tx_range {
        Some(r) => Some(*r),
        None if !narrowed_window => authority.window,
        None => {
            let (lo, hi) = authority
                .window
                .map(|w| (to_secs(w.from()), to_secs(w.until())))
                .unwrap_or((0, to_secs(from_secs(MAX_SECS))));
            let l = lo.max(n.range_from.unwrap_or(0));
            let h = hi.min(n.range_until.unwrap_or(u64::MAX));
            if l > h {
                return Err(DenyReason::NothingLeft("transaction window").into());
            }
            if authority.window.is_none() && (l, h) == (lo, hi) {
                None
            } else {
                let t = |s: u64| from_secs(i64::try_from(s).unwrap_or(MAX_SECS));
                Some(TxWindow::new(t(l), t(h)).map_err(|e| VerifyError::Internal(e.to_string()))?)
            }
        }
    };
    // The decision: the blocks' checks and the verifier's own, evaluated for real, with the
    // request's own values. An open dimension the blocks narrow is supplied as one of its
    // allowed values: each check constrains one dimension, so any allowed value passes it as
    // every other would (and one fact, not hundreds, keeps the run cheap for large grants).
    let facts = RunFacts {
        time: to_secs(request.now),
        operation: request.operation.to_string(),
        accounts: if request.account.is_some() || n.accounts.is_some() {
            accounts.iter().take(1).map(|a| a.to_string()).collect()
        } else {
            vec![]
        },
        ranges: match (&request.tx_range, &window) {
            (Some(r), _) => vec![(to_secs(r.from()), to_secs(r.until()))],
            (None, Some(w)) if narrowed_window => vec![(to_secs(w.from()), to_secs(w.until()))],
            _ => vec![],
        },
        merchants: match (&request.merchant, &merchants) {
            (Some(m), _) => vec![m.to_string()],
            (None, Some(list)) if n.merchants.is_some() => {
                list.iter().take(1).map(|m| m.to_string()).collect()
            }
            _ => vec![],
        },
    };
    if let Outcome::Denied(reason) = eval.run(&facts)? {
        return Err(reason.into());
    }
    let actions = authority
        .rights
        .iter()
        .filter(|r| **r == request.operation || kept(&n.actions, r.as_str()))
        .cloned()
        .collect();
    let expires_at = match simple_expiry {
        Some(bound) => authority
            .expires_at
            .min(from_secs(i64::try_from(bound).unwrap_or(MAX_SECS))),
        None => authority.expires_at,
    };
    Ok(EffectiveScope {
        grant: authority.grant.clone(),
        client: authority.client.clone(),
        subject: authority.subject.clone(),
        accounts,
        actions,
        window,
        merchants,
        expires_at,
    })
}

/// Decides the request and computes the effective scope.
///
/// Blocks made only of the documented check forms take [`resolve_simple`] (one run). For any
/// other Datalog: dimensions the request fixes are supplied as single facts. A dimension the request leaves
/// open and that no attenuation block mentions takes the authority's value. A dimension left
/// open but mentioned by an attenuation block is resolved by evaluating the *whole* token once
/// per candidate value (candidates come from the authority block, or for an unlimited
/// authority from the literals in the blocks); only candidates the Datalog allows are kept,
/// so the reported scope never exceeds what the token allows. While one dimension is being
/// resolved, the other still-open ones are supplied as all their candidates ("any of them").
fn resolve(
    eval: &mut Evaluation<'_>,
    authority: &Authority,
    hints: &mut Hints,
    request: &Request,
) -> Result<EffectiveScope, VerifyError> {
    if hints.any() {
        let literals = hints.literals();
        if let (Some(n), Some(expiry)) = (literals.simple.clone(), literals.simple_expiry) {
            return resolve_simple(eval, authority, &n, expiry, request);
        }
    }
    let strs = |v: &[AccountId]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let mut facts = RunFacts {
        time: to_secs(request.now),
        operation: request.operation.to_string(),
        ..RunFacts::default()
    };

    // Accounts: the request's, or (listing) the authority's when an attenuation block
    // mentions req_account.
    let open_accounts = request.account.is_none() && hints.mentions(vocab::REQ_ACCOUNT);
    facts.accounts = match &request.account {
        Some(a) => vec![a.to_string()],
        None if open_accounts => strs(&authority.accounts),
        None => vec![],
    };

    // Merchants.
    let open_merchants = request.merchant.is_none() && hints.mentions(vocab::REQ_MERCHANT);
    let merchant_candidates: Vec<MerchantId> = if !open_merchants {
        vec![]
    } else if authority.merchants.is_empty() {
        hints
            .literals()
            .strings
            .iter()
            .filter_map(|s| MerchantId::parse(s.as_str()).ok())
            .collect()
    } else {
        authority.merchants.clone()
    };
    check_capacity(merchant_candidates.len(), eval.limits)?;
    facts.merchants = match &request.merchant {
        Some(m) => vec![m.to_string()],
        None => merchant_candidates.iter().map(|m| m.to_string()).collect(),
    };
    if open_merchants && merchant_candidates.is_empty() {
        return Err(DenyReason::NothingLeft("merchant").into());
    }

    // Window.
    let open_window = request.tx_range.is_none() && hints.mentions(vocab::REQ_TX_RANGE);
    if let Some(r) = &request.tx_range {
        facts.ranges = vec![(to_secs(r.from()), to_secs(r.until()))];
    }
    let mut window = match &request.tx_range {
        Some(r) => Some(*r),
        None => authority.window,
    };
    if !open_window {
        // The decision itself (open dimensions still supplied as "any candidate").
        if let Outcome::Denied(reason) = eval.run(&facts)? {
            return Err(reason.into());
        }
    } else {
        let (lo, hi) = authority
            .window
            .map(|w| (to_secs(w.from()), to_secs(w.until())))
            .unwrap_or((0, to_secs(from_secs(MAX_SECS))));
        let mut candidates: Vec<u64> = hints
            .literals()
            .dates
            .iter()
            .copied()
            .filter(|d| (lo..=hi).contains(d))
            .collect();
        candidates.push(lo);
        candidates.push(hi);
        candidates.sort_unstable();
        candidates.dedup();
        check_capacity(candidates.len(), eval.limits)?;
        // Decide first with "any candidate date" so a refusal carries its real reason.
        facts.ranges = candidates.iter().map(|&c| (c, c)).collect();
        if let Outcome::Denied(reason) = eval.run(&facts)? {
            return Err(reason.into());
        }
        let probe = |eval: &mut Evaluation<'_>, from: u64, until: u64| {
            let mut f = facts.clone();
            f.ranges = vec![(from, until)];
            eval.allowed(&f)
        };
        let mut low = None;
        for &c in &candidates {
            if probe(eval, c, c)? {
                low = Some(c);
                break;
            }
        }
        let mut high = None;
        for &c in candidates.iter().rev() {
            if probe(eval, c, c)? {
                high = Some(c);
                break;
            }
        }
        let (Some(l), Some(h)) = (low, high) else {
            return Err(DenyReason::NothingLeft("transaction window").into());
        };
        if l > h || !probe(eval, l, h)? {
            return Err(DenyReason::NothingLeft("transaction window").into());
        }
        facts.ranges = vec![(l, h)];
        window = if authority.window.is_none() && (l, h) == (lo, hi) {
            None
        } else {
            let t = |s: u64| from_secs(i64::try_from(s).unwrap_or(MAX_SECS));
            Some(TxWindow::new(t(l), t(h)).map_err(|e| VerifyError::Internal(e.to_string()))?)
        };
    }

    // Accounts of a listing, one evaluation each.
    let accounts = match &request.account {
        Some(a) => vec![a.clone()],
        None if open_accounts => {
            let mut allowed = Vec::new();
            for a in &authority.accounts {
                let mut f = facts.clone();
                f.accounts = vec![a.to_string()];
                if eval.allowed(&f)? {
                    allowed.push(a.clone());
                }
            }
            if allowed.is_empty() {
                return Err(DenyReason::NothingLeft("account").into());
            }
            facts.accounts = strs(&allowed);
            allowed
        }
        None => authority.accounts.clone(),
    };

    // Merchants, one evaluation each.
    let merchants = match &request.merchant {
        Some(m) => Some(vec![m.clone()]),
        None if open_merchants => {
            let mut allowed = Vec::new();
            for m in &merchant_candidates {
                let mut f = facts.clone();
                f.merchants = vec![m.to_string()];
                if eval.allowed(&f)? {
                    allowed.push(m.clone());
                }
            }
            if allowed.is_empty() {
                return Err(DenyReason::NothingLeft("merchant").into());
            }
            facts.merchants = allowed.iter().map(|m| m.to_string()).collect();
            Some(allowed)
        }
        None if authority.merchants.is_empty() => None,
        None => Some(authority.merchants.clone()),
    };

    // Actions still allowed (reported; the requested one was just allowed).
    let actions = if hints.mentions(vocab::OPERATION) {
        let mut allowed = Vec::new();
        for r in &authority.rights {
            if *r == request.operation {
                allowed.push(r.clone());
                continue;
            }
            let mut f = facts.clone();
            f.operation = r.to_string();
            if eval.allowed(&f)? {
                allowed.push(r.clone());
            }
        }
        allowed
    } else {
        authority.rights.clone()
    };

    // Expiry: the latest candidate instant at which the token still works.
    let literals = if hints.mentions(vocab::TIME) {
        Some(hints.literals().clone())
    } else {
        None
    };
    let expires_at = if let Some(Some(bound)) = literals.as_ref().and_then(|l| l.simple_expiry) {
        // Every time check in the blocks is a plain upper bound: no evaluation needed.
        authority
            .expires_at
            .min(from_secs(i64::try_from(bound).unwrap_or(MAX_SECS)))
    } else if let Some(literals) = &literals {
        let now = to_secs(request.now);
        let max = to_secs(authority.expires_at);
        // Each date and the second before it (exact for `<` as well as `<=` bounds).
        let mut candidates: Vec<u64> = literals
            .dates
            .iter()
            .flat_map(|&d| [d, d.saturating_sub(1)])
            .filter(|d| (now..max).contains(d))
            .collect();
        candidates.push(max);
        candidates.sort_unstable_by(|a, b| b.cmp(a));
        candidates.dedup();
        check_capacity(candidates.len(), eval.limits)?;
        let mut found = now;
        for c in candidates {
            let mut f = facts.clone();
            f.time = c;
            if eval.allowed(&f)? {
                found = c;
                break;
            }
        }
        from_secs(i64::try_from(found).unwrap_or(MAX_SECS))
    } else {
        authority.expires_at
    };

    Ok(EffectiveScope {
        grant: authority.grant.clone(),
        client: authority.client.clone(),
        subject: authority.subject.clone(),
        accounts,
        actions,
        window,
        merchants,
        expires_at,
    })
}

/// A token's content read without checking its signature (for `grants inspect` and
/// debugging; never for authorization).
#[derive(Clone, Debug, Serialize)]
pub struct TokenInfo {
    /// The kid (`root_key_id`), if any.
    pub kid: Option<u32>,
    /// Each block's Datalog source, authority first.
    pub blocks: Vec<String>,
    /// Revocation ids (hex), one per block.
    pub revocation_ids: Vec<String>,
    /// The authority block's grant data, if it is a well-formed grant token.
    pub grant: Option<GrantSummary>,
    /// Why `grant` is missing, if it is.
    pub grant_error: Option<String>,
}

/// The authority block's facts, as read by [`inspect`].
#[derive(Clone, Debug, Serialize)]
pub struct GrantSummary {
    /// Grant id.
    pub grant: GrantId,
    /// Client id.
    pub client: ClientId,
    /// Subject.
    pub subject: SubjectId,
    /// Granted actions.
    pub actions: Vec<Action>,
    /// Granted accounts.
    pub accounts: Vec<AccountId>,
    /// Window, if limited.
    pub window: Option<TxWindow>,
    /// Merchants, if limited.
    pub merchants: Option<Vec<MerchantId>>,
    /// Earliest expiry in the authority block.
    #[serde(serialize_with = "crate::time::serialize_ts")]
    pub expires_at: DateTime<Utc>,
}

/// Reads a token WITHOUT verifying its signature.
pub fn inspect(token: &str) -> Result<TokenInfo, VerifyError> {
    let parsed =
        biscuit_auth::UnverifiedBiscuit::from_base64(token.trim()).map_err(|e| match e {
            Token::Base64(_) => VerifyError::BadEncoding,
            other => VerifyError::Malformed(other.to_string()),
        })?;
    let blocks = (0..parsed.block_count())
        .map(|i| parsed.print_block_source(i))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| VerifyError::Malformed(e.to_string()))?;
    let (grant, grant_error) = match blocks.first().map(|s| parse_authority(s)) {
        Some(Ok(a)) => (
            Some(GrantSummary {
                grant: a.grant,
                client: a.client,
                subject: a.subject,
                actions: a.rights,
                accounts: a.accounts,
                window: a.window,
                merchants: (!a.merchants.is_empty()).then_some(a.merchants),
                expires_at: a.expires_at,
            }),
            None,
        ),
        Some(Err(e)) => (None, Some(e)),
        None => (None, Some("no authority block".into())),
    };
    Ok(TokenInfo {
        kid: parsed.root_key_id(),
        revocation_ids: parsed
            .revocation_identifiers()
            .iter()
            .map(hex::encode)
            .collect(),
        blocks,
        grant,
        grant_error,
    })
}
