//! Cryptographic building blocks. Nothing here is hand-rolled: AES-256-GCM (aes-gcm), HKDF-SHA256
//! (hkdf), argon2id (argon2), SHA-256 (sha2), constant-time comparison (subtle), OS randomness.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use argon2::password_hash::{self, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

mod argon2_memory;
mod data_keys;
pub mod hsm;
mod password_work;

pub use data_keys::{DataKeyError, KEY_PURPOSES, OpenedKeys, Rewrapped, signing_key_aad};

pub use argon2_memory::spawn_release as spawn_argon2_memory_release;
pub use hsm::{CustodyEvent, CustodyJournal, HsmError, HsmKeyReport, KeyLocation};
pub use password_work::{PasswordBusy, PasswordWork};

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("master key must be 32 bytes encoded as base64")]
    BadMasterKey,
    #[error("cannot read or write the master key file: {0}")]
    KeyFile(String),
    #[error("ciphertext is malformed or was not produced for this record")]
    Decrypt,
    #[error("encryption failed")]
    Encrypt,
    #[error("password hashing failed")]
    PasswordHash,
    #[error(transparent)]
    Hsm(#[from] HsmError),
    #[error("the {0} key is unavailable: the HSM could not derive it (see the log)")]
    KeyUnavailable(String),
    #[error("the deployment has no data key of purpose {0} (it is not in KEY_PURPOSES)")]
    NoDataKey(String),
}

/// HKDF salts of the kinds of derived keys.
const CIPHER_SALT: &[u8] = b"consent/v1";
const MAC_SALT: &[u8] = b"consent/v1/mac";
const WRAP_SALT: &[u8] = b"consent/v1/wrap";

/// The 256-bit root secret. Every other key (field encryption, signing-key wrapping, the audit
/// chain) is a data key of its own purpose, so compromise of one exposes nothing else. Once the
/// deployment's data keys are open ([`MasterKey::open_data_keys`], at start-up), the master only
/// wraps them (`data_keys`), and a new master re-wraps them without touching the data
/// ([`MasterKey::rewrap_data_keys`]). Before that (and for keys made outside a deployment, as in
/// tests), a purpose's key is derived from the master with HKDF, as the data keys first were.
///
/// It is held in one of two ways:
/// - in memory (`security.master_key`, or `<data_dir>/master.key`): HKDF-SHA256 over the 32 bytes;
/// - in an HSM (`security.pkcs11`, [`MasterKey::open_pkcs11`]): the token computes
///   `HMAC-SHA256(master, salt || 0x00 || purpose)` (CKM_SHA256_HMAC) and only that per-purpose
///   value enters memory, where it goes through the same HKDF. The master never leaves the token.
///
/// Clones share one key (and, for the HSM, one session and one cache of derived keys).
#[derive(Clone)]
pub struct MasterKey(Arc<Held>);

struct Held {
    custody: Custody,
    /// The deployment's data keys, once open: then every key comes from here.
    ring: std::sync::OnceLock<data_keys::Ring>,
}

enum Custody {
    Memory(Zeroizing<[u8; 32]>),
    Hsm(hsm::HsmMasterKey),
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([REDACTED])")
    }
}

