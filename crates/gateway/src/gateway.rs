//! The running gateway: providers, listeners with their accept loops, reload and
//! shutdown.
//!
//! Each listener's routes, TLS acceptor and upstream clients live in one
//! [`ListenerRuntime`] behind an `ArcSwap`. A connection loads it once at accept (its
//! TLS settings) and each HTTP request loads it again (its routes), so a reload applies
//! to new requests at once while requests in flight finish on the runtime they
//! started with. Nothing on the request path takes a lock.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use intraport_audit::{Action, Audit, AuditHandle, Event, Outcome, Text};
use intraport_limits::{
    AbuseSnapshot, AbuseStats, BanNotice, ConnLimiter, ConnRefusal, Guard, InProcess, Rate,
    RateDecision, RedisState, SharedState, UpstreamHolds,
};
use intraport_token::{FetchGate, Provider};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{self, Config, ConfigError, Listener, Protocol, Routes, StoreConfig};
use crate::metrics::{ConnLabels, ListenerLabels, Metrics, Name, RouteLabels};
use crate::observe::ConnInfo;
use crate::tls::{self, HandshakeFailure, ReloadingCert};
use crate::upstream::UpstreamClient;
use crate::{admin, http, status, tcp};

/// Why the gateway could not start or apply a configuration.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener's address could not be bound.
    #[error("listener `{name}`: cannot listen on {addr}: {source}")]
    Bind {
        /// Listener name (`admin` for the admin listener).
        name: String,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A provider could not be created (e.g. a bad CA file for its metadata).
    #[error("provider `{name}`: {message}")]
    Provider {
        /// Provider name.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// TLS or upstream client setup failed.
    #[error("listener `{name}`: {message}")]
    Setup {
        /// Listener name.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// The configuration file is invalid (reload from file).
    #[error("invalid configuration ({} errors)", .0.len())]
    Config(Vec<ConfigError>),
    /// The configuration has no listener: it would serve nothing, and as a reload it
    /// would close every listener (an empty or truncated file, most likely).
    #[error("the configuration has no listener: it would close every listener")]
    NoListener,
    /// The gateway is shutting down.
    #[error("the gateway is shutting down")]
    ShuttingDown,
}

/// Counters of one listener.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Failed TLS handshakes per [`HandshakeFailure`] (indexed as `HandshakeFailure::ALL`).
    pub handshake_failures: [AtomicU64; 9],
    /// Connections or requests refused by policy.
    pub refused: AtomicU64,
}

impl ListenerStats {
    pub(crate) fn handshake_failed(&self, f: HandshakeFailure) {
        if let Some(i) = HandshakeFailure::ALL.iter().position(|x| *x == f) {
            self.handshake_failures[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The number of handshakes that failed for this reason.
    pub fn handshake_failures_of(&self, f: HandshakeFailure) -> u64 {
        HandshakeFailure::ALL
            .iter()
            .position(|x| *x == f)
            .map_or(0, |i| self.handshake_failures[i].load(Ordering::Relaxed))
    }
}

/// What an accepted connection of one listener needs, swapped whole on reload.
pub(crate) struct ListenerRuntime {
    pub listener: Arc<Listener>,
    pub acceptor: Option<tokio_rustls::TlsAcceptor>,
    /// The listener's name, for metric labels and events.
    pub name: Name,
    /// Each HTTP route's upstream client and name, by route name.
    pub upstreams: HashMap<String, RouteRuntime>,
    /// Providers, indexed like `Config::providers`.
    pub providers: Arc<Vec<Arc<Provider>>>,
    /// Their names, indexed the same way.
    pub provider_names: Arc<Vec<Name>>,
    pub stats: Arc<ListenerStats>,
    /// Open connections (kept across reloads, like `stats`).
    pub conns: Arc<ConnLimiter>,
    /// Upstream requests held per source (kept across reloads too).
    pub holds: Arc<UpstreamHolds>,
}

/// What a request on one HTTP route needs beyond its configuration.
pub(crate) struct RouteRuntime {
    pub client: UpstreamClient,
    pub name: Name,
}

struct ListenerSlot {
    configured: SocketAddr,
    bound: SocketAddr,
    runtime: Arc<ArcSwap<ListenerRuntime>>,
    stop_accepting: CancellationToken,
    cert_watch: CancellationToken,
    stats: Arc<ListenerStats>,
    conns: Arc<ConnLimiter>,
    holds: Arc<UpstreamHolds>,
    /// The listen queue asked for, and the socket it was asked of (owned by the
    /// accept loop: the socket closes when it stops).
    backlog: u32,
    socket: std::sync::Weak<TcpListener>,
}

impl ListenerSlot {
    /// Give the listening socket a new listen queue (Linux takes a second listen(2)).
    fn relisten(&self, backlog: u32) -> std::io::Result<()> {
        let socket = self.socket.upgrade().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotConnected, "the listener is closed")
        })?;
        socket2::SockRef::from(&*socket).listen(i32::try_from(backlog).unwrap_or(i32::MAX))
    }
}

/// Bind `addr` and listen with a queue of `backlog` (tokio's `bind` fixes it at 1024).
fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restarted gateway can bind while old
    // connections linger in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

struct RunningProvider {
    fingerprint: String,
    provider: Arc<Provider>,
    refresh: CancellationToken,
}

struct Control {
    listeners: HashMap<String, ListenerSlot>,
    providers: Vec<(String, RunningProvider)>,
    file: Option<PathBuf>,
}

pub(crate) struct Shared {
    /// Set when shutdown starts: stop accepting, finish HTTP connections gracefully.
    pub drain: CancellationToken,
    /// Set at the grace deadline: close whatever is left.
    pub kill: CancellationToken,
    /// Every connection and tunnel task.
    pub tracker: TaskTracker,
    /// The current providers, for readiness.
    pub providers: ArcSwap<Vec<Arc<Provider>>>,
    /// Bans, rate limits and the counters of every defence.
    pub guard: Arc<Guard>,
    /// The global ceiling on identity-provider fetches.
    pub idp_gate: Arc<IdpGate>,
    /// The metrics of `/metrics`.
    pub metrics: Metrics,
    /// The audit pipeline, when `[audit]` has sinks.
    pub audit: Option<Audit>,
    /// Whether a sink is `durability = "sync"`: a request's event is then on disk
    /// before its response is sent.
    pub audit_sync: bool,
    /// Reload counts.
    pub reloads: Arc<ReloadStats>,
    /// The one-hour history behind `/status`.
    pub history: status::History,
    next_conn_id: AtomicU64,
}

impl Shared {
    /// Queue an audit event (waits only when a queue is full under `block`).
    pub async fn emit(&self, event: Event) {
        if let Some(a) = &self.audit {
            a.emit(event).await;
        }
    }

    /// A new connection's id, unique within this process.
    pub fn connection_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// The global ceiling on identity-provider metadata fetches, shared by every provider
/// (each provider already spaces out its own unknown-`kid` refetches).
pub(crate) struct IdpGate {
    counter: InProcess,
    rate: ArcSwap<Option<Rate>>,
    stats: Arc<AbuseStats>,
}

impl IdpGate {
    fn set(&self, per_minute: u32) {
        self.rate.store(Arc::new(Rate::new(
            per_minute,
            Duration::from_secs(60),
            per_minute,
        )));
    }
}

impl FetchGate for IdpGate {
    fn allow_fetch(&self, url: &str) -> bool {
        let Some(rate) = **self.rate.load() else {
            return true;
        };
        match self.counter.rate_now("idp", rate) {
            RateDecision::Allowed => true,
            RateDecision::Limited { retry_after } => {
                AbuseStats::bump(&self.stats.idp_fetches_refused);
                tracing::warn!(
                    event = "limit",
                    limit = "idp_fetches_per_minute",
                    %url,
                    retry_after_ms = u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX),
                    "identity-provider fetch not sent: global ceiling reached"
                );
                false
            }
        }
    }
}

/// How often the watched configuration file is looked at.
const WATCH_POLL: Duration = Duration::from_millis(250);
/// How long a changed file must stay unchanged before it is read.
const WATCH_SETTLE: Duration = Duration::from_secs(1);

/// What tells one version of a file from the next without reading it: polling this is
/// enough for a file edited by people or replaced by configuration management, and
/// needs no platform API. The inode tells a file renamed into place from the old one
/// even when size and time agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    modified: SystemTime,
    len: u64,
    inode: (u64, u64),
}

