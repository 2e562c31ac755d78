//! `intraport validate --plan FILE [--compare URL]`: live authentication flows
//! through a staging gateway, pass/fail per case, JSON and JUnit XML, and the cases
//! whose outcome differs on a second gateway. The work is done by
//! `intraport_probe::validate`; this module parses arguments and prints.

use std::path::PathBuf;

use anyhow::{Context, Result};
use intraport_probe::validate::{self, Difference, RunReport};
use serde::Serialize;

use crate::output::outln;
use crate::output::{Format, Outcome, print_json};

/// `validate` arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The plan: identities, cases and expectations (TOML).
    #[arg(long, value_name = "FILE")]
    plan: PathBuf,
    /// The gateway base URL, instead of the plan's `gateway`.
    #[arg(long, value_name = "URL")]
    gateway: Option<String>,
    /// Run the plan against this second gateway too and report every case whose
    /// outcome (status, allowed, error code) differs.
    #[arg(long, value_name = "URL")]
    compare: Option<String>,
    /// Write the results as JUnit XML here (for CI pipelines).
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Output format (default: table on a terminal, JSON otherwise).
    #[arg(long, value_enum)]
    format: Option<Format>,
}

#[derive(Serialize)]
struct Comparison {
    run: RunReport,
    differences: Vec<Difference>,
}

#[derive(Serialize)]
struct Output {
    passed: bool,
    run: RunReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    compare: Option<Comparison>,
}

/// Run the plan.
pub fn run(args: Args) -> Result<Outcome> {
    let plan = validate::load_plan(&args.plan).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        anyhow::anyhow!("invalid plan:\n{}", lines.join("\n"))
    })?;
    let gateway = args
        .gateway
        .clone()
        .or_else(|| plan.gateway.clone())
        .with_context(|| {
            format!(
                "{}: no gateway: set `gateway` in the plan or pass --gateway URL",
                args.plan.display()
            )
        })?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let (run, compare) = rt.block_on(async {
        let run = validate::run_plan(&plan, &gateway).await?;
        let compare = match &args.compare {
            Some(other) => {
                let other = validate::run_plan(&plan, other).await?;
                let differences = validate::compare(&run, &other);
                Some(Comparison {
                    run: other,
                    differences,
                })
            }
            None => None,
        };
        Ok::<_, validate::ValidateError>((run, compare))
    })?;
    if let Some(path) = &args.junit {
        let mut runs = vec![&run];
        if let Some(c) = &compare {
            runs.push(&c.run);
        }
        std::fs::write(path, validate::junit(&runs))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let passed = run.failed == 0 && compare.as_ref().is_none_or(|c| c.differences.is_empty());
    let out = Output {
        passed,
        run,
        compare,
    };
    match Format::resolve(args.format) {
        Format::Json => print_json(&out)?,
        Format::Table => print_table(&out),
    }
    Ok(if passed { Outcome::Ok } else { Outcome::Failed })
}

fn print_table(out: &Output) {
    outln!("{}", out.run.gateway);
    for c in &out.run.cases {
        let verdict = if c.passed { "PASS" } else { "FAIL" };
        let error = c.observed.error.as_deref().unwrap_or("-");
        outln!(
            "  {verdict}  {:<36} {:>3}  {:<22} {}",
            c.name,
            c.observed.status,
            error,
            c.request
        );
        for m in &c.mismatches {
            outln!("        {m}");
        }
    }
    outln!("  {} passed, {} failed", out.run.passed, out.run.failed);
    if let Some(c) = &out.compare {
        outln!(
            "compared with {}: {} case(s) differ",
            c.run.gateway,
            c.differences.len()
        );
        for d in &c.differences {
            outln!(
                "  {:<36} {} {} -> {} {}",
                d.case,
                d.primary.status,
                d.primary.error.as_deref().unwrap_or("-"),
                d.other.status,
                d.other.error.as_deref().unwrap_or("-")
            );
        }
    }
}
