//! Diesel schema shared by both backends (kept in step with `migrations/{sqlite,postgres}`;
//! the migration tests fail if a column here is missing from either backend).

diesel::table! {
    customers (id) {
        id -> Text,
        username -> Text,
        display_name -> Text,
        password_hash -> Text,
        created_at -> Timestamp,
        is_test -> Bool,
    }
}

diesel::table! {
    accounts (id) {
        id -> Text,
        customer_id -> Text,
        name -> Text,
        masked_number -> Text,
        currency -> Text,
        balance_minor -> BigInt,
        created_at -> Timestamp,
    }
}

diesel::table! {
    merchants (id) {
        id -> Text,
        name -> Text,
        category -> Text,
    }
}

diesel::table! {
    transactions (id) {
        id -> Text,
        account_id -> Text,
        booked_at -> Timestamp,
        amount_minor -> BigInt,
        currency -> Text,
        merchant_id -> Text,
        description -> Text,
    }
}

diesel::table! {
    staff (id) {
        id -> Text,
        username -> Text,
        display_name -> Text,
        password_hash -> Text,
        status -> Text,
        created_at -> Timestamp,
        roles -> Text,
    }
}

diesel::table! {
    developers (id) {
        id -> Text,
        email -> Text,
        display_name -> Text,
        password_hash -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    kyc_submissions (id) {
        id -> Text,
        developer_id -> Text,
        status -> Text,
        legal_name_enc -> Text,
        registration_number_enc -> Text,
        country -> Text,
        address_enc -> Text,
        contact_enc -> Text,
        documents_enc -> Text,
        decision_reason -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        submitted_at -> Nullable<Timestamp>,
        decided_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    kyc_reviews (id) {
        id -> Text,
        submission_id -> Text,
        staff_id -> Text,
        decision -> Text,
        justification -> Text,
        round -> Integer,
        created_at -> Timestamp,
    }
}

diesel::table! {
    clients (id) {
        id -> Text,
        developer_id -> Text,
        name -> Text,
        environment -> Text,
        redirect_uris -> Text,
        auth_method -> Text,
        secret_hash -> Text,
        allowed_actions -> Text,
        webhook_url -> Nullable<Text>,
        webhook_secret_enc -> Nullable<Text>,
        dormancy_days -> Nullable<Integer>,
        status -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        jwks -> Nullable<Text>,
        dpop_bound_access_tokens -> Bool,
        tls_client_auth_subject_dn -> Nullable<Text>,
        tls_client_certificate_bound_access_tokens -> Bool,
        dormancy_since -> Nullable<Timestamp>,
    }
}

diesel::table! {
    /// The `grants` table (named `grant_rows` here so it does not clash with the `grants` crate).
    #[sql_name = "grants"]
    grant_rows (id) {
        id -> Text,
        customer_id -> Text,
        client_id -> Text,
        status -> Text,
        authorization_details -> Text,
        created_at -> Timestamp,
        authorized_at -> Nullable<Timestamp>,
        expires_at -> Timestamp,
        last_used_at -> Nullable<Timestamp>,
        revoked_at -> Nullable<Timestamp>,
        revoked_by -> Nullable<Text>,
        expiry_warned_at -> Nullable<Timestamp>,
        updated_at -> Timestamp,
        dormancy_warned_at -> Nullable<Timestamp>,
        reconfirmed_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    refresh_tokens (id) {
        id -> Text,
        token_hash -> Text,
        grant_id -> Text,
        family_id -> Text,
        status -> Text,
        created_at -> Timestamp,
        used_at -> Nullable<Timestamp>,
        expires_at -> Timestamp,
        dpop_jkt -> Nullable<Text>,
    }
}

diesel::table! {
    issued_tokens (revocation_id) {
        revocation_id -> Text,
        grant_id -> Text,
        family_id -> Nullable<Text>,
        token_hash -> Nullable<Text>,
        expires_at -> Timestamp,
        dpop_jkt -> Nullable<Text>,
        cnf_x5t -> Nullable<Text>,
    }
}

diesel::table! {
    authorization_requests (id) {
        id -> Text,
        client_id -> Text,
        redirect_uri -> Text,
        state -> Nullable<Text>,
        code_challenge -> Text,
        authorization_details -> Text,
        status -> Text,
        customer_id -> Nullable<Text>,
        grant_id -> Nullable<Text>,
        created_at -> Timestamp,
        expires_at -> Timestamp,
        dpop_jkt -> Nullable<Text>,
        grant_action -> Nullable<Text>,
    }
}

diesel::table! {
    authorization_codes (code_hash) {
        code_hash -> Text,
        grant_id -> Text,
        client_id -> Text,
        redirect_uri -> Text,
        code_challenge -> Text,
        created_at -> Timestamp,
        expires_at -> Timestamp,
        used_at -> Nullable<Timestamp>,
        dpop_jkt -> Nullable<Text>,
    }
}

diesel::table! {
    revocations (seq) {
        seq -> BigInt,
        grant_id -> Text,
        revocation_id -> Nullable<Text>,
        reason -> Text,
        revoked_at -> Timestamp,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    revocation_positions (position) {
        position -> BigInt,
        seq -> BigInt,
    }
}

diesel::table! {
    revocation_feed_head (id) {
        id -> Integer,
        last_position -> BigInt,
        link_floor_xid -> BigInt,
        link_floor_seq -> BigInt,
    }
}

diesel::table! {
    signing_keys (kid) {
        kid -> BigInt,
        algorithm -> Text,
        public_key -> Text,
        private_key_enc -> Text,
        status -> Text,
        created_at -> Timestamp,
        retired_at -> Nullable<Timestamp>,
        publish_until -> Nullable<Timestamp>,
        purpose -> Text,
    }
}

diesel::table! {
    ssf_streams (id) {
        id -> Text,
        client_id -> Text,
        delivery_method -> Text,
        endpoint_url -> Nullable<Text>,
        authorization_header_enc -> Nullable<Text>,
        events_requested -> Text,
        events_delivered -> Text,
        description -> Nullable<Text>,
        status -> Text,
        status_reason -> Nullable<Text>,
        feed_cursor -> Nullable<BigInt>,
        push_lease_until -> Nullable<Timestamp>,
        next_push_at -> Nullable<Timestamp>,
        push_failures -> Integer,
        last_error -> Nullable<Text>,
        last_verification_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    ssf_excluded_subjects (stream_id, grant_id) {
        stream_id -> Text,
        grant_id -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    client_access_tokens (token_hash) {
        token_hash -> Text,
        client_id -> Text,
        scope -> Text,
        expires_at -> Timestamp,
        created_at -> Timestamp,
    }
}

diesel::table! {
    ssf_events (seq) {
        seq -> BigInt,
        jti -> Text,
        stream_id -> Text,
        event_type -> Text,
        subject -> Text,
        claims -> Text,
        status -> Text,
        attempts -> Integer,
        last_error -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    audit_events (seq) {
        seq -> BigInt,
        event_id -> Text,
        occurred_at -> Timestamp,
        actor_type -> Text,
        actor_id -> Text,
        action -> Text,
        target_type -> Text,
        target_id -> Text,
        details -> Text,
    }
}

diesel::table! {
    /// The audit chain: event `seq` is at `chain_index`, with `hash` (insert-only). On PostgreSQL
    /// `audit_events` also has `xid` (its inserting transaction), which only the linker reads.
    audit_links (chain_index) {
        chain_index -> BigInt,
        seq -> BigInt,
        hash -> Text,
    }
}

diesel::table! {
    audit_chain_head (id) {
        id -> Integer,
        last_index -> BigInt,
        last_hash -> Text,
        updated_at -> Timestamp,
        /// Every event before (link_floor_xid, link_floor_seq) is linked (PostgreSQL: a
        /// transaction id; SQLite, one writer: always 0, seq alone; see `audit::link_pending`).
        link_floor_xid -> BigInt,
        link_floor_seq -> BigInt,
    }
}

diesel::table! {
    /// The links of the audit chain under the plain SHA-256 of earlier releases, kept as they
    /// were by the migration to the keyed chain (read-only evidence; nothing writes it).
    audit_chain_legacy (seq) {
        seq -> BigInt,
        chain_index -> Nullable<BigInt>,
        prev_hash -> Nullable<Text>,
        hash -> Nullable<Text>,
    }
}

diesel::table! {
    approval_requests (id) {
        id -> Text,
        action -> Text,
        target_type -> Text,
        target_id -> Text,
        payload -> Text,
        justification -> Text,
        requested_by -> Text,
        status -> Text,
        decided_by -> Nullable<Text>,
        decision_justification -> Nullable<Text>,
        created_at -> Timestamp,
        decided_at -> Nullable<Timestamp>,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    webhook_outbox (id) {
        id -> Text,
        client_id -> Text,
        event_type -> Text,
        grant_id -> Nullable<Text>,
        payload -> Text,
        status -> Text,
        attempts -> Integer,
        next_attempt_at -> Timestamp,
        last_attempt_at -> Nullable<Timestamp>,
        last_status -> Nullable<Integer>,
        last_error -> Nullable<Text>,
        created_at -> Timestamp,
        delivered_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    sessions (id_hash) {
        id_hash -> Text,
        subject_type -> Text,
        subject_id -> Text,
        csrf_token -> Text,
        created_at -> Timestamp,
        expires_at -> Timestamp,
        second_factor -> Nullable<Text>,
    }
}

diesel::table! {
    second_factors (subject_type, subject_id) {
        subject_type -> Text,
        subject_id -> Text,
        secret_enc -> Text,
        last_step -> BigInt,
        created_at -> Timestamp,
        confirmed_at -> Nullable<Timestamp>,
        started_in -> Nullable<Text>,
    }
}

diesel::table! {
    staff_credentials (id) {
        id -> Text,
        approval_request_id -> Text,
        staff_id -> Text,
        action -> Text,
        target_type -> Text,
        target_id -> Text,
        issued_at -> Timestamp,
        expires_at -> Timestamp,
        revoked_at -> Nullable<Timestamp>,
        revoked_by -> Nullable<Text>,
    }
}

diesel::table! {
    customer_identities (issuer, subject) {
        issuer -> Text,
        subject -> Text,
        customer_id -> Text,
        created_at -> Timestamp,
        last_login_at -> Timestamp,
    }
}

diesel::table! {
    staff_broadcast (id) {
        id -> Integer,
        chain_index -> BigInt,
        lease_until -> Nullable<Timestamp>,
        last_error -> Nullable<Text>,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    data_keys (key_use, purpose) {
        key_use -> Text,
        purpose -> Text,
        wrapped_key -> Text,
        wrapped_by -> Text,
        origin -> Text,
        rewraps -> BigInt,
        created_at -> Timestamp,
        wrapped_at -> Timestamp,
    }
}

diesel::table! {
    enrolment_codes (subject_type, subject_id) {
        subject_type -> Text,
        subject_id -> Text,
        code_hash -> Text,
        created_at -> Timestamp,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    recovery_codes (subject_type, subject_id, code_hash) {
        subject_type -> Text,
        subject_id -> Text,
        code_hash -> Text,
        created_at -> Timestamp,
    }
}

diesel::joinable!(accounts -> customers (customer_id));
diesel::joinable!(transactions -> accounts (account_id));
diesel::joinable!(transactions -> merchants (merchant_id));
diesel::joinable!(audit_links -> audit_events (seq));
diesel::joinable!(revocation_positions -> revocations (seq));
diesel::joinable!(kyc_submissions -> developers (developer_id));
diesel::joinable!(kyc_reviews -> kyc_submissions (submission_id));
diesel::joinable!(clients -> developers (developer_id));
diesel::joinable!(grant_rows -> clients (client_id));
diesel::joinable!(grant_rows -> customers (customer_id));
diesel::joinable!(refresh_tokens -> grant_rows (grant_id));
diesel::joinable!(issued_tokens -> grant_rows (grant_id));
diesel::joinable!(authorization_codes -> grant_rows (grant_id));
diesel::joinable!(ssf_streams -> clients (client_id));
diesel::joinable!(ssf_events -> ssf_streams (stream_id));
diesel::joinable!(ssf_excluded_subjects -> ssf_streams (stream_id));

diesel::allow_tables_to_appear_in_same_query!(
    customers,
    accounts,
    merchants,
    transactions,
    staff,
    developers,
    kyc_submissions,
    kyc_reviews,
    clients,
    grant_rows,
    refresh_tokens,
    issued_tokens,
    authorization_requests,
    authorization_codes,
    revocations,
    revocation_feed_head,
    revocation_positions,
    signing_keys,
    audit_events,
    audit_links,
    audit_chain_head,
    approval_requests,
    webhook_outbox,
    sessions,
    ssf_streams,
    ssf_excluded_subjects,
    ssf_events,
    client_access_tokens,
    customer_identities,
);
