-- Two reads that scanned tables which only grow:
--
-- The lifecycle sweep deletes authorization requests nobody decided (`status = 'pending' AND
-- expires_at <= now`); decided requests are kept, and the table had only its primary key, so
-- every sweep read every request ever made. Undecided requests live a minute: this index stays
-- that small.
--
-- The customer's dashboard shows each grant's latest recorded read (`resource.read`); the index
-- by target holds every event of a grant (each token issued or refreshed writes one), and the
-- read walked them all, on every page view, for every grant shown. This index holds read events
-- only. Both queries write their constant conditions out so that the planner can match these
-- predicates (lifecycle::STALE_REQUESTS_SQL, dashboard::query::LAST_READ_SQL).
CREATE INDEX authorization_requests_pending_idx ON authorization_requests (expires_at)
    WHERE status = 'pending';
CREATE INDEX audit_events_grant_reads_idx ON audit_events (target_id, occurred_at, seq)
    WHERE target_type = 'grant' AND action = 'resource.read';
