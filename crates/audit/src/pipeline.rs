//! The emitter, the per-sink queues and their workers.
//!
//! Every sink has its own bounded queue and its own worker task, so a slow or absent
//! collector never delays the file sink. An event is put behind an `Arc` once and
//! shared by all queues; each worker formats it for its own wire.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::{AuditConfig, AuditPlan, Durability, QueueFull, SinkKind};
use crate::error::Error;
use crate::event::Event;

/// One queued event, with an acknowledgement channel for `emit_durable`.
pub(crate) struct Item {
    pub event: Arc<Event>,
    pub ack: Option<oneshot::Sender<Result<(), String>>>,
}

/// Counters one sink worker updates and [`Audit::stats`] reads.
#[derive(Default)]
pub(crate) struct Counters {
    pub written: AtomicU64,
    pub dropped: AtomicU64,
    pub spooled: AtomicU64,
    pub spool_pending: AtomicU64,
    pub errors: AtomicU64,
    pub syncs: AtomicU64,
    pub connected: AtomicBool,
}

impl Counters {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

struct SinkTx {
    name: String,
    kind: &'static str,
    tx: mpsc::Sender<Item>,
    capacity: usize,
    counters: Arc<Counters>,
    durable: bool,
    network: bool,
}

struct Inner {
    sinks: Vec<SinkTx>,
    policy: QueueFull,
}

/// The emitter the data plane holds: cheap to clone, safe to share across tasks.
#[derive(Clone)]
pub struct Audit {
    inner: Arc<Inner>,
}

/// Stops the pipeline: [`AuditHandle::shutdown`] flushes every queue.
pub struct AuditHandle {
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    audit: Audit,
}

/// One sink's numbers, for metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkStats {
    /// The sink's name (`name`, or `<type><index>`).
    pub name: String,
    /// `stdout`, `file`, `syslog-udp`, `syslog-tcp` or `syslog-tls`.
    pub kind: &'static str,
    /// Events waiting in the queue now.
    pub queue_depth: usize,
    /// The queue's capacity.
    pub queue_capacity: usize,
    /// Events written (file, stdout: handed to the OS; syslog TCP/TLS: acknowledged
    /// by the collector's TCP stack; UDP: sent).
    pub written: u64,
    /// Events dropped: queue full under `drop`, spool full, or an unrecoverable
    /// write error (each one counted, never silent).
    pub dropped: u64,
    /// Events that went through the disk spool (collector down), in total.
    pub spooled: u64,
    /// Events in the spool now, waiting for the collector.
    pub spool_pending: u64,
    /// Write, fsync or connection errors seen.
    pub errors: u64,
    /// For file sinks: fsyncs done (in group mode, about one per commit interval while
    /// events arrive).
    pub syncs: u64,
    /// For TCP/TLS syslog: whether the collector is connected now.
    pub connected: Option<bool>,
}

impl Audit {
    /// Checks `config`, opens every sink and starts one worker task per sink. Must be
    /// called inside a Tokio runtime. Files and the spool directory are opened here so
    /// that a bad path fails the start, not the first event.
    pub fn start(config: &AuditConfig) -> Result<(Audit, AuditHandle), Error> {
        Audit::start_plan(config.check()?)
    }

    /// Starts an already checked plan (see [`AuditConfig::check`]).
    pub fn start_plan(plan: AuditPlan) -> Result<(Audit, AuditHandle), Error> {
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut sinks = Vec::with_capacity(plan.sinks.len());
        let mut tasks = Vec::with_capacity(plan.sinks.len());
        for s in plan.sinks {
            let (tx, rx) = mpsc::channel(plan.queue_capacity);
            let counters = Arc::new(Counters::default());
            let stop = shutdown_rx.clone();
            let (kind, durable, network, task) = match s.kind {
                SinkKind::Stdout { format } => (
                    "stdout",
                    false,
                    false,
                    tokio::spawn(crate::file::run_stdout(format, rx, counters.clone(), stop)),
                ),
                SinkKind::File(f) => {
                    let durable = f.durability == Durability::Sync;
                    let writer = crate::file::FileWriter::open(&f)?;
                    (
                        "file",
                        durable,
                        false,
                        tokio::spawn(crate::file::run_file(f, writer, rx, counters.clone(), stop)),
                    )
                }
                SinkKind::Udp {
                    address,
                    header,
                    format,
                } => (
                    "syslog-udp",
                    false,
                    false,
                    tokio::spawn(crate::stream::run_udp(
                        address,
                        header,
                        format,
                        rx,
                        counters.clone(),
                        stop,
                    )),
                ),
                SinkKind::Stream(p) => {
                    let kind = if p.tls.is_some() {
                        "syslog-tls"
                    } else {
                        "syslog-tcp"
                    };
                    let spool = crate::spool::Spool::open(&p.spool_path, plan.spool_max_bytes)?;
                    counters
                        .spool_pending
                        .store(spool.pending(), Ordering::Relaxed);
                    (
                        kind,
                        false,
                        true,
                        tokio::spawn(crate::stream::run_stream(
                            p,
                            spool,
                            rx,
                            counters.clone(),
                            stop,
                            plan.shutdown_grace,
                        )),
                    )
                }
            };
            tasks.push(task);
            sinks.push(SinkTx {
                name: s.name,
                kind,
                tx,
                capacity: plan.queue_capacity,
                counters,
                durable,
                network,
            });
        }
        let audit = Audit {
            inner: Arc::new(Inner {
                sinks,
                policy: plan.queue_full,
            }),
        };
        Ok((
            audit.clone(),
            AuditHandle {
                shutdown,
                tasks,
                audit,
            },
        ))
    }

