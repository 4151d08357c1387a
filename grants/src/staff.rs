//! Staff credentials: what a four-eyes approval of a privileged action yields. A Biscuit signed
//! with the server's key whose authority block names the credential, the staff member it was
//! issued to, the action and the one resource it allows, and its expiry:
//!
//! ```text
//! staff_credential("ecr_..."); staff("stf_...");
//! privileged_action("customer.grants.access"); privileged_resource("customer", "cust_...");
//! check if time($t), $t <= 2026-12-04T12:15:00Z;
//! ```
//!
//! These facts never appear in a customer's grant token (the verifier of one refuses the other:
//! a grant token names no staff credential, a staff credential no grant). A staff credential
//! is used by the staff member it names, as issued: a token with any block beyond the authority
//! is refused, so no holder-written Datalog ever runs. Revocation and the audit of each use are
//! the server's (it keeps the credential's id).

use std::cell::Cell;
use std::time::Duration;

use biscuit_auth::builder::{Fact, Term};
use biscuit_auth::error::{Format, Token};
use biscuit_auth::{AuthorizerBuilder, AuthorizerLimits, Biscuit};
use chrono::{DateTime, Utc};

use crate::error::MintError;
use crate::keys::{KeyProvider, SigningKey};
use crate::time::floor_secs;
use crate::vocab::date_term;

/// The largest staff credential accepted (an issued one is a few hundred bytes).
pub const MAX_STAFF_CREDENTIAL_LEN: usize = 4096;

/// What a staff credential allows, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffCredential {
    /// The server's id of the credential (for revocation and audit).
    pub id: String,
    /// The staff member it was issued to.
    pub staff_id: String,
    /// The privileged action (`customer.grants.access`, ...).
    pub action: String,
    /// The kind and id of the one resource it applies to.
    pub resource_kind: String,
    pub resource_id: String,
    pub expires_at: DateTime<Utc>,
}

/// Why a staff credential is refused. Safe to show to its holder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StaffCredentialError {
    #[error("the credential is not a well-formed token")]
    Malformed,
    #[error("the credential's signature or key is not ours")]
    BadSignature,
    #[error("the credential has been changed after it was issued")]
    Attenuated,
    #[error(
        "the credential does not allow this action on this resource to this staff member, or has expired"
    )]
    Denied,
}

fn str_fact(name: &str, values: &[&str]) -> Fact {
    Fact::new(
        name.to_owned(),
        values
            .iter()
            .map(|v| Term::Str((*v).to_owned()))
            .collect::<Vec<_>>(),
    )
}

/// Signs `credential` with `key`.
pub fn mint_staff_credential(
    key: &SigningKey,
    credential: &StaffCredential,
) -> Result<String, MintError> {
    let c = credential;
    let expires = date_term(floor_secs(c.expires_at));
    let built = Biscuit::builder()
        .fact(str_fact("staff_credential", &[&c.id]))
        .and_then(|b| b.fact(str_fact("staff", &[&c.staff_id])))
        .and_then(|b| b.fact(str_fact("privileged_action", &[&c.action])))
        .and_then(|b| {
            b.fact(str_fact(
                "privileged_resource",
                &[&c.resource_kind, &c.resource_id],
            ))
        })
        .and_then(|b| {
            b.code_with_params(
                "check if time($t), $t <= {expires}",
                std::collections::HashMap::from([("expires".to_string(), expires)]),
                Default::default(),
            )
        })
        .and_then(|b| b.root_key_id(key.kid()).build(key.keypair()))
        .map_err(|e| MintError::Biscuit(e.to_string()))?;
    built
        .to_base64()
        .map_err(|e| MintError::Biscuit(e.to_string()))
}

/// What a use of a staff credential asks for.
#[derive(Debug, Clone, Copy)]
pub struct StaffUse<'a> {
    pub staff_id: &'a str,
    pub action: &'a str,
    pub resource_kind: &'a str,
    pub resource_id: &'a str,
}

