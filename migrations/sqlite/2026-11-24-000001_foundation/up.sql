-- Foundation schema for the whole domain (DESIGN.md "Domain").
-- Conventions: ids are prefixed text ("cust_", "acc_", "g_", "c_", ...); timestamps are UTC
-- `TIMESTAMP` (no time zone) so the same diesel types work on SQLite and PostgreSQL; JSON is text.

CREATE TABLE customers (
    id              TEXT PRIMARY KEY,
    username        TEXT NOT NULL UNIQUE,
    display_name    TEXT NOT NULL,
    password_hash   TEXT NOT NULL,
    created_at      TIMESTAMP NOT NULL
);

CREATE TABLE accounts (
    id              TEXT PRIMARY KEY,
    customer_id     TEXT NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    masked_number   TEXT NOT NULL,
    currency        TEXT NOT NULL,
    balance_minor   BIGINT NOT NULL,
    created_at      TIMESTAMP NOT NULL
);
CREATE INDEX accounts_customer_idx ON accounts (customer_id);

CREATE TABLE merchants (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    category        TEXT NOT NULL
);

CREATE TABLE transactions (
    id              TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    booked_at       TIMESTAMP NOT NULL,
    amount_minor    BIGINT NOT NULL,
    currency        TEXT NOT NULL,
    merchant_id     TEXT NOT NULL REFERENCES merchants(id),
    description     TEXT NOT NULL
);
CREATE INDEX transactions_account_booked_idx ON transactions (account_id, booked_at);
CREATE INDEX transactions_merchant_idx ON transactions (account_id, merchant_id, booked_at);

CREATE TABLE staff (
    id              TEXT PRIMARY KEY,
    username        TEXT NOT NULL UNIQUE,
    display_name    TEXT NOT NULL,
    password_hash   TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    created_at      TIMESTAMP NOT NULL
);

CREATE TABLE developers (
    id              TEXT PRIMARY KEY,
    email           TEXT NOT NULL UNIQUE,
    display_name    TEXT NOT NULL,
    password_hash   TEXT NOT NULL,
    created_at      TIMESTAMP NOT NULL
);

-- PII columns (*_enc) are AES-256-GCM ciphertexts bound to (table, column, row id).
CREATE TABLE kyc_submissions (
    id                      TEXT PRIMARY KEY,
    developer_id            TEXT NOT NULL UNIQUE REFERENCES developers(id) ON DELETE CASCADE,
    status                  TEXT NOT NULL CHECK (status IN ('draft', 'submitted', 'approved', 'rejected', 'needs_information')),
    legal_name_enc          TEXT NOT NULL,
    registration_number_enc TEXT NOT NULL,
    country                 TEXT NOT NULL,
    address_enc             TEXT NOT NULL,
    contact_enc             TEXT NOT NULL,
    documents_enc           TEXT NOT NULL,
    decision_reason         TEXT,
    created_at              TIMESTAMP NOT NULL,
    updated_at              TIMESTAMP NOT NULL,
    submitted_at            TIMESTAMP,
    decided_at              TIMESTAMP
);
CREATE INDEX kyc_submissions_status_idx ON kyc_submissions (status, submitted_at);

CREATE TABLE kyc_reviews (
    id              TEXT PRIMARY KEY,
    submission_id   TEXT NOT NULL REFERENCES kyc_submissions(id) ON DELETE CASCADE,
    staff_id        TEXT NOT NULL REFERENCES staff(id),
    decision        TEXT NOT NULL CHECK (decision IN ('approve', 'reject', 'needs_information')),
    justification   TEXT NOT NULL,
    -- which submission round the review belongs to (a resubmission starts a new round)
    round           INTEGER NOT NULL,
    created_at      TIMESTAMP NOT NULL,
    UNIQUE (submission_id, round, staff_id)
);

CREATE TABLE clients (
    id                  TEXT PRIMARY KEY,
    developer_id        TEXT NOT NULL REFERENCES developers(id),
    name                TEXT NOT NULL,
    environment         TEXT NOT NULL CHECK (environment IN ('sandbox', 'production')),
    redirect_uris       TEXT NOT NULL,
    auth_method         TEXT NOT NULL,
    secret_hash         TEXT NOT NULL,
    allowed_actions     TEXT NOT NULL,
    webhook_url         TEXT,
    webhook_secret_enc  TEXT,
    dormancy_days       INTEGER,
    status              TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'deleted')),
    created_at          TIMESTAMP NOT NULL,
    updated_at          TIMESTAMP NOT NULL
);
CREATE INDEX clients_developer_idx ON clients (developer_id);

