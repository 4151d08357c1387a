//! The revocation check a verifier consults after the signature and before any Datalog.

use crate::GrantId;
use crate::error::RevocationLookupError;

/// Answers "is this grant or token revoked?". Errors fail closed.
pub trait RevocationCheck {
    /// `revocation_ids` are the token's, hex, one per block.
    fn is_revoked(
        &self,
        grant: &GrantId,
        revocation_ids: &[String],
    ) -> Result<bool, RevocationLookupError>;
}

impl<F> RevocationCheck for F
where
    F: Fn(&GrantId, &[String]) -> bool,
{
    fn is_revoked(
        &self,
        grant: &GrantId,
        revocation_ids: &[String],
    ) -> Result<bool, RevocationLookupError> {
        Ok(self(grant, revocation_ids))
    }
}

/// Treats nothing as revoked. Only for offline tooling and tests: a resource server must
/// consult the revocation feed.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoRevocationCheck;

impl RevocationCheck for NoRevocationCheck {
    fn is_revoked(&self, _: &GrantId, _: &[String]) -> Result<bool, RevocationLookupError> {
        Ok(false)
    }
}

/// A token's revocation ids as a [`RevocationCheck`] receives them: hex, one per block.
pub(super) fn hex_ids(ids: &[Vec<u8>]) -> Vec<String> {
    ids.iter().map(hex::encode).collect()
}
