-- A second factor at login (TOTP, RFC 6238): mandatory for staff, optional for developers.

-- One authenticator per account. The secret is encrypted with the master key (purpose
-- "second-factor", bound to the account). confirmed_at is NULL while enrolment waits for a
-- first code; last_step is the latest 30-second step accepted, so each code works once.
CREATE TABLE second_factors (
    subject_type    TEXT NOT NULL CHECK (subject_type IN ('developer', 'staff')),
    subject_id      TEXT NOT NULL,
    secret_enc      TEXT NOT NULL,
    last_step       BIGINT NOT NULL DEFAULT 0,
    created_at      TIMESTAMP NOT NULL,
    confirmed_at    TIMESTAMP,
    PRIMARY KEY (subject_type, subject_id)
);

-- Single-use recovery codes (80 random bits each), stored as SHA-256; a used code is deleted.
CREATE TABLE recovery_codes (
    subject_type    TEXT NOT NULL CHECK (subject_type IN ('developer', 'staff')),
    subject_id      TEXT NOT NULL,
    code_hash       TEXT NOT NULL,
    created_at      TIMESTAMP NOT NULL,
    PRIMARY KEY (subject_type, subject_id, code_hash)
);

-- A session that still owes its second factor: 'verify' (a code is due) or 'enrol' (staff
-- without an authenticator yet). Such a session can do nothing else; NULL is a full session.
ALTER TABLE sessions ADD COLUMN second_factor TEXT CHECK (second_factor IN ('enrol', 'verify'));

-- Staff sessions opened with a password alone end now: staff log in again with a second factor.
DELETE FROM sessions WHERE subject_type = 'staff';