impl FileStamp {
    fn of(path: &std::path::Path) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            modified: m.modified().ok()?,
            len: m.len(),
            inode: (m.dev(), m.ino()),
        })
    }
}

/// Wait until the file's stamp has stayed the same for [`WATCH_SETTLE`]; the stamp
/// it settled on (`None` while the file is missing: it waits for it to come back).
async fn settle(path: &std::path::Path, mut last: Option<FileStamp>) -> Option<FileStamp> {
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(WATCH_POLL).await;
        let now = FileStamp::of(path);
        if now != last {
            last = now;
            since = Instant::now();
        } else if now.is_some() && since.elapsed() >= WATCH_SETTLE {
            return now;
        }
    }
}

/// Counts of reload attempts.
#[derive(Debug, Default)]
pub struct ReloadStats {
    /// Reloads applied.
    pub applied: AtomicU64,
    /// Reloads rejected (bad configuration or setup failure); the old one kept serving.
    pub rejected: AtomicU64,
}

/// A running gateway.
pub struct GatewayHandle {
    shared: Arc<Shared>,
    audit: tokio::sync::Mutex<Option<AuditHandle>>,
    control: tokio::sync::Mutex<Control>,
    admin_addr: SocketAddr,
    admin_configured: SocketAddr,
    worker_threads: Option<usize>,
    /// The `[audit]` section in force (it applies at start only).
    audit_fingerprint: Option<String>,
    /// Milliseconds; the last applied configuration's grace period.
    shutdown_grace_ms: AtomicU64,
    watch: CancellationToken,
}

