//! The intraport gateway: the internal port itself.
//!
//! What it is for: terminating TLS (optionally mTLS) on several listeners, routing
//! HTTP requests by host and path prefix and TCP connections by listener, deciding
//! each with the token validator (`intraport-token`) and the route policy
//! (`intraport-policy`), and forwarding what is allowed to upstreams, streaming, with
//! identity headers added and spoofed ones removed. Configuration is checked whole
//! before use ([`load_config`], [`Config::from_toml_str`]) and can be swapped at run
//! time without dropping connections ([`GatewayHandle::reload`]).
//!
//! What it is not: the policy itself (which lives in `intraport-policy`, so that the
//! CLI and the gateway agree), nor the audit sinks (`intraport-audit`: this crate
//! builds the events and hands them over).
//!
//! Layout: [`config`] reads and validates; [`tls`] builds listener TLS and classifies
//! handshake failures; `gateway` owns listeners, providers, reload and shutdown;
//! `http` and `tcp` are the per-connection data planes (`body` limits request
//! bodies, `send` times answers on their way to the client); `upstream` the pooled
//! upstream clients; `observe` the audit events they emit; `metrics` the Prometheus
//! registry; `status` the `/status` page; `admin` the admin endpoints.

mod admin;
mod body;
pub mod config;
mod gateway;
mod http;
mod metrics;
mod observe;
mod send;
mod status;
mod tcp;
pub mod tls;
mod upstream;

pub use config::{Config, ConfigError, Protocol, load_config};
pub use gateway::{Gateway, GatewayHandle, ListenerStats, ReloadStats, StartError};
pub use intraport_limits::AbuseSnapshot;
pub use tls::HandshakeFailure;
