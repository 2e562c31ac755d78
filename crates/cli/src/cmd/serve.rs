//! `intraport serve --config FILE`: run the gateway until SIGTERM or SIGINT, reloading
//! the configuration on SIGHUP and when the file changes.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use intraport_gateway::{Gateway, load_config};

use crate::output::Outcome;

/// `serve` arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The configuration file (check it first with `intraport config check FILE`).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: PathBuf,
}

/// Load the configuration, build the runtime it asks for, and serve.
pub fn run(args: Args) -> Result<Outcome> {
    let config = match load_config(&args.config) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            bail!(
                "{}: invalid configuration ({} errors)",
                args.config.display(),
                errors.len()
            );
        }
    };
    // One worker: a single-threaded runtime, so that tasks (the connection, its
    // upstream connection) wake each other without crossing threads.
    let mut builder = match config.worker_threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let rt = builder
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let handle = Gateway::start(config)
            .await
            .context("starting the gateway")?;
        handle
            .run_until_signalled()
            .await
            .context("installing signal handlers")?;
        Ok(Outcome::Ok)
    })
}
