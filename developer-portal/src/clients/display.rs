//! What the consent page shows about a client.

use platform::crypto::{FieldCipher, MasterKey};
use platform::storage::{AnyConnection, StorageResult};

use super::{ClientView, live};
use crate::error::PortalError;
use crate::kyc;

/// What the consent page shows about a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientDisplay {
    pub client_id: String,
    pub name: String,
    /// `sandbox` or `production`.
    pub environment: String,
    /// `active` or `suspended`.
    pub status: String,
    /// Whether the owning developer's KYC is approved.
    pub kyc_verified: bool,
    /// The developer's verified legal name, present exactly when `kyc_verified`.
    pub verified_legal_name: Option<String>,
    pub redirect_uris: Vec<String>,
    pub allowed_actions: Vec<String>,
}

impl ClientDisplay {
    /// The line to show under the client's name.
    pub fn badge(&self) -> String {
        match (&self.verified_legal_name, self.environment.as_str()) {
            (_, "sandbox") if !self.kyc_verified => "sandbox, unverified".into(),
            (Some(name), "sandbox") => format!("sandbox, by {name} (verified)"),
            (Some(name), _) => format!("by {name} (verified)"),
            (None, _) => "unverified".into(),
        }
    }
}

/// The client as the consent page shows it; `None` for an unknown or deleted client. The legal
/// name is decrypted only when the developer's KYC is approved. (Takes the master key, since the
/// legal name is encrypted under it.)
pub fn client_display(
    conn: &mut AnyConnection,
    master_key: &MasterKey,
    client_id: &str,
) -> StorageResult<Option<ClientDisplay>> {
    let Some(c) = live(conn, client_id)? else {
        return Ok(None);
    };
    let legal = developer_legal_name(conn, master_key, &c.developer_id)?;
    let c = ClientView::from(c);
    Ok(Some(ClientDisplay {
        redirect_uris: c.redirect_uris,
        allowed_actions: c.allowed_actions,
        client_id: c.id,
        name: c.name,
        environment: c.environment,
        status: c.status,
        kyc_verified: legal.is_some(),
        verified_legal_name: legal,
    }))
}

/// The verified legal name of `developer_id` (decrypted), when their KYC is approved: for a
/// caller that already holds the client's row.
pub fn developer_legal_name(
    conn: &mut AnyConnection,
    master_key: &MasterKey,
    developer_id: &str,
) -> StorageResult<Option<String>> {
    let cipher: FieldCipher = master_key.cipher(kyc::PII_KEY);
    match kyc::verified_legal_name(conn, &cipher, developer_id) {
        Ok(n) => Ok(n),
        Err(PortalError::Storage(e)) => Err(e),
        Err(e) => Ok(undecryptable(&e, developer_id)),
    }
}

/// The legal name of an approved KYC submission the caller has read itself (its id and the
/// encrypted `legal_name_enc`), decrypted as [`developer_legal_name`] does.
pub fn approved_legal_name(
    master_key: &MasterKey,
    developer_id: &str,
    submission_id: &str,
    legal_name_enc: &str,
) -> Option<String> {
    let cipher: FieldCipher = master_key.cipher(kyc::PII_KEY);
    match cipher.decrypt_str(legal_name_enc, &kyc::aad("legal_name", submission_id)) {
        Ok(n) => Some(n),
        Err(e) => undecryptable(&e.into(), developer_id),
    }
}

/// A ciphertext that does not decrypt is not a verified name; never show garbage.
fn undecryptable(e: &PortalError, developer_id: &str) -> Option<String> {
    tracing::error!(error = ?e, developer_id, "KYC legal name does not decrypt");
    None
}
