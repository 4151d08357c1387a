-- PostgreSQL only (BRIN indexes for the sweep's purges by creation time). SQLite has no BRIN,
-- and a B-tree would be one more write per webhook and Shared Signals event on the embedded
-- default, whose tables stay small; the migration is here so both backends list the same ones.
SELECT 1;
