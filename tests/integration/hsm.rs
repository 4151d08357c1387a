//! Master key custody in an HSM (issue 18, item 4), against SoftHSM2: each test initialises its
//! own token in a temporary directory and runs the real `consent` binary as a child process with
//! `SOFTHSM2_CONF` pointing there (the tests cannot set it for themselves: no `unsafe`, so no
//! `std::env::set_var`). Skipped when SoftHSM2 is not installed, unless `CONSENT_REQUIRE_HSM=1`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use e2e_tests::faults::{Api, ServerConfig};
use e2e_tests::{Backend, PgTestDb, backends};
use serde_json::Value;

/// The server binary (compiled from consent/src/main.rs, see tests/Cargo.toml).
const CONSENT: &str = env!("CARGO_BIN_EXE_consent-e2e");
/// Talks to the token with cryptoki directly (tests/src/bin/hsm-probe.rs).
const PROBE: &str = env!("CARGO_BIN_EXE_hsm-probe");
const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const TOKEN: &str = "consent-test";
const PIN: &str = "4711-user";
const KEY: &str = "consent-master";

/// A SoftHSM2 token of one test's own.
struct SoftHsm {
    dir: tempfile::TempDir,
    conf: PathBuf,
}

impl SoftHsm {
    /// A fresh token labelled [`TOKEN`] with user PIN [`PIN`]; `None` (the test skips) when
    /// SoftHSM2 is not installed and `CONSENT_REQUIRE_HSM=1` is not set.
    fn init(test: &str) -> Option<Self> {
        let util = which("softhsm2-util");
        if !Path::new(MODULE).is_file() || util.is_none() {
            assert!(
                std::env::var("CONSENT_REQUIRE_HSM").as_deref() != Ok("1"),
                "{test}: CONSENT_REQUIRE_HSM=1 but SoftHSM2 is not installed \
                 ({MODULE}, softhsm2-util; Debian package softhsm2)"
            );
            eprintln!("{test}: skipped: SoftHSM2 is not installed (Debian package softhsm2)");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let tokens = dir.path().join("tokens");
        std::fs::create_dir_all(&tokens).expect("token dir");
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .expect("softhsm2.conf");
        let out = Command::new(util.expect("softhsm2-util"))
            .env("SOFTHSM2_CONF", &conf)
            .args(["--init-token", "--free", "--label", TOKEN])
            .args(["--pin", PIN, "--so-pin", "4711-so"])
            .output()
            .expect("run softhsm2-util");
        assert!(out.status.success(), "softhsm2-util: {}", text(&out));
        Some(Self { dir, conf })
    }

    /// The variables that select this token's key with `pin`.
    fn env(&self, pin: &str) -> Vec<(String, String)> {
        [
            ("SOFTHSM2_CONF", self.conf.to_string_lossy().as_ref()),
            ("CONSENT_PKCS11_MODULE", MODULE),
            ("CONSENT_PKCS11_TOKEN_LABEL", TOKEN),
            ("CONSENT_PKCS11_KEY_LABEL", KEY),
            ("CONSENT_PKCS11_PIN", pin),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// `hsm-probe ... <mode>` on the key labelled `label`.
    fn probe(&self, label: &str, mode: &str) -> Value {
        let out = Command::new(PROBE)
            .env("SOFTHSM2_CONF", &self.conf)
            .args([MODULE, TOKEN, PIN, label, mode])
            .output()
            .expect("run hsm-probe");
        assert!(out.status.success(), "hsm-probe {mode}: {}", text(&out));
        serde_json::from_slice(&out.stdout).expect("hsm-probe prints JSON")
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn text(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `consent <args>` with exactly the server's environment (`config.env`, its database),
/// plus `extra`.
fn consent(config: &ServerConfig, extra: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(CONSENT);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CONSENT_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("RUST_LOG", "info").env_remove("RUST_BACKTRACE");
    cmd.envs(config.env.iter().map(|(k, v)| (k, v)));
    if let Some(url) = &config.database_url {
        cmd.env("CONSENT_DATABASE_URL", url);
    }
    cmd.envs(extra.iter().copied())
        .args(args)
        .output()
        .expect("run consent")
}

fn data_dir_args(config: &ServerConfig) -> [String; 2] {
    [
        "--data-dir".into(),
        config.data_dir.to_string_lossy().into(),
    ]
}

/// `consent <args> --data-dir <data dir>`, which must succeed; its stdout.
fn consent_ok(config: &ServerConfig, args: &[&str]) -> String {
    let dir = data_dir_args(config);
    let all: Vec<&str> = args
        .iter()
        .copied()
        .chain(dir.iter().map(String::as_str))
        .collect();
    let out = consent(config, &[], &all);
    assert!(out.status.success(), "consent {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// (action, details) of every audit event, in order.
async fn audit_events(config: &ServerConfig) -> Vec<(String, Value)> {
    use platform::storage::schema::audit_events;
    let db = platform::storage::Db::connect(&config.storage_url(), 2, Duration::from_secs(10))
        .expect("open storage");
    db.run(|c| {
        Ok(audit_events::table
            .order(audit_events::seq.asc())
            .select((audit_events::action, audit_events::details))
            .load::<(String, String)>(c)?)
    })
    .await
    .expect("read audit events")
    .into_iter()
    .map(|(a, d)| (a, serde_json::from_str(&d).expect("details are JSON")))
    .collect()
}

/// The purposes of the `hsm.derive` events recorded so far.
async fn derived_purposes(config: &ServerConfig) -> Vec<String> {
    audit_events(config)
        .await
        .into_iter()
        .filter(|(a, _)| a == "hsm.derive")
        .map(|(_, d)| {
            assert_eq!(d["outcome"], "ok", "{d}");
            assert_eq!(d["mechanism"], "CKM_SHA256_HMAC", "{d}");
            assert_eq!(d["key_label"], KEY, "{d}");
            d["purpose"].as_str().expect("purpose").to_string()
        })
        .collect()
}

/// The demo client's consent page for the logged-in customer (PAR + authorize + GET).
async fn consent_page(api: &Api) -> String {
    let (_, challenge) = e2e_tests::oauth::pkce();
    let uri = api.par(&challenge).await.done("par");
    let path = api.authorize(&uri).await.done("authorize");
    let page = api
        .http
        .get(format!("{}{path}", api.base))
        .send()
        .await
        .expect("consent page");
    assert_eq!(page.status(), 200);
    page.text().await.expect("consent page body")
}

/// Start on a key generated in the HSM, encrypt (demo seed: KYC PII, webhook secrets; signing
/// keys), stop, rotate the signing key from the CLI, start again: everything written before
/// still decrypts, no key file appears, the key cannot be read out, and every derivation is in
/// the audit log (whose keyed chain verifies).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn softhsm_backed_start_rotation_and_restart() {
    for backend in backends() {
        let Some(hsm) = SoftHsm::init("softhsm_backed_start_rotation_and_restart") else {
            return;
        };
        let mut config = ServerConfig::new(CONSENT, hsm.dir.path());
        config.env = hsm.env(PIN);
        let pg = (backend == Backend::Postgres).then(PgTestDb::create);
        if let Some(pg) = &pg {
            // Not `ServerConfig::postgres`: that gives every instance a master key to share;
            // here they share the HSM's.
            config.database_url = Some(pg.url.clone());
            config.migrate();
        }

        let generated: Value =
            serde_json::from_str(&consent_ok(&config, &["keys", "hsm-generate"]))
                .expect("hsm-generate prints the key's attributes");
        assert_eq!(generated["key_type"], "CKK_GENERIC_SECRET", "{generated}");
        assert_eq!(generated["sensitive"], true, "{generated}");
        assert_eq!(generated["extractable"], false, "{generated}");
        assert_eq!(generated["value_readable"], false, "{generated}");
        let dir = data_dir_args(&config);
        let again = consent(&config, &[], &["keys", "hsm-generate", &dir[0], &dir[1]]);
        assert!(
            !again.status.success(),
            "a second key with the label is refused"
        );
        assert!(
            String::from_utf8_lossy(&again.stderr).contains("already exists"),
            "{}",
            text(&again)
        );

        // First start: the demo seed encrypts KYC PII and webhook secrets, start-up wraps the
        // first signing keys.
        let mut server = config.start("first", true).await;
        let api = Api::new(&server.base, Duration::from_secs(30));
        api.login("alice").await.done("login");
        let before = api.connect().await.done("consent flow");
        api.sandbox_accounts(&before.access_token)
            .await
            .done("sandbox");
        assert!(
            consent_page(&api).await.contains("Demo Fintech Ltd"),
            "the KYC legal name decrypts"
        );
        // Start-up's derivations are recorded before the server listens: the key that wraps
        // the data keys and the master's id. The data keys of a new deployment are random, so
        // no per-purpose key is ever derived from the master.
        let purposes = derived_purposes(&config).await;
        for p in ["data-keys", "master-key-id"] {
            assert!(purposes.iter().any(|x| x == p), "{p} not in {purposes:?}");
        }
        for (_, p) in platform::crypto::KEY_PURPOSES {
            assert!(!purposes.iter().any(|x| x == p), "{p} in {purposes:?}");
        }
        server.kill();

        // While it is down: rotate the Biscuit key (unwraps the old one, wraps a new one).
        let rotated = consent_ok(&config, &["keys", "rotate"]);
        assert!(
            rotated.contains("new active biscuit signing key"),
            "{rotated}"
        );

        // Restart, without --demo: nothing is re-encrypted, everything is read back.
        let server = config.start("second", false).await;
        let api = api.at(&server.base);
        api.sandbox_accounts(&before.access_token)
            .await
            .done("a token issued before the restart");
        let after = api.refresh(&before.refresh_token).await.done("refresh");
        api.sandbox_accounts(&after.access_token)
            .await
            .done("a token signed with the key rotated by the CLI");
        let keys: Value = api
            .http
            .get(format!("{}/.well-known/biscuit-keys", server.base))
            .send()
            .await
            .expect("biscuit-keys")
            .json()
            .await
            .expect("biscuit-keys JSON");
        assert!(
            keys.to_string().matches("\"kid\"").count() >= 2,
            "old and rotated keys published: {keys}"
        );
        assert!(
            consent_page(&api).await.contains("Demo Fintech Ltd"),
            "PII encrypted before the restart decrypts after it"
        );

        assert!(
            !config.data_dir.join("master.key").exists(),
            "no master key file is written when the key is in the HSM"
        );
        let probe = hsm.probe(KEY, "read-value");
        assert_eq!(probe["value_info"], "sensitive", "{probe}");
        assert_eq!(probe["value_returned"], false, "{probe}");
        let status = consent(&config, &[], &["keys", "hsm-status"]);
        assert!(status.status.success(), "{}", text(&status));

        // Every process derived its keys through the HSM, and said so in the audit log; one
        // generation event. The chain (keyed by an HSM-derived key) verifies.
        let deadline = Instant::now() + Duration::from_secs(10);
        let events = loop {
            let events = audit_events(&config).await;
            let derivations = events.iter().filter(|(a, _)| a == "hsm.derive").count();
            let pids: std::collections::HashSet<_> = events
                .iter()
                .filter(|(a, _)| a == "hsm.derive")
                .map(|(_, d)| d["pid"].clone())
                .collect();
            // generate (CLI), first server, rotate (CLI), second server
            if pids.len() >= 4 || Instant::now() > deadline {
                assert!(pids.len() >= 4, "{derivations} derivations by {pids:?}");
                break events;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let generations: Vec<_> = events
            .iter()
            .filter(|(a, _)| a == "hsm.generate_key")
            .collect();
        assert_eq!(generations.len(), 1, "{generations:?}");
        for (action, details) in &events {
            let text = details.to_string();
            assert!(!text.contains(PIN), "{action}: the PIN is never logged");
        }
        drop(server);
        let verify = consent_ok(&config, &["audit", "verify"]);
        let report: Value = serde_json::from_str(&verify).expect("verify report");
        assert_eq!(report["valid"], true, "{report}");
    }
}

/// What an operator can get wrong is refused at start-up with a message naming it, never a
/// panic: wrong PIN, no key with the label, no such token, no module, both a master key and an
/// HSM, and a key that could leave the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsm_misconfiguration_is_refused_clearly() {
    let Some(hsm) = SoftHsm::init("hsm_misconfiguration_is_refused_clearly") else {
        return;
    };
    let mut config = ServerConfig::new(CONSENT, hsm.dir.path());
    config.env = hsm.env(PIN);
    let dir = data_dir_args(&config);
    let serve = ["serve", "--bind", "127.0.0.1:0", &dir[0], &dir[1]];
    let refused = |extra: &[(&str, &str)], expected: &str| {
        let out = consent(&config, extra, &serve);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{expected}: {}", text(&out));
        assert!(stderr.contains(expected), "{expected}: {}", text(&out));
        assert!(!stderr.contains("panicked"), "{}", text(&out));
        assert!(!stderr.contains(PIN), "the PIN is never printed: {stderr}");
    };

    refused(&[], &format!("no secret key labelled \"{KEY}\""));
    consent_ok(&config, &["keys", "hsm-generate"]);
    refused(
        &[("CONSENT_PKCS11_PIN", "0000-wrong")],
        "the PIN is incorrect",
    );
    refused(
        &[("CONSENT_PKCS11_KEY_LABEL", "no-such-key")],
        "no secret key labelled \"no-such-key\"",
    );
    refused(
        &[("CONSENT_PKCS11_TOKEN_LABEL", "no-such-token")],
        "no initialised token labelled \"no-such-token\"",
    );
    refused(
        &[("CONSENT_PKCS11_MODULE", "/nonexistent/libpkcs11.so")],
        "cannot load the PKCS#11 module /nonexistent/libpkcs11.so",
    );
    refused(
        &[(
            "CONSENT_MASTER_KEY",
            "c2VjcmV0LW1hc3Rlci1rZXktbWF0ZXJpYWwtMzJieXRlcyE=",
        )],
        "exclusive",
    );
    refused(&[("CONSENT_PKCS11_PIN", "")], "pin must not be empty");

    // A key that can leave the token does not hold the master key.
    hsm.probe("weak", "create-extractable");
    refused(
        &[("CONSENT_PKCS11_KEY_LABEL", "weak")],
        "it can leave the token",
    );
    let status = consent(
        &config,
        &[("CONSENT_PKCS11_KEY_LABEL", "weak")],
        &["keys", "hsm-status"],
    );
    assert_eq!(status.status.code(), Some(1), "{}", text(&status));
    let report: Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    assert_eq!(report["extractable"], true, "{report}");

    // Without `security.pkcs11`, the HSM commands say what to configure.
    let mut bare = config.clone();
    bare.env.clear();
    let out = consent(&bare, &[], &["keys", "hsm-status"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("security.pkcs11 is not configured"),
        "{}",
        text(&out)
    );
    assert!(
        !config.data_dir.join("master.key").exists(),
        "refused starts write no key file either"
    );
}

/// An existing deployment on the embedded file master moves into the HSM: the key is generated
/// there (the deployment's data keys are not its yet), the CLI re-wraps them to it with the file
/// master as the current one, and the server starts on the HSM with everything written before.
/// The file master is refused from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_master_moves_into_the_hsm_by_rewrap() {
    let Some(hsm) = SoftHsm::init("a_file_master_moves_into_the_hsm_by_rewrap") else {
        return;
    };
    let mut config = ServerConfig::new(CONSENT, hsm.dir.path());
    let mut server = config.start("file", true).await;
    let api = Api::new(&server.base, Duration::from_secs(30));
    api.login("alice").await.done("login");
    assert!(consent_page(&api).await.contains("Demo Fintech Ltd"));
    server.kill();

    let dir = data_dir_args(&config);
    let hsm_env = hsm.env(PIN);
    let with_hsm: Vec<(&str, &str)> = hsm_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let generated = consent(
        &config,
        &with_hsm,
        &["keys", "hsm-generate", &dir[0], &dir[1]],
    );
    assert!(!generated.status.success(), "{}", text(&generated));
    assert!(
        String::from_utf8_lossy(&generated.stderr).contains("rewrap"),
        "{}",
        text(&generated)
    );

    let conf = hsm.conf.to_string_lossy().into_owned();
    let new_hsm = [("SOFTHSM2_CONF", conf.as_str())];
    let rewrap = [
        "keys",
        "rewrap",
        "--to-pkcs11-module",
        MODULE,
        "--to-pkcs11-token-label",
        TOKEN,
        "--to-pkcs11-key-label",
        KEY,
        &dir[0],
        &dir[1],
    ];
    let no_pin = consent(&config, &new_hsm, &rewrap);
    assert!(!no_pin.status.success(), "{}", text(&no_pin));
    assert!(
        String::from_utf8_lossy(&no_pin.stderr).contains("CONSENT_NEW_PKCS11_PIN"),
        "{}",
        text(&no_pin)
    );
    let wrong_pin = [
        ("SOFTHSM2_CONF", conf.as_str()),
        ("CONSENT_NEW_PKCS11_PIN", "0000-wrong"),
    ];
    let out = consent(&config, &wrong_pin, &rewrap);
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the PIN is incorrect"), "{}", text(&out));
    assert!(!stderr.contains("0000-wrong"), "the PIN is never printed");
    let with_pin = [
        ("SOFTHSM2_CONF", conf.as_str()),
        ("CONSENT_NEW_PKCS11_PIN", PIN),
    ];
    let out = consent(&config, &with_pin, &rewrap);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("data keys re-wrapped"),
        "{}",
        text(&out)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains(PIN));

    // The file master opens nothing now (a command that starts the platform says why).
    let roles = [
        "admin",
        "set-staff-roles",
        "--username",
        "nobody",
        "--roles",
        "support",
    ];
    let args: Vec<&str> = roles
        .iter()
        .copied()
        .chain(dir.iter().map(String::as_str))
        .collect();
    let refused = consent(&config, &[], &args);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("wrapped by master key"),
        "{}",
        text(&refused)
    );

    config.env = hsm_env;
    let server = config.start("hsm", false).await;
    let api = Api::new(&server.base, Duration::from_secs(30));
    api.login("alice").await.done("login on the HSM");
    assert!(
        consent_page(&api).await.contains("Demo Fintech Ltd"),
        "PII written under the file master decrypts under the HSM"
    );
    let events = audit_events(&config).await;
    let rewrapped = events.iter().find(|(a, _)| a == "master_key.rewrapped");
    let (_, details) = rewrapped.expect("the re-wrap is audited");
    assert_eq!(details["to_hsm"]["key_label"], KEY, "{details}");
    assert!(
        events.iter().any(|(a, _)| a == "hsm.generate_key"),
        "the generation is audited although the deployment did not start on the key"
    );
}
