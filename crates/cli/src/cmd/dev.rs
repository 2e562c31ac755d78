//! `intraport dev`: the whole port on loopback with nothing to install: the embedded
//! Entra-compatible issuer, the gateway in front of a demo upstream that echoes the
//! identity it is given, a ready token and the curl lines that show each outcome
//! (allowed, no token, tampered token, missing role).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use intraport_devissuer::demo_env::{DemoUpstream, GATEWAY_LISTENER, gateway_config};
use intraport_devissuer::{DevIssuer, DevIssuerConfig, IssuedToken, TokenRequest, demo};
use intraport_gateway::Gateway;
use serde_json::json;

use crate::output::out;
use crate::output::{Format, Outcome, print_json};

/// `dev` arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Port of the gateway on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0)]
    gateway_port: u16,
    /// Serve plain HTTP instead of HTTPS (issuer and gateway).
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

/// Everything `dev` prints, for the table and the JSON summary alike.
struct Summary {
    authority: String,
    tenant: String,
    ca: Option<String>,
    discovery: String,
    endpoint: String,
    token: IssuedToken,
    tampered: String,
    verify: String,
    curl_token: String,
    gateway_url: String,
    gateway_config: String,
    admin_url: String,
    curl: Vec<(&'static str, &'static str, String)>,
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
    let upstream = DemoUpstream::start()
        .await
        .context("starting the demo upstream")?;
    let state_dir = match &args.state_dir {
        Some(d) => d.clone(),
        None => issuer
            .ca_pem_path()
            .and_then(|p| p.parent())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                std::env::temp_dir().join(format!("intraport-dev-{}", std::process::id()))
            }),
    };
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let gateway_toml = gateway_config(
        &issuer,
        upstream.addr(),
        args.gateway_port,
        r#"roles_any = ["Reader", "Writer"]"#,
    );
    let config_path = state_dir.join("gateway.toml");
    std::fs::write(&config_path, &gateway_toml)
        .with_context(|| format!("writing {}", config_path.display()))?;
    let gateway_config = intraport_gateway::load_config(&config_path).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        anyhow::anyhow!(
            "the generated gateway configuration is invalid:\n{}",
            lines.join("\n")
        )
    })?;
    let gateway = Gateway::start(gateway_config)
        .await
        .context("starting the gateway")?;
    // The gateway answers 401 jwks_unavailable until the issuer's keys are loaded:
    // print the commands only once they work.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !gateway.is_ready() {
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("the gateway did not load the issuer's signing keys within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let gw_addr = gateway
        .listener_addr(GATEWAY_LISTENER)
        .await
        .context("the gateway listener is missing")?;
    let summary = summarize(&issuer, &gw_addr, gateway.admin_addr(), &config_path)?;
    match Format::resolve(args.format) {
        Format::Json => print_json(&summary_json(&summary))?,
        Format::Table => print_table(&summary),
    }
    wait_for_stop().await;
    gateway.shutdown(Duration::from_secs(2)).await;
    upstream.shutdown().await;
    issuer.shutdown().await.context("stopping the issuer")?;
    Ok(Outcome::Ok)
}

/// The token with one signature character changed: well-formed, but its signature
/// no longer verifies.
fn tamper(token: &str) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    if let Some(c) = chars.len().checked_sub(10).and_then(|i| chars.get_mut(i)) {
        *c = if *c == 'A' { 'B' } else { 'A' };
    }
    chars.into_iter().collect()
}

