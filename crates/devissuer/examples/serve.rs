//! Runs the demo dev issuer until Ctrl-C, printing where it is and a ready
//! client-credentials token: `cargo run -p intraport-devissuer --example serve [PORT]`.

use std::time::Instant;

use intraport_devissuer::{DevIssuer, DevIssuerConfig, TokenRequest, demo};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port = match std::env::args().nth(1) {
        Some(p) => p.parse()?,
        None => 0,
    };
    let started = Instant::now();
    let issuer = DevIssuer::start(DevIssuerConfig {
        port,
        ..DevIssuerConfig::demo()
    })
    .await?;
    let elapsed = started.elapsed();
    println!("authority  {}", issuer.authority());
    println!("tenant     {}", issuer.tenant_id());
    if let Some(ca) = issuer.ca_pem_path() {
        println!("ca         {}", ca.display());
    }
    println!("started in {} ms", elapsed.as_millis());
    let token = issuer.issue_token(&TokenRequest::App {
        client: demo::CLIENT_ID.to_string(),
        api: demo::API_APP_ID_URI.into(),
    })?;
    println!("token      {}", token.access_token);
    tokio::signal::ctrl_c().await?;
    issuer.shutdown().await?;
    Ok(())
}
