//! Synthetic logins timed by stage, their stored time series, and the reports that
//! find predictable latency spikes (`intraport probe`).
//!
//! What it is for: an SRE schedules logins the way users and services do them (a
//! token from the authority, optionally a call through the gateway with it, an LDAP
//! bind and search against a domain controller), times every stage separately so a
//! slow login can be pinned on DNS, the network path, TLS, token issuance, the
//! gateway or the directory, measures the replication delay between directory
//! servers (a marker written on one, polled for on each replica), stores each run
//! in an embedded SQLite database and exports live Prometheus metrics.
//!
//! What it is not: a token validator (that is `intraport-token`, used here for the
//! `token_validate` stage) or a load generator (one run at a time per probe).
//!
//! # `probe run --config FILE`
//!
//! The configuration (a complete example is `examples/probe.toml`, loaded by a
//! test):
//!
//! ```toml
//! database = "probe.sqlite"          # results (relative to this file); --db overrides
//! retention = "30d"                  # runs older than this are deleted (default 30 days)
//! metrics_listen = "127.0.0.1:9464"  # GET /metrics, loopback addresses only
//!
//! [[probe]]
//! name = "entra-app-login"           # letters, digits, - _ .
//! interval = "60s"                   # time between run starts (default 60 s)
//! jitter = "5s"                      # random delay in [0, jitter) per run (default 0)
//! timeout = "10s"                    # deadline of one whole run (default 10 s)
//!
//! [probe.token]                      # token acquisition
//! token_endpoint = "https://login.microsoftonline.com/TENANT/oauth2/v2.0/token"
//! grant = "client_credentials"       # or "password" (username, password / password_env)
//! client_id = "..."
//! client_secret_env = "PROBE_SECRET" # or client_secret = "..."
//! scope = ["api://intraport-demo/.default"]   # or resource = "..." (v1.0 endpoint)
//! ca_file = "ca.pem"                 # extra trusted CA (optional)
//!
//! [probe.validate]                   # optional: validate the token, as the gateway's
//! name = "entra"                     # [[provider]] table (authority, tenant, audiences, ...)
//! tenant = "..."
//! audiences = ["api://intraport-demo"]
//!
//! [probe.gateway]                    # optional: call through the gateway with the token
//! url = "https://gateway.internal/orders"
//! expect_status = 200                # default 200; method = "GET" by default
//!
//! [probe.ldap]                       # LDAP bind + search (with or without a token part)
//! url = "ldap://dc1.contoso.example:389"   # or ldaps://
//! bind_dn = "cn=probe,ou=svc,dc=contoso,dc=example"
//! password_env = "PROBE_LDAP_PASSWORD"
//! base = "dc=contoso,dc=example"
//! filter = "(sAMAccountName=probe)"  # default (objectClass=*)
//! attributes = ["mail"]
//! min_entries = 1                    # fewer entries fails the run (default 1)
//!
//! [probe.replication]                # replication delay (see [`replication`])
//! provider = "ldap://dc1.contoso.example"   # the marker is written here
//! bind_dn = "cn=probe,ou=svc,dc=contoso,dc=example"  # on provider and replicas
//! password_env = "PROBE_LDAP_PASSWORD"
//! marker_dn = "cn=intraport-probe,ou=svc,dc=contoso,dc=example"  # created if missing
//! attribute = "description"          # default; object_classes = ["organizationalRole"]
//! suffix = "dc=contoso,dc=example"   # OpenLDAP: compare its contextCSN (optional)
//! deadline = "30s"                   # a replica slower than this fails the run
//! poll_interval = "100ms"            # default; the probe's timeout defaults to deadline + 10 s
//!
//! [[probe.replication.replica]]
//! name = "dc2"                       # stage `replication:dc2`
//! url = "ldap://dc2.contoso.example"
//! ```
//!
//! Stages, in order: `token_dns`, `token_connect`, `token_tls`, `token_response`,
//! `token_validate`, `gateway_dns`, `gateway_connect`, `gateway_tls`,
//! `gateway_response`, `ldap_dns`, `ldap_connect`, `ldap_tls`, `ldap_bind`,
//! `ldap_search`, `replication_dns`, `replication_connect`, `replication_tls`,
//! `replication_bind`, `replication_write`, then one `replication:NAME` per
//! replica whose duration is that replica's lag (DNS is skipped for IP literals,
//! TLS for plain schemes). A failed run names its stage and a
//! [`timing::FailureClass`] with, where there is one, a code (the OAuth `error` and
//! `AADSTS` numbers, the token error code, the HTTP status or the gateway's error
//! code, the LDAP result code); a replica that does not catch up is
//! `replication_timeout`, with the lag so far.
//!
//! Metrics (`intraport_probe_` prefix): `stage_duration_seconds{probe,stage}` and
//! `duration_seconds{probe}` histograms, `runs_total{probe,result}`,
//! `failures_total{probe,stage,class}`, `last_success{probe}`,
//! `last_run_timestamp_seconds{probe}`, `last_duration_seconds{probe}`, and for
//! replication probes `replication_lag_seconds{probe,replica}`,
//! `replication_caught_up{probe,replica}`,
//! `replication_context_csn_in_sync{probe,replica}`.
//!
//! Layout: [`config`] reads and checks the file; [`timing`] times stages and the
//! HTTP exchange; [`probe`] runs one probe, with LDAP sessions from a private
//! `ldap` module and the replication delay from [`replication`]; [`store`] keeps results; [`metrics`]
//! exports them; [`runner`] schedules on an injectable [`clock`]; [`report`] and
//! [`html`] analyse and render stored runs (`probe report`); [`validate`] runs
//! staging validation plans (`intraport validate`, its plan format is documented
//! there).

pub mod clock;
pub mod config;
pub mod html;
mod ldap;
pub mod metrics;
pub mod probe;
pub mod replication;
pub mod report;
pub mod runner;
pub mod store;
pub mod timing;
pub mod validate;

pub use clock::{Clock, SteppedClock, SystemClock};
pub use config::{ConfigError, ProbeSet, ProbeSpec};
pub use metrics::{Metrics, MetricsServer};
pub use probe::{PreparedProbe, RunResult};
pub use runner::Runner;
pub use store::Store;