/// Checks `token` for `use_` at `now` with the keys of `keys`: the credential's id when it was
/// issued by us, unchanged, to this staff member, for this action on this resource, and has not
/// expired. Revocation is the caller's to check with the id.
pub fn verify_staff_credential(
    token: &str,
    keys: &impl KeyProvider,
    use_: &StaffUse<'_>,
    now: DateTime<Utc>,
) -> Result<String, StaffCredentialError> {
    let token = token.trim();
    if token.is_empty() || token.len() > MAX_STAFF_CREDENTIAL_LEN {
        return Err(StaffCredentialError::Malformed);
    }
    let unknown_key = Cell::new(false);
    let provider = |kid: Option<u32>| -> Result<biscuit_auth::PublicKey, Format> {
        match kid.and_then(|kid| keys.public_key(kid, now)) {
            Some(key) => Ok(key.0),
            None => {
                unknown_key.set(true);
                Err(Format::UnknownPublicKey)
            }
        }
    };
    let parsed = Biscuit::from_base64(token, provider).map_err(|e| match e {
        Token::Format(Format::Signature(_) | Format::SealedSignature) => {
            StaffCredentialError::BadSignature
        }
        _ if unknown_key.get() => StaffCredentialError::BadSignature,
        _ => StaffCredentialError::Malformed,
    })?;
    if parsed.block_count() != 1 {
        return Err(StaffCredentialError::Attenuated);
    }
    let denied = |_| StaffCredentialError::Denied;
    let mut authorizer = AuthorizerBuilder::new()
        .set_limits(AuthorizerLimits {
            max_facts: 100,
            max_iterations: 10,
            max_time: Duration::from_millis(20),
        })
        .fact(Fact::new("time".into(), vec![date_term(now)]))
        .and_then(|b| b.fact(str_fact("caller", &[use_.staff_id])))
        .and_then(|b| b.fact(str_fact("requested_action", &[use_.action])))
        .and_then(|b| {
            b.fact(str_fact(
                "requested_resource",
                &[use_.resource_kind, use_.resource_id],
            ))
        })
        .and_then(|b| {
            b.code(
                "allow if staff_credential($c), staff($s), caller($s), privileged_action($a), \
                 requested_action($a), privileged_resource($k, $r), requested_resource($k, $r)",
            )
        })
        .and_then(|b| b.build(&parsed))
        .map_err(denied)?;
    authorizer.authorize().map_err(denied)?;
    let ids: Vec<(String,)> = authorizer
        .query("id($c) <- staff_credential($c)")
        .map_err(denied)?;
    match ids.as_slice() {
        [(id,)] => Ok(id.clone()),
        _ => Err(StaffCredentialError::Denied),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration as ChronoDuration;

    fn credential(now: DateTime<Utc>) -> StaffCredential {
        StaffCredential {
            id: "ecr_1".into(),
            staff_id: "stf_a".into(),
            action: "customer.grants.access".into(),
            resource_kind: "customer".into(),
            resource_id: "cust_1".into(),
            expires_at: now + ChronoDuration::minutes(15),
        }
    }

    fn use_<'a>(staff: &'a str, customer: &'a str) -> StaffUse<'a> {
        StaffUse {
            staff_id: staff,
            action: "customer.grants.access",
            resource_kind: "customer",
            resource_id: customer,
        }
    }

    #[test]
    fn a_credential_allows_its_staff_member_its_action_on_its_resource_until_it_expires() {
        let key = SigningKey::generate(7);
        let now = Utc::now();
        let token = mint_staff_credential(&key, &credential(now)).unwrap();
        assert_eq!(
            verify_staff_credential(&token, &key, &use_("stf_a", "cust_1"), now).as_deref(),
            Ok("ecr_1")
        );
        for (u, at) in [
            (use_("stf_b", "cust_1"), now),
            (use_("stf_a", "cust_2"), now),
            (use_("stf_a", "cust_1"), now + ChronoDuration::minutes(16)),
        ] {
            assert_eq!(
                verify_staff_credential(&token, &key, &u, at),
                Err(StaffCredentialError::Denied)
            );
        }
        let other_action = StaffUse {
            action: "client.suspend",
            ..use_("stf_a", "cust_1")
        };
        assert_eq!(
            verify_staff_credential(&token, &key, &other_action, now),
            Err(StaffCredentialError::Denied)
        );
    }

    #[test]
    fn foreign_changed_and_malformed_credentials_are_refused() {
        let key = SigningKey::generate(7);
        let now = Utc::now();
        let token = mint_staff_credential(&key, &credential(now)).unwrap();
        let other = SigningKey::generate(7);
        assert_eq!(
            verify_staff_credential(&token, &other, &use_("stf_a", "cust_1"), now),
            Err(StaffCredentialError::BadSignature)
        );
        let unknown_kid = SigningKey::generate(8);
        assert_eq!(
            verify_staff_credential(&token, &unknown_kid, &use_("stf_a", "cust_1"), now),
            Err(StaffCredentialError::BadSignature)
        );
        // Any block after the authority, even one that only narrows, is refused.
        let parsed = Biscuit::from_base64(&token, key.public_key().0).unwrap();
        let narrowed = parsed
            .append(
                biscuit_auth::builder::BlockBuilder::new()
                    .code("check if time($t)")
                    .unwrap(),
            )
            .unwrap()
            .to_base64()
            .unwrap();
        assert_eq!(
            verify_staff_credential(&narrowed, &key, &use_("stf_a", "cust_1"), now),
            Err(StaffCredentialError::Attenuated)
        );
        for bad in ["", "not a token", &"A".repeat(MAX_STAFF_CREDENTIAL_LEN + 1)] {
            assert_eq!(
                verify_staff_credential(bad, &key, &use_("stf_a", "cust_1"), now),
                Err(StaffCredentialError::Malformed)
            );
        }
    }
}
