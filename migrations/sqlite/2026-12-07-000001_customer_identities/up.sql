-- Customers who log in through the bank's own OpenID Connect provider: the provider's subject
-- (unique per issuer) is linked to one customer record, at the first login.
CREATE TABLE customer_identities (
    issuer         TEXT NOT NULL,
    subject        TEXT NOT NULL,
    customer_id    TEXT NOT NULL REFERENCES customers(id),
    created_at     TIMESTAMP NOT NULL,
    last_login_at  TIMESTAMP NOT NULL,
    PRIMARY KEY (issuer, subject)
);
CREATE INDEX customer_identities_customer_idx ON customer_identities (customer_id);
