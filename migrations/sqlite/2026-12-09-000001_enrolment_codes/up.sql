-- A staff member sets up an authenticator only with a one-time enrolment code that the operator
-- hands over out of band (`consent admin create` and `consent admin reset-second-factor` print
-- it): a leaked password alone no longer lets anyone enrol their own authenticator (trust on
-- first use). 80 random bits, stored as SHA-256, one per account (a new one replaces it),
-- refused after expires_at, deleted when enrolment is confirmed.
CREATE TABLE enrolment_codes (
    subject_type    TEXT NOT NULL CHECK (subject_type IN ('developer', 'staff')),
    subject_id      TEXT NOT NULL,
    code_hash       TEXT NOT NULL,
    created_at      TIMESTAMP NOT NULL,
    expires_at      TIMESTAMP NOT NULL,
    PRIMARY KEY (subject_type, subject_id)
);

-- The session that started an enrolment (its id hash): only that session is shown the secret
-- again and may confirm it, so a second login with the same password cannot read it.
ALTER TABLE second_factors ADD COLUMN started_in TEXT;

-- Enrolments started before codes existed were started on the password alone: they start again
-- (staff without an authenticator need an enrolment code from `reset-second-factor`).
DELETE FROM second_factors WHERE confirmed_at IS NULL;
