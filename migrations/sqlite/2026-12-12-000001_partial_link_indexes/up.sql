-- Feed positions are indexed only once given (see the PostgreSQL migration of the same name).
-- The audit log's chain_index keeps its column UNIQUE constraint here: dropping it would mean
-- rebuilding the table, and SQLite's one writer is not where the write cost matters.
DROP INDEX revocations_position_idx;
CREATE UNIQUE INDEX revocations_position_idx ON revocations (position) WHERE position IS NOT NULL;
