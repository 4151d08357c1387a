-- Recording a grant's use (last_used_at: the code exchange, then at most once a minute) changed
-- the column grants_activity_idx is computed from, so every such UPDATE was non-HOT: a new tuple,
-- wherever there was room, and an entry in each of the five indexes on grants. Dormancy works in
-- days, so the sweep's index now holds the day of the activity instead, in a stored generated
-- column: it changes only when a use falls on a later day than the last one, and an UPDATE that
-- leaves every indexed value as it was can be HOT (the new tuple on the same page, no index
-- entry). The sweep selects by day, then by the exact instant (consent::lifecycle, by_activity).
-- Adding a stored column rewrites the table once, under an exclusive lock.
-- A HOT update needs room on the row's own page: a grant's first use comes seconds after it was
-- written, often to a page that inserts have filled since. A tenth of each page is kept for
-- updates (set first: the rewrite below packs the pages to it).
ALTER TABLE grants SET (fillfactor = 90);
ALTER TABLE grants ADD COLUMN activity_day DATE
    GENERATED ALWAYS AS (CAST(COALESCE(last_used_at, authorized_at, created_at) AS DATE)) STORED;
CREATE INDEX grants_activity_day_idx ON grants (activity_day) WHERE status = 'authorized';
DROP INDEX grants_activity_idx;