fn summarize(
    issuer: &DevIssuer,
    gw: &SocketAddr,
    admin: SocketAddr,
    config_path: &std::path::Path,
) -> Result<Summary> {
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
    let scheme = if issuer.server_cert_paths().is_some() {
        "https"
    } else {
        "http"
    };
    let gateway_url = format!("{scheme}://{gw}");
    let tampered = tamper(&token.access_token);
    let bearer = |t: &str| format!(" -H {}", shell_quote(&format!("Authorization: Bearer {t}")));
    let curl = vec![
        (
            "allowed",
            "200: the demo upstream echoes the identity the gateway vouches for",
            format!(
                "curl -s{curl_ca}{} {gateway_url}/hello",
                bearer(&token.access_token)
            ),
        ),
        (
            "no_token",
            "401: no bearer token",
            format!("curl -si{curl_ca} {gateway_url}/hello"),
        ),
        (
            "tampered",
            "401 bad_signature: one character of the signature changed",
            format!("curl -si{curl_ca}{} {gateway_url}/hello", bearer(&tampered)),
        ),
        (
            "forbidden",
            "403 insufficient_scope: /admin needs role Writer, demo-client has Reader",
            format!(
                "curl -si{curl_ca}{} {gateway_url}/admin",
                bearer(&token.access_token)
            ),
        ),
    ];
    Ok(Summary {
        discovery: format!("{authority}/{tenant}/v2.0/.well-known/openid-configuration"),
        authority,
        tenant,
        ca,
        endpoint,
        token,
        tampered,
        verify,
        curl_token,
        gateway_url,
        gateway_config: config_path.display().to_string(),
        admin_url: format!("http://{admin}"),
        curl,
    })
}

fn summary_json(s: &Summary) -> serde_json::Value {
    let curl: serde_json::Map<String, serde_json::Value> = s
        .curl
        .iter()
        .map(|(k, _, c)| (k.to_string(), json!(c)))
        .collect();
    json!({
        "authority": s.authority,
        "tenant_id": s.tenant,
        "ca_file": s.ca,
        "discovery": s.discovery,
        "token_endpoint": s.endpoint,
        "client_id": demo::CLIENT_ID,
        "audience": [demo::API_APP_ID.to_string(), demo::API_APP_ID_URI],
        "token": s.token.access_token,
        "tampered_token": s.tampered,
        "kid": s.token.kid,
        "expires_on": s.token.expires_on,
        "verify_command": s.verify,
        "curl_token_command": s.curl_token,
        "gateway_url": s.gateway_url,
        "gateway_config": s.gateway_config,
        "admin_url": s.admin_url,
        "curl": curl,
    })
}

fn print_table(s: &Summary) {
    let mut out = String::new();
    let mut line = |l: String| {
        out.push_str(&l);
        out.push('\n');
    };
    line(format!(
        "intraport dev: an Entra-compatible issuer for tenant {} (domain {}), a gateway and a demo upstream, on loopback",
        s.tenant,
        demo::DOMAIN
    ));
    line(String::new());
    line(format!(
        "  gateway     {}   (config {})",
        s.gateway_url, s.gateway_config
    ));
    line(format!("  admin       {}/readyz", s.admin_url));
    line(format!("  authority   {}", s.authority));
    line(format!("  discovery   {}", s.discovery));
    if let Some(c) = &s.ca {
        line(format!(
            "  CA          {c}   (trust it with curl --cacert, msal verify=)"
        ));
    }
    line(format!(
        "  clients     demo-client {} (secret {}, role Reader)",
        demo::CLIENT_ID,
        demo::CLIENT_SECRET
    ));
    line(format!(
        "              admin-client {} (secret {}, roles Reader, Writer)",
        demo::ADMIN_CLIENT_ID,
        demo::ADMIN_CLIENT_SECRET
    ));
    line(format!(
        "  user        {} / {}",
        demo::USERNAME,
        demo::PASSWORD
    ));
    line(String::new());
    line(format!(
        "A v2.0 access token for demo-client (role Reader), expires in {} min:",
        s.token.expires_in / 60
    ));
    line(String::new());
    line(s.token.access_token.clone());
    line(String::new());
    line("Through the gateway:".into());
    for (_, what, cmd) in &s.curl {
        line(String::new());
        line(format!("  # {what}"));
        line(format!("  {cmd}"));
    }
    line(String::new());
    line("Verify the token exactly as the gateway does:".into());
    line(String::new());
    line(format!("  {}", s.verify));
    line(String::new());
    line("Get a fresh one from the token endpoint:".into());
    line(String::new());
    line(format!("  {}", s.curl_token));
    line(String::new());
    line("Press Ctrl-C to stop.".into());
    out!("{out}");
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
