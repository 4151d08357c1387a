ALTER TABLE authorization_requests DROP COLUMN grant_action;
