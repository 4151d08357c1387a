//! One integration-test binary (every extra file in tests/ is another slow link).

mod cli;
mod common;
mod golden;
mod hostile;
mod properties;
mod python_interop;
mod scope;
mod verify_errors;