impl std::fmt::Debug for GatewayHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayHandle")
            .field("admin_addr", &self.admin_addr)
            .finish_non_exhaustive()
    }
}

/// Starts gateways.
#[derive(Debug)]
pub struct Gateway;

impl Gateway {
    /// Bind every listener and the admin listener, start the providers' key-set
    /// loading and refresh, and serve on the current Tokio runtime.
    pub async fn start(config: Config) -> Result<Arc<GatewayHandle>, StartError> {
        let store: Arc<dyn SharedState> = match &config.abuse.store {
            StoreConfig::Memory => Arc::new(InProcess::new()),
            StoreConfig::Redis(settings) => {
                Arc::new(RedisState::new(settings.clone()).map_err(|message| {
                    StartError::Setup {
                        name: "abuse".into(),
                        message,
                    }
                })?)
            }
        };
        let guard = Guard::new(store, config.abuse.bans.clone());
        let idp_gate = Arc::new(IdpGate {
            counter: InProcess::new(),
            rate: ArcSwap::from_pointee(None),
            stats: guard.stats().clone(),
        });
        let (audit, audit_handle) = match &config.audit {
            None => (None, None),
            Some(c) => {
                let (a, h) = Audit::start(c).map_err(|e| StartError::Setup {
                    name: "audit".into(),
                    message: e.to_string(),
                })?;
                (Some(a), Some(h))
            }
        };
        if let Some(a) = &audit {
            let a = a.clone();
            guard.set_observer(Box::new(move |notice| a.emit_detached(ban_event(notice))));
        }
        let shared = Arc::new_cyclic(|weak| Shared {
            drain: CancellationToken::new(),
            kill: CancellationToken::new(),
            tracker: TaskTracker::new(),
            providers: ArcSwap::from_pointee(Vec::new()),
            guard: guard.clone(),
            idp_gate,
            metrics: Metrics::new(weak.clone()),
            audit_sync: audit.as_ref().is_some_and(Audit::is_sync),
            audit,
            reloads: Arc::new(ReloadStats::default()),
            history: status::History::new(config.status_sample_interval),
            next_conn_id: AtomicU64::new(0),
        });
        guard.spawn(
            config.abuse.sync_interval,
            config.abuse.summary_interval,
            shared.drain.child_token(),
        );
        tracing::info!(store = guard.store_kind(), "abuse defences on");
        let admin_listener = TcpListener::bind(config.admin_listen)
            .await
            .map_err(|source| StartError::Bind {
                name: "admin".into(),
                addr: config.admin_listen,
                source,
            })?;
        let admin_addr = admin_listener
            .local_addr()
            .map_err(|source| StartError::Bind {
                name: "admin".into(),
                addr: config.admin_listen,
                source,
            })?;
        let handle = Arc::new(GatewayHandle {
            shared: shared.clone(),
            audit: tokio::sync::Mutex::new(audit_handle),
            control: tokio::sync::Mutex::new(Control {
                listeners: HashMap::new(),
                providers: Vec::new(),
                file: config.file.clone(),
            }),
            admin_addr,
            admin_configured: config.admin_listen,
            worker_threads: config.worker_threads,
            audit_fingerprint: config.audit.as_ref().map(|a| format!("{a:?}")),
            shutdown_grace_ms: AtomicU64::new(0),
            watch: shared.drain.child_token(),
        });
        let watch_file = config.watch_config.then(|| config.file.clone()).flatten();
        handle.apply(config).await?;
        status::spawn_sampler(shared.clone());
        admin::spawn(admin_listener, shared);
        if let Some(file) = watch_file {
            handle.clone().spawn_file_watch(file);
        }
        Ok(handle)
    }
}

