DROP TABLE client_access_tokens;
DROP TABLE ssf_events;
DROP TABLE ssf_excluded_subjects;
DROP TABLE ssf_streams;
DROP INDEX signing_keys_one_active_idx;
ALTER TABLE signing_keys DROP COLUMN purpose;
