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
}
