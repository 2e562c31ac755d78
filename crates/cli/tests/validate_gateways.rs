//! `intraport validate` against real gateways in front of an upstream that echoes
//! the identity headers, with tokens from the real dev issuer: a plan that passes
//! (client credentials, password grant, token file, no credential), a plan that
//! fails with a clear diff (JSON, table, JUnit XML, exit 1), and `--compare`
//! between two gateways whose policies differ.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use intraport_devissuer::demo_env::{DemoUpstream, GATEWAY_LISTENER, gateway_config};
use intraport_devissuer::{DevIssuer, DevIssuerConfig, TokenRequest, demo};
use intraport_gateway::{Config, Gateway, GatewayHandle};

fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The `intraport dev` demo: an upstream echoing the identity headers, and a
/// gateway trusting the issuer: `/admin` needs role Writer, everything else
/// `read_roles` (a TOML requirement line).
async fn echo_upstream() -> SocketAddr {
    // Kept running for the whole test.
    let up = DemoUpstream::start().await.unwrap();
    let addr = up.addr();
    std::mem::forget(up);
    addr
}

/// A gateway of configuration `text`, once it is ready.
async fn start_gateway(text: &str) -> Arc<GatewayHandle> {
    let gw = Gateway::start(Config::from_toml_str(text, Path::new(".")).unwrap())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !gw.is_ready() {
        assert!(tokio::time::Instant::now() < deadline, "gateway not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw
}

/// The HTTPS URL of a gateway's listener.
async fn listener_url(gw: &GatewayHandle, listener: &str) -> String {
    let addr = gw.listener_addr(listener).await.unwrap();
    format!("https://127.0.0.1:{}", addr.port())
}

async fn gateway(
    issuer: &DevIssuer,
    upstream: SocketAddr,
    read_roles: &str,
) -> (Arc<GatewayHandle>, String) {
    let gw = start_gateway(&gateway_config(issuer, upstream, 0, read_roles)).await;
    let url = listener_url(&gw, GATEWAY_LISTENER).await;
    (gw, url)
}

fn plan(issuer: &DevIssuer, token_file: &Path, cases: &str) -> String {
    let endpoint = format!(
        "{}/{}/oauth2/v2.0/token",
        issuer.authority(),
        issuer.tenant_id()
    );
    format!(
        r#"ca_file = {ca}
concurrency = 4

[[identity]]
name = "reader"
kind = "client_credentials"
token_endpoint = {endpoint}
client_id = "{reader}"
client_secret = "{reader_secret}"
scope = ["api://intraport-demo/.default"]

[[identity]]
name = "admin"
kind = "client_credentials"
token_endpoint = {endpoint}
client_id = "{admin}"
client_secret = "{admin_secret}"
scope = ["api://intraport-demo/.default"]

[[identity]]
name = "alice"
kind = "password"
token_endpoint = {endpoint}
client_id = "{reader}"
username = "{user}"
password = "{password}"
scope = ["api://intraport-demo/access_as_user"]

[[identity]]
name = "tampered"
kind = "token_file"
file = {file}
{cases}"#,
        ca = q(&issuer.ca_pem_path().unwrap().display().to_string()),
        endpoint = q(&endpoint),
        reader = demo::CLIENT_ID,
        reader_secret = demo::CLIENT_SECRET,
        admin = demo::ADMIN_CLIENT_ID,
        admin_secret = demo::ADMIN_CLIENT_SECRET,
        user = demo::USERNAME,
        password = demo::PASSWORD,
        file = q(&token_file.display().to_string()),
    )
}

const PASSING: &str = r#"
[[case]]
name = "reader reads orders"
identity = "reader"
path = "/orders"
[case.expect]
status = 200
allowed = true
upstream_identity = { "x-intraport-roles" = "Reader", "x-intraport-identity-type" = "app" }

[[case]]
name = "alice reads orders"
identity = "alice"
path = "/orders?page=2"
[case.expect]
status = 200
upstream_identity = { "x-intraport-upn" = "alice@contoso.example", "x-intraport-identity-type" = "user" }

[[case]]
name = "reader cannot administer"
identity = "reader"
method = "POST"
path = "/admin/users"
[case.expect]
status = 403
allowed = false
error = "role_missing"

[[case]]
name = "admin administers"
identity = "admin"
path = "/admin/users"
[case.expect]
status = 200
allowed = true

[[case]]
name = "no token"
identity = "none"
path = "/orders"
[case.expect]
status = 401
error = "token_required"

[[case]]
name = "tampered token"
identity = "tampered"
path = "/orders"
[case.expect]
status = 401
error = "bad_signature"
"#;

const FAILING: &str = r#"
[[case]]
name = "reader reads orders"
identity = "reader"
path = "/orders"
[case.expect]
status = 200

[[case]]
name = "reader administers"
identity = "reader"
path = "/admin/users"
[case.expect]
status = 200
allowed = true
upstream_identity = { "x-intraport-roles" = "Writer" }
"#;

/// `intraport validate --plan PLAN --gateway GATEWAY EXTRA... --format FORMAT`.
async fn validate(
    plan: &Path,
    gateway: &str,
    extra: &[&str],
    format: &str,
) -> std::process::Output {
    let mut args = s(&[
        "validate",
        "--plan",
        plan.to_str().unwrap(),
        "--gateway",
        gateway,
    ]);
    args.extend(s(extra));
    args.extend(s(&["--format", format]));
    intraport(args).await
}

async fn intraport(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        common::run(&args, None)
    })
    .await
    .unwrap()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_passing_failing_and_compare() {
    let issuer = DevIssuer::start(DevIssuerConfig::demo()).await.unwrap();
    let upstream = echo_upstream().await;
    let (staging, staging_url) =
        gateway(&issuer, upstream, r#"roles_any = ["Reader", "Writer"]"#).await;
    // "Production" only lets writers read.
    let (production, production_url) =
        gateway(&issuer, upstream, r#"roles_all = ["Writer"]"#).await;
    let dir = tempfile::tempdir().unwrap();
    let token = issuer
        .issue_token(&TokenRequest::App {
            client: "demo-client".into(),
            api: demo::API_NAME.into(),
        })
        .unwrap()
        .access_token;
    let mut tampered: Vec<char> = token.chars().collect();
    let i = tampered.len() - 10;
    tampered[i] = if tampered[i] == 'A' { 'B' } else { 'A' };
    let token_file = dir.path().join("token.txt");
    std::fs::write(&token_file, tampered.into_iter().collect::<String>()).unwrap();

    // A passing plan: exit 0, every case passed, JUnit without failures.
    let passing = dir.path().join("passing.toml");
    std::fs::write(&passing, plan(&issuer, &token_file, PASSING)).unwrap();
    let junit = dir.path().join("passing.xml");
    let out = validate(
        &passing,
        &staging_url,
        &["--junit", junit.to_str().unwrap()],
        "json",
    )
    .await;
    let doc = common::json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{doc:#}");
    assert_eq!(doc["passed"], true);
    assert_eq!(doc["run"]["passed"], 6);
    assert_eq!(
        doc["run"]["cases"][0]["observed"]["upstream_identity"]["x-intraport-roles"],
        "Reader"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains(r#"tests="6" failures="0""#), "{xml}");
    assert!(!xml.contains("<failure"), "{xml}");

    // A failing plan: exit 1, the diff says what was expected and what came.
    let failing = dir.path().join("failing.toml");
    std::fs::write(&failing, plan(&issuer, &token_file, FAILING)).unwrap();
    let junit = dir.path().join("failing.xml");
    let out = validate(
        &failing,
        &staging_url,
        &["--junit", junit.to_str().unwrap()],
        "json",
    )
    .await;
    let doc = common::json_of(&out);
    assert_eq!(out.status.code(), Some(1), "{doc:#}");
    assert_eq!(doc["run"]["failed"], 1);
    let case = &doc["run"]["cases"][1];
    assert_eq!(case["passed"], false);
    assert_eq!(
        case["mismatches"],
        serde_json::json!([
            "status: expected 200, got 403 (error: role_missing)",
            "allowed: expected true, got false (status 403, error: role_missing)",
            "upstream_identity.x-intraport-roles: expected \"Writer\", the upstream did not see it"
        ])
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains(r#"<testcase classname="https://127.0.0.1:"#),
        "{xml}"
    );
    assert!(
        xml.contains(r#"name="reader administers""#)
            && xml.contains(
                "<failure message=\"status: expected 200, got 403 (error: role_missing);"
            ),
        "{xml}"
    );
    let out = validate(&failing, &staging_url, &[], "table").await;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("FAIL  reader administers"), "{table}");
    assert!(table.contains("PASS  reader reads orders"), "{table}");
    assert!(table.contains("1 passed, 1 failed"), "{table}");

    // Compare: staging passes the plan; production refuses the readers.
    let out = validate(
        &passing,
        &staging_url,
        &["--compare", &production_url],
        "json",
    )
    .await;
    let doc = common::json_of(&out);
    assert_eq!(out.status.code(), Some(1), "{doc:#}");
    assert_eq!(doc["run"]["failed"], 0, "staging itself passes");
    let diffs = doc["compare"]["differences"].as_array().unwrap();
    let names: Vec<&str> = diffs.iter().map(|d| d["case"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["reader reads orders", "alice reads orders"],
        "{doc:#}"
    );
    for d in diffs {
        assert_eq!(d["primary"]["status"], 200);
        assert_eq!(d["other"]["status"], 403);
        assert_eq!(d["other"]["error"], "role_missing");
    }
    // Against itself nothing differs.
    let out = validate(&passing, &staging_url, &["--compare", &staging_url], "json").await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        common::json_of(&out)["compare"]["differences"],
        serde_json::json!([])
    );

    staging.shutdown(Duration::from_secs(1)).await;
    production.shutdown(Duration::from_secs(1)).await;
}

#[test]
fn plan_errors_exit_2_with_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.toml");
    std::fs::write(
        &plan,
        "gateway = \"https://127.0.0.1:1\"\n\n[[case]]\nname = \"a\"\nidentity = \"ghost\"\npath = \"/\"\n[case.expect]\nstatus = 200\n",
    )
    .unwrap();
    let out = common::run(&["validate", "--plan", plan.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:3: case[a].identity: no identity named `ghost`",
            plan.display()
        )),
        "{err}"
    );
    // A gateway that does not answer fails the case (exit 1), it is not a usage error.
    std::fs::write(
        &plan,
        "gateway = \"https://127.0.0.1:1\"\n\n[[case]]\nname = \"a\"\nidentity = \"none\"\npath = \"/\"\n[case.expect]\nstatus = 200\n",
    )
    .unwrap();
    let out = common::run(
        &[
            "validate",
            "--plan",
            plan.to_str().unwrap(),
            "--format",
            "json",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let doc = common::json_of(&out);
    let seen = &doc["run"]["cases"][0]["observed"];
    assert_eq!(seen["status"], 0);
    assert_eq!(seen["error"], "connect_failed", "{seen:#}");
    assert!(
        seen["detail"].as_str().unwrap().starts_with("no answer"),
        "{seen:#}"
    );
}

/// Client certificates minted with Debian's `openssl`: a client CA and, under
/// `dir`, `NAME.pem` / `NAME-key.pem` for `CN=NAME` (SAN `dns:NAME.example.test`),
/// signed by that CA or, for `rogue`, by a CA the gateway does not know.
fn client_certs(dir: &Path, names: &[&str]) -> std::path::PathBuf {
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (Debian package openssl) must be installed");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    for ca in ["client-ca", "rogue-ca"] {
        let subj = format!("/CN={ca}");
        let key = format!("{ca}-key.pem");
        let cert = format!("{ca}.pem");
        let mut a = vec!["req", "-x509"];
        a.extend(ec);
        a.extend(["-keyout", &key, "-out", &cert, "-days", "2", "-subj", &subj]);
        a.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
        a.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
        openssl(&a);
    }
    for name in names {
        let ca = if *name == "rogue" {
            "rogue-ca"
        } else {
            "client-ca"
        };
        let ext = format!("{name}.ext");
        std::fs::write(
            dir.join(&ext),
            format!(
                "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                 extendedKeyUsage=clientAuth\nsubjectAltName=DNS:{name}.example.test\n"
            ),
        )
        .unwrap();
        let (key, csr, cert) = (
            format!("{name}-key.pem"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        let subj = format!("/CN={}", if *name == "rogue" { "agent" } else { name });
        let mut a = vec!["req"];
        a.extend(ec);
        a.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(&a);
        let (ca_cert, ca_key) = (format!("{ca}.pem"), format!("{ca}-key.pem"));
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_cert,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
    }
    dir.join("client-ca.pem")
}

/// A gateway (HTTPS with the issuer's certificate) with two listeners asking for
/// client certificates from `client_ca`: `mtls` requires one, `mtls-optional`
/// asks for one; on both, the route admits only `CN=agent`.
async fn mtls_gateway(
    issuer: &DevIssuer,
    upstream: SocketAddr,
    client_ca: &Path,
) -> (Arc<GatewayHandle>, String, String) {
    let (cert, key) = issuer.server_cert_paths().unwrap();
    let mut text =
        "[server]\nshutdown_grace_seconds = 1\n\n[admin]\nlisten = \"127.0.0.1:0\"\n".to_string();
    for (listener, mode) in [("mtls", "required"), ("mtls-optional", "optional")] {
        text += &format!(
            r#"
[[listener]]
name = "{listener}"
listen = "127.0.0.1:0"
protocol = "https"
[listener.tls]
cert = {cert}
key = {key}
client_ca = {ca}
client_cert = "{mode}"

[[route]]
name = "{listener}-agents"
listener = "{listener}"
path_prefix = "/"
upstream = "http://{upstream}"
identity = "client_cert"
[route.source]
allow = ["127.0.0.0/8"]
[route.require]
client_cert_subjects = ["CN=agent"]
"#,
            cert = q(&cert.display().to_string()),
            key = q(&key.display().to_string()),
            ca = q(&client_ca.display().to_string()),
        );
    }
    let gw = start_gateway(&text).await;
    let required = listener_url(&gw, "mtls").await;
    let optional = listener_url(&gw, "mtls-optional").await;
    (gw, required, optional)
}

const MTLS_CASES: &str = r#"
[[identity]]
name = "agent"
kind = "client_cert"
cert = "agent.pem"
key = "agent-key.pem"

[[identity]]
name = "other"
kind = "client_cert"
cert = "other.pem"
key = "other-key.pem"

[[identity]]
name = "rogue"
kind = "client_cert"
cert = "rogue.pem"
key = "rogue-key.pem"

[[case]]
name = "the agent's certificate passes"
identity = "agent"
path = "/sync"
[case.expect]
status = 200
allowed = true
upstream_identity = { "x-intraport-client-cert-subject" = "CN=agent", "x-intraport-client-cert-san" = "dns:agent.example.test" }

[[case]]
name = "a certificate the route does not allow"
identity = "other"
path = "/sync"
[case.expect]
status = 403
allowed = false
error = "cert_not_allowed"

[[case]]
name = "no certificate"
identity = "none"
path = "/sync"
[case.expect]
allowed = false
error = "tls_alert_certificate_required"

[[case]]
name = "a certificate from an unknown CA"
identity = "rogue"
path = "/sync"
[case.expect]
allowed = false
error = "tls_alert_unknown_ca"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_client_certificate_identities_against_an_mtls_gateway() {
    let issuer = DevIssuer::start(DevIssuerConfig::demo()).await.unwrap();
    let upstream = echo_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let client_ca = client_certs(dir.path(), &["agent", "other", "rogue"]);
    let (gw, required, optional) = mtls_gateway(&issuer, upstream, &client_ca).await;
    let plan = dir.path().join("mtls.toml");
    // Certificate paths are relative to the plan.
    std::fs::write(
        &plan,
        format!(
            "ca_file = {}\n{MTLS_CASES}",
            q(&issuer.ca_pem_path().unwrap().display().to_string())
        ),
    )
    .unwrap();
    let junit = dir.path().join("mtls.xml");
    let out = validate(
        &plan,
        &required,
        &["--junit", junit.to_str().unwrap()],
        "json",
    )
    .await;
    let doc = common::json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{doc:#}");
    assert_eq!(doc["run"]["passed"], 4, "{doc:#}");
    let cases = doc["run"]["cases"].as_array().unwrap();
    // Refused at the handshake: no HTTP answer at all.
    for c in &cases[2..] {
        assert_eq!(c["observed"]["status"], 0, "{c:#}");
        assert!(
            c["observed"]["detail"]
                .as_str()
                .unwrap()
                .starts_with("no answer"),
            "{c:#}"
        );
    }
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains(r#"tests="4" failures="0""#), "{xml}");

    // Where the listener only asks for a certificate, no certificate reaches the
    // route, which refuses it with 403: the one case whose outcome differs.
    let out = validate(&plan, &required, &["--compare", &optional], "json").await;
    let doc = common::json_of(&out);
    assert_eq!(out.status.code(), Some(1), "{doc:#}");
    let diffs = doc["compare"]["differences"].as_array().unwrap();
    assert_eq!(diffs.len(), 1, "{doc:#}");
    assert_eq!(diffs[0]["case"], "no certificate");
    assert_eq!(
        diffs[0]["primary"]["error"],
        "tls_alert_certificate_required"
    );
    assert_eq!(diffs[0]["other"]["status"], 403);
    assert_eq!(diffs[0]["other"]["error"], "client_cert_required");

    gw.shutdown(Duration::from_secs(1)).await;
}
