-- The expiry index holds live grants only. It used to hold every grant (`status, expires_at`),
-- so ending a grant, which changes its status, added an entry for the ended version that no query
-- reads: the sweep's expired and expiring selections, its only readers, ask for live grants. An
-- ended grant now leaves the index, which stays the size of the live set however many grants have
-- ended, and the lifecycle sweep writes one index entry less per grant it ends
-- (BENCHMARKS.md, "Sweep: ...").
CREATE INDEX grants_live_expiry_idx ON grants (expires_at)
    WHERE status IN ('authorized', 'awaiting_authorization');
DROP INDEX grants_expiry_idx;
