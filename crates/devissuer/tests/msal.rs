//! Microsoft's own client library against the issuer: runs
//! `tests/msal/acquire.py` with the Python of the venv named by
//! `INTRAPORT_TEST_PYTHON` (which must have `msal` installed). Skipped,
//! with a notice, when the variable is unset.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;

use common::Env;
use intraport_devissuer::demo;
use serde_json::Value;

fn python() -> Option<String> {
    match std::env::var("INTRAPORT_TEST_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            // Written to the process's stderr directly: the test harness
            // captures eprintln! of passing tests, and a skip must be seen.
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                b"SKIPPED: set INTRAPORT_TEST_PYTHON to a python with msal installed to run the MSAL tests\n",
            );
            None
        }
    }
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/msal/acquire.py")
}

struct Outcome {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn acquire(python: &str, env: &Env, tenant: &str, args: &[&str]) -> Outcome {
    let ca = env
        .issuer
        .ca_pem_path()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let authority = format!("{}/{tenant}", env.issuer.authority());
    let out = tokio::process::Command::new(python)
        .arg(script())
        .args(["--authority", &authority, "--ca", &ca])
        .args(args)
        .output()
        .await
        .unwrap();
    Outcome {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

#[tokio::test]
async fn msal_client_credentials_and_password_grants() {
    let Some(python) = python() else { return };
    let env = Env::demo().await;
    let tid = env.tid();
    let jwks = format!("/{tid}/discovery/v2.0/keys");
    let client = demo::CLIENT_ID.to_string();

    // Confidential client, client credentials, tenant by id.
    let out = acquire(
        &python,
        &env,
        &tid,
        &[
            "--client-id",
            &client,
            "--secret",
            demo::CLIENT_SECRET,
            "--scope",
            "api://intraport-demo/.default",
        ],
    )
    .await;
    assert!(out.ok, "msal failed: {}", out.stderr);
    let (_, c) = env.verify(&out.stdout, &jwks).await;
    assert_eq!(c["idtyp"], "app");
    assert_eq!(c["azp"], client);
    assert_eq!(c["roles"], serde_json::json!(["Reader"]));

    // Public client, password grant, tenant by domain alias.
    let out = acquire(
        &python,
        &env,
        "contoso.example",
        &[
            "--client-id",
            &client,
            "--username",
            demo::USERNAME,
            "--password",
            demo::PASSWORD,
            "--scope",
            "api://intraport-demo/access_as_user",
        ],
    )
    .await;
    assert!(out.ok, "msal failed: {}", out.stderr);
    let (_, c) = env.verify(&out.stdout, &jwks).await;
    assert_eq!(c["idtyp"], "user");
    assert_eq!(c["scp"], "access_as_user");
    assert_eq!(c["preferred_username"], demo::USERNAME);
    assert_eq!(c["azpacr"], "0");

    // Confidential client, password grant.
    let out = acquire(
        &python,
        &env,
        &tid,
        &[
            "--client-id",
            &client,
            "--secret",
            demo::CLIENT_SECRET,
            "--username",
            demo::USERNAME,
            "--password",
            demo::PASSWORD,
            "--scope",
            "api://intraport-demo/access_as_user",
        ],
    )
    .await;
    assert!(out.ok, "msal failed: {}", out.stderr);
    let (_, c) = env.verify(&out.stdout, &jwks).await;
    assert_eq!(c["azpacr"], "1");
}

#[tokio::test]
async fn msal_reports_entra_errors() {
    let Some(python) = python() else { return };
    let env = Env::demo().await;
    let tid = env.tid();
    let client = demo::CLIENT_ID.to_string();

    let out = acquire(
        &python,
        &env,
        &tid,
        &[
            "--client-id",
            &client,
            "--secret",
            "wrong",
            "--scope",
            "api://intraport-demo/.default",
        ],
    )
    .await;
    assert!(!out.ok);
    assert!(out.stdout.is_empty());
    let err: Value = serde_json::from_str(out.stderr.trim()).unwrap();
    assert_eq!(err["error"], "invalid_client");
    assert_eq!(err["error_codes"], serde_json::json!([7000215]));

    let out = acquire(
        &python,
        &env,
        &tid,
        &[
            "--client-id",
            &client,
            "--username",
            demo::USERNAME,
            "--password",
            "wrong",
            "--scope",
            "api://intraport-demo/access_as_user",
        ],
    )
    .await;
    assert!(!out.ok);
    let err: Value = serde_json::from_str(out.stderr.trim()).unwrap();
    assert_eq!(err["error_codes"], serde_json::json!([50126]));

    // An unknown tenant fails in MSAL's discovery, still as JSON on stderr.
    let out = acquire(
        &python,
        &env,
        "fabrikam.example",
        &[
            "--client-id",
            &client,
            "--secret",
            demo::CLIENT_SECRET,
            "--scope",
            "api://intraport-demo/.default",
        ],
    )
    .await;
    assert!(!out.ok);
    let err: Value = serde_json::from_str(out.stderr.trim()).unwrap();
    assert_eq!(err["error"], "ValueError", "{err}");
    assert!(
        err["error_description"]
            .as_str()
            .unwrap()
            .contains("fabrikam.example"),
        "{err}"
    );
}
