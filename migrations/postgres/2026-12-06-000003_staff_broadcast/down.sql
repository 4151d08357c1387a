DROP TABLE staff_broadcast;
