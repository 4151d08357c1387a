//! The decode cache: a token seen before skips its signature checks, and nothing that depends on
//! the request, the time, the keys or the revocation state is answered from it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Duration, Utc};
use grants::error::VerifyError;
use grants::{
    Action, Attenuation, DecodeCache, GrantId, KeySet, Limits, NoRevocationCheck, PublicKey,
    Request, Verifier,
};

use crate::common::*;

fn cached(cache: &DecodeCache) -> Verifier<KeySet, NoRevocationCheck> {
    verifier().with_cache(cache.clone())
}

fn balances(account: &str) -> Request {
    req(Action::BalancesRead).account(acc(account))
}

#[test]
fn a_token_seen_before_is_answered_from_the_cache_with_the_same_result() {
    let cache = DecodeCache::default();
    let token = mint(full_scope());
    let two = attenuate(&token, &Attenuation::new().accounts([acc("acc_1")]));
    let listing = req(Action::AccountsRead);
    for t in [&token, &two] {
        for r in [&balances("acc_1"), &balances("acc_2"), &listing] {
            let fresh = format!("{:?}", verifier().verify(t, r));
            assert_eq!(format!("{:?}", cached(&cache).verify(t, r)), fresh);
            assert_eq!(format!("{:?}", cached(&cache).verify(t, r)), fresh);
        }
    }
    let stats = cache.stats();
    // Two tokens decoded once each; every other verification was a hit.
    assert_eq!((stats.misses, stats.hits, stats.entries), (2, 10, 2));
    // Whitespace around the token is not another token.
    cached(&cache)
        .verify(&format!("  {two}\n"), &balances("acc_1"))
        .unwrap();
    assert_eq!(cache.stats().misses, 2);
}

#[test]
fn forged_tokens_are_never_kept() {
    let cache = DecodeCache::default();
    let token = mint(full_scope());
    // The same token signed by another key under the same kid.
    let forged = grants::mint(
        &grants::SigningKey::from_private_bytes(1, &[9; 32]).unwrap(),
        &grant(full_scope()),
        now() + Duration::minutes(10),
        now(),
    )
    .unwrap()
    .token;
    for _ in 0..3 {
        let err = cached(&cache)
            .verify(&forged, &balances("acc_1"))
            .unwrap_err();
        assert!(matches!(err, VerifyError::BadSignature), "{err:?}");
    }
    assert_eq!(cache.stats().entries, 0);
    // A byte changed in a token the cache holds is another token, verified afresh.
    cached(&cache).verify(&token, &balances("acc_1")).unwrap();
    let mut bytes = token.into_bytes();
    let i = bytes.len() - 10;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).unwrap();
    assert!(
        cached(&cache)
            .verify(&tampered, &balances("acc_1"))
            .is_err()
    );
    assert_eq!(cache.stats().entries, 1);
}

#[test]
fn expiry_and_the_request_are_checked_on_every_hit() {
    let cache = DecodeCache::default();
    let token = mint(full_scope());
    let short = attenuate(
        &token,
        &Attenuation::new().expires_at(now() + Duration::minutes(2)),
    );
    cached(&cache).verify(&short, &balances("acc_1")).unwrap();
    // acc_9 is not granted: denied from the cache as afresh.
    let err = cached(&cache)
        .verify(&short, &balances("acc_9"))
        .unwrap_err();
    assert!(matches!(err, VerifyError::Denied(_)), "{err:?}");
    // The attenuation block's expiry (Datalog) and the token's own (authority) still apply.
    let later = |t: DateTime<Utc>| Request::new(Action::BalancesRead, t).account(acc("acc_1"));
    let err = cached(&cache)
        .verify(&short, &later(now() + Duration::minutes(3)))
        .unwrap_err();
    assert!(matches!(err, VerifyError::Denied(_)), "{err:?}");
    cached(&cache).verify(&token, &balances("acc_1")).unwrap();
    let err = cached(&cache)
        .verify(&token, &later(now() + Duration::minutes(11)))
        .unwrap_err();
    assert!(matches!(err, VerifyError::Expired), "{err:?}");
    assert!(cache.stats().hits >= 3);
}

