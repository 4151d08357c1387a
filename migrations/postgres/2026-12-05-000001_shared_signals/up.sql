-- Shared Signals (SSF 1.0): signed Security Event Tokens for clients and resource servers.

-- Signing keys serve one purpose each: Biscuit tokens, or Security Event Tokens (JWS). Both
-- share the kid sequence, so a kid names one key whatever its purpose.
ALTER TABLE signing_keys ADD COLUMN purpose TEXT NOT NULL DEFAULT 'biscuit'
    CHECK (purpose IN ('biscuit', 'security_events'));
-- One active key per purpose: two instances creating or rotating at once cannot both win.
CREATE UNIQUE INDEX signing_keys_one_active_idx ON signing_keys (purpose) WHERE status = 'active';

-- One event stream of a client (SSF 1.0 section 8.1.1).
CREATE TABLE ssf_streams (
    id                       TEXT PRIMARY KEY,
    client_id                TEXT NOT NULL REFERENCES clients(id),
    -- 'push' (RFC 8935) or 'poll' (RFC 8936)
    delivery_method          TEXT NOT NULL CHECK (delivery_method IN ('push', 'poll')),
    -- push: the receiver's endpoint
    endpoint_url             TEXT,
    -- push: the Authorization header value sent to the receiver (encrypted)
    authorization_header_enc TEXT,
    -- JSON array of the requested event type URIs
    events_requested         TEXT NOT NULL,
    -- JSON array of the event type URIs this stream delivers
    events_delivered         TEXT NOT NULL,
    description              TEXT,
    status                   TEXT NOT NULL CHECK (status IN ('enabled', 'paused', 'disabled')),
    status_reason            TEXT,
    -- streams delivering the revocation feed: the last feed position delivered and acknowledged
    feed_cursor              BIGINT,
    -- push: one instance at a time delivers a stream, in order (a lease)
    push_lease_until         TIMESTAMP,
    -- push: when the next attempt may start (after a failure, backoff)
    next_push_at             TIMESTAMP,
    push_failures            INTEGER NOT NULL DEFAULT 0,
    last_error               TEXT,
    -- the last verification request (at most one per MIN_VERIFICATION_INTERVAL)
    last_verification_at     TIMESTAMP,
    created_at               TIMESTAMP NOT NULL,
    updated_at               TIMESTAMP NOT NULL
);
CREATE INDEX ssf_streams_client_idx ON ssf_streams (client_id);

-- Subjects removed from a stream (SSF 1.0 section 8.1.3.3): default_subjects is ALL, so a
-- stream carries events about every grant of its client except these.
CREATE TABLE ssf_excluded_subjects (
    stream_id  TEXT NOT NULL REFERENCES ssf_streams(id) ON DELETE CASCADE,
    grant_id   TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (stream_id, grant_id)
);

-- Events waiting for a stream: written in the transaction of the change they report, removed
-- when delivered (push) or acknowledged (poll). Claims are the event body; the SET is signed
-- when it is sent, with the key active then.
CREATE TABLE ssf_events (
    seq             BIGSERIAL PRIMARY KEY,
    jti             TEXT NOT NULL UNIQUE,
    stream_id       TEXT NOT NULL REFERENCES ssf_streams(id) ON DELETE CASCADE,
    event_type      TEXT NOT NULL,
    subject         TEXT NOT NULL,
    claims          TEXT NOT NULL,
    -- 'pending' or 'failed' (refused by the receiver, or given up on)
    status          TEXT NOT NULL CHECK (status IN ('pending', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    created_at      TIMESTAMP NOT NULL
);
CREATE INDEX ssf_events_stream_idx ON ssf_events (stream_id, status, seq);

-- Access tokens of the client_credentials grant (scope `ssf` only): a receiver that
-- authenticates with private_key_jwt or client_secret_post (credentials in a form) gets one at
-- the token endpoint and presents it as a Bearer token to the SSF API. Stored as SHA-256.
CREATE TABLE client_access_tokens (
    token_hash TEXT PRIMARY KEY,
    client_id  TEXT NOT NULL REFERENCES clients(id),
    scope      TEXT NOT NULL CHECK (scope IN ('ssf')),
    expires_at TIMESTAMP NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX client_access_tokens_expiry_idx ON client_access_tokens (expires_at);