impl MasterKey {
    pub fn from_base64(encoded: &str) -> Result<Self, CryptoError> {
        let trimmed = encoded.trim();
        let bytes = Zeroizing::new(
            STANDARD
                .decode(trimmed)
                .or_else(|_| URL_SAFE_NO_PAD.decode(trimmed.trim_end_matches('=')))
                .map_err(|_| CryptoError::BadMasterKey)?,
        );
        let arr: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::BadMasterKey)?;
        Ok(Self::memory(Zeroizing::new(arr)))
    }

    fn held(custody: Custody) -> Self {
        Self(Arc::new(Held {
            custody,
            ring: std::sync::OnceLock::new(),
        }))
    }

    fn memory(bytes: Zeroizing<[u8; 32]>) -> Self {
        Self::held(Custody::Memory(bytes))
    }

    pub fn generate() -> Self {
        let mut k = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(k.as_mut());
        Self::memory(k)
    }

    /// The key's base64, for handing the same key to another instance; `None` when it is held
    /// in an HSM (it cannot be read out).
    pub fn to_base64(&self) -> Option<String> {
        match &self.0.custody {
            Custody::Memory(bytes) => Some(STANDARD.encode(bytes.as_ref())),
            Custody::Hsm(_) => None,
        }
    }

    /// Reads `path`, or creates it with a fresh key (mode 0600) if it does not exist.
    pub fn load_or_generate(path: &Path) -> Result<Self, CryptoError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_base64(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut k = Zeroizing::new([0u8; 32]);
                OsRng.fill_bytes(k.as_mut());
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| CryptoError::KeyFile(e.to_string()))?;
                }
                let encoded = Zeroizing::new(STANDARD.encode(k.as_ref()));
                write_private_file(path, encoded.as_bytes())
                    .map_err(|e| CryptoError::KeyFile(e.to_string()))?;
                Ok(Self::memory(k))
            }
            Err(e) => Err(CryptoError::KeyFile(e.to_string())),
        }
    }

    /// The master key held in a PKCS#11 token: loads the module, logs in, finds the key by its
    /// label and checks it cannot leave the token. No key material is read.
    pub fn open_pkcs11(settings: &crate::config::Pkcs11Settings) -> Result<Self, HsmError> {
        Ok(Self::held(Custody::Hsm(hsm::HsmMasterKey::open(settings)?)))
    }

    /// Where the key is held, when in an HSM.
    pub fn hsm_location(&self) -> Option<&KeyLocation> {
        match &self.0.custody {
            Custody::Memory(_) => None,
            Custody::Hsm(k) => Some(k.location()),
        }
    }

    /// HSM operations not yet written to the audit log (`None` for a key held in memory).
    pub fn custody_journal(&self) -> Option<&CustodyJournal> {
        match &self.0.custody {
            Custody::Memory(_) => None,
            Custody::Hsm(k) => Some(k.journal()),
        }
    }

    /// The key of `purpose`: the deployment's data key once they are open (a purpose without one
    /// is refused, never derived from a master that may not be the one it was made under), else
    /// derived from the master.
    fn derive(
        &self,
        key_use: &'static str,
        salt: &[u8],
        purpose: &str,
    ) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
        match self.0.ring.get() {
            Some(ring) => ring
                .get(&(key_use, purpose.to_string()))
                .cloned()
                .ok_or_else(|| CryptoError::NoDataKey(purpose.to_string())),
            None => self.derive_from_master(key_use, salt, purpose),
        }
    }

    /// HKDF-SHA256 under `salt` for `purpose`, from the master (memory) or from the token's
    /// per-purpose HMAC (HSM).
    fn derive_from_master(
        &self,
        key_use: &'static str,
        salt: &[u8],
        purpose: &str,
    ) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
        let hsm_ikm;
        let ikm: &[u8] = match &self.0.custody {
            Custody::Memory(bytes) => bytes.as_ref(),
            Custody::Hsm(k) => {
                let mut label = Vec::with_capacity(salt.len() + 1 + purpose.len());
                label.extend_from_slice(salt);
                label.push(0);
                label.extend_from_slice(purpose.as_bytes());
                hsm_ikm = k.derive(key_use, purpose, &label)?;
                hsm_ikm.as_ref()
            }
        };
        let hk = hkdf::Hkdf::<Sha256>::new(Some(salt), ikm);
        let mut okm = Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF's 255*HashLen limit, so expand cannot fail.
        let _ = hk.expand(purpose.as_bytes(), okm.as_mut());
        Ok(okm)
    }

    /// A cipher for one purpose (e.g. `"kyc-pii"`, `"signing-keys"`), keyed by HKDF-SHA256.
    /// With an HSM that cannot derive it (gone since start-up), the cipher refuses every
    /// operation ([`CryptoError::KeyUnavailable`]): nothing is written under a wrong key.
    pub fn cipher(&self, purpose: &str) -> FieldCipher {
        self.try_cipher(purpose).unwrap_or_else(|_| FieldCipher {
            aead: Err(purpose.to_string()),
        })
    }

    /// [`MasterKey::cipher`], failing when the HSM cannot derive the key.
    pub fn try_cipher(&self, purpose: &str) -> Result<FieldCipher, CryptoError> {
        let okm = self.derive("cipher", CIPHER_SALT, purpose)?;
        Ok(FieldCipher {
            aead: Ok(Aes256Gcm::new(okm.as_ref().into())),
        })
    }

    /// A derived 32-byte MAC key for one purpose (e.g. the audit chain); an error when an HSM
    /// cannot derive it (never a substitute key: what it signs must verify later).
    pub fn try_mac_key(&self, purpose: &str) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
        self.derive("mac", MAC_SALT, purpose)
    }
}

