//! `intraport probe run|report`: scheduled synthetic logins timed by stage, and the
//! report (percentiles, success rates, periodic spikes, plots) of what they stored.
//! The work is done by `intraport-probe`; this module parses arguments and prints.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use intraport_probe::report::{self, Report};
use intraport_probe::{
    Metrics, MetricsServer, PreparedProbe, RunResult, Runner, Store, SystemClock,
};

use crate::output::outln;
use crate::output::{Format, Outcome, print_json};

/// `probe` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Run the probes of a configuration file: as a service on their schedules
    /// (metrics served, results stored), or each once with `--once`.
    Run(RunArgs),
    /// Analyse stored results: percentiles, success rates, periodic spikes and the
    /// dependency they point to; optionally a self-contained HTML report with plots.
    Report(ReportArgs),
}

/// `probe run` arguments.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The probe configuration (TOML).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Run every probe once, print the results and exit (1 when one failed).
    #[arg(long)]
    once: bool,
    /// The results database (SQLite), instead of the configuration's `database`.
    #[arg(long, value_name = "FILE")]
    db: Option<PathBuf>,
    /// Output format of `--once` (default: table on a terminal, JSON otherwise).
    #[arg(long, value_enum)]
    format: Option<Format>,
}

/// `probe report` arguments.
#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// The results database written by `probe run`.
    #[arg(long, value_name = "FILE")]
    db: PathBuf,
    /// Write a self-contained HTML report here.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Output format on stdout (default: table on a terminal, JSON otherwise).
    #[arg(long, value_enum)]
    format: Option<Format>,
}

/// Run a `probe` subcommand.
pub fn run(command: Command) -> Result<Outcome> {
    match command {
        Command::Run(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            rt.block_on(run_probes(args))
        }
        Command::Report(args) => report_cmd(args),
    }
}

async fn run_probes(args: RunArgs) -> Result<Outcome> {
    let set = intraport_probe::config::load(&args.config).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        anyhow::anyhow!("invalid probe configuration:\n{}", lines.join("\n"))
    })?;
    let probes = set
        .probes
        .iter()
        .cloned()
        .map(PreparedProbe::new)
        .collect::<Result<Vec<_>, _>>()?;
    let db = args.db.clone().or(set.database.clone());
    let store = match &db {
        Some(path) => Some(Store::open(path)?),
        None => None,
    };
    let metrics = Arc::new(Metrics::new());
    let runner = Runner::new(
        probes,
        store,
        metrics.clone(),
        Arc::new(SystemClock),
        set.retention,
    );
    if args.once {
        let results = runner.run_once().await?;
        let failed = results.iter().any(|r| !r.ok);
        match Format::resolve(args.format) {
            Format::Json => print_json(&results)?,
            Format::Table => print_runs(&results),
        }
        return Ok(if failed { Outcome::Failed } else { Outcome::Ok });
    }
    let server = match set.metrics_listen {
        Some(addr) => {
            let s = MetricsServer::start(addr, metrics)
                .await
                .with_context(|| format!("serving metrics on {addr}"))?;
            eprintln!("intraport: probe metrics at http://{}/metrics", s.addr());
            Some(s)
        }
        None => None,
    };
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = stop_tx.send(true);
    });
    let result = runner.run(stop, None).await;
    if let Some(s) = server {
        s.stop();
    }
    result?;
    Ok(Outcome::Ok)
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn print_runs(results: &[RunResult]) {
    for r in results {
        let verdict = if r.ok { "ok" } else { "FAILED" };
        outln!("{}  {verdict}  {:.1} ms", r.probe, r.duration_ms);
        for s in &r.stages {
            let mark = if s.ok { "" } else { "  <- failed" };
            outln!("  {:<18} {:>9.1} ms{mark}", s.stage, s.duration_ms);
        }
        for x in r.replication.iter().flat_map(|rep| &rep.replicas) {
            let state = match (&x.error, x.caught_up) {
                (_, true) => "caught up".to_string(),
                (Some(e), false) => format!("NOT caught up ({})", e.class.as_str()),
                (None, false) => "NOT caught up".to_string(),
            };
            let csn = match (x.csn_in_sync, x.csn_behind_ms) {
                (Some(true), _) => "contextCSN in sync".to_string(),
                (Some(false), Some(b)) => format!("contextCSN {b:.0} ms behind"),
                (Some(false), None) => "contextCSN lacks a provider's server id".to_string(),
                (None, _) => "contextCSN not compared".to_string(),
            };
            outln!(
                "  replica {}: {state} after {:.1} ms, {csn}",
                x.replica,
                x.lag_ms
            );
        }
        if let Some(f) = &r.failure {
            let code = f.error.code.as_deref().unwrap_or("-");
            outln!(
                "  failure: {} at {} ({code}): {}",
                f.error.class.as_str(),
                f.stage,
                f.error.detail
            );
        }
    }
}

fn report_cmd(args: ReportArgs) -> Result<Outcome> {
    if !args.db.exists() {
        anyhow::bail!("{}: no such results database", args.db.display());
    }
    let store = Store::open(&args.db)?;
    let runs = store.runs()?;
    let report = report::analyse(&runs);
    if let Some(out) = &args.out {
        std::fs::write(out, intraport_probe::html::render(&report))
            .with_context(|| format!("writing {}", out.display()))?;
    }
    match Format::resolve(args.format) {
        Format::Json => print_json(&report)?,
        Format::Table => print_report(&report),
    }
    Ok(Outcome::Ok)
}

fn print_report(report: &Report) {
    for p in &report.probes {
        outln!(
            "{}: {} runs, {} ok ({:.1} %), every {} s",
            p.probe,
            p.runs,
            p.successes,
            p.success_rate * 100.0,
            p.interval_seconds
        );
        outln!(
            "  {:<18} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6}",
            "stage",
            "count",
            "p50 ms",
            "p90",
            "p95",
            "p99",
            "max",
            "fail"
        );
        for s in &p.stages {
            outln!(
                "  {:<18} {:>6} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>6}",
                s.stage,
                s.stats.count,
                s.stats.p50,
                s.stats.p90,
                s.stats.p95,
                s.stats.p99,
                s.stats.max,
                s.failures
            );
        }
        for r in &p.replication {
            outln!(
                "  replica {}: caught up {}/{} runs, lag p50 {:.3} ms, p99 {:.3} ms, worst {:.3} ms; contextCSN behind in {}/{}",
                r.replica,
                r.caught_up,
                r.runs,
                r.lag.p50,
                r.lag.p99,
                r.worst_lag_ms,
                r.csn_out_of_sync,
                r.csn_compared
            );
        }
        for s in &p.spikes {
            outln!("  spike: {}", s.summary);
        }
        for (class, n) in &p.failure_classes {
            outln!("  failures {class}: {n}");
        }
    }
}
