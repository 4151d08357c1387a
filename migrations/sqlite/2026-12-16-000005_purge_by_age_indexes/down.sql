DROP INDEX ssf_events_created_idx;
DROP INDEX webhook_outbox_failed_idx;
DROP INDEX webhook_outbox_delivered_idx;
