//! Signed checkpoints: the chain's head, signed with the deployment's key, kept outside the
//! database as evidence that every event up to it is still there.

use chrono::Utc;
use ed25519_dalek::Signer;
use serde::{Deserialize, Serialize};

use super::chain::verify_with;
use super::{ChainKey, ChainReport, link_all};
use crate::storage::{AnyConnection, StorageResult};

/// A signed statement of the chain's head: "event `chain_index` has hash `hash`" (and so, by
/// the chain, every event before it), signed at `issued_at` with the deployment's checkpoint key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Always `consent-audit-checkpoint/1`.
    pub format: String,
    pub chain_index: i64,
    pub hash: String,
    /// RFC 3339.
    pub issued_at: String,
    /// Hex Ed25519 public key of the signer (the deployment's, derived from its master key).
    pub public_key: String,
    /// Hex Ed25519 signature over [`Checkpoint::signed_bytes`].
    pub signature: String,
}

pub const CHECKPOINT_FORMAT: &str = "consent-audit-checkpoint/1";

impl Checkpoint {
    /// What is signed: format, index, hash and time, one per line.
    pub fn signed_bytes(&self) -> Vec<u8> {
        format!(
            "{}\n{}\n{}\n{}",
            self.format, self.chain_index, self.hash, self.issued_at
        )
        .into_bytes()
    }

    /// Refuses a checkpoint not signed by this deployment's key (or altered since).
    pub fn check_signature(&self, key: &ChainKey) -> Result<(), String> {
        if self.format != CHECKPOINT_FORMAT {
            return Err(format!("unknown checkpoint format {:?}", self.format));
        }
        let ours = key.signing.verifying_key();
        if self.public_key != hex::encode(ours.as_bytes()) {
            return Err("the checkpoint was signed by another key than this deployment's".into());
        }
        let signature = hex::decode(&self.signature)
            .ok()
            .and_then(|b| ed25519_dalek::Signature::from_slice(&b).ok())
            .ok_or("the checkpoint's signature is malformed")?;
        ours.verify_strict(&self.signed_bytes(), &signature)
            .map_err(|_| "the checkpoint's signature does not verify".to_string())
    }
}

/// Links everything pending, verifies the whole chain, and signs its head. Refuses (returns the
/// failing report) when the chain does not verify: a checkpoint vouches only for a sound chain.
pub fn checkpoint(
    conn: &mut AnyConnection,
    key: &ChainKey,
    at: chrono::DateTime<Utc>,
) -> StorageResult<Result<Checkpoint, ChainReport>> {
    link_all(conn, key)?;
    // The head's index and hash from the snapshot that was verified (a linker on another
    // instance may move the head meanwhile: a later read could pair this index with its hash).
    let (report, hash) = verify_with(conn, key, None)?;
    if !report.valid {
        return Ok(Err(report));
    }
    let mut cp = Checkpoint {
        format: CHECKPOINT_FORMAT.into(),
        chain_index: report.head_index,
        hash,
        issued_at: at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        public_key: key.public_key_hex(),
        signature: String::new(),
    };
    cp.signature = hex::encode(key.signing.sign(&cp.signed_bytes()).to_bytes());
    Ok(Ok(cp))
}
