//! The dashboard's view models: what the pages and the JSON API show of a grant.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::oauth::rar::AccountAccessDetail;

/// One account a grant covers, as the customer knows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AccountView {
    pub id: String,
    /// The account's name (e.g. "Everyday account"); the id when the account no longer exists.
    pub name: String,
    /// Masked account number, e.g. `**** 1234`.
    pub masked_number: String,
    pub currency: String,
}

/// One merchant a grant is limited to.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MerchantView {
    pub id: String,
    pub name: String,
}

/// One permission, with its plain-language description.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ActionView {
    #[schema(value_type = crate::openapi::values::Permission)]
    pub action: String,
    pub description: String,
}

/// A connected app (one grant) as the customer sees it.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GrantView {
    pub grant_id: String,
    pub client_id: String,
    /// The app's name as registered by its developer.
    pub client_name: String,
    #[schema(value_type = platform::values::Environment)]
    pub environment: String,
    /// Whether the developer's identity (KYC) was verified by the bank.
    pub verified: bool,
    /// The developer's verified legal name; absent when unverified.
    pub verified_legal_name: Option<String>,
    /// Who operates the app, in plain language: the verified legal name, or
    /// `Sandbox, unverified` / `Unverified operator`.
    pub operator_label: String,
    /// Stored status. An authorized grant whose expiry has passed (not yet swept) is reported as
    /// `expired`.
    #[schema(value_type = platform::storage::models::GrantStatus)]
    pub status: String,
    /// Whether the app can still use this access (and the customer can revoke it).
    pub active: bool,
    /// Who ended it.
    #[schema(value_type = Option<platform::values::RevokedBy>)]
    pub revoked_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub authorized_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub actions: Vec<ActionView>,
    pub accounts: Vec<AccountView>,
    /// Start of the transaction window; absent: no limit.
    pub transactions_from: Option<String>,
    /// End of the transaction window; absent: no limit.
    pub transactions_until: Option<String>,
    /// Merchants the transactions are limited to; absent: all merchants.
    pub merchants: Option<Vec<MerchantView>>,
    /// The granted RFC 9396 authorization details, exactly as tokens carry them.
    pub authorization_details: Vec<AccountAccessDetail>,
    /// Authorized grants only: when the grant is revoked for dormancy unless the app uses it (or
    /// the customer extends it) before then: the last use (else the authorization) plus the
    /// dormancy period (the bank's default, or the app's shorter one).
    pub dormancy_deadline: Option<DateTime<Utc>>,
    /// Authorized grants only: present when the grant ends (expiry or dormancy, whichever is
    /// sooner) within the bank's warning lead time (default 7 days). The customer can extend it
    /// with `POST /api/v1/me/grants/{id}/extend`.
    pub notice: Option<GrantNotice>,
}

/// A warning that a connected app is about to lose its access.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct GrantNotice {
    /// `expiring` (the consent reaches its end date) or `dormant_soon` (the app has not used its
    /// access for a long time and will be disconnected).
    #[schema(value_type = crate::openapi::values::NoticeKind, example = "expiring")]
    pub kind: String,
    /// The same in plain language, for display.
    #[schema(example = "This access ends on 3 Dec 2026. Extend it to keep the app connected.")]
    pub message: String,
    /// When the access ends unless extended.
    pub ends_at: DateTime<Utc>,
}

/// One thing that happened to or through a grant.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ActivityEvent {
    pub event_id: String,
    pub occurred_at: DateTime<Utc>,
    /// Machine-readable action, e.g. `token.issued`, `resource.read`, `grant.revoked`.
    pub action: String,
    /// The same in plain language.
    pub description: String,
    #[schema(value_type = platform::values::ActorType)]
    pub actor_type: String,
}

/// The result of a revocation request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// The grant was live and is now revoked.
    Revoked(Vec<String>),
    /// The grant had already ended; nothing changed.
    AlreadyEnded,
    /// No such grant for this customer.
    NotFound,
}

/// The result of an extension request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtendOutcome {
    /// The grant was re-confirmed; its expiry moved from `previous_expires_at` to `expires_at`
    /// (equal when the current expiry was already later than an extension would give).
    Extended {
        previous_expires_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    },
    /// The grant is not authorized (revoked, expired, rejected, or never authorized) or its
    /// expiry has passed; nothing changed. `status` is what the dashboard shows for it.
    Ended { status: String },
    /// No such grant for this customer.
    NotFound,
}
