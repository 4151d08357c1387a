CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);
