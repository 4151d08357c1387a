//! Envelope keys: each purpose's data key (the field ciphers, the audit chain's keys) is stored
//! in `data_keys`, wrapped by the master key (AES-256-GCM under a key-encryption key derived
//! from the master, bound to the purpose). Replacing the master ([`MasterKey::rewrap_data_keys`])
//! wraps those few rows again and re-encrypts no data: PII, signing keys, webhook and TOTP
//! secrets and the audit chain stay as they are, and old audit links still verify.
//!
//! - A new deployment (nothing written yet) gets random data keys: no master, past or present,
//!   can compute them; they exist only wrapped.
//! - A deployment from before this table adopts it at its first start: each data key is the key
//!   derived from the master until then (`origin = 'derived'`), so everything written under it
//!   still decrypts. Such keys can be derived again by that master: after a re-wrap, the old
//!   master must be destroyed. Adoption is refused unless the adopted keys open what is stored
//!   (a signing key decrypts, the audit chain's latest link verifies): a wrong master is never
//!   written down.
//! - A purpose added later (a row missing while others exist) gets a random key.

use std::collections::HashMap;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{KeyInit, OsRng};
use chrono::{DateTime, SubsecRound, Utc};
use diesel::prelude::*;
use rand::RngCore;
use zeroize::Zeroizing;

use super::{CIPHER_SALT, CryptoError, FieldCipher, MAC_SALT, MasterKey, WRAP_SALT};
use crate::storage::schema::{
    audit_events, clients, data_keys, kyc_submissions, second_factors, signing_keys, ssf_streams,
};
use crate::storage::{AnyConnection, StorageError};

/// Every key purpose of the service: `(use, purpose)`, the use being `cipher` (a field cipher,
/// [`MasterKey::cipher`]) or `mac` ([`MasterKey::try_mac_key`]). A purpose must be listed here
/// to have a key once the data keys are open.
pub const KEY_PURPOSES: [(&str, &str); 8] = [
    ("cipher", "kyc-pii"),
    ("cipher", "webhook-secrets"),
    ("cipher", "signing-keys"),
    ("cipher", "second-factor"),
    ("cipher", "ssf-authorization-header"),
    ("cipher", "customer-login-attempt"),
    ("mac", "audit-chain"),
    ("mac", "audit-checkpoint-ed25519"),
];

/// The open data keys, by `(use, purpose)`.
pub(super) type Ring = HashMap<(&'static str, String), Zeroizing<[u8; 32]>>;

#[derive(Debug, thiserror::Error)]
pub enum DataKeyError {
    #[error(
        "the data keys are wrapped by master key {wrapped_by}, not by the configured one \
         ({configured}): configure the master key they were last wrapped with"
    )]
    WrongMaster {
        wrapped_by: String,
        configured: String,
    },
    #[error(
        "the configured master key ({configured}) is not the one this database was written under \
         ({what} does not open with the keys derived from it): refusing to adopt them"
    )]
    NotThisDatabase {
        configured: String,
        what: &'static str,
    },
    #[error("the new master key is the current one ({0}): nothing to re-wrap")]
    SameMaster(String),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<diesel::result::Error> for DataKeyError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Storage(e.into())
    }
}

/// A re-wrap: how many data keys, and the two masters' ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrapped {
    pub keys: usize,
    pub from: String,
    pub to: String,
}

fn salt(key_use: &str) -> &'static [u8] {
    if key_use == "mac" {
        MAC_SALT
    } else {
        CIPHER_SALT
    }
}

fn aad(key_use: &str, purpose: &str) -> String {
    format!("data_keys:{key_use}:{purpose}")
}

fn ts(t: DateTime<Utc>) -> chrono::NaiveDateTime {
    t.naive_utc().trunc_subsecs(0)
}

type Row = (String, String, String, String);

/// The associated data of a stored signing key's ciphertext (`signing_keys.private_key_enc`):
/// one definition for the key store and for adoption's check that a master opens it.
pub fn signing_key_aad(kid: i64) -> String {
    format!("signing_keys.private_key:{kid}")
}

fn random_key() -> Zeroizing<[u8; 32]> {
    let mut key = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(key.as_mut());
    key
}