#[cfg(unix)]
fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

/// AES-256-GCM with a random 96-bit nonce per message. The associated data binds a ciphertext to
/// its place (e.g. `"kyc_submissions.legal_name:<row id>"`), so a ciphertext copied into another
/// row or column fails to decrypt.
pub struct FieldCipher {
    /// `Err(purpose)`: the key could not be derived (HSM unavailable); every call fails.
    aead: Result<Aes256Gcm, String>,
}

impl fmt::Debug for FieldCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FieldCipher([REDACTED])")
    }
}

const CIPHERTEXT_VERSION: &str = "v1.";

impl FieldCipher {
    /// Returns `v1.<base64url(nonce || ciphertext+tag)>`.
    pub fn encrypt(&self, plaintext: &[u8], aad: &str) -> Result<String, CryptoError> {
        let aead = self.aead()?;
        let mut nonce = [0u8; 12];
        OsRng.fill_bytes(&mut nonce);
        let ct = aead
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Encrypt)?;
        let mut out = Vec::with_capacity(12 + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(format!(
            "{CIPHERTEXT_VERSION}{}",
            URL_SAFE_NO_PAD.encode(out)
        ))
    }

    fn aead(&self) -> Result<&Aes256Gcm, CryptoError> {
        self.aead
            .as_ref()
            .map_err(|purpose| CryptoError::KeyUnavailable(purpose.clone()))
    }

    pub fn decrypt(&self, encoded: &str, aad: &str) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let aead = self.aead()?;
        let body = encoded
            .strip_prefix(CIPHERTEXT_VERSION)
            .ok_or(CryptoError::Decrypt)?;
        let raw = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| CryptoError::Decrypt)?;
        if raw.len() < 12 + 16 {
            return Err(CryptoError::Decrypt);
        }
        let (nonce, ct) = raw.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| CryptoError::Decrypt)?;
        aead.decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: ct,
                aad: aad.as_bytes(),
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::Decrypt)
    }

    pub fn encrypt_str(&self, plaintext: &str, aad: &str) -> Result<String, CryptoError> {
        self.encrypt(plaintext.as_bytes(), aad)
    }

    pub fn decrypt_str(&self, encoded: &str, aad: &str) -> Result<String, CryptoError> {
        let bytes = self.decrypt(encoded, aad)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| CryptoError::Decrypt)
    }
}

/// A freshly generated bearer secret (client secret, refresh token, session id, code): a fixed
/// prefix plus 256 bits of OS randomness, base64url. Debug is redacted. It is stored only as a
/// [`HashedToken`]; high entropy makes a fast hash safe here (unlike passwords).
#[derive(Clone)]
pub struct PlainToken(Zeroizing<String>);

impl fmt::Debug for PlainToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PlainToken([REDACTED])")
    }
}

impl PlainToken {
    pub fn generate(prefix: &str) -> Self {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        Self(Zeroizing::new(format!(
            "{prefix}{}",
            URL_SAFE_NO_PAD.encode(bytes)
        )))
    }