CREATE TABLE grants (
    id                      TEXT PRIMARY KEY,
    customer_id             TEXT NOT NULL REFERENCES customers(id),
    client_id               TEXT NOT NULL REFERENCES clients(id),
    status                  TEXT NOT NULL CHECK (status IN ('awaiting_authorization', 'authorized', 'rejected', 'revoked', 'expired')),
    authorization_details   TEXT NOT NULL,
    created_at              TIMESTAMP NOT NULL,
    authorized_at           TIMESTAMP,
    expires_at              TIMESTAMP NOT NULL,
    last_used_at            TIMESTAMP,
    revoked_at              TIMESTAMP,
    revoked_by              TEXT CHECK (revoked_by IN ('customer', 'client', 'staff', 'dormancy', 'expiry', 'security')),
    warned_at               TIMESTAMP,
    updated_at              TIMESTAMP NOT NULL
);
CREATE INDEX grants_customer_idx ON grants (customer_id, status);
CREATE INDEX grants_client_idx ON grants (client_id, status);
CREATE INDEX grants_expiry_idx ON grants (status, expires_at);
CREATE INDEX grants_last_used_idx ON grants (status, last_used_at);

CREATE TABLE refresh_tokens (
    id              TEXT PRIMARY KEY,
    token_hash      TEXT NOT NULL UNIQUE,
    grant_id        TEXT NOT NULL REFERENCES grants(id) ON DELETE CASCADE,
    family_id       TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('active', 'used', 'revoked')),
    created_at      TIMESTAMP NOT NULL,
    used_at         TIMESTAMP,
    expires_at      TIMESTAMP NOT NULL
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_grant_idx ON refresh_tokens (grant_id);

-- Revocation ids of Biscuits minted for a grant, published when the grant ends.
CREATE TABLE issued_tokens (
    revocation_id   TEXT PRIMARY KEY,
    grant_id        TEXT NOT NULL REFERENCES grants(id) ON DELETE CASCADE,
    -- refresh-token family the token was issued from (NULL: from the authorization code)
    family_id       TEXT,
    -- SHA-256 of the token as minted: introspection answers from this index without decoding
    -- the Biscuit (attenuated tokens, which hash differently, take the full verification path)
    token_hash      TEXT UNIQUE,
    expires_at      TIMESTAMP NOT NULL
);
CREATE INDEX issued_tokens_grant_idx ON issued_tokens (grant_id);

-- An authorization request between /oauth2/authorize and the customer's decision (PAR or
-- query parameters, validated). Lives at most `tokens.par_ttl`-independent 10 minutes.
CREATE TABLE authorization_requests (
    id                      TEXT PRIMARY KEY,
    client_id               TEXT NOT NULL REFERENCES clients(id),
    redirect_uri            TEXT NOT NULL,
    state                   TEXT,
    code_challenge          TEXT NOT NULL,
    authorization_details   TEXT NOT NULL,
    status                  TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied')),
    customer_id             TEXT REFERENCES customers(id),
    grant_id                TEXT,
    created_at              TIMESTAMP NOT NULL,
    expires_at              TIMESTAMP NOT NULL
);

-- Authorization codes: only the SHA-256 is stored; single use is enforced by
-- `UPDATE ... SET used_at WHERE used_at IS NULL`.
CREATE TABLE authorization_codes (
    code_hash       TEXT PRIMARY KEY,
    grant_id        TEXT NOT NULL REFERENCES grants(id) ON DELETE CASCADE,
    client_id       TEXT NOT NULL REFERENCES clients(id),
    redirect_uri    TEXT NOT NULL,
    code_challenge  TEXT NOT NULL,
    created_at      TIMESTAMP NOT NULL,
    expires_at      TIMESTAMP NOT NULL,
    used_at         TIMESTAMP
);
CREATE INDEX authorization_codes_grant_idx ON authorization_codes (grant_id);