/// Every stored data key: (use, purpose, wrapped key, wrapping master's id).
fn stored_rows(conn: &mut AnyConnection) -> Result<Vec<Row>, DataKeyError> {
    Ok(data_keys::table
        .select((
            data_keys::key_use,
            data_keys::purpose,
            data_keys::wrapped_key,
            data_keys::wrapped_by,
        ))
        .load(conn)?)
}

/// Whether anything was written before the data keys (any audit event, or any row of a table
/// that holds ciphertexts): then they are adopted from the master. Erring towards adoption is
/// safe (the keys of before); erring towards random keys would lose the data.
fn written_before(conn: &mut AnyConnection) -> Result<bool, DataKeyError> {
    let counts: [i64; 6] = [
        audit_events::table.count().get_result(conn)?,
        signing_keys::table.count().get_result(conn)?,
        kyc_submissions::table.count().get_result(conn)?,
        clients::table.count().get_result(conn)?,
        second_factors::table.count().get_result(conn)?,
        ssf_streams::table.count().get_result(conn)?,
    ];
    Ok(counts.iter().any(|n| *n > 0))
}

/// Data keys read (and made) by [`MasterKey::open_data_keys`], not yet in use.
pub struct OpenedKeys {
    /// How many were made now (missing before).
    pub made: usize,
    /// Whether they were adopted from the master (a deployment from before data keys).
    pub adopted: bool,
    ring: Ring,
}

impl std::fmt::Debug for OpenedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedKeys")
            .field("made", &self.made)
            .field("adopted", &self.adopted)
            .finish_non_exhaustive()
    }
}

impl MasterKey {
    /// The cipher that wraps data keys under this master.
    fn key_wrapping(&self) -> Result<FieldCipher, CryptoError> {
        let kek = self.derive_from_master("wrap", WRAP_SALT, "data-keys")?;
        Ok(FieldCipher {
            aead: Ok(Aes256Gcm::new(kek.as_ref().into())),
        })
    }

    /// This master's public id: 16 hex digits derived from it (not the key), for telling which
    /// master wraps the data keys.
    pub fn key_id(&self) -> Result<String, CryptoError> {
        let id = self.derive_from_master("mac", MAC_SALT, "master-key-id")?;
        Ok(hex::encode(&id[..8]))
    }

    /// Whether this key's data keys are open (every key now comes from them).
    pub fn data_keys_open(&self) -> bool {
        self.0.ring.get().is_some()
    }

    /// Reads the deployment's data keys (unwrapped with this master), making the missing ones
    /// (see the module documentation). Run inside a write transaction: what it stores commits
    /// with it or not at all; once it has committed, [`MasterKey::use_data_keys`] makes them the
    /// keys of this `MasterKey` and its clones.
    pub fn open_data_keys(
        &self,
        conn: &mut AnyConnection,
        now: DateTime<Utc>,
    ) -> Result<OpenedKeys, DataKeyError> {
        let wrapping = self.key_wrapping()?;
        let configured = self.key_id()?;
        let rows = stored_rows(conn)?;
        let adopt = rows.is_empty() && written_before(conn)?;
        let mut ring = Ring::new();
        let mut made = 0;
        for (key_use, purpose) in KEY_PURPOSES {
            let stored = rows.iter().find(|r| r.0 == key_use && r.1 == purpose);
            let key = match stored {
                Some((_, _, wrapped, wrapped_by)) => {
                    let plain = wrapping.decrypt(wrapped, &aad(key_use, purpose));
                    let plain = plain.map_err(|_| DataKeyError::WrongMaster {
                        wrapped_by: wrapped_by.clone(),
                        configured: configured.clone(),
                    })?;
                    let key: [u8; 32] = plain
                        .as_slice()
                        .try_into()
                        .map_err(|_| DataKeyError::Crypto(CryptoError::Decrypt))?;
                    Zeroizing::new(key)
                }
                None => {
                    let key = if adopt {
                        self.derive_from_master(key_use, salt(key_use), purpose)?
                    } else {
                        random_key()
                    };
                    diesel::insert_into(data_keys::table)
                        .values((
                            data_keys::key_use.eq(key_use),
                            data_keys::purpose.eq(purpose),
                            data_keys::wrapped_key
                                .eq(wrapping.encrypt(key.as_ref(), &aad(key_use, purpose))?),
                            data_keys::wrapped_by.eq(&configured),
                            data_keys::origin.eq(if adopt { "derived" } else { "random" }),
                            data_keys::created_at.eq(ts(now)),
                            data_keys::wrapped_at.eq(ts(now)),
                        ))
                        .execute(conn)?;
                    made += 1;
                    key
                }
            };
            ring.insert((key_use, purpose.to_string()), key);
        }
        if adopt {
            check_adopted(conn, &ring, &configured)?;
        }
        Ok(OpenedKeys {
            made,
            adopted: adopt,
            ring,
        })
    }

