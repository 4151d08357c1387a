//! Row types for the tables the foundation writes (the seed and the audit log); feature crates add
//! their own beside these.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::*;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = customers)]
pub struct Customer {
    pub id: String,
    pub username: String,
    pub display_name: String,
    pub password_hash: String,
    pub created_at: NaiveDateTime,
    /// A test identity: the only kind that may consent to sandbox clients.
    pub is_test: bool,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = accounts)]
pub struct Account {
    pub id: String,
    pub customer_id: String,
    pub name: String,
    pub masked_number: String,
    pub currency: String,
    pub balance_minor: i64,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = merchants)]
pub struct Merchant {
    pub id: String,
    pub name: String,
    pub category: String,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = transactions)]
pub struct Transaction {
    pub id: String,
    pub account_id: String,
    pub booked_at: NaiveDateTime,
    pub amount_minor: i64,
    pub currency: String,
    pub merchant_id: String,
    pub description: String,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = staff)]
pub struct Staff {
    pub id: String,
    pub username: String,
    pub display_name: String,
    pub password_hash: String,
    pub status: String,
    pub created_at: NaiveDateTime,
    /// What the member may approve (comma-separated). Every insert states it: the column's
    /// default (every role) is only for the members who existed before roles did.
    pub roles: String,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = developers)]
pub struct Developer {
    pub id: String,
    pub email: String,
    pub display_name: String,
    pub password_hash: String,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = kyc_submissions)]
pub struct KycSubmission {
    pub id: String,
    pub developer_id: String,
    pub status: String,
    pub legal_name_enc: String,
    pub registration_number_enc: String,
    pub country: String,
    pub address_enc: String,
    pub contact_enc: String,
    pub documents_enc: String,
    pub decision_reason: Option<String>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub submitted_at: Option<NaiveDateTime>,
    pub decided_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = kyc_reviews)]
pub struct KycReview {
    pub id: String,
    pub submission_id: String,
    pub staff_id: String,
    pub decision: String,
    pub justification: String,
    pub round: i32,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = clients)]
pub struct Client {
    pub id: String,
    pub developer_id: String,
    pub name: String,
    pub environment: String,
    /// JSON array of exact redirect URIs.
    pub redirect_uris: String,
    pub auth_method: String,
    pub secret_hash: String,
    /// JSON array of actions the client may request.
    pub allowed_actions: String,
    pub webhook_url: Option<String>,
    pub webhook_secret_enc: Option<String>,
    pub dormancy_days: Option<i32>,
    pub status: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// `private_key_jwt` clients: their public keys, an RFC 7517 JWK Set (JSON).
    pub jwks: Option<String>,
    /// The client always uses DPoP (RFC 9449 section 5.2).
    pub dpop_bound_access_tokens: bool,
    /// `tls_client_auth` clients: the subject DN their certificate carries (RFC 8705 2.1.2).
    pub tls_client_auth_subject_dn: Option<String>,
    /// Every access token is bound to the client's TLS certificate (RFC 8705 section 3).
    pub tls_client_certificate_bound_access_tokens: bool,
    /// When staff last set `dormancy_days`: the client's own period counts from here for grants
    /// idle since before it.
    pub dormancy_since: Option<NaiveDateTime>,
}

/// A grant as the services read it (the token endpoint, introspection, the dashboard).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = grant_rows)]
pub struct GrantRecord {
    pub id: String,
    pub customer_id: String,
    pub client_id: String,
    /// A [`GrantStatus`] name.
    pub status: String,
    /// JSON: the granted RAR `account_access` detail, from which tokens are minted.
    pub authorization_details: String,
    pub created_at: NaiveDateTime,
    pub authorized_at: Option<NaiveDateTime>,
    pub expires_at: NaiveDateTime,
    pub last_used_at: Option<NaiveDateTime>,
    pub revoked_at: Option<NaiveDateTime>,
    pub revoked_by: Option<String>,
}

impl GrantRecord {
    /// Authorized: tokens may be issued and used.
    pub fn is_authorized(&self) -> bool {
        self.status == GrantStatus::Authorized.as_str()
    }
}