impl GatewayHandle {
    /// The bound address of a listener (useful with port 0).
    pub async fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.control
            .lock()
            .await
            .listeners
            .get(name)
            .map(|s| s.bound)
    }

    /// The bound address of the admin listener.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// A listener's counters.
    pub async fn listener_stats(&self, name: &str) -> Option<Arc<ListenerStats>> {
        self.control
            .lock()
            .await
            .listeners
            .get(name)
            .map(|s| s.stats.clone())
    }

    /// The counters of every defence (bans, refused connections, limits hit, ...).
    pub fn abuse_stats(&self) -> AbuseSnapshot {
        self.shared.guard.stats().snapshot()
    }

    /// How long `ip` stays banned, if it is.
    pub fn banned(&self, ip: std::net::IpAddr) -> Option<Duration> {
        self.shared.guard.banned(ip)
    }

    /// Whether the shared store (Redis) answered the last time it was asked (always
    /// true in process).
    pub fn shared_state_available(&self) -> bool {
        self.shared.guard.store_available()
    }

    /// Reload counters.
    pub fn reload_stats(&self) -> &ReloadStats {
        &self.shared.reloads
    }

    /// Every audit sink's numbers (empty without `[audit]`).
    pub fn audit_stats(&self) -> Vec<intraport_audit::SinkStats> {
        self.shared
            .audit
            .as_ref()
            .map(Audit::stats)
            .unwrap_or_default()
    }

    /// True when every provider has a key set (what `/readyz` answers).
    pub fn is_ready(&self) -> bool {
        self.shared.providers.load().iter().all(|p| p.is_ready())
    }

    /// Apply a new, already validated configuration. Listeners whose name and address
    /// are unchanged keep their socket; providers whose settings are unchanged keep
    /// their keys and token cache. Connections and requests in flight are not cut.
    /// On error nothing changes.
    pub async fn reload(&self, config: Config) -> Result<(), StartError> {
        let result = self.apply(config).await;
        match &result {
            Ok(()) => {
                self.shared.reloads.applied.fetch_add(1, Ordering::Relaxed);
                tracing::info!("configuration reloaded");
                self.shared
                    .emit(Event::new(Action::Reload, Outcome::Success))
                    .await;
            }
            Err(e) => {
                self.shared.reloads.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "reload rejected; the previous configuration keeps serving");
                self.reload_rejected(e.to_string()).await;
            }
        }
        result
    }

    async fn reload_rejected(&self, why: String) {
        let mut e =
            Event::new(Action::Reload, Outcome::Failure).with_reason("invalid_configuration");
        e.message = Some(Text::from(why));
        self.shared.emit(e).await;
    }

    /// Re-read the configuration file the gateway was started from, check it, and
    /// apply it; a bad file is rejected with every error logged.
    pub async fn reload_from_file(&self) -> Result<(), StartError> {
        let file = self.control.lock().await.file.clone();
        let Some(file) = file else {
            return Err(StartError::Setup {
                name: String::new(),
                message: "the configuration did not come from a file".into(),
            });
        };
        match config::load_config(&file) {
            Ok(c) => self.reload(c).await,
            Err(errors) => {
                for e in &errors {
                    tracing::error!(error = %e, "configuration error");
                }
                self.shared.reloads.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    errors = errors.len(),
                    "reload rejected; the previous configuration keeps serving"
                );
                let first = errors.first().map(ToString::to_string).unwrap_or_default();
                self.reload_rejected(format!("{} errors; first: {first}", errors.len()))
                    .await;
                Err(StartError::Config(errors))
            }
        }
    }

    /// Stop accepting, let connections finish for up to `grace`, then close the rest.
    pub async fn shutdown(&self, grace: Duration) {
        tracing::info!(grace_seconds = grace.as_secs_f64(), "shutting down");
        self.shared.drain.cancel();
        {
            let control = self.control.lock().await;
            for slot in control.listeners.values() {
                slot.stop_accepting.cancel();
                slot.cert_watch.cancel();
            }
            for (_, p) in &control.providers {
                p.refresh.cancel();
            }
        }
        self.shared.tracker.close();
        if tokio::time::timeout(grace, self.shared.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = self.shared.tracker.len(),
                "grace period over; closing remaining connections"
            );
            self.shared.kill.cancel();
            self.shared.tracker.wait().await;
        }
        if let Some(audit) = self.audit.lock().await.take() {
            // Every connection has ended: their last events are queued. Flush them.
            for s in audit.shutdown().await {
                tracing::info!(sink = %s.name, written = s.written, dropped = s.dropped, spool_pending = s.spool_pending, "audit sink closed");
            }
        }
        tracing::info!("shut down");
    }

    /// The grace period of the configuration in force.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms.load(Ordering::Relaxed))
    }

    /// Run until SIGTERM or SIGINT (then shut down gracefully), reloading the
    /// configuration file on SIGHUP.
    #[cfg(unix)]
    pub async fn run_until_signalled(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    let _ = self.reload_from_file().await;
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        self.shutdown(self.shutdown_grace()).await;
        Ok(())
    }

    fn spawn_file_watch(self: Arc<Self>, file: PathBuf) {
        let cancel = self.watch.clone();
        tokio::spawn(async move {
            let mut seen = FileStamp::of(&file);
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(WATCH_POLL) => {}
                }
                let now = FileStamp::of(&file);
                if now == seen || now.is_none() {
                    continue;
                }
                // Changed: wait until it stops changing, so that a file still being
                // written is not read half-way (a prefix of a configuration can be a
                // valid configuration with fewer routes).
                let settled = tokio::select! {
                    () = cancel.cancelled() => return,
                    s = settle(&file, now) => s,
                };
                // What was read is this state or a later one: a change after it is
                // seen at the next poll, so a file refused half-written is read again
                // once its writer finishes.
                seen = settled;
                tracing::info!(file = %file.display(), "configuration file changed: reloading");
                let _ = self.reload_from_file().await;
            }
        });
    }

    async fn apply(&self, config: Config) -> Result<(), StartError> {
        if self.shared.drain.is_cancelled() {
            return Err(StartError::ShuttingDown);
        }
        // `load_config` refuses such a file; this holds for a `Config` built otherwise.
        if config.listeners.is_empty() {
            return Err(StartError::NoListener);
        }
        let mut control = self.control.lock().await;
        if config.admin_listen != self.admin_configured {
            tracing::warn!(admin = %config.admin_listen, "a new admin address takes effect at the next start");
        }
        if config.audit.as_ref().map(|a| format!("{a:?}")) != self.audit_fingerprint {
            tracing::warn!("a new [audit] section takes effect at the next start");
        }
        if config.worker_threads != self.worker_threads {
            tracing::warn!("a new worker_threads takes effect at the next start");
        }
        let store_kind = match config.abuse.store {
            StoreConfig::Memory => "memory",
            StoreConfig::Redis(_) => "redis",
        };
        if store_kind != self.shared.guard.store_kind() {
            tracing::warn!(
                store = store_kind,
                "a new abuse.store takes effect at the next start"
            );
        }

        // Providers: keep the running one when its settings did not change.
        let mut providers: Vec<(String, RunningProvider, bool)> = Vec::new();
        for spec in &config.providers {
            let reuse = control
                .providers
                .iter()
                .find(|(_, p)| p.fingerprint == spec.fingerprint)
                .map(|(_, p)| RunningProvider {
                    fingerprint: p.fingerprint.clone(),
                    provider: p.provider.clone(),
                    refresh: p.refresh.clone(),
                });
            match reuse {
                Some(p) => providers.push((spec.name.clone(), p, false)),
                None => {
                    let provider =
                        Provider::new(spec.config.clone()).map_err(|e| StartError::Provider {
                            name: spec.name.clone(),
                            message: e.to_string(),
                        })?;
                    provider.set_fetch_gate(self.shared.idp_gate.clone());
                    providers.push((
                        spec.name.clone(),
                        RunningProvider {
                            fingerprint: spec.fingerprint.clone(),
                            provider: Arc::new(provider),
                            refresh: self.shared.drain.child_token(),
                        },
                        true,
                    ));
                }
            }
        }
        let provider_list: Arc<Vec<Arc<Provider>>> = Arc::new(
            providers
                .iter()
                .map(|(_, p, _)| p.provider.clone())
                .collect(),
        );

        let provider_names: Arc<Vec<Name>> = Arc::new(
            providers
                .iter()
                .map(|(n, _, _)| Name::from(n.as_str()))
                .collect(),
        );

        // Listeners: build every runtime (and bind new sockets) before changing anything.
        struct Planned {
            name: String,
            runtime: ListenerRuntime,
            cert: Option<(Arc<ReloadingCert>, Duration)>,
            socket: Option<TcpListener>,
            configured: SocketAddr,
        }
        let mut planned = Vec::new();
        for listener in config.listeners {
            let listener = Arc::new(listener);
            let name = listener.name.clone();
            let existing = control
                .listeners
                .get(&name)
                .filter(|s| s.configured == listener.listen);
            let stats = existing.map_or_else(Default::default, |s| s.stats.clone());
            let conns = existing.map_or_else(ConnLimiter::new, |s| s.conns.clone());
            let holds = existing.map_or_else(UpstreamHolds::new, |s| s.holds.clone());
            let (acceptor, cert) = match &listener.tls {
                Some(spec) => {
                    let (acceptor, cert) = tls::acceptor(spec, listener.protocol.is_http())
                        .map_err(|message| StartError::Setup {
                            name: name.clone(),
                            message,
                        })?;
                    (Some(acceptor), Some((cert, spec.reload_interval)))
                }
                None => (None, None),
            };
            let mut upstreams = HashMap::new();
            if let Routes::Http { routes, .. } = &listener.routes {
                for route in routes {
                    let route_name: Name = Arc::from(route.name.as_str());
                    let connect =
                        self.shared
                            .metrics
                            .upstream_connect
                            .get_or_create_owned(&RouteLabels {
                                route: route_name.clone(),
                            });
                    let client =
                        crate::upstream::new_client(route, connect).map_err(|message| {
                            StartError::Setup {
                                name: name.clone(),
                                message: format!("route `{}`: {message}", route.name),
                            }
                        })?;
                    upstreams.insert(
                        route.name.clone(),
                        RouteRuntime {
                            client,
                            name: route_name,
                        },
                    );
                }
            }
            let socket = if existing.is_some() {
                None
            } else {
                Some(bind(listener.listen, listener.backlog).map_err(|source| {
                    StartError::Bind {
                        name: name.clone(),
                        addr: listener.listen,
                        source,
                    }
                })?)
            };
            planned.push(Planned {
                name,
                configured: listener.listen,
                runtime: ListenerRuntime {
                    name: Arc::from(listener.name.as_str()),
                    listener,
                    acceptor,
                    upstreams,
                    providers: provider_list.clone(),
                    provider_names: provider_names.clone(),
                    stats,
                    conns,
                    holds,
                },
                cert,
                socket,
            });
        }

        // Commit. Providers first, so routes never name a provider that is not running.
        for (name, p, fresh) in &providers {
            if *fresh {
                spawn_provider(name.clone(), p.provider.clone(), p.refresh.clone());
            }
        }
        for (_, old) in &control.providers {
            if !providers
                .iter()
                .any(|(_, p, _)| Arc::ptr_eq(&p.provider, &old.provider))
            {
                old.refresh.cancel();
            }
        }
        control.providers = providers.into_iter().map(|(n, p, _)| (n, p)).collect();
        self.shared.providers.store(provider_list);

        let keep: Vec<String> = planned.iter().map(|p| p.name.clone()).collect();
        let removed: Vec<String> = control
            .listeners
            .keys()
            .filter(|n| !keep.contains(n))
            .cloned()
            .collect();
        for name in removed {
            if let Some(slot) = control.listeners.remove(&name) {
                tracing::info!(listener = %name, addr = %slot.bound, "listener removed: no longer accepting");
                slot.stop_accepting.cancel();
                slot.cert_watch.cancel();
            }
        }
        for p in planned {
            let cert_watch = self.shared.drain.child_token();
            if let Some((cert, interval)) = &p.cert {
                cert.watch(*interval, cert_watch.clone());
            }
            let stats = p.runtime.stats.clone();
            let conns = p.runtime.conns.clone();
            let holds = p.runtime.holds.clone();
            let backlog = p.runtime.listener.backlog;
            match p.socket {
                None => {
                    if let Some(slot) = control.listeners.get_mut(&p.name) {
                        if slot.backlog != backlog {
                            // listen(2) again on a listening socket sets its queue.
                            match slot.relisten(backlog) {
                                Ok(()) => slot.backlog = backlog,
                                Err(e) => {
                                    tracing::warn!(listener = %p.name, error = %e, backlog, "listen queue not changed")
                                }
                            }
                        }
                        slot.runtime.store(Arc::new(p.runtime));
                        slot.cert_watch.cancel();
                        slot.cert_watch = cert_watch;
                    }
                }
                Some(socket) => {
                    if let Some(old) = control.listeners.remove(&p.name) {
                        old.stop_accepting.cancel();
                        old.cert_watch.cancel();
                    }
                    let socket = Arc::new(socket);
                    let bound = socket.local_addr().map_err(|source| StartError::Bind {
                        name: p.name.clone(),
                        addr: p.configured,
                        source,
                    })?;
                    let runtime = Arc::new(ArcSwap::from_pointee(p.runtime));
                    let stop = self.shared.drain.child_token();
                    tracing::info!(listener = %p.name, addr = %bound, "listening");
                    spawn_accept(
                        socket.clone(),
                        runtime.clone(),
                        stop.clone(),
                        self.shared.clone(),
                    );
                    control.listeners.insert(
                        p.name,
                        ListenerSlot {
                            configured: p.configured,
                            bound,
                            runtime,
                            stop_accepting: stop,
                            cert_watch,
                            stats,
                            conns,
                            holds,
                            backlog,
                            socket: Arc::downgrade(&socket),
                        },
                    );
                }
            }
        }
        self.shared.guard.set_policy(config.abuse.bans);
        self.shared
            .idp_gate
            .set(config.abuse.idp_fetches_per_minute);
        control.file = config.file.or(control.file.take());
        let grace = u64::try_from(config.shutdown_grace.as_millis()).unwrap_or(u64::MAX);
        self.shutdown_grace_ms.store(grace, Ordering::Relaxed);
        Ok(())
    }
}

