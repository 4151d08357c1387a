//! Deciding a request and computing its [`EffectiveScope`]: in one run for blocks made only of
//! the documented check forms ([`resolve_simple`]), otherwise one run per candidate value of
//! each dimension the request leaves open ([`resolve`]).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use super::eval::{Evaluation, RunFacts, check_capacity};
use super::{EffectiveScope, Request};
use crate::authority::{Authority, Hints, Narrowing};
use crate::error::{DenyReason, VerifyError};
use crate::time::{MAX_SECS, TxWindow, from_secs, to_secs};
use crate::vocab;
use crate::{AccountId, Action, MerchantId};

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
    let kept = |set: &Option<BTreeSet<String>>, v: &str| set.as_ref().is_none_or(|s| s.contains(v));
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
        (None, Some(set)) if authority.merchants.is_empty() => Some(parse_merchants(set)),
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
            let (lo, hi) = window_bounds(authority);
            let l = lo.max(n.range_from.unwrap_or(0));
            let h = hi.min(n.range_until.unwrap_or(u64::MAX));
            if l > h {
                return Err(DenyReason::NothingLeft("transaction window").into());
            }
            window_between(authority, (lo, hi), (l, h))?
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
    eval.decide(&facts)?;
    let actions = authority
        .rights
        .iter()
        .filter(|r| **r == request.operation || kept(&n.actions, r.as_str()))
        .cloned()
        .collect();
    let expires_at = match simple_expiry {
        Some(bound) => capped_expiry(authority, bound),
        None => authority.expires_at,
    };
    Ok(effective_scope(
        authority, accounts, actions, window, merchants, expires_at,
    ))
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
pub(super) fn resolve(
    eval: &mut Evaluation<'_>,
    authority: &Authority,
    hints: &Hints,
    request: &Request,
) -> Result<EffectiveScope, VerifyError> {
    if hints.any() {
        let literals = hints.literals();
        if let (Some(n), Some(expiry)) = (literals.simple.clone(), literals.simple_expiry) {
            return resolve_simple(eval, authority, &n, expiry, request);
        }
    }
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
        None if open_accounts => strings(&authority.accounts),
        None => vec![],
    };

    // Merchants.
    let open_merchants = request.merchant.is_none() && hints.mentions(vocab::REQ_MERCHANT);
    let merchant_candidates: Vec<MerchantId> = if !open_merchants {
        vec![]
    } else if authority.merchants.is_empty() {
        parse_merchants(&hints.literals().strings)
    } else {
        authority.merchants.clone()
    };
    check_capacity(merchant_candidates.len(), eval.limits)?;
    facts.merchants = match &request.merchant {
        Some(m) => vec![m.to_string()],
        None => strings(&merchant_candidates),
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
        eval.decide(&facts)?;
    } else {
        let (lo, hi) = window_bounds(authority);
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
        eval.decide(&facts)?;
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
        window = window_between(authority, (lo, hi), (l, h))?;
    }

    // Accounts of a listing, one evaluation each.
    let accounts = match &request.account {
        Some(a) => vec![a.clone()],
        None if open_accounts => allowed_candidates(
            eval,
            &mut facts,
            &authority.accounts,
            |f| &mut f.accounts,
            "account",
        )?,
        None => authority.accounts.clone(),
    };

    // Merchants, one evaluation each.
    let merchants = match &request.merchant {
        Some(m) => Some(vec![m.clone()]),
        None if open_merchants => Some(allowed_candidates(
            eval,
            &mut facts,
            &merchant_candidates,
            |f| &mut f.merchants,
            "merchant",
        )?),
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
        capped_expiry(authority, bound)
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
        instant(found)
    } else {
        authority.expires_at
    };

    Ok(effective_scope(
        authority, accounts, actions, window, merchants, expires_at,
    ))
}

/// The candidates the Datalog allows, one run each with `dimension` of `facts` set to that
/// candidate alone; refuses when none is. `facts` then supplies the allowed ones ("any of
/// them") for the dimensions resolved after this one.
fn allowed_candidates<T: Clone + ToString>(
    eval: &mut Evaluation<'_>,
    facts: &mut RunFacts,
    candidates: &[T],
    dimension: fn(&mut RunFacts) -> &mut Vec<String>,
    what: &'static str,
) -> Result<Vec<T>, VerifyError> {
    let mut allowed = Vec::new();
    for c in candidates {
        let mut f = facts.clone();
        *dimension(&mut f) = vec![c.to_string()];
        if eval.allowed(&f)? {
            allowed.push(c.clone());
        }
    }
    if allowed.is_empty() {
        return Err(DenyReason::NothingLeft(what).into());
    }
    *dimension(facts) = strings(&allowed);
    Ok(allowed)
}

fn strings<T: ToString>(values: &[T]) -> Vec<String> {
    values.iter().map(ToString::to_string).collect()
}

/// The merchant ids among literal strings of the blocks.
fn parse_merchants<'a>(literals: impl IntoIterator<Item = &'a String>) -> Vec<MerchantId> {
    literals
        .into_iter()
        .filter_map(|s| MerchantId::parse(s.as_str()).ok())
        .collect()
}

/// The authority's transaction window in seconds, or every representable date when it has none.
fn window_bounds(authority: &Authority) -> (u64, u64) {
    authority
        .window
        .map(|w| (to_secs(w.from()), to_secs(w.until())))
        .unwrap_or((0, to_secs(from_secs(MAX_SECS))))
}

/// The window `(l, h)` narrowed from the authority's `(lo, hi)` ([`window_bounds`]): `None` (no
/// limit) when the authority has no window and nothing narrowed it.
fn window_between(
    authority: &Authority,
    (lo, hi): (u64, u64),
    (l, h): (u64, u64),
) -> Result<Option<TxWindow>, VerifyError> {
    if authority.window.is_none() && (l, h) == (lo, hi) {
        return Ok(None);
    }
    TxWindow::new(instant(l), instant(h))
        .map(Some)
        .map_err(|e| VerifyError::Internal(e.to_string()))
}

/// The authority's expiry, or the blocks' upper time bound if earlier.
fn capped_expiry(authority: &Authority, bound: u64) -> DateTime<Utc> {
    authority.expires_at.min(instant(bound))
}

fn instant(secs: u64) -> DateTime<Utc> {
    from_secs(i64::try_from(secs).unwrap_or(MAX_SECS))
}

fn effective_scope(
    authority: &Authority,
    accounts: Vec<AccountId>,
    actions: Vec<Action>,
    window: Option<TxWindow>,
    merchants: Option<Vec<MerchantId>>,
    expires_at: DateTime<Utc>,
) -> EffectiveScope {
    EffectiveScope {
        grant: authority.grant.clone(),
        client: authority.client.clone(),
        subject: authority.subject.clone(),
        accounts,
        actions,
        window,
        merchants,
        expires_at,
    }
}
