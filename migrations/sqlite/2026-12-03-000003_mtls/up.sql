-- mTLS (RFC 8705). tls_client_auth: the subject DN (RFC 4514) the client's certificate must
-- carry, from an authority of server.client_ca_file; NULL for other methods.
-- (self_signed_tls_client_auth clients register their certificates as x5c in jwks.)
ALTER TABLE clients ADD COLUMN tls_client_auth_subject_dn TEXT;
-- RFC 8705 section 3: every access token is bound to the certificate the client connected with.
ALTER TABLE clients ADD COLUMN tls_client_certificate_bound_access_tokens BOOLEAN NOT NULL DEFAULT FALSE;
-- The certificate an access token is bound to (cnf_x5t, for introspection's cnf.x5t#S256).
ALTER TABLE issued_tokens ADD COLUMN cnf_x5t TEXT;