fn spawn_provider(name: String, provider: Arc<Provider>, cancel: CancellationToken) {
    tokio::spawn(async move {
        let work = async {
            for e in provider.load().await {
                tracing::warn!(provider = %name, error = %e, "key set not loaded yet; retrying");
            }
            provider.refresh_forever().await;
        };
        tokio::select! {
            () = cancel.cancelled() => {}
            () = work => {}
        }
    });
}

fn spawn_accept(
    socket: Arc<TcpListener>,
    runtime: Arc<ArcSwap<ListenerRuntime>>,
    stop: CancellationToken,
    shared: Arc<Shared>,
) {
    tokio::spawn(async move {
        let bound = socket.local_addr().ok();
        loop {
            let next = tokio::select! {
                () = stop.cancelled() => return,
                a = socket.accept() => a,
            };
            let (stream, peer) = match next {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let rt = runtime.load_full();
            // The address the client reached: the bound one, unless it is a wildcard.
            let local = match bound {
                Some(b) if !b.ip().is_unspecified() => b,
                _ => stream.local_addr().unwrap_or(peer),
            };
            let conn = ConnInfo {
                id: shared.connection_id(),
                peer,
                local,
                listener: rt.name.clone(),
                accepted: Instant::now(),
                tls: None,
            };
            // Refused here, before any TLS work: a banned source or one over its
            // connection cap costs one accept and one reset. The reset (zero linger)
            // rather than a FIN spares the exchange of closing packets and leaves no
            // TIME_WAIT socket on the gateway per refused attempt, which under a
            // reconnect flood would pile up by the hundred thousand.
            let stats = shared.guard.stats();
            if let Some(left) = shared.guard.banned(peer.ip()) {
                AbuseStats::bump(&stats.connections_refused_banned);
                tracing::info!(event = "refused", reason = "banned", listener = %rt.listener.name, %peer, ban_seconds_left = left.as_secs(), "connection refused");
                let _ = stream.set_zero_linger();
                refused(&shared, &conn, "refused_banned", "banned").await;
                continue;
            }
            let permit = match rt.conns.try_acquire(peer.ip(), rt.listener.limits.conn) {
                Ok(p) => p,
                Err(r) => {
                    let (counter, outcome) = match r {
                        ConnRefusal::ListenerFull => (
                            &stats.connections_refused_listener_cap,
                            "refused_listener_cap",
                        ),
                        ConnRefusal::SourceFull => {
                            (&stats.connections_refused_source_cap, "refused_source_cap")
                        }
                        ConnRefusal::OverShare => (
                            &stats.connections_refused_source_share,
                            "refused_source_share",
                        ),
                    };
                    AbuseStats::bump(counter);
                    tracing::info!(event = "refused", reason = r.as_str(), listener = %rt.listener.name, %peer, "connection refused");
                    let _ = stream.set_zero_linger();
                    refused(&shared, &conn, outcome, r.as_str()).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            rt.stats.connections.fetch_add(1, Ordering::Relaxed);
            let shared2 = shared.clone();
            let runtime2 = runtime.clone();
            shared.tracker.spawn(async move {
                let _permit = permit;
                let active =
                    shared2
                        .metrics
                        .connections_active
                        .get_or_create_owned(&ListenerLabels {
                            listener: rt.name.clone(),
                        });
                active.inc();
                match rt.listener.protocol {
                    Protocol::Http | Protocol::Https => {
                        accepted(&shared2, &conn).await;
                        http::serve_connection(stream, conn, rt, runtime2, shared2).await;
                    }
                    Protocol::Tcp | Protocol::Tls => {
                        // A TCP route checks its source before it counts as accepted.
                        tcp::serve_connection(stream, conn, rt, shared2).await;
                    }
                }
                active.dec();
            });
        }
    });
}

/// Count and record a connection refused with `reason`.
pub(crate) async fn refused(shared: &Shared, conn: &ConnInfo, outcome: &'static str, reason: &str) {
    shared
        .metrics
        .connections
        .get_or_create(&ConnLabels {
            listener: conn.listener.clone(),
            outcome,
        })
        .inc();
    if shared.audit.is_some() {
        let mut e = conn.event(Action::ConnectionRefused, Outcome::Failure);
        e.reason = Some(Text::from(reason));
        shared.emit(e).await;
    }
}

/// Count and record an accepted connection.
pub(crate) async fn accepted(shared: &Shared, conn: &ConnInfo) {
    shared
        .metrics
        .connections
        .get_or_create(&ConnLabels {
            listener: conn.listener.clone(),
            outcome: "accepted",
        })
        .inc();
    if shared.audit.is_some() {
        shared
            .emit(conn.event(Action::ConnectionAccepted, Outcome::Success))
            .await;
    }
}

/// The audit event of a change of the ban list.
fn ban_event(notice: BanNotice) -> Event {
    let ip_event = |action, source: std::net::IpAddr| {
        let mut e = Event::new(action, Outcome::Success);
        e.source = Some(SocketAddr::new(source, 0));
        e
    };
    match notice {
        BanNotice::Banned {
            source,
            length,
            failures,
            offence,
            reason,
        } => {
            let mut e = ip_event(Action::Ban, source).with_reason(reason);
            e.ban_duration = Some(length);
            e.message = Some(Text::from(format!(
                "banned after {failures} authentication failures (offence {offence})"
            )));
            e
        }
        BanNotice::BannedElsewhere { source, length } => {
            let mut e = ip_event(Action::Ban, source).with_reason("shared");
            e.ban_duration = Some(length);
            e.message = Some(Text::from(
                "ban made by another gateway of the shared store",
            ));
            e
        }
        BanNotice::Unbanned { source } => ip_event(Action::Unban, source).with_reason("expired"),
    }
}
