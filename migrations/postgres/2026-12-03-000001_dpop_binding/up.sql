-- DPoP (RFC 9449): the RFC 7638 thumbprint of the key a request, code, refresh token family or
-- access token is bound to. NULL: not bound (a bearer client).
ALTER TABLE authorization_requests ADD COLUMN dpop_jkt TEXT;
ALTER TABLE authorization_codes ADD COLUMN dpop_jkt TEXT;
ALTER TABLE refresh_tokens ADD COLUMN dpop_jkt TEXT;
ALTER TABLE issued_tokens ADD COLUMN dpop_jkt TEXT;