    /// Wraps a token presented by a client (for hashing and comparison only).
    pub fn from_presented(value: &str) -> Self {
        Self(Zeroizing::new(value.to_string()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> HashedToken {
        HashedToken(hex::encode(Sha256::digest(self.0.as_bytes())))
    }
}

/// SHA-256 (hex) of a [`PlainToken`]: what the database stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashedToken(String);

impl HashedToken {
    pub fn from_stored(hex: String) -> Self {
        Self(hex)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn into_string(self) -> String {
        self.0
    }
    /// Constant-time comparison with a presented token.
    pub fn matches(&self, presented: &PlainToken) -> bool {
        constant_time_eq(self.0.as_bytes(), presented.hash().0.as_bytes())
    }
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// A random identifier with a domain prefix (`"g_"`, `"evt_"`, ...): 128 bits, base64url.
pub fn random_id(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// argon2id with OWASP's recommended parameters (19 MiB, t=2, p=1).
fn argon2() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, password_params())
}

fn password_params() -> Params {
    Params::new(19 * 1024, 2, 1, None).unwrap_or_default()
}

/// Argon2 into `out` with kept working memory (`argon2_memory`); what the crate's
/// `PasswordHasher` computes, without allocating 19 MiB afresh each time.
fn argon2_into(
    argon: &Argon2<'_>,
    password: &[u8],
    salt: password_hash::Salt<'_>,
    out: &mut [u8],
) -> Result<(), CryptoError> {
    let mut salt_bytes = [0u8; 64];
    let salt = salt.decode_b64(&mut salt_bytes).map_err(phc_error)?;
    let count = argon.params().block_count();
    argon2_memory::with_blocks(count, password_params().block_count(), |blocks| {
        argon.hash_password_into_with_memory(password, salt, out, blocks)
    })
    .map_err(phc_error)
}

/// Any failure of the password hash (a malformed stored string, an unusable parameter).
fn phc_error<E>(_: E) -> CryptoError {
    CryptoError::PasswordHash
}

/// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`) for a new password.
pub fn hash_password(password: &str) -> Result<String, CryptoError> {
    let salt = SaltString::generate(&mut OsRng);
    let argon = argon2();
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon2_into(&argon, password.as_bytes(), salt.as_salt(), &mut out)?;
    Ok(PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: password_hash::ParamsString::try_from(argon.params()).map_err(phc_error)?,
        salt: Some(salt.as_salt()),
        hash: Some(password_hash::Output::new(&out).map_err(phc_error)?),
    }
    .to_string())
}

/// Whether `password` is the one `stored` was made from, under the parameters `stored` names
/// (as the crate's `PasswordVerifier` decides, with kept working memory).
fn password_matches(password: &[u8], stored: &PasswordHash<'_>) -> Result<bool, CryptoError> {
    let (Some(salt), Some(expected)) = (stored.salt, &stored.hash) else {
        return Ok(false);
    };
    let algorithm = Algorithm::try_from(stored.algorithm).map_err(phc_error)?;
    let version = match stored.version {
        Some(v) => Version::try_from(v).map_err(phc_error)?,
        None => Version::default(),
    };
    let params = Params::try_from(stored).map_err(phc_error)?;
    let argon = Argon2::new(algorithm, version, params);
    let mut out = vec![0u8; expected.len()];
    argon2_into(&argon, password, salt, &mut out)?;
    Ok(constant_time_eq(&out, expected.as_bytes()))
}

/// Verifies a password against a stored PHC string. With `None` (unknown user) a dummy hash is
/// verified anyway so that "no such user" and "wrong password" take the same time.
pub fn verify_password(password: &str, stored: Option<&str>) -> bool {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let dummy =
        DUMMY.get_or_init(|| hash_password("dummy-password-for-timing").unwrap_or_default());
    let (phc, known) = match stored {
        Some(s) => (s, true),
        None => (dummy.as_str(), false),
    };
    let ok = PasswordHash::new(phc)
        .ok()
        .and_then(|h| password_matches(password.as_bytes(), &h).ok())
        .unwrap_or(false);
    ok && known
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_encryption_round_trips_and_binds_to_its_row() {
        let key = MasterKey::generate();
        let c = key.cipher("kyc-pii");
        let ct = c
            .encrypt_str("Acme Payments Ltd", "kyc.legal_name:row1")
            .unwrap();
        assert!(!ct.contains("Acme"));
        assert_eq!(
            c.decrypt_str(&ct, "kyc.legal_name:row1").unwrap(),
            "Acme Payments Ltd"
        );
        assert!(
            c.decrypt_str(&ct, "kyc.legal_name:row2").is_err(),
            "moved to another row"
        );
        assert!(
            key.cipher("other")
                .decrypt_str(&ct, "kyc.legal_name:row1")
                .is_err()
        );
        assert!(
            MasterKey::generate()
                .cipher("kyc-pii")
                .decrypt_str(&ct, "kyc.legal_name:row1")
                .is_err()
        );
        // tampering with any byte fails authentication
        let mut bytes = ct.clone().into_bytes();
        let i = bytes.len() - 3;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        assert!(
            c.decrypt_str(&String::from_utf8(bytes).unwrap(), "kyc.legal_name:row1")
                .is_err()
        );
        for garbage in ["", "v1.", "v1.!!!", "v2.abc", "v1.AAAA"] {
            assert!(c.decrypt_str(garbage, "x").is_err(), "{garbage}");
        }
        // same plaintext, different nonces
        assert_ne!(
            c.encrypt_str("x", "a").unwrap(),
            c.encrypt_str("x", "a").unwrap()
        );
    }

    #[test]
    fn a_cipher_whose_key_is_unavailable_refuses_everything() {
        let c = FieldCipher {
            aead: Err("kyc-pii".into()),
        };
        let ct = MasterKey::generate()
            .cipher("kyc-pii")
            .encrypt_str("x", "a")
            .unwrap();
        for r in [c.encrypt_str("x", "a"), c.decrypt_str(&ct, "a")] {
            let e = r.unwrap_err();
            assert!(matches!(e, CryptoError::KeyUnavailable(_)), "{e}");
            assert!(e.to_string().contains("kyc-pii"), "{e}");
        }
    }

    #[test]
    fn file_key_derivations_are_unchanged() {
        // HKDF-SHA256 over the raw key, salt "consent/v1/mac", info = purpose: what data written
        // before HSM custody existed was keyed with.
        let k = MasterKey::from_base64(&STANDARD.encode([7u8; 32])).unwrap();
        let hk = hkdf::Hkdf::<Sha256>::new(Some(b"consent/v1/mac"), &[7u8; 32]);
        let mut expected = [0u8; 32];
        hk.expand(b"audit-chain", &mut expected).unwrap();
        assert_eq!(*k.try_mac_key("audit-chain").unwrap(), expected);
        assert!(k.custody_journal().is_none() && k.hsm_location().is_none());
    }

    #[test]
    fn master_key_parsing_and_file() {
        assert!(MasterKey::from_base64("short").is_err());
        assert!(MasterKey::from_base64(&STANDARD.encode([0u8; 31])).is_err());
        let k = MasterKey::generate();
        assert_eq!(
            MasterKey::from_base64(&k.to_base64().unwrap())
                .unwrap()
                .to_base64(),
            k.to_base64()
        );
        assert_eq!(format!("{k:?}"), "MasterKey([REDACTED])");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/master.key");
        let a = MasterKey::load_or_generate(&path).unwrap();
        let b = MasterKey::load_or_generate(&path).unwrap();
        assert_eq!(
            a.to_base64(),
            b.to_base64(),
            "generated once, then read back"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn tokens_are_hashed_and_compared_in_constant_time() {
        let t = PlainToken::generate("cs_");
        assert!(t.expose().starts_with("cs_"));
        assert!(t.expose().len() >= 40);
        let h = t.hash();
        assert!(!h.as_str().contains(t.expose()));
        assert!(h.matches(&PlainToken::from_presented(t.expose())));
        assert!(!h.matches(&PlainToken::from_presented("cs_wrong")));
        assert_eq!(format!("{t:?}"), "PlainToken([REDACTED])");
        assert_ne!(
            PlainToken::generate("x").expose(),
            PlainToken::generate("x").expose()
        );
    }

    #[test]
    fn passwords_use_argon2id() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", Some(&h)));
        assert!(!verify_password("wrong", Some(&h)));
        assert!(!verify_password("correct horse", None));
        assert!(!verify_password("x", Some("not-a-phc-string")));
    }

    /// Hashing with kept working memory is the crate's own Argon2: each side verifies what the
    /// other made, and stored hashes with other parameters (or output lengths) still verify.
    #[test]
    fn password_hashes_are_the_crates_own() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let ours = hash_password("correct horse").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert_eq!(parsed.params.to_string(), "m=19456,t=2,p=1");
        assert!(argon2().verify_password(b"correct horse", &parsed).is_ok());
        assert!(argon2().verify_password(b"wrong", &parsed).is_err());
        let salt = SaltString::generate(&mut OsRng);
        let theirs = argon2()
            .hash_password(b"correct horse", &salt)
            .unwrap()
            .to_string();
        assert!(verify_password("correct horse", Some(&theirs)));
        assert!(!verify_password("correct horse!", Some(&theirs)));
        let smaller = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(1024, 1, 1, Some(24)).unwrap(),
        )
        .hash_password(b"pw", &salt)
        .unwrap()
        .to_string();
        assert!(verify_password("pw", Some(&smaller)));
        assert!(!verify_password("pW", Some(&smaller)));
    }
}
