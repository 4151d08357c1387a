-- An event's chain index and a feed entry's position are written once, after the row's own
-- commit (the chainer and the feed linker). Until then they are NULL, and a plain unique index
-- still gets an entry for the NULL: every audit event and every revocation feed row wrote an index
-- entry at insert that no query reads (each reads these indexes by `=`, `>`, `>=`, `max` or
-- `IS NOT NULL`, which imply a value), and kept it as a dead entry after the link wrote the real
-- one. Indexing only the rows that have a value keeps the same uniqueness (NULLs never conflicted)
-- and one index write fewer per event and per feed row (BENCHMARKS.md, "Sweep: ...").
ALTER TABLE audit_events DROP CONSTRAINT audit_events_chain_index_key;
CREATE UNIQUE INDEX audit_events_chain_index_key ON audit_events (chain_index)
    WHERE chain_index IS NOT NULL;
DROP INDEX revocations_position_idx;
CREATE UNIQUE INDEX revocations_position_idx ON revocations (position)
    WHERE position IS NOT NULL;