/// A status column's closed set of values, named once: the enum, its column text, and `parse`.
macro_rules! status_set {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The column value.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// Reads a column value; `None` for anything the migrations do not allow.
            pub fn parse(s: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

status_set! {
    /// `refresh_tokens.status`.
    RefreshTokenStatus {
        Active = "active",
        /// Rotated: presenting it again is a replay.
        Used = "used",
        Revoked = "revoked",
    }
}

status_set! {
    /// `clients.status`.
    ClientStatus {
        Active = "active",
        Suspended = "suspended",
        /// The row stays for the audit trail and foreign keys.
        Deleted = "deleted",
    }
}

status_set! {
    /// `staff.status`.
    StaffStatus {
        Active = "active",
        Disabled = "disabled",
    }
}

status_set! {
    /// `authorization_requests.status` (a pushed request waiting for the customer's decision).
    AuthorizationRequestStatus {
        Pending = "pending",
        Approved = "approved",
        Denied = "denied",
    }
}

status_set! {
    /// `webhook_outbox.status`.
    WebhookStatus {
        Pending = "pending",
        Delivered = "delivered",
        /// Retries exhausted; the developer may send it again.
        Failed = "failed",
    }
}

status_set! {
    /// `kyc_submissions.status`.
    KycStatus {
        Draft = "draft",
        Submitted = "submitted",
        Approved = "approved",
        Rejected = "rejected",
        NeedsInformation = "needs_information",
    }
}

impl KycStatus {
    /// Whether the developer may still edit the details.
    pub fn editable(self) -> bool {
        matches!(self, Self::Draft | Self::NeedsInformation)
    }
}

status_set! {
    /// `kyc_reviews.decision`: a staff decision on a submission.
    ReviewDecision {
        Approve = "approve",
        Reject = "reject",
        NeedsInformation = "needs_information",
    }
}

status_set! {
    /// `approval_requests.status` (four-eyes requests).
    ApprovalStatus {
        Pending = "pending",
        Approved = "approved",
        Rejected = "rejected",
        /// Not decided within its time to live.
        Expired = "expired",
    }
}

status_set! {
    /// `signing_keys.status`.
    SigningKeyStatus {
        Active = "active",
        Retired = "retired",
    }
}

/// The life of a grant (`grants.status`). The column holds [`GrantStatus::as_str`]; this is the
/// one place the names are written (the migrations' CHECK constraints list the same set).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[schema(
    description = "The life of a grant: `awaiting_authorization` (pushed or consented, not \
                        yet exchanged for tokens), `authorized`, `rejected` (the customer \
                        declined), `revoked`, `expired`."
)]
pub enum GrantStatus {
    /// Pushed or consented, not yet exchanged for tokens.
    AwaitingAuthorization,
    Authorized,
    /// The customer declined.
    Rejected,
    Revoked,
    Expired,
}

impl GrantStatus {
    /// The statuses of a grant that can still be used or revoked.
    pub const LIVE: [GrantStatus; 2] =
        [GrantStatus::AwaitingAuthorization, GrantStatus::Authorized];
    /// [`GrantStatus::LIVE`] as column values, for `eq_any` filters.
    pub const LIVE_STR: [&'static str; 2] = ["awaiting_authorization", "authorized"];

    pub const fn as_str(self) -> &'static str {
        match self {
            GrantStatus::AwaitingAuthorization => "awaiting_authorization",
            GrantStatus::Authorized => "authorized",
            GrantStatus::Rejected => "rejected",
            GrantStatus::Revoked => "revoked",
            GrantStatus::Expired => "expired",
        }
    }

    /// Reads a column value; `None` for anything the migrations do not allow.
    pub fn parse(s: &str) -> Option<Self> {
        [
            GrantStatus::AwaitingAuthorization,
            GrantStatus::Authorized,
            GrantStatus::Rejected,
            GrantStatus::Revoked,
            GrantStatus::Expired,
        ]
        .into_iter()
        .find(|g| g.as_str() == s)
    }

    pub fn is_live(self) -> bool {
        GrantStatus::LIVE.contains(&self)
    }
}

impl std::fmt::Display for GrantStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod grant_status_tests {
    use super::GrantStatus;

    #[test]
    fn names_round_trip_and_live_matches() {
        for s in [
            "awaiting_authorization",
            "authorized",
            "rejected",
            "revoked",
            "expired",
        ] {
            assert_eq!(GrantStatus::parse(s).unwrap().as_str(), s);
        }
        assert_eq!(GrantStatus::parse("active"), None);
        let live: Vec<&str> = GrantStatus::LIVE.iter().map(|g| g.as_str()).collect();
        assert_eq!(live, GrantStatus::LIVE_STR);
    }

    #[test]
    fn status_sets_round_trip() {
        use super::{ClientStatus, RefreshTokenStatus, SigningKeyStatus, StaffStatus};
        for s in ["active", "used", "revoked"] {
            assert_eq!(RefreshTokenStatus::parse(s).unwrap().as_str(), s);
        }
        for s in ["active", "suspended", "deleted"] {
            assert_eq!(ClientStatus::parse(s).unwrap().as_str(), s);
        }
        assert_eq!(StaffStatus::parse("disabled"), Some(StaffStatus::Disabled));
        assert_eq!(
            SigningKeyStatus::parse("retired"),
            Some(SigningKeyStatus::Retired)
        );
        assert_eq!(ClientStatus::parse("gone"), None);
    }
}
