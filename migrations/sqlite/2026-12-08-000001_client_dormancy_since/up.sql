-- When staff last set the client's own dormancy period (four-eyes): a shortened period counts
-- from this moment for grants idle since before it, so shortening it ends nothing at once and
-- every grant gets its warning first. NULL for clients whose period was never set.
ALTER TABLE clients ADD COLUMN dormancy_since TIMESTAMP;
