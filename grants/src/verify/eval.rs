//! One Datalog run: the whole token, the verifier's request facts and its own checks and allow
//! policy, charged against the work budget before it runs.

use std::sync::OnceLock;

use biscuit_auth::builder::{Check, Fact, Policy, Term};
use biscuit_auth::error::{FailedCheck, Logic, RunLimit, Token};
use biscuit_auth::{AuthorizerBuilder, AuthorizerLimits, Biscuit};

use crate::admission::{Limits, OwnQuery, Program, RunFactCounts};
use crate::authority::Authority;
use crate::error::{DenyReason, VerifyError};
use crate::vocab;

/// Request facts for one Datalog run. Several values in a dimension mean "any of them".
#[derive(Clone, Debug, Default)]
pub(super) struct RunFacts {
    pub time: u64,
    pub operation: String,
    pub accounts: Vec<String>,
    pub ranges: Vec<(u64, u64)>,
    pub merchants: Vec<String>,
}

pub(super) enum Outcome {
    Allowed,
    Denied(DenyReason),
}

pub(super) struct Evaluation<'a> {
    pub token: &'a Biscuit,
    pub authority: &'a Authority,
    pub limits: &'a Limits,
    pub program: &'a Program,
    pub runs: usize,
    /// Work units charged so far (see [`Limits::max_work`]).
    pub work: u64,
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

    pub(super) fn run(&mut self, f: &RunFacts) -> Result<Outcome, VerifyError> {
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

    pub(super) fn allowed(&mut self, f: &RunFacts) -> Result<bool, VerifyError> {
        Ok(matches!(self.run(f)?, Outcome::Allowed))
    }

    /// Runs and turns a denial into the refusal.
    pub(super) fn decide(&mut self, f: &RunFacts) -> Result<(), VerifyError> {
        match self.run(f)? {
            Outcome::Allowed => Ok(()),
            Outcome::Denied(reason) => Err(reason.into()),
        }
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

pub(super) fn check_capacity(n: usize, limits: &Limits) -> Result<(), VerifyError> {
    if n > limits.max_runs {
        return Err(VerifyError::OverLimits(format!(
            "{n} candidate values, more than {}",
            limits.max_runs
        )));
    }
    Ok(())
}
