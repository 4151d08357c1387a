//! Replacing the master key (issue 18): the master only wraps the data keys (`data_keys`), so a
//! new master re-wraps those rows and nothing else; all data written before reads back, the
//! audit chain still verifies, and the old master is refused from then on.

use diesel::prelude::*;
use e2e_tests::portal::PASSWORD;
use e2e_tests::{Backend, PgTestDb, TestApp, backends, spawn_demo_app};
use platform::config::Secret;
use platform::crypto::{DataKeyError, KEY_PURPOSES, MasterKey, signing_key_aad};
use platform::storage::schema::{data_keys, kyc_submissions};
use platform::{InitError, MigrationPolicy, Platform};
use reqwest::Method;
use serde_json::{Value, json};

/// The demo KYC legal name, decrypted with `p`'s keys.
async fn demo_legal_name(p: &Platform) -> String {
    let (enc, id): (String, String) =
        p.db.run(|c| {
            Ok(kyc_submissions::table
                .select((kyc_submissions::legal_name_enc, kyc_submissions::id))
                .first(c)?)
        })
        .await
        .unwrap();
    p.master_key
        .cipher("kyc-pii")
        .decrypt_str(&enc, &format!("kyc_submissions.legal_name:{id}"))
        .expect("decrypts")
}

/// The signing keys `app` publishes (`/.well-known/biscuit-keys`).
async fn published_keys(app: &TestApp) -> Value {
    let r = app.client.get(app.url("/.well-known/biscuit-keys")).send();
    r.await.unwrap().json().await.unwrap()
}

/// Starts a platform on `app`'s database with `master` (base64), as another process would.
fn start_with(app: &TestApp, master: String) -> Result<Platform, InitError> {
    let mut settings = app.settings.clone();
    settings.database.url = Some(Secret::new(platform::database_url(&app.settings)));
    settings.security.master_key = Some(Secret::new(master));
    Platform::init(
        settings,
        std::sync::Arc::new(platform::clock::SystemClock),
        MigrationPolicy::Require,
    )
}

