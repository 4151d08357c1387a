-- Test customers (the demo's alice and bob, a bank's own test identities) are the only ones who
-- may consent to sandbox clients, which need no KYC. Everyone else is a real customer.
ALTER TABLE customers ADD COLUMN is_test BOOLEAN NOT NULL DEFAULT FALSE;
