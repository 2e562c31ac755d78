//! Audit events of the intraport gateway: one [`Event`] for every connection attempt
//! and request outcome, written durably to several sinks at once.
//!
//! - [`Event`] and its parts ([`Action`], [`Outcome`], [`Identity`], [`TlsInfo`],
//!   [`HttpInfo`], [`Durations`]): the event model, cheap to build on the data plane.
//! - [`format`]: ECS JSON lines, OCSF 1.7.0 JSON lines, CEF, RFC 5424 syslog messages
//!   and their escaping.
//! - [`AuditConfig`]: the `[audit]` table and `[[audit.sink]]` entries of the gateway's
//!   TOML, checked into an [`AuditPlan`].
//! - [`Audit`]: the cheap, cloneable emitter the data plane holds. [`Audit::emit`]
//!   queues an event for every sink without waiting for I/O (it waits only when a
//!   queue is full and the policy is `block`); [`Audit::emit_durable`] returns once
//!   every `durability = "sync"` file sink has the event fsynced.
//! - [`AuditHandle`]: stops the pipeline, flushing every queue ([`AuditHandle::shutdown`]).
//! - [`Audit::stats`]: per sink queue depth, events written, dropped and spooled, for
//!   the gateway's metrics.
//!
//! Sinks: `stdout`, `file` (ECS or OCSF JSON lines, or CEF; size/time rotation, gzip
//! of rotated files, group commit with `fsync` within `commit_interval_ms` or `sync`),
//! `syslog` over UDP (RFC 5426), TCP (RFC 6587 octet counting) and TLS (RFC 5425),
//! whose message is CEF, ECS or OCSF. A TCP or TLS
//! collector that is down gets the events spooled to disk and replayed in order when
//! it returns (see Delivery below).
//!
//! It is not a metrics library: the gateway reads [`Audit::stats`] into its own
//! Prometheus registry.
//!
//! # Delivery
//!
//! Plain syslog over TCP has no application acknowledgement. This crate keeps every
//! message it wrote until the collector's TCP stack has acknowledged its bytes (the
//! kernel's count of unacknowledged bytes, sampled every 100 ms and when the peer
//! closes). Unacknowledged messages are spooled and sent again first on the next
//! connection, so nothing is lost and order holds. When the collector closes a
//! connection on which it had read everything (a restart between events), delivery is
//! exactly once. When it closes with unread bytes in its socket buffer (a restart
//! under a steady stream: the kernel then resets the connection), no sender can know
//! which acknowledged bytes it read; the replay starts at the last acknowledgement
//! sample, so the events of at most one sample interval may arrive twice. Events the
//! collector read but lost itself (killed before writing) are beyond any plain
//! syslog sender. UDP is best effort by nature. The spool survives restarts of the
//! gateway: a clean shutdown compacts it, the next start replays it first.
//!
//! # Field mapping
//!
#![doc = include_str!("../FIELDS.md")]

pub mod config;
pub mod error;
pub mod event;
mod file;
pub mod format;
mod pipeline;
mod spool;
mod stream;
mod tcpq;
pub mod timefmt;

pub use config::{
    AuditConfig, AuditPlan, Durability, FileSinkConfig, QueueFull, SinkConfig, StdoutSinkConfig,
    SyslogSinkConfig, Transport,
};
pub use error::Error;
pub use event::{Action, Durations, Event, EventId, HttpInfo, Identity, Outcome, Text, TlsInfo};
pub use format::Format;
pub use pipeline::{Audit, AuditHandle, SinkStats};
