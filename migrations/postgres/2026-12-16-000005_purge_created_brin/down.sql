DROP INDEX ssf_events_created_brin;
DROP INDEX webhook_outbox_created_brin;