    /// From now on every key of this `MasterKey` and its clones is one of `keys` (opened, and
    /// committed, by [`MasterKey::open_data_keys`]). A clone that installed them first has the
    /// same keys.
    pub fn use_data_keys(&self, keys: OpenedKeys) {
        let _ = self.0.ring.set(keys.ring);
    }

    /// Wraps every stored data key under `new` instead of this master, in the caller's write
    /// transaction; the data itself is untouched. Refused unless this master wraps every row
    /// (none is left under another). The deployment then starts only with `new`.
    pub fn rewrap_data_keys(
        &self,
        conn: &mut AnyConnection,
        new: &MasterKey,
        now: DateTime<Utc>,
    ) -> Result<Rewrapped, DataKeyError> {
        let (from, to) = (self.key_id()?, new.key_id()?);
        if from == to {
            return Err(DataKeyError::SameMaster(from));
        }
        let (old_wrapping, new_wrapping) = (self.key_wrapping()?, new.key_wrapping()?);
        let rows = stored_rows(conn)?;
        let mut keys = 0;
        for (key_use, purpose, wrapped, wrapped_by) in rows {
            let aad = aad(&key_use, &purpose);
            let wrong = || DataKeyError::WrongMaster {
                wrapped_by: wrapped_by.clone(),
                configured: from.clone(),
            };
            if wrapped_by != from {
                return Err(wrong());
            }
            let key = old_wrapping.decrypt(&wrapped, &aad).map_err(|_| wrong())?;
            let n = diesel::update(
                data_keys::table
                    .filter(data_keys::key_use.eq(&key_use))
                    .filter(data_keys::purpose.eq(&purpose))
                    .filter(data_keys::wrapped_by.eq(&from)),
            )
            .set((
                data_keys::wrapped_key.eq(new_wrapping.encrypt(&key, &aad)?),
                data_keys::wrapped_by.eq(&to),
                data_keys::rewraps.eq(data_keys::rewraps + 1),
                data_keys::wrapped_at.eq(ts(now)),
            ))
            .execute(conn)?;
            if n != 1 {
                return Err(wrong());
            }
            keys += 1;
        }
        Ok(Rewrapped { keys, from, to })
    }
}

/// Adopted keys must open what is stored: a signing key (every deployment that served has one),
/// and the audit chain's latest link.
fn check_adopted(
    conn: &mut AnyConnection,
    ring: &Ring,
    configured: &str,
) -> Result<(), DataKeyError> {
    let refuse = |what| DataKeyError::NotThisDatabase {
        configured: configured.to_string(),
        what,
    };
    let probe = MasterKey::held(super::Custody::Memory(Zeroizing::new([0; 32])));
    let _ = probe.0.ring.set(ring.clone());
    let key: Option<(i64, String)> = signing_keys::table
        .select((signing_keys::kid, signing_keys::private_key_enc))
        .first(conn)
        .optional()?;
    if let Some((kid, enc)) = key {
        let cipher = probe.try_cipher("signing-keys")?;
        cipher
            .decrypt(&enc, &signing_key_aad(kid))
            .map_err(|_| refuse("a stored signing key"))?;
    }
    let chain = crate::audit::ChainKey::try_derive(&probe)?;
    if crate::audit::last_link_verifies(conn, &chain)? == Some(false) {
        return Err(refuse("the audit chain's latest link"));
    }
    Ok(())
}
