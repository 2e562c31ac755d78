//! Shared pieces of the gateway's end-to-end tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

pub mod pki;
