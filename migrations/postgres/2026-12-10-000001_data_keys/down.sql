-- Refused once the data keys are not simply the keys derived from the master (random keys of a
-- new deployment, or keys re-wrapped to another master): the code from before them would derive
-- other keys and write under them. The failing CHECK aborts the migration.
CREATE TEMPORARY TABLE data_keys_downgrade_guard (
    derived_only INTEGER NOT NULL CHECK (derived_only = 1)
);
INSERT INTO data_keys_downgrade_guard (derived_only)
    SELECT CASE WHEN EXISTS (
        SELECT 1 FROM data_keys WHERE origin <> 'derived' OR rewraps > 0
    ) THEN 0 ELSE 1 END;
DROP TABLE data_keys_downgrade_guard;
DROP TABLE data_keys;
