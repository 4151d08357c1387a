ALTER TABLE clients DROP COLUMN dormancy_since;
