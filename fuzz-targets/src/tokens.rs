//! Token targets: decoding and verification of arbitrary tokens, and arbitrary attenuation
//! blocks appended to real ones.

use std::borrow::Cow;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE;
use biscuit_auth::{Algorithm, BlockBuilder, KeyPair, UnverifiedBiscuit};
use grants::error::VerifyError;
use grants::{Action, Authorization, EffectiveScope, Request, TokenInfo};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::fixtures::{acc, fixtures, merchant, now};

/// Arbitrary bytes as a bearer token. Input starting with a 0 byte is raw mode: the rest is the
/// token's binary (protobuf) form, base64url-encoded here, so that mutations reach the decoder
/// rather than the base64 layer; otherwise the input (lossy UTF-8) is the token string.
///
/// Checks: `verify`, `verify_listing` and `inspect` return, never panic; whatever `verify`
/// allows is consistent with what `inspect` reads from the same token (see [`check_allowed`]).
pub fn token_verify(data: &[u8]) {
    let token: Cow<'_, str> = match data.split_first() {
        Some((0, raw)) => Cow::Owned(URL_SAFE.encode(raw)),
        _ => String::from_utf8_lossy(data),
    };
    let f = fixtures();
    let info = grants::inspect(&token);
    let t = |op: Action| Request::new(op, now());
    let requests = [
        t(Action::TransactionsRead).account(acc("acc_1")),
        t(Action::BalancesRead)
            .account(acc("acc_2"))
            .merchant(merchant("m_1")),
    ];
    for request in &requests {
        if let Ok(auth) = f.verifier.verify(&token, request) {
            check_allowed(&auth, request, &info);
        }
    }
    for op in Action::KNOWN {
        if let Ok(auth) = f.verifier.verify_listing(&token, op.clone(), now()) {
            check_allowed(&auth, &Request::new(op, now()), &info);
        }
    }
}

/// What must hold of any token the verifier allowed for `request`: its scope answers the
/// request, and lies within the authority block that `inspect` reads (unverified) from it.
fn check_allowed(auth: &Authorization, request: &Request, info: &Result<TokenInfo, VerifyError>) {
    let s = &auth.scope;
    assert!(auth.blocks >= 1);
    assert_eq!(auth.revocation_ids.len(), auth.blocks);
    assert!(s.actions.contains(&request.operation), "{s:?}");
    match &request.account {
        Some(a) => assert_eq!(&s.accounts, &vec![a.clone()]),
        None => assert!(!s.accounts.is_empty(), "a listing allowed no account"),
    }
    if let Some(m) = &request.merchant {
        assert_eq!(s.merchants.as_deref(), Some(std::slice::from_ref(m)));
    }
    assert!(
        s.expires_at >= request.now,
        "allowed after its expiry: {s:?}"
    );

    let info = info
        .as_ref()
        .expect("verify allowed what inspect cannot read");
    assert_eq!(info.kid, Some(auth.kid));
    assert_eq!(info.blocks.len(), auth.blocks);
    assert_eq!(info.revocation_ids, auth.revocation_ids);
    let g = info
        .grant
        .as_ref()
        .expect("verify allowed a non-grant token");
    assert_eq!(
        (&g.grant, &g.client, &g.subject),
        (&s.grant, &s.client, &s.subject)
    );
    assert!(s.accounts.iter().all(|a| g.accounts.contains(a)), "{s:?}");
    assert!(s.actions.iter().all(|a| g.actions.contains(a)), "{s:?}");
    if let Some(w) = &g.window {
        let sw = s.window.as_ref().expect("window limit lost");
        assert!(w.contains_window(sw), "window widened: {s:?}");
    }
    if let Some(ms) = &g.merchants {
        let sm = s.merchants.as_ref().expect("merchant limit lost");
        assert!(
            sm.iter().all(|m| ms.contains(m)),
            "merchants widened: {s:?}"
        );
    }
    assert!(s.expires_at <= g.expires_at, "expiry extended: {s:?}");
}

/// `narrower` is within `wider` on every dimension (`None` window or merchants = unlimited).
fn check_within(narrower: &EffectiveScope, wider: &EffectiveScope) {
    let msg = || format!("attenuated {narrower:?}\noriginal {wider:?}");
    assert_eq!(
        (&narrower.grant, &narrower.client, &narrower.subject),
        (&wider.grant, &wider.client, &wider.subject)
    );
    assert!(
        narrower.accounts.iter().all(|a| wider.accounts.contains(a)),
        "accounts widened: {}",
        msg()
    );
    assert!(
        narrower.actions.iter().all(|a| wider.actions.contains(a)),
        "actions widened: {}",
        msg()
    );
    if let Some(w) = &wider.window {
        let n = narrower.window.as_ref();
        assert!(
            n.is_some_and(|n| w.contains_window(n)),
            "window widened: {}",
            msg()
        );
    }
    if let Some(w) = &wider.merchants {
        let n = narrower.merchants.as_ref();
        assert!(
            n.is_some_and(|n| n.iter().all(|m| w.contains(m))),
            "merchants widened: {}",
            msg()
        );
    }
    assert!(
        narrower.expires_at <= wider.expires_at,
        "expiry extended: {}",
        msg()
    );
}

