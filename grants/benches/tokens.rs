//! Token costs: mint, attenuate, verify+authorize for 1..3 blocks, against a bare Ed25519
//! verify as the floor, and DPoP proof checks next to it. Run: `cargo bench -p grants --bench tokens -- --measurement-time 3`.

use std::hint::black_box;

use chrono::{Duration, TimeZone, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use ed25519_dalek::{Signer, SigningKey as DalekKey, Verifier as _};
use grants::dpop::{DpopKey, ProofContext};
use grants::{
    AccountId, Action, Attenuation, ClientId, DecodeCache, Grant, GrantId, GrantScope, KeySet,
    MerchantId, NoRevocationCheck, Request, SigningKey, SubjectId, TxWindow, Verifier,
};

fn fixtures() -> (SigningKey, Grant, chrono::DateTime<Utc>) {
    let now = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
    let key = SigningKey::from_private_bytes(1, &[7; 32]).unwrap();
    let acc = |s: &str| AccountId::parse(s).unwrap();
    let scope = GrantScope::new(
        vec![acc("acc_1"), acc("acc_2"), acc("acc_3")],
        Action::KNOWN.to_vec(),
        Some(TxWindow::parse("2025-01-01T00:00:00Z", "2025-12-31T23:59:59Z").unwrap()),
        Some(vec![
            MerchantId::parse("m_1").unwrap(),
            MerchantId::parse("m_2").unwrap(),
        ]),
        now + Duration::days(90),
    )
    .unwrap();
    let grant = Grant {
        id: GrantId::parse("g_1").unwrap(),
        client: ClientId::parse("c_app").unwrap(),
        subject: SubjectId::parse("cust_1").unwrap(),
        environment: grants::Environment::Production,
        scope,
    };
    (key, grant, now)
}

fn benches(c: &mut Criterion) {
    let (key, grant, now) = fixtures();
    let token = grants::mint(&key, &grant, now + Duration::minutes(10), now)
        .unwrap()
        .token;
    let narrow_accounts = Attenuation::new().accounts([AccountId::parse("acc_1").unwrap()]);
    let narrow_expiry = Attenuation::new().expires_at(now + Duration::minutes(5));
    let two = grants::attenuate(&token, &narrow_accounts, false).unwrap();
    let three = grants::attenuate(&two, &narrow_expiry, false).unwrap();
    let verifier = Verifier::new(
        KeySet::new([key.published(None, None)]).unwrap(),
        NoRevocationCheck,
    );
    let request =
        Request::new(Action::TransactionsRead, now).account(AccountId::parse("acc_1").unwrap());
    for t in [&token, &two, &three] {
        verifier.verify(t, &request).unwrap();
    }

    c.bench_function("mint", |b| {
        b.iter(|| grants::mint(&key, &grant, now + Duration::minutes(10), now).unwrap())
    });
    c.bench_function("attenuate (accounts)", |b| {
        b.iter(|| grants::attenuate(black_box(&token), &narrow_accounts, false).unwrap())
    });
    for (name, t) in [
        ("1 block", &token),
        ("2 blocks", &two),
        ("3 blocks", &three),
    ] {
        c.bench_function(&format!("verify+authorize {name}"), |b| {
            b.iter(|| verifier.verify(black_box(t), &request).unwrap())
        });
    }
    // The same tokens presented again to a verifier with a decode cache (a resource server's
    // steady state: a token is presented for its whole lifetime).
    let cached = verifier.clone().with_cache(DecodeCache::default());
    for (name, t) in [
        ("1 block", &token),
        ("2 blocks", &two),
        ("3 blocks", &three),
    ] {
        cached.verify(t, &request).unwrap();
        c.bench_function(
            &format!("verify+authorize {name}, seen before (cache)"),
            |b| b.iter(|| cached.verify(black_box(t), &request).unwrap()),
        );
    }
    c.bench_function("verify listing 2 blocks (per-account evaluation)", |b| {
        b.iter(|| {
            verifier
                .verify_listing(black_box(&two), Action::AccountsRead, now)
                .unwrap()
        })
    });
    // Decoding + signature checks only, to split the verify cost.
    let pk = biscuit_auth::PublicKey::from_bytes(
        &key.public_key().to_bytes(),
        biscuit_auth::Algorithm::Ed25519,
    )
    .unwrap();
    c.bench_function("biscuit decode+signatures only, 2 blocks", |b| {
        b.iter(|| biscuit_auth::Biscuit::from_base64(black_box(&two), pk).unwrap())
    });

    // Where the rest goes: reading blocks back as Datalog, and one authorizer run.
    let parsed = biscuit_auth::Biscuit::from_base64(&two, pk).unwrap();
    c.bench_function("part: print+parse authority block source", |b| {
        b.iter(|| {
            let src = parsed.print_block_source(0).unwrap();
            biscuit_auth::BlockBuilder::new().code(&src).unwrap()
        })
    });
    c.bench_function("part: one authorizer build+run, 2 blocks", |b| {
        b.iter(|| {
            let mut a = biscuit_auth::AuthorizerBuilder::new()
                .set_limits(biscuit_auth::AuthorizerLimits {
                    max_time: std::time::Duration::from_secs(1),
                    ..Default::default()
                })
                .code(
                    r#"time(2026-03-01T12:00:00Z); operation("transactions:read");
                    req_account("acc_1");
                    check if req_account($a), account($a);
                    allow if grant($g), client($c), subject($s), operation($op), right($op);"#,
                )
                .unwrap()
                .build(&parsed)
                .unwrap();
            a.authorize().unwrap()
        })
    });

    // DPoP (RFC 9449): one proof check (JWS parse, key, signature, claims), by algorithm, and a
    // bound 1-block token verified with its proof (the replay store is a per-process map).
    let url = "https://bank.example/sandbox/v1/accounts/acc_1/transactions";
    for key in [DpopKey::generate_es256(), DpopKey::generate_ed25519()] {
        let proof = key.proof("GET", url, Some(&token), None, now);
        let ctx = ProofContext::new("GET", url, now).for_token(&token);
        c.bench_function(&format!("dpop: check one proof, {}", key.alg()), |b| {
            b.iter(|| grants::dpop::check_proof(black_box(&proof), &ctx).unwrap())
        });
    }
    let key = DpopKey::generate_es256();
    let bound = grants::mint_bound(
        &key_for_bound(),
        &grant,
        &key.thumbprint(),
        now + Duration::minutes(10),
        now,
    )
    .unwrap()
    .token;
    let bound_verifier = Verifier::new(
        KeySet::new([key_for_bound().published(None, None)]).unwrap(),
        NoRevocationCheck,
    );
    c.bench_function(
        "verify+authorize 1 block, DPoP-bound with an ES256 proof",
        |b| {
            b.iter_batched(
                // A fresh store each time: one recorded jti, as a real store holds a few.
                || {
                    let proof = key.proof("GET", url, Some(&bound), None, now);
                    (proof, grants::dpop::InMemoryReplayStore::default())
                },
                |(proof, store)| {
                    let ctx = ProofContext::new("GET", url, now);
                    bound_verifier
                        .verify_dpop(&bound, &request, &proof, ctx, &store)
                        .unwrap()
                },
                criterion::BatchSize::SmallInput,
            )
        },
    );

    let dalek = DalekKey::from_bytes(&[7; 32]);
    let message = [42u8; 200];
    let signature = dalek.sign(&message);
    let public = dalek.verifying_key();
    c.bench_function("ed25519 verify (floor)", |b| {
        b.iter(|| public.verify(black_box(&message), &signature).unwrap())
    });
    // A mint's floor: Biscuit makes a key pair for the next block and signs the authority block
    // (two base-point multiplications), whatever else it does.
    c.bench_function("ed25519 key pair + sign (mint floor)", |b| {
        b.iter(|| {
            let next = DalekKey::generate(&mut rand::rngs::OsRng);
            (next.verifying_key(), dalek.sign(black_box(&message)))
        })
    });
}

fn key_for_bound() -> SigningKey {
    SigningKey::from_private_bytes(2, &[9; 32]).unwrap()
}

criterion_group!(tokens, benches);
criterion_main!(tokens);
