ALTER TABLE customers DROP COLUMN is_test;
