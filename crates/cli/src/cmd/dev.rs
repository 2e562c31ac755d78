//! `intraport dev`: the embedded Entra-compatible issuer on loopback, with a ready
//! token and the commands to try it.

use std::path::PathBuf;

use anyhow::{Context, Result};

use intraport_devissuer::{DevIssuer, DevIssuerConfig, TokenRequest, demo};
use serde_json::json;

use crate::output::{Format, Outcome, print_json};

/// `dev` arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Serve plain HTTP instead of HTTPS.
    #[arg(long)]
    http: bool,
    /// Where the generated CA certificate is written (default: a fresh temporary
    /// directory).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Output format of the start-up summary (default: table on a terminal, JSON
    /// otherwise: one line, then the issuer runs until stopped).
    #[arg(long, value_enum)]
    format: Option<Format>,
}

/// Start the issuer, print what to try, run until Ctrl-C or SIGTERM.
pub fn run(args: Args) -> Result<Outcome> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(serve(args))
}

fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

async fn serve(args: Args) -> Result<Outcome> {
    let config = DevIssuerConfig {
        port: args.port,
        tls: !args.http,
        state_dir: args.state_dir.clone(),
        ..DevIssuerConfig::demo()
    };
    let issuer = DevIssuer::start(config)
        .await
        .context("starting the development issuer")?;
    let token = issuer
        .issue_token(&TokenRequest::App {
            client: "demo-client".into(),
            api: demo::API_NAME.into(),
        })
        .context("minting the demo token")?;
    let authority = issuer.authority();
    let tenant = issuer.tenant_id().to_string();
    let ca = issuer.ca_pem_path().map(|p| p.display().to_string());
    // The command must work when pasted, whether or not `intraport` is on PATH.
    let exe = std::env::current_exe()
        .ok()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "intraport".into());
    let ca_arg = ca
        .as_deref()
        .map(|c| format!(" --ca {}", shell_quote(c)))
        .unwrap_or_default();
    let verify = format!(
        "{} token verify --authority {authority} --tenant {tenant}{ca_arg} --audience {} --audience {} --format table {}",
        shell_quote(&exe),
        demo::API_APP_ID,
        demo::API_APP_ID_URI,
        token.access_token
    );
    let curl_ca = ca
        .as_deref()
        .map(|c| format!(" --cacert {}", shell_quote(c)))
        .unwrap_or_default();
    let endpoint = format!("{authority}/{tenant}/oauth2/v2.0/token");
    let curl_token = format!(
        "curl -s{curl_ca} {endpoint} -d grant_type=client_credentials -d client_id={} -d client_secret={} -d scope={}/.default",
        demo::CLIENT_ID,
        demo::CLIENT_SECRET,
        demo::API_APP_ID_URI
    );
    let discovery = format!("{authority}/{tenant}/v2.0/.well-known/openid-configuration");
    match Format::resolve(args.format) {
        Format::Json => print_json(&json!({
            "authority": authority,
            "tenant_id": tenant,
            "ca_file": ca,
            "discovery": discovery,
            "token_endpoint": endpoint,
            "client_id": demo::CLIENT_ID,
            "audience": [demo::API_APP_ID.to_string(), demo::API_APP_ID_URI],
            "token": token.access_token,
            "kid": token.kid,
            "expires_on": token.expires_on,
            "verify_command": verify,
            "curl_token_command": curl_token,
        }))?,
        Format::Table => {
            println!(
                "intraport dev: an Entra-compatible issuer for tenant {tenant} (domain {}), on loopback",
                demo::DOMAIN
            );
            println!();
            println!("  authority   {authority}");
            println!("  discovery   {discovery}");
            println!("  keys        {authority}/{tenant}/discovery/v2.0/keys");
            if let Some(c) = &ca {
                println!("  CA          {c}   (trust it with curl --cacert, msal verify=)");
            }
            println!(
                "  clients     demo-client {} (secret {}, role Reader)",
                demo::CLIENT_ID,
                demo::CLIENT_SECRET
            );
            println!(
                "              admin-client {} (secret {}, roles Reader, Writer)",
                demo::ADMIN_CLIENT_ID,
                demo::ADMIN_CLIENT_SECRET
            );
            println!("  user        {} / {}", demo::USERNAME, demo::PASSWORD);
            println!();
            println!(
                "A v2.0 access token for demo-client (role Reader), expires in {} min:",
                token.expires_in / 60
            );
            println!();
            println!("{}", token.access_token);
            println!();
            println!("Verify it, exactly as the gateway would:");
            println!();
            println!("  {verify}");
            println!();
            println!("Get a fresh one from the token endpoint:");
            println!();
            println!("  {curl_token}");
            println!();
            println!("Press Ctrl-C to stop.");
        }
    }
    wait_for_stop().await;
    issuer.shutdown().await.context("stopping the issuer")?;
    Ok(Outcome::Ok)
}

async fn wait_for_stop() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => ctrl_c.await,
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await;
}
