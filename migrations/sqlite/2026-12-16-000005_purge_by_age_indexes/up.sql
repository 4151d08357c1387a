-- The sweep deletes webhook events (delivered after 30 days, failed after 90) and Shared Signals
-- events (after 90 days, or 30 if never read) by `created_at`, which no index held: each sweep
-- read all of the client index of `webhook_outbox` (27-35 ms at 1M events) and all of
-- `ssf_events`.
--
-- Webhook events: one partial index per finished status. A pending event enters neither; it
-- enters one when it is delivered or given up on, an update that already writes every index of
-- the table (the status is in the due index's predicate, so it is never HOT). BRIN would cost
-- less, but rows do not stay in time order: each update moves the row wherever there is room,
-- and pages the purge frees take new rows, so every range's minimum would soon be old and the
-- purge would read most of the table again.
CREATE INDEX webhook_outbox_delivered_idx ON webhook_outbox (created_at)
    WHERE status = 'delivered';
CREATE INDEX webhook_outbox_failed_idx ON webhook_outbox (created_at)
    WHERE status = 'failed';
-- Shared Signals events: a queue (an event goes when its receiver has it), long only while a
-- receiver does not read; one entry per event.
CREATE INDEX ssf_events_created_idx ON ssf_events (created_at);