async fn rewrap(
    app: &TestApp,
    new: &MasterKey,
) -> Result<platform::crypto::Rewrapped, DataKeyError> {
    let (p, new) = (app.platform.clone(), new.clone());
    tokio::task::spawn_blocking(move || {
        p.rewrap_master_key(&new, platform::audit::Actor::system("test"))
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_new_master_key_rewraps_the_data_keys_and_the_old_one_is_refused() {
    for backend in backends() {
        let app = spawn_demo_app(backend).await;
        let old = app.platform.master_key.to_base64().expect("a file master");
        // Every purpose has its wrapped data key, made at the first start.
        let rows: Vec<(String, String)> = app
            .platform
            .db
            .run(|c| {
                Ok(data_keys::table
                    .select((data_keys::purpose, data_keys::wrapped_by))
                    .load(c)?)
            })
            .await
            .unwrap();
        assert_eq!(rows.len(), KEY_PURPOSES.len(), "{backend:?}");
        let old_id = app.platform.master_key.key_id().unwrap();
        assert!(rows.iter().all(|r| r.1 == old_id), "{rows:?}");
        // A new deployment's data keys are random: the master alone (deriving as before data
        // keys) opens nothing.
        let (enc, id): (String, String) = app
            .platform
            .db
            .run(|c| {
                Ok(kyc_submissions::table
                    .select((kyc_submissions::legal_name_enc, kyc_submissions::id))
                    .first(c)?)
            })
            .await
            .unwrap();
        let bare = MasterKey::from_base64(&old).unwrap().cipher("kyc-pii");
        let aad = format!("kyc_submissions.legal_name:{id}");
        assert!(bare.decrypt_str(&enc, &aad).is_err(), "{backend:?}");

        // A staff member with an authenticator (a TOTP secret under the second-factor key).
        app.create_staff("ops-keys").await;
        let login: Value = app
            .post_admin_login("ops-keys", PASSWORD)
            .await
            .json()
            .await
            .unwrap();
        let (secret, _, _) = app.enrol(login["access_token"].as_str().unwrap()).await;
        let keys_before = published_keys(&app).await;

        // The current master is refused as its own successor.
        let same = MasterKey::from_base64(&old).unwrap();
        assert!(matches!(
            rewrap(&app, &same).await,
            Err(DataKeyError::SameMaster(_))
        ));
        let new = MasterKey::generate();
        let r = rewrap(&app, &new).await.expect("re-wrapped");
        assert_eq!(
            (r.keys, r.from.as_str()),
            (KEY_PURPOSES.len(), old_id.as_str())
        );
        assert_eq!(r.to, new.key_id().unwrap());
        // Twice from the same (now stale) master: refused, nothing changes.
        let again = rewrap(&app, &MasterKey::generate()).await;
        assert!(
            matches!(again, Err(DataKeyError::WrongMaster { .. })),
            "{again:?}"
        );
        let wrapped_by = || {
            app.platform.db.run(|c| {
                Ok(data_keys::table
                    .select(data_keys::wrapped_by)
                    .load::<String>(c)?)
            })
        };
        let now_by = wrapped_by().await.unwrap();
        assert!(now_by.iter().all(|w| *w == r.to), "{now_by:?}");

        assert!(
            app.audit_actions()
                .await
                .iter()
                .any(|a| a == "master_key.rewrapped")
        );

        // Another process with the old master is refused, and changes nothing.
        let refused = start_with(&app, old.clone()).expect_err("the old master is refused");
        assert!(
            refused
                .to_string()
                .contains(&format!("wrapped by master key {}", r.to)),
            "{refused}"
        );
        assert_eq!(wrapped_by().await.unwrap(), now_by, "{backend:?}");

        // Restarted with the new master: the data of before reads back.
        let mut app = app;
        app.settings.security.master_key = Some(Secret::new(new.to_base64().unwrap()));
        let app = app.restart(Default::default()).await;
        assert_eq!(
            demo_legal_name(&app.platform).await,
            "Demo Fintech Ltd",
            "{backend:?}"
        );
        let keys_after = published_keys(&app).await;
        assert_eq!(
            keys_before, keys_after,
            "the signing keys unwrap under the data key"
        );
        let login: Value = app
            .post_admin_login("ops-keys", PASSWORD)
            .await
            .json()
            .await
            .unwrap();
        let owing = login["access_token"].as_str().unwrap();
        let body = json!({ "code": app.totp_code(&secret, 1) });
        let r = app
            .api(
                Method::POST,
                "/api/v1/admin/login/second-factor",
                Some(owing),
                Some(&body),
            )
            .await;
        assert_eq!(r.status(), 200, "the TOTP secret decrypts {backend:?}");
        let key = app.platform.audit.key().clone();
        let chain = app
            .platform
            .db
            .run(move |c| {
                platform::audit::link_all(c, &key)?;
                platform::audit::verify(c, &key)
            })
            .await
            .unwrap();
        assert!(
            chain.valid,
            "the audit chain verifies across the change: {chain:?}"
        );
        app.stop().await;
    }
}

/// A deployment from before data keys (its data under keys derived from the master) adopts them
/// at its next start from its own master only: another master opens no stored signing key, and
/// nothing is written down. The adopted keys, stored wrapped, open the data at every later start.
#[tokio::test]
async fn data_keys_are_adopted_only_from_the_master_the_data_was_written_under() {
    use platform::audit::{Actor, ChainKey, NewEvent, Target};
    use platform::storage::schema::signing_keys;
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let pg = (backend == Backend::Postgres).then(PgTestDb::create);
        let settings = e2e_tests::test_settings(backend, dir.path(), pg.as_ref());
        let db = platform::storage::Db::connect(
            &platform::database_url(&settings),
            2,
            std::time::Duration::from_secs(5),
        )
        .unwrap();
        db.migrate().unwrap();
        // Written as before data keys: a signing key and a linked audit event, under keys
        // derived from the master.
        let master = MasterKey::generate();
        let (m, now) = (master.clone(), chrono::Utc::now());
        db.write(move |c| {
            let enc = m
                .cipher("signing-keys")
                .encrypt(b"private key bytes", &signing_key_aad(1))
                .unwrap();
            diesel::insert_into(signing_keys::table)
                .values((
                    signing_keys::kid.eq(1_i64),
                    signing_keys::algorithm.eq("Ed25519"),
                    signing_keys::public_key.eq("pk"),
                    signing_keys::private_key_enc.eq(enc),
                    signing_keys::status.eq("active"),
                    signing_keys::created_at.eq(now.naive_utc()),
                    signing_keys::purpose.eq("biscuit"),
                ))
                .execute(c)?;
            NewEvent::new(Actor::system("test"), "test.before", Target::new("x", "1"))
                .record(c, now)?;
            platform::audit::link_all(c, &ChainKey::try_derive(&m).unwrap())?;
            Ok(())
        })
        .await
        .unwrap();
        let start = |m: &MasterKey| {
            let mut s = settings.clone();
            s.security.master_key = Some(Secret::new(m.to_base64().unwrap()));
            Platform::init(
                s,
                std::sync::Arc::new(platform::clock::SystemClock),
                MigrationPolicy::Require,
            )
        };
        let count = || db.run(|c| Ok(data_keys::table.count().get_result::<i64>(c)?));

        let refused = start(&MasterKey::generate()).expect_err("another master adopts nothing");
        assert!(
            refused.to_string().contains("a stored signing key"),
            "{refused}"
        );
        assert_eq!(count().await.unwrap(), 0, "{backend:?}");

        let adopted = start(&master).expect("its own master adopts them");
        let origins = db
            .run(|c| {
                Ok(data_keys::table
                    .select(data_keys::origin)
                    .load::<String>(c)?)
            })
            .await
            .unwrap();
        assert_eq!(origins.len(), KEY_PURPOSES.len());
        assert!(origins.iter().all(|o| o == "derived"), "{origins:?}");
        drop(adopted);
        // A later start unwraps the stored keys: the data of before opens with them.
        let later = start(&master).expect("started again");
        let enc: String = later
            .db
            .run(|c| {
                Ok(signing_keys::table
                    .select(signing_keys::private_key_enc)
                    .first(c)?)
            })
            .await
            .unwrap();
        let plain = later
            .master_key
            .cipher("signing-keys")
            .decrypt(&enc, &signing_key_aad(1))
            .expect("decrypts under the adopted key");
        assert_eq!(plain.as_slice(), b"private key bytes");
        let key = later.audit.key().clone();
        let chain = later
            .db
            .run(move |c| platform::audit::verify(c, &key))
            .await
            .unwrap();
        assert!(chain.valid, "{chain:?}");
        assert_eq!(count().await.unwrap(), KEY_PURPOSES.len() as i64);
    }
}

/// Instances starting at once on a new database make the data keys once: every one of them ends
/// up with the same keys (what one encrypts, another decrypts), whoever's insert won.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_starting_at_once_share_one_set_of_data_keys() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let pg = (backend == Backend::Postgres).then(PgTestDb::create);
        let mut settings = e2e_tests::test_settings(backend, dir.path(), pg.as_ref());
        let master = MasterKey::generate().to_base64().unwrap();
        settings.security.master_key = Some(Secret::new(master));
        platform::storage::Db::connect(
            &platform::database_url(&settings),
            2,
            std::time::Duration::from_secs(5),
        )
        .unwrap()
        .migrate()
        .unwrap();
        let starts: Vec<_> = (0..4)
            .map(|_| {
                let s = settings.clone();
                std::thread::spawn(move || {
                    Platform::init(
                        s,
                        std::sync::Arc::new(platform::clock::SystemClock),
                        MigrationPolicy::Require,
                    )
                })
            })
            .collect();
        let platforms: Vec<Platform> = starts
            .into_iter()
            .map(|t| t.join().unwrap().expect("every instance starts"))
            .collect();
        let sealed = platforms[0]
            .master_key
            .cipher("kyc-pii")
            .encrypt_str("Acme Payments Ltd", "aad")
            .unwrap();
        for p in &platforms[1..] {
            let opened = p.master_key.cipher("kyc-pii").decrypt_str(&sealed, "aad");
            assert_eq!(opened.unwrap(), "Acme Payments Ltd", "{backend:?}");
        }
        let rows = platforms[0]
            .db
            .run(|c| Ok(data_keys::table.count().get_result::<i64>(c)?))
            .await
            .unwrap();
        assert_eq!(rows, KEY_PURPOSES.len() as i64, "{backend:?}");
    }
}