    /// Tries to queue `item` on `s` without waiting. A closed queue, or a full one under
    /// `drop`, counts the event as dropped; a full queue under `block` hands the item
    /// back for the caller to wait with.
    fn offer(&self, s: &SinkTx, item: Item) -> Option<Item> {
        match s.tx.try_send(item) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Full(item)) => match self.inner.policy {
                QueueFull::Drop => {
                    Counters::add(&s.counters.dropped, 1);
                    None
                }
                QueueFull::Block => Some(item),
            },
            Err(mpsc::error::TrySendError::Closed(_)) => {
                Counters::add(&s.counters.dropped, 1);
                None
            }
        }
    }

    /// Queues `event` for every sink. Returns at once unless a queue is full and the
    /// policy is `block`, in which case it waits for room in that queue (no I/O is
    /// awaited, only the sink worker's progress). Under `drop` a full queue drops the
    /// event for that sink and counts it.
    pub async fn emit(&self, event: impl Into<Arc<Event>>) {
        let event = event.into();
        for s in &self.inner.sinks {
            let item = Item {
                event: event.clone(),
                ack: None,
            };
            if let Some(item) = self.offer(s, item) {
                if s.tx.send(item).await.is_err() {
                    Counters::add(&s.counters.dropped, 1);
                }
            }
        }
    }

    /// Queues `event` from code that cannot await (a response body's `Drop`): a sink
    /// with room takes it at once; a full sink under `drop` counts it as dropped; a
    /// full sink under `block` gets it from a spawned task that waits for room (so
    /// nothing is lost, though that one event may land after later ones). Must be
    /// called inside a Tokio runtime when the policy is `block`.
    pub fn emit_detached(&self, event: impl Into<Arc<Event>>) {
        let event = event.into();
        for s in &self.inner.sinks {
            let item = Item {
                event: event.clone(),
                ack: None,
            };
            if let Some(item) = self.offer(s, item) {
                let tx = s.tx.clone();
                let counters = s.counters.clone();
                tokio::spawn(async move {
                    if tx.send(item).await.is_err() {
                        Counters::add(&counters.dropped, 1);
                    }
                });
            }
        }
    }

    /// Whether any file sink has `durability = "sync"`: then the gateway should use
    /// [`Audit::emit_durable`] before it answers a request.
    pub fn is_sync(&self) -> bool {
        self.inner.sinks.iter().any(|s| s.durable)
    }

    /// Queues `event` like [`Audit::emit`] and returns once every `sync` file sink has
    /// written and fsynced it (other sinks get it as usual). A durable event always
    /// waits for queue room, whatever the queue-full policy. An error means the event
    /// is not known to be on disk: fail closed.
    pub async fn emit_durable(&self, event: Event) -> Result<(), Error> {
        let event = Arc::new(event);
        let mut waits = Vec::new();
        for s in &self.inner.sinks {
            if s.durable {
                let (tx, rx) = oneshot::channel();
                let item = Item {
                    event: event.clone(),
                    ack: Some(tx),
                };
                if s.tx.send(item).await.is_err() {
                    Counters::add(&s.counters.dropped, 1);
                    return Err(Error::NotDurable {
                        sink: s.name.clone(),
                        reason: "the audit pipeline is shut down".into(),
                    });
                }
                waits.push((s.name.as_str(), rx));
            } else {
                let item = Item {
                    event: event.clone(),
                    ack: None,
                };
                if let Some(item) = self.offer(s, item) {
                    if s.tx.send(item).await.is_err() {
                        Counters::add(&s.counters.dropped, 1);
                    }
                }
            }
        }
        for (name, rx) in waits {
            match rx.await {
                Ok(Ok(())) => {}
                Ok(Err(reason)) => {
                    return Err(Error::NotDurable {
                        sink: name.to_string(),
                        reason,
                    });
                }
                Err(_) => {
                    return Err(Error::NotDurable {
                        sink: name.to_string(),
                        reason: "the sink stopped before confirming".into(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Every sink's numbers, in configuration order.
    pub fn stats(&self) -> Vec<SinkStats> {
        self.inner
            .sinks
            .iter()
            .map(|s| SinkStats {
                name: s.name.clone(),
                kind: s.kind,
                queue_depth: s.capacity.saturating_sub(s.tx.capacity()),
                queue_capacity: s.capacity,
                written: s.counters.written.load(Ordering::Relaxed),
                dropped: s.counters.dropped.load(Ordering::Relaxed),
                spooled: s.counters.spooled.load(Ordering::Relaxed),
                spool_pending: s.counters.spool_pending.load(Ordering::Relaxed),
                errors: s.counters.errors.load(Ordering::Relaxed),
                syncs: s.counters.syncs.load(Ordering::Relaxed),
                connected: s
                    .network
                    .then(|| s.counters.connected.load(Ordering::Relaxed)),
            })
            .collect()
    }
}

impl AuditHandle {
    /// The emitter (another clone).
    pub fn audit(&self) -> Audit {
        self.audit.clone()
    }

    /// Stops accepting events, writes everything queued, fsyncs the files, waits up to
    /// `shutdown_grace_ms` for network collectors to acknowledge and spools the rest.
    /// Returns the final numbers. Events emitted after this are counted as dropped.
    pub async fn shutdown(self) -> Vec<SinkStats> {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            if let Err(e) = t.await {
                tracing::error!(error = %e, "audit sink task failed");
            }
        }
        self.audit.stats()
    }
}
