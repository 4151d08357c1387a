-- OpenID Grant Management: an authorization request may change an existing grant
-- (`grant_management_action` merge or replace; `grant_id` then names the grant from the start).
-- NULL: the request creates a grant.
ALTER TABLE authorization_requests ADD COLUMN grant_action TEXT
    CHECK (grant_action IS NULL OR grant_action IN ('merge', 'replace'));
