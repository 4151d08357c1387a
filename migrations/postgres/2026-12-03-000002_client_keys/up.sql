-- private_key_jwt (RFC 7523, FAPI 2.0): the client's public signing keys, an RFC 7517 JWK Set
-- registered inline (never fetched from a URL). NULL for shared-secret clients.
ALTER TABLE clients ADD COLUMN jwks TEXT;
-- RFC 9449 section 5.2: the client always uses DPoP; the token endpoint refuses it tokens
-- without a proof.
ALTER TABLE clients ADD COLUMN dpop_bound_access_tokens BOOLEAN NOT NULL DEFAULT FALSE;
