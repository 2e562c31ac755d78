//! Against a real, OpenID Certified third-party provider: the npm package
//! `oidc-provider`, installed into tests/idp by the README's test command and started
//! here on 127.0.0.1. Discovery, JWKS and a client-credentials JWT access token;
//! key rotation at the provider picked up through the unknown-`kid` path; the
//! provider stopped while cached keys keep validating.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use intraport_token::client::{self, Grant, Target};
use intraport_token::{ErrorCode, MetadataSource, Policy, Provider, ProviderConfig};

const TENANT: &str = "4a7c1e2d-9b3f-4d6a-8e1c-2b5d7f9a0c3e";

fn idp_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/idp")
}

/// The IdP process, stopped when dropped.
struct Idp {
    child: Child,
    issuer: String,
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_idp(keys: &Path, port: u16, rotate: bool) -> Idp {
    let dir = idp_dir();
    assert!(
        dir.join("node_modules/oidc-provider").is_dir(),
        "oidc-provider is not installed in tests/idp: run the README's test command (scripts/test.sh), which installs it"
    );
    let mut cmd = Command::new("node");
    cmd.arg(dir.join("launch.mjs"))
        .arg("--keys")
        .arg(keys)
        .arg("--port")
        .arg(port.to_string())
        .arg("--tenant")
        .arg(TENANT)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if rotate {
        cmd.arg("--rotate");
    }
    let mut child = cmd.spawn().expect("starting node");
    let stdout = child.stdout.take().unwrap();
    // Wait for the READY line, with a deadline, on a helper thread.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(issuer) = line.strip_prefix("READY ") {
                let _ = tx.send(issuer.to_string());
                return;
            }
        }
    });
    let issuer = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("oidc-provider did not become ready within 30 s");
    Idp { child, issuer }
}

fn port_of(issuer: &str) -> u16 {
    issuer.rsplit(':').next().unwrap().parse().unwrap()
}

async fn get_token(issuer: &str) -> String {
    client::acquire(
        &reqwest::Client::new(),
        &format!("{issuer}/token"),
        &Grant::ClientCredentials {
            client_id: "svc-reader".into(),
            client_secret: "svc-reader-secret".into(),
        },
        &Target::Resource("api://intraport-idp".into()),
    )
    .await
    .expect("client credentials at oidc-provider")
    .access_token
}

fn provider(issuer: &str) -> Provider {
    let mut cfg = ProviderConfig::new(
        "oidc-provider",
        vec![MetadataSource::Discovery {
            url: format!("{issuer}/.well-known/openid-configuration"),
            key_issuer_alias: None,
        }],
        Policy {
            audiences: vec!["api://intraport-idp".into()],
            allowed_tenants: vec![TENANT.into()],
            ..Policy::default()
        },
    );
    cfg.unknown_kid_cooldown = Duration::from_secs(300);
    Provider::new(cfg).unwrap()
}

#[tokio::test]
async fn discovery_jwks_rotation_and_outage_against_a_real_openid_provider() {
    let dir = std::env::temp_dir().join(format!("intraport-idp-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let keys = dir.join("keys.json");

    let idp = start_idp(&keys, 0, false);
    let p = provider(&idp.issuer);
    assert!(p.load().await.is_empty(), "{:?}", p.status());
    assert!(p.is_ready());
    let before = get_token(&idp.issuer).await;
    let id = p.validate(&before).await.unwrap();
    assert_eq!(id.tenant_id.as_deref(), Some(TENANT));
    assert_eq!(id.roles, vec!["Reader"]);
    assert_eq!(id.app_id.as_deref(), Some("svc-reader"));
    let old_kid = id.kid.clone().unwrap();
    let fetches = p.status()[0].fetches;

    // Rotate at the provider: restart it on the same port with a new signing key
    // first and the old one still published.
    let port = port_of(&idp.issuer);
    drop(idp);
    let idp = start_idp(&keys, port, true);
    let after = get_token(&idp.issuer).await;
    let id = p.validate(&after).await.unwrap();
    assert_ne!(id.kid.as_deref(), Some(&*old_kid), "the new key signs");
    assert_eq!(
        p.status()[0].fetches,
        fetches + 1,
        "exactly one refetch for the new kid"
    );
    // tokens of the old key still verify: it is still published
    p.validate(&before).await.unwrap();

    // The provider stops: the keys already loaded keep validating fresh tokens.
    let unseen = get_token(&idp.issuer).await;
    drop(idp);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(Instant::now() < deadline, "the IdP did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    p.validate(&unseen).await.unwrap();
    // ... and a token from a key never seen fails closed as unknown_kid.
    let mut parts: Vec<String> = unseen.split('.').map(str::to_string).collect();
    parts[0] = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        br#"{"alg":"RS256","kid":"never-published"}"#,
    );
    assert_eq!(
        p.validate(&parts.join(".")).await.unwrap_err().code,
        ErrorCode::UnknownKid
    );
    let _ = std::fs::remove_dir_all(&dir);
}
