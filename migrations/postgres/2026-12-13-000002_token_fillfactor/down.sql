ALTER TABLE authorization_codes RESET (fillfactor);
ALTER TABLE refresh_tokens RESET (fillfactor);
