-- Envelope keys: each purpose's data key (field ciphers, the audit chain's keys), wrapped by the
-- master key (AES-256-GCM, bound to the purpose). wrapped_by is the wrapping master's public id
-- (derived from it, not the key). A new master re-wraps these rows (rewraps counts how often);
-- the data stays as it is. origin: 'derived' for a deployment from before this table, whose
-- data keys are the keys derived from the master until then (so everything already written
-- still decrypts); 'random' for a new deployment or a new purpose.
CREATE TABLE data_keys (
    key_use         TEXT NOT NULL CHECK (key_use IN ('cipher', 'mac')),
    purpose         TEXT NOT NULL,
    wrapped_key     TEXT NOT NULL,
    wrapped_by      TEXT NOT NULL,
    origin          TEXT NOT NULL CHECK (origin IN ('derived', 'random')),
    rewraps         BIGINT NOT NULL DEFAULT 0,
    created_at      TIMESTAMP NOT NULL,
    wrapped_at      TIMESTAMP NOT NULL,
    PRIMARY KEY (key_use, purpose)
);
