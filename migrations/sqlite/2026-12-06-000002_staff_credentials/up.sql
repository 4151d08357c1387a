-- Elevated staff credentials: what a four-eyes approval of a privileged action yields (a Biscuit
-- naming this row's id, the staff member, the action and the one resource). One per approval
-- (no reuse); revocable; every use is audited.
CREATE TABLE staff_credentials (
    id                   TEXT PRIMARY KEY,
    approval_request_id  TEXT NOT NULL UNIQUE REFERENCES approval_requests(id),
    staff_id             TEXT NOT NULL REFERENCES staff(id),
    action               TEXT NOT NULL,
    target_type          TEXT NOT NULL,
    target_id            TEXT NOT NULL,
    issued_at            TIMESTAMP NOT NULL,
    expires_at           TIMESTAMP NOT NULL,
    revoked_at           TIMESTAMP,
    revoked_by           TEXT REFERENCES staff(id)
);
CREATE INDEX staff_credentials_staff_idx ON staff_credentials (staff_id, expires_at);
