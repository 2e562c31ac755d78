//! One module per top-level command: argument types and the glue that calls the
//! feature crates and prints their results.

pub mod check;
pub mod config;
pub mod dev;
pub mod pcap;
pub mod ports;
pub mod probe;
pub mod rules;
pub mod serve;
pub mod token;
pub mod validate;
