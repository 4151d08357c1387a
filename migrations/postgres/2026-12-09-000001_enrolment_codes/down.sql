ALTER TABLE second_factors DROP COLUMN started_in;
DROP TABLE enrolment_codes;