/// A refusal that is not about what the token allows (limits are timing-dependent).
fn is_limit(e: &VerifyError) -> bool {
    matches!(e, VerifyError::OverLimits(_))
}

/// Every value the scope reports, asked for on its own, is allowed: the reported scope is never
/// wider than the token (one dimension at a time; `grants` documents a listing's accounts ×
/// merchants as exact only for checks on one dimension each).
fn check_scope_holds(token: &str, request: &Request, scope: &EffectiveScope) {
    let f = fixtures();
    let confirm = |r: Request, what: &str| match f.verifier.verify(token, &r) {
        Ok(_) => {}
        Err(e) if is_limit(&e) => {}
        Err(e) => panic!("the scope reports {what} but asking for it is refused: {e}\n{scope:?}"),
    };
    if request.account.is_none() {
        for a in &scope.accounts {
            confirm(request.clone().account(a.clone()), &format!("account {a}"));
        }
    }
    if let (None, Some(ms)) = (&request.merchant, &scope.merchants) {
        for m in ms {
            confirm(
                request.clone().merchant(m.clone()),
                &format!("merchant {m}"),
            );
        }
    }
    if let (None, Some(w)) = (&request.tx_range, &scope.window) {
        confirm(request.clone().tx_range(*w), &format!("window {w:?}"));
    }
    for op in &scope.actions {
        let mut r = request.clone();
        r.operation = op.clone();
        confirm(r, &format!("action {op}"));
    }
    let mut r = request.clone();
    r.now = scope.expires_at;
    confirm(r, &format!("use until {}", scope.expires_at));
}

/// The input (UTF-8 Datalog) as one block appended to each fixture token, then verified with
/// the fixture requests. Input that is not UTF-8 or does not parse is skipped.
///
/// Checks: attenuation only narrows (whatever the attenuated token allows, the original allows,
/// with a scope inside the original's); what it allows passes [`check_allowed`]; on the listing
/// and the first account request, every value its scope reports is allowed on its own.
/// Run libFuzzer with `-timeout=1` here: a slow evaluation is a finding too.
pub fn attenuation_block(data: &[u8]) {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(block) = BlockBuilder::new().code(source) else {
        return;
    };
    let f = fixtures();
    for base in [&f.limited, &f.open] {
        let Ok(parsed) = UnverifiedBiscuit::from_base64(&base.token) else {
            unreachable!("fixture token")
        };
        let next = KeyPair::new_with_rng(Algorithm::Ed25519, &mut StdRng::seed_from_u64(0));
        let Ok(token) = parsed
            .append_with_keypair(&next, block.clone())
            .and_then(|t| t.to_base64())
        else {
            continue;
        };
        let info = grants::inspect(&token);
        for (i, (request, original)) in f.requests.iter().zip(&base.verdicts).enumerate() {
            let Ok(auth) = f.verifier.verify(&token, request) else {
                continue;
            };
            let original = original.as_ref().unwrap_or_else(|e| {
                panic!("attenuation allowed {request:?}, which the original refuses: {e}")
            });
            check_within(&auth.scope, &original.scope);
            check_allowed(&auth, request, &info);
            if i < 2 {
                check_scope_holds(&token, request, &auth.scope);
            }
        }
    }
}

/// One verification of [`attenuation_block`], timed: for reproducing a slow finding
/// (`cargo run -p fuzz-targets --example attenuation_timing -- FILE`).
#[derive(Debug)]
pub struct Timing {
    /// Which fixture token the block was appended to.
    pub base: &'static str,
    /// The request.
    pub request: String,
    /// How long `verify` took.
    pub elapsed: std::time::Duration,
    /// `Ok` or the refusal.
    pub verdict: String,
}

/// Appends the input block to each fixture token and times each fixture request's
/// verification; `None` if the input is not a block that parses and appends.
pub fn attenuation_timings(data: &[u8]) -> Option<Vec<Timing>> {
    let block = BlockBuilder::new()
        .code(std::str::from_utf8(data).ok()?)
        .ok()?;
    let f = fixtures();
    let mut out = Vec::new();
    for (base, name) in [(&f.limited, "limited"), (&f.open, "open")] {
        let next = KeyPair::new_with_rng(Algorithm::Ed25519, &mut StdRng::seed_from_u64(0));
        let token = UnverifiedBiscuit::from_base64(&base.token)
            .and_then(|t| t.append_with_keypair(&next, block.clone()))
            .and_then(|t| t.to_base64())
            .ok()?;
        for request in &f.requests {
            let started = std::time::Instant::now();
            let verdict = f.verifier.verify(&token, request);
            out.push(Timing {
                base: name,
                request: format!(
                    "{} account={:?} merchant={:?} range={:?}",
                    request.operation,
                    request.account.as_ref().map(|a| a.as_str()),
                    request.merchant.as_ref().map(|m| m.as_str()),
                    request.tx_range.is_some()
                ),
                elapsed: started.elapsed(),
                verdict: match verdict {
                    Ok(a) => format!("allowed, {} blocks", a.blocks),
                    Err(e) => e.to_string(),
                },
            });
        }
    }
    Some(out)
}
