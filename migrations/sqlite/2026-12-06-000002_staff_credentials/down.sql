DROP TABLE staff_credentials;
