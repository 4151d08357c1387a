ALTER TABLE issued_tokens DROP COLUMN cnf_x5t;
ALTER TABLE clients DROP COLUMN tls_client_certificate_bound_access_tokens;
ALTER TABLE clients DROP COLUMN tls_client_auth_subject_dn;