-- The revocation feed: `seq` is the cursor offline verifiers sync from.
CREATE TABLE revocations (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    grant_id        TEXT NOT NULL,
    revocation_id   TEXT,
    reason          TEXT NOT NULL,
    revoked_at      TIMESTAMP NOT NULL
);
CREATE INDEX revocations_grant_idx ON revocations (grant_id);

CREATE TABLE signing_keys (
    kid             BIGINT PRIMARY KEY,
    algorithm       TEXT NOT NULL,
    public_key      TEXT NOT NULL,
    private_key_enc TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('active', 'retired')),
    created_at      TIMESTAMP NOT NULL,
    retired_at      TIMESTAMP,
    -- published until every token it signed has expired
    publish_until   TIMESTAMP
);

-- Append-only audit log. Writers insert rows with chain fields NULL (cheap, no contention); the
-- chainer links them in batches under one lock: chain_index, prev_hash, hash.
CREATE TABLE audit_events (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT NOT NULL UNIQUE,
    occurred_at     TIMESTAMP NOT NULL,
    actor_type      TEXT NOT NULL,
    actor_id        TEXT NOT NULL,
    action          TEXT NOT NULL,
    target_type     TEXT NOT NULL,
    target_id       TEXT NOT NULL,
    details         TEXT NOT NULL,
    chain_index     BIGINT UNIQUE,
    prev_hash       TEXT,
    hash            TEXT
);
CREATE INDEX audit_events_unchained_idx ON audit_events (seq) WHERE chain_index IS NULL;
CREATE INDEX audit_events_target_idx ON audit_events (target_type, target_id, occurred_at);
CREATE INDEX audit_events_actor_idx ON audit_events (actor_type, actor_id, occurred_at);

-- Single row: the head of the audit chain (last linked index and hash).
CREATE TABLE audit_chain_head (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    last_index      BIGINT NOT NULL,
    last_hash       TEXT NOT NULL,
    updated_at      TIMESTAMP NOT NULL
);
INSERT INTO audit_chain_head (id, last_index, last_hash, updated_at)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000', CURRENT_TIMESTAMP);

CREATE TABLE approval_requests (
    id                      TEXT PRIMARY KEY,
    action                  TEXT NOT NULL,
    target_type             TEXT NOT NULL,
    target_id               TEXT NOT NULL,
    payload                 TEXT NOT NULL,
    justification           TEXT NOT NULL,
    requested_by            TEXT NOT NULL REFERENCES staff(id),
    status                  TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected', 'expired')),
    decided_by              TEXT REFERENCES staff(id),
    decision_justification  TEXT,
    created_at              TIMESTAMP NOT NULL,
    decided_at              TIMESTAMP,
    expires_at              TIMESTAMP NOT NULL,
    CHECK (decided_by IS NULL OR decided_by <> requested_by)
);
CREATE INDEX approval_requests_status_idx ON approval_requests (status, created_at);

-- Transactional outbox for signed webhooks.
CREATE TABLE webhook_outbox (
    id              TEXT PRIMARY KEY,
    client_id       TEXT NOT NULL REFERENCES clients(id),
    event_type      TEXT NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL,
    next_attempt_at TIMESTAMP NOT NULL,
    last_error      TEXT,
    created_at      TIMESTAMP NOT NULL,
    delivered_at    TIMESTAMP
);
CREATE INDEX webhook_outbox_due_idx ON webhook_outbox (status, next_attempt_at);

-- Browser sessions (customers, developers, staff). Only a hash of the cookie value is stored.
CREATE TABLE sessions (
    id_hash         TEXT PRIMARY KEY,
    subject_type    TEXT NOT NULL CHECK (subject_type IN ('customer', 'developer', 'staff')),
    subject_id      TEXT NOT NULL,
    csrf_token      TEXT NOT NULL,
    created_at      TIMESTAMP NOT NULL,
    expires_at      TIMESTAMP NOT NULL
);
CREATE INDEX sessions_subject_idx ON sessions (subject_type, subject_id);

-- Defence in depth for the audit log: once an event is linked into the chain it can be neither
-- changed nor deleted through normal SQL (the hash chain still detects tampering by an owner who
-- drops these triggers).
CREATE TRIGGER audit_events_no_update
BEFORE UPDATE ON audit_events
WHEN OLD.chain_index IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only');
END;

CREATE TRIGGER audit_events_no_delete
BEFORE DELETE ON audit_events
WHEN OLD.chain_index IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only');
END;
