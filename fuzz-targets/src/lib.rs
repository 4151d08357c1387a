//! # fuzz-targets: what strangers send, as plain functions
//!
//! One `pub fn <target>(data: &[u8])` per fuzz target. Each runs the input through the code that
//! reads it in production and asserts properties of the answer (a panic is a finding):
//!
//! - [`token_verify`]: bytes as a bearer token for `grants::Verifier` and `grants::inspect`.
//! - [`attenuation_block`]: bytes as the Datalog of one block appended to a real token; the
//!   attenuated token never allows what the original refuses, and the scope it reports holds.
//! - [`rar`]: bytes as `authorization_details` (and `scope`) for `AccessRequest::parse`.
//! - [`oauth_form`]: bytes as the form body of the token/PAR endpoints and of the consent page.
//!
//! The instrumented driver (`fuzz/`, cargo-fuzz) only wraps these functions; the `corpus`
//! integration test replays `fuzz/corpus/<target>/` through them without instrumentation, so
//! `cargo test --workspace` keeps every committed input (seeds and past findings) passing.

mod fixtures;
mod forms;
mod tokens;

pub use forms::{oauth_form, rar};
pub use tokens::{Timing, attenuation_block, attenuation_timings, token_verify};

/// A fuzz target: one input in, a panic on a broken property.
pub type Target = fn(&[u8]);

/// Every target by name (the name is its corpus directory and its cargo-fuzz binary).
pub const TARGETS: [(&str, Target); 4] = [
    ("token_verify", token_verify),
    ("attenuation_block", attenuation_block),
    ("rar", rar),
    ("oauth_form", oauth_form),
];

/// Seeds written by [`seeds`]: (target, file name, content).
pub type Seed = (&'static str, String, Vec<u8>);

/// The generated part of the seed corpus: tokens minted with the seeded fixture keys (they are
/// fixed bytes, but only code can make them). `cargo test -p fuzz-targets --test corpus
/// write_seeds -- --ignored` writes them under `fuzz/corpus/`.
pub fn seeds() -> Vec<Seed> {
    fixtures::seeds()
}
