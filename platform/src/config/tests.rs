use std::path::Path;
use std::time::Duration;

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_are_safe() {
    let s = Settings::load_from(None, env(&[])).unwrap();
    assert_eq!(s.server.bind, "127.0.0.1:8080");
    assert_eq!(s.tokens.access_token_ttl.get(), Duration::from_secs(600));
    assert_eq!(s.lifecycle.max_grant_lifetime, ConfigDuration::days(180));
    assert_eq!(s.lifecycle.dormancy_period, ConfigDuration::days(90));
    assert!(s.tokens.code_ttl.get() <= Duration::from_secs(60));
    assert!(s.database.url.is_none());
}

#[test]
fn tls_settings_are_checked_together() {
    let load = |pairs: &[(&str, &str)]| Settings::load_from(None, env(pairs));
    let cert = ("CONSENT_SERVER__TLS_CERT_FILE", "/etc/consent/tls.pem");
    let key = ("CONSENT_SERVER__TLS_KEY_FILE", "/etc/consent/tls.key");
    let header = ("CONSENT_SERVER__CLIENT_CERT_HEADER", "client-cert");
    let proxies = ("CONSENT_SERVER__TRUSTED_PROXIES", "10.0.0.0/8");
    let s = load(&[cert, key]).unwrap();
    assert!(s.mtls_available());
    assert!(s.public_url("127.0.0.1:8443").starts_with("https://"));
    assert!(load(&[cert]).is_err(), "a certificate without its key");
    assert!(load(&[header]).is_err(), "a header without trusted proxies");
    assert!(load(&[header, proxies]).unwrap().mtls_available());
    assert!(
        load(&[cert, key, header, proxies]).is_err(),
        "TLS here and a proxy's header are exclusive"
    );
    let bad = ("CONSENT_SERVER__CLIENT_CERT_HEADER", "no spaces allowed");
    assert!(load(&[bad, proxies]).is_err());
    assert!(!load(&[]).unwrap().mtls_available());
}

#[test]
fn file_overrides_defaults_and_env_overrides_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("consent.toml");
    std::fs::write(
        &path,
        "[server]\nbind = \"0.0.0.0:9000\"\n[tokens]\naccess_token_ttl = \"5m\"\n\
         [lifecycle]\ndormancy_period = \"30d\"\n",
    )
    .unwrap();
    let s = Settings::load_from(
        Some(&path),
        env(&[
            ("CONSENT_BIND", "127.0.0.1:7000"),
            ("CONSENT_LIFECYCLE__DORMANCY_PERIOD", "45d"),
            ("CONSENT_DATABASE__POOL_SIZE", "4"),
            ("UNRELATED", "x"),
            ("CONSENT_CONFIG", "/elsewhere.toml"),
            ("CONSENT_REQUIRE_SERVICES", "1"),
        ]),
    )
    .unwrap();
    assert_eq!(s.server.bind, "127.0.0.1:7000", "env beats file");
    assert_eq!(
        s.tokens.access_token_ttl,
        ConfigDuration::minutes(5),
        "file beats default"
    );
    assert_eq!(s.lifecycle.dormancy_period, ConfigDuration::days(45));
    assert_eq!(s.database.pool_size, 4);
}

#[test]
fn aliases_select_backends() {
    let s = Settings::load_from(
        None,
        env(&[
            ("CONSENT_DATABASE_URL", "postgres://u:hunter2@localhost/db"),
            ("CONSENT_REDIS_URL", "redis://127.0.0.1:6379"),
        ]),
    )
    .unwrap();
    assert!(s.uses_postgres());
    assert_eq!(s.redis.url.unwrap().expose(), "redis://127.0.0.1:6379");
}

#[test]
fn secrets_are_redacted_in_debug() {
    let s = Settings::load_from(
        None,
        env(&[
            ("CONSENT_DATABASE_URL", "postgres://u:hunter2@localhost/db"),
            (
                "CONSENT_MASTER_KEY",
                "c2VjcmV0LW1hc3Rlci1rZXktbWF0ZXJpYWwtMzJieXRlcyE=",
            ),
            ("CONSENT_DEMO_PASSWORD", "demo-pass-123"),
        ]),
    )
    .unwrap();
    let dump = format!("{s:?}");
    assert!(!dump.contains("hunter2"), "{dump}");
    assert!(!dump.contains("c2VjcmV0"), "{dump}");
    assert!(!dump.contains("demo-pass-123"), "{dump}");
    assert!(dump.contains("[REDACTED]"));
}

