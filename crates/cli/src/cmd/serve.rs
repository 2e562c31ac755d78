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
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = config.worker_threads {
        builder.worker_threads(n);
    }
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
