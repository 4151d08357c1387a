DROP INDEX refresh_tokens_created_brin;
DROP INDEX issued_tokens_expiry_brin;