#[test]
fn invalid_values_are_refused_with_a_clear_message() {
    let bad = [
        ("CONSENT_TOKENS__ACCESS_TOKEN_TTL", "ten minutes"),
        ("CONSENT_TOKENS__CODE_TTL", "10m"),
        ("CONSENT_TOKENS__INTROSPECTION_CACHE_TTL", "11s"),
        ("CONSENT_DATABASE__POOL_SIZE", "0"),
        ("CONSENT_SERVER__REVOCATION_SYNC_INTERVAL", "0s"),
        ("CONSENT_SERVER__REVOCATION_SYNC_INTERVAL", "61s"),
        ("CONSENT_SERVER__NOPE", "1"),
        ("CONSENT_PUBLIC_URL", "not a url"),
    ];
    for (k, v) in bad {
        let err = Settings::load_from(None, env(&[(k, v)])).unwrap_err();
        assert!(
            err.to_string().starts_with("configuration error"),
            "{k}: {err}"
        );
    }
    let missing = Settings::load_from(Some(Path::new("/nonexistent/consent.toml")), env(&[]));
    assert!(missing.unwrap_err().to_string().contains("does not exist"));
}

#[test]
fn durations_parse_and_print() {
    for (raw, secs) in [
        ("30s", 30),
        ("10m", 600),
        ("12h", 43_200),
        ("90d", 7_776_000),
        ("45", 45),
    ] {
        let d: ConfigDuration = raw.parse().unwrap();
        assert_eq!(d.get().as_secs(), secs, "{raw}");
    }
    assert!("".parse::<ConfigDuration>().is_err());
    assert!("5w".parse::<ConfigDuration>().is_err());
    assert!("-5m".parse::<ConfigDuration>().is_err());
    assert!("99999999999999999999d".parse::<ConfigDuration>().is_err());
    assert_eq!(ConfigDuration::days(180).to_string(), "180d");
}

#[test]
fn the_staff_channel_needs_an_http_url_and_a_webhook_key() {
    let load = |pairs: &[(&str, &str)]| Settings::load_from(None, env(pairs));
    let url = (
        "CONSENT_WEBHOOKS__STAFF_URL",
        "https://staff-events.bank.internal/hook",
    );
    let secret = (
        "CONSENT_WEBHOOKS__STAFF_SECRET",
        "whsec_c3RhZmYtY2hhbm5lbC1zZWNyZXQtZm9yLXRlc3Rz",
    );
    let s = load(&[url, secret]).unwrap();
    assert_eq!(s.webhooks.staff_url.as_deref(), Some(url.1));
    assert!(load(&[url]).is_err(), "a URL without its key");
    assert!(load(&[secret]).is_err(), "a key without its URL");
    let ftp = ("CONSENT_WEBHOOKS__STAFF_URL", "ftp://bank.internal/hook");
    assert!(load(&[ftp, secret]).is_err());
    let short = ("CONSENT_WEBHOOKS__STAFF_SECRET", "whsec_abc");
    assert!(load(&[url, short]).is_err());
    assert!(
        !format!("{:?}", s.webhooks).contains("c3RhZmY"),
        "the key is never printed"
    );
}

#[test]
fn pkcs11_custody_is_configured_whole_and_never_with_a_master_key() {
    let module = ("CONSENT_PKCS11_MODULE", "/usr/lib/softhsm/libsofthsm2.so");
    let token = ("CONSENT_PKCS11_TOKEN_LABEL", "consent");
    let key = ("CONSENT_SECURITY__PKCS11__KEY_LABEL", "consent-master");
    let pin = ("CONSENT_PKCS11_PIN", "123456");
    let load = |pairs: &[(&str, &str)]| Settings::load_from(None, env(pairs));
    assert!(
        load(&[]).unwrap().security.pkcs11.is_none(),
        "the file key by default"
    );
    let s = load(&[module, token, key, pin]).unwrap();
    let p = s.security.pkcs11.as_ref().unwrap();
    assert_eq!(p.module, Path::new("/usr/lib/softhsm/libsofthsm2.so"));
    assert_eq!(
        (p.token_label.as_str(), p.key_label.as_str()),
        ("consent", "consent-master")
    );
    assert_eq!(p.pin.expose(), "123456");
    assert!(!format!("{s:?}").contains("123456"), "the PIN is redacted");

    let err = load(&[module, token, key]).unwrap_err().to_string();
    assert!(err.contains("pin"), "{err}");
    let master = (
        "CONSENT_MASTER_KEY",
        "c2VjcmV0LW1hc3Rlci1rZXktbWF0ZXJpYWwtMzJieXRlcyE=",
    );
    let err = load(&[module, token, key, pin, master])
        .unwrap_err()
        .to_string();
    assert!(err.contains("exclusive"), "{err}");
    for bad in [
        ("CONSENT_PKCS11_TOKEN_LABEL", ""),
        (
            "CONSENT_PKCS11_TOKEN_LABEL",
            "a-label-longer-than-thirty-two-bytes",
        ),
        ("CONSENT_PKCS11_KEY_LABEL", ""),
        ("CONSENT_PKCS11_PIN", ""),
        ("CONSENT_PKCS11_MODULE", ""),
    ] {
        // The later variable wins (both spellings name the same setting).
        assert!(load(&[module, token, key, pin, bad]).is_err(), "{bad:?}");
    }
    let unknown = ("CONSENT_SECURITY__PKCS11__SLOT", "0");
    assert!(
        load(&[module, token, key, pin, unknown]).is_err(),
        "deny_unknown_fields"
    );
}
