//! End-to-end tests: one binary, one module per area. Every test runs on SQLite, and also on
//! PostgreSQL + Redis when `TEST_DATABASE_URL` / `TEST_REDIS_URL` are set.

mod announcements;
mod audit;
mod backends;
mod customer_login;
mod customer_pages;
mod dashboard;
mod demo;
mod dpop;
mod extension;
mod faults;
mod grant_management;
mod grants_api;
mod hostile;
mod hsm;
mod kyc_access;
mod lifecycle;
mod master_key;
mod mtls;
mod oauth;
mod operations;
mod portal;
mod private_key_jwt;
mod python_client;
mod revocation_feed;
mod schemathesis;
mod sdks;
mod second_factor;
mod ssf;
mod staff_access;
mod storage;
mod webhooks;
