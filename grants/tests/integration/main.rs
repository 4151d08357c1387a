//! One integration-test binary (every extra file in tests/ is another slow link).

// The CLI is built with the `cli` feature (`cargo test --workspace` turns it on through e2e-tests).
mod cache;
#[cfg(feature = "cli")]
mod cli;
mod common;
mod dpop;
mod golden;
mod hostile;
mod mtls;
mod properties;
mod python_interop;
mod scope;
mod verify_errors;