#[test]
fn revocation_and_key_retirement_apply_to_cached_tokens() {
    let cache = DecodeCache::default();
    let token = mint(full_scope());
    let revoked = Arc::new(AtomicBool::new(false));
    let retired = Arc::new(AtomicBool::new(false));
    let verifier = {
        let (revoked, retired) = (revoked.clone(), retired.clone());
        let published = key(1).public_key();
        Verifier::new(
            move |kid: u32, _: DateTime<Utc>| -> Option<PublicKey> {
                (kid == 1 && !retired.load(Ordering::SeqCst)).then_some(published)
            },
            move |_: &GrantId, _: &[String]| revoked.load(Ordering::SeqCst),
        )
        .with_cache(cache.clone())
    };
    verifier.verify(&token, &balances("acc_1")).unwrap();
    verifier.verify(&token, &balances("acc_1")).unwrap();
    revoked.store(true, Ordering::SeqCst);
    let err = verifier.verify(&token, &balances("acc_1")).unwrap_err();
    assert!(matches!(err, VerifyError::Revoked), "{err:?}");
    revoked.store(false, Ordering::SeqCst);
    retired.store(true, Ordering::SeqCst);
    let err = verifier.verify(&token, &balances("acc_1")).unwrap_err();
    assert!(matches!(err, VerifyError::UnknownKid(1)), "{err:?}");
    assert_eq!(cache.stats().misses, 1);
}

#[test]
fn a_new_key_under_the_same_kid_verifies_afresh() {
    let cache = DecodeCache::default();
    let token = mint(full_scope());
    cached(&cache).verify(&token, &balances("acc_1")).unwrap();
    let other = grants::SigningKey::from_private_bytes(1, &[9; 32]).unwrap();
    let rekeyed = Verifier::new(
        KeySet::new([other.published(None, None)]).unwrap(),
        NoRevocationCheck,
    )
    .with_cache(cache.clone());
    let err = rekeyed.verify(&token, &balances("acc_1")).unwrap_err();
    assert!(matches!(err, VerifyError::BadSignature), "{err:?}");
}

#[test]
fn refused_blocks_stay_refused_and_other_limits_admit_afresh() {
    let cache = DecodeCache::default();
    let facts: String = (0..10).map(|i| format!("n({i});")).collect();
    let t = append_block(&mint(full_scope()), &facts);
    // Admitted by the defaults, then refused by stricter limits sharing the cache.
    cached(&cache).verify(&t, &balances("acc_1")).unwrap();
    let strict = cached(&cache).with_limits(Limits {
        max_block_facts: 5,
        ..Limits::default()
    });
    for _ in 0..2 {
        let err = strict.verify(&t, &balances("acc_1")).unwrap_err();
        assert!(err.to_string().contains("10 facts, more than 5"), "{err}");
    }
    // And the defaults still admit it.
    cached(&cache).verify(&t, &balances("acc_1")).unwrap();
}

/// `n` distinct tokens: `token` narrowed to expire a second apart.
fn narrowed_by_expiry(token: &str, n: i64) -> Vec<String> {
    (0..n)
        .map(|i| {
            let until = now() + Duration::seconds(60 + i);
            attenuate(token, &Attenuation::new().expires_at(until))
        })
        .collect()
}

#[test]
fn memory_is_bounded_by_the_budget() {
    // About 20 KiB counted per entry here: a 128 KiB budget holds a handful per generation.
    let budget = 128 * 1024;
    let cache = DecodeCache::new(budget);
    let token = mint(full_scope());
    for t in &narrowed_by_expiry(&token, 200) {
        cached(&cache).verify(t, &balances("acc_1")).unwrap();
    }
    let stats = cache.stats();
    assert_eq!(stats.misses, 200);
    assert!(
        (2..=40).contains(&stats.entries),
        "{} entries held",
        stats.entries
    );
    assert!(stats.bytes <= 2 * budget, "{} bytes counted", stats.bytes);
    // A token larger than the whole budget is verified but not kept.
    let tiny = DecodeCache::new(100);
    cached(&tiny).verify(&token, &balances("acc_1")).unwrap();
    assert_eq!(tiny.stats().entries, 0);
}

/// A hit in the older generation moves the entry to the newer one, and the counted bytes move
/// with it: each entry is counted once, in the generation that holds it.
#[test]
fn an_entry_moved_between_generations_is_counted_once() {
    let tokens = narrowed_by_expiry(&mint(full_scope()), 4);
    // What one of these tokens counts (they differ only in a date's digits).
    let one = DecodeCache::new(1024 * 1024);
    cached(&one).verify(&tokens[0], &balances("acc_1")).unwrap();
    let each = one.stats().bytes;
    // Three entries fit a generation; the fourth starts the next one.
    let cache = DecodeCache::new(each * 7 / 2);
    for t in &tokens {
        cached(&cache).verify(t, &balances("acc_1")).unwrap();
    }
    assert_eq!((cache.stats().entries, cache.stats().bytes), (4, 4 * each));
    // The first token is in the older generation: the hit moves it.
    cached(&cache)
        .verify(&tokens[0], &balances("acc_1"))
        .unwrap();
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.entries, stats.bytes), (1, 4, 4 * each));
}
