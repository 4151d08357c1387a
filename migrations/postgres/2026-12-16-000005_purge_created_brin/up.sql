-- The sweep deletes webhook events (delivered after 30 days, failed after 90) and Shared Signals
-- events (after 90 days, or 30 if never read) by `created_at`, which no index held: each sweep
-- read all of the client index of `webhook_outbox` (27-35 ms at 1M events, against 1.3-1.5 ms
-- with this index) and all of `ssf_events`. Both tables are written in time order, so a BRIN
-- index fits: a few pages, and nothing to update for a row added at the table's end.
CREATE INDEX webhook_outbox_created_brin ON webhook_outbox USING brin (created_at);
CREATE INDEX ssf_events_created_brin ON ssf_events USING brin (created_at);
