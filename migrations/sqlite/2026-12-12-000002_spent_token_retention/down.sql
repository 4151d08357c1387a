DROP INDEX refresh_tokens_created_idx;
DROP INDEX issued_tokens_expiry_idx;
