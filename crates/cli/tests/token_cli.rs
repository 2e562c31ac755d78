//! `intraport token` and `intraport dev` end to end: the real binary, the embedded
//! issuer over HTTPS, Microsoft's own client library (`msal`, PyPI) and the real
//! `oidc-provider` (npm), all on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const DEMO_CLIENT: &str = "5a0c7e2b-9d1f-4c3a-b6e8-2f4d6a8c0e1b";

fn verify(dev: &Dev, token: &str) -> std::process::Output {
    let args = dev.verify_args();
    let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
    a.push(token);
    run(&a, None)
}

fn msal(dev: &Dev, extra: &[&str]) -> String {
    let out = Command::new(python())
        .arg(root().join("tests/msal/acquire.py"))
        .arg("--authority")
        .arg(format!("{}/{}", dev.s("authority"), dev.s("tenant_id")))
        .arg("--ca")
        .arg(dev.s("ca_file"))
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "msal failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn dev_prints_a_verify_command_that_succeeds_when_pasted() {
    let dev = Dev::start();
    let cmd = dev.s("verify_command");
    assert!(cmd.contains(&dev.s("token")));
    let out = Command::new("sh").arg("-c").arg(&cmd).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("VALID"), "{stdout}");
    assert!(stdout.contains("Reader"), "{stdout}");
    // the curl line really gets a token from the token endpoint
    let out = Command::new("sh")
        .arg("-c")
        .arg(dev.s("curl_token_command"))
        .output()
        .unwrap();
    let resp: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let verified = verify(&dev, resp["access_token"].as_str().unwrap());
    assert!(verified.status.success());
}

#[test]
fn msal_client_credentials_token_verifies() {
    let dev = Dev::start();
    let token = msal(
        &dev,
        &[
            "--client-id",
            DEMO_CLIENT,
            "--secret",
            "demo-client-secret",
            "--scope",
            "api://intraport-demo/.default",
        ],
    );
    let out = verify(&dev, &token);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let doc = json_of(&out);
    assert_eq!(doc["valid"], true);
    assert_eq!(doc["identity"]["kind"], "app");
    assert_eq!(doc["identity"]["app_id"], DEMO_CLIENT);
    assert_eq!(doc["identity"]["roles"], serde_json::json!(["Reader"]));
    assert_eq!(doc["claims"]["ver"], "2.0");
}

#[test]
fn msal_password_grant_token_verifies_as_a_user() {
    let dev = Dev::start();
    let token = msal(
        &dev,
        &[
            "--client-id",
            DEMO_CLIENT,
            "--username",
            "alice@contoso.example",
            "--password",
            "alice-password",
            "--scope",
            "api://intraport-demo/access_as_user",
        ],
    );
    let doc = json_of(&verify(&dev, &token));
    assert_eq!(doc["valid"], true, "{doc}");
    assert_eq!(doc["identity"]["kind"], "user");
    assert_eq!(doc["identity"]["username"], "alice@contoso.example");
    assert_eq!(
        doc["identity"]["scopes"],
        serde_json::json!(["access_as_user"])
    );
}

#[test]
fn invalid_tokens_exit_1_with_their_code_and_usage_errors_exit_2() {
    let dev = Dev::start();
    let token = dev.s("token");
    // a tampered payload
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let flip = if &parts[1][10..11] == "A" { "B" } else { "A" };
    parts[1].replace_range(10..11, flip);
    let out = verify(&dev, &parts.join("."));
    assert_eq!(out.status.code(), Some(1));
    let doc = json_of(&out);
    assert_eq!(doc["valid"], false);
    assert!(
        ["bad_signature", "malformed"].contains(&doc["error"]["code"].as_str().unwrap()),
        "{doc}"
    );
    // the right issuer, the wrong audience
    let (authority, tenant, ca) = (dev.s("authority"), dev.s("tenant_id"), dev.s("ca_file"));
    let out = run(
        &[
            "token",
            "verify",
            "--authority",
            &authority,
            "--tenant",
            &tenant,
            "--ca",
            &ca,
            "--audience",
            "api://another-api",
            "--format",
            "json",
            &token,
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json_of(&out)["error"]["code"], "wrong_audience");
    // garbage on stdin
    let args = dev.verify_args();
    let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
    a.push("-");
    let out = run(&a, Some("not-a-token\n"));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json_of(&out)["error"]["code"], "malformed");
    // usage: no audience, a bad --now, no token at all
    let out = run(
        &["token", "verify", "--issuer", "https://x.example/", "abc"],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--audience"));
    let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
    a.extend(["--now", "yesterday", &token]);
    assert_eq!(run(&a, None).status.code(), Some(2));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(run(&a, Some("")).status.code(), Some(2));
}

#[test]
fn offline_verification_against_a_saved_key_set_at_a_given_time() {
    let dev = Dev::start();
    let dir = std::env::temp_dir().join(format!("intraport-offline-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let jwks = dir.join("keys.json");
    let keys_url = format!(
        "{}/{}/discovery/v2.0/keys",
        dev.s("authority"),
        dev.s("tenant_id")
    );
    let status = Command::new("curl")
        .args(["-sf", "--cacert", &dev.s("ca_file"), "-o"])
        .arg(&jwks)
        .arg(&keys_url)
        .status()
        .unwrap();
    assert!(status.success(), "curl could not fetch {keys_url}");
    let token = dev.s("token");
    let issuer = format!("{}/{}/v2.0", dev.s("authority"), dev.s("tenant_id"));
    let base = [
        "token",
        "verify",
        "--issuer",
        issuer.as_str(),
        "--jwks",
        jwks.to_str().unwrap(),
        "--audience",
        "api://intraport-demo",
        "--audience",
        "3b8e6c1d-2f4a-4b5c-8d9e-0a1b2c3d4e5f",
        "--format",
        "json",
    ];
    drop(dev); // offline: the issuer is gone
    let out = run(&[&base[..], &["-"]].concat(), Some(&token));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // the same token, verified as of a day later, has expired
    let later = humantime::format_rfc3339_seconds(
        std::time::SystemTime::now() + Duration::from_secs(86_400),
    )
    .to_string();
    let out = run(&[&base[..], &["--now", &later, "-"]].concat(), Some(&token));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json_of(&out)["error"]["code"], "expired");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A v1 token as Entra issues it (iss `https://sts.windows.net/{tid}/`, `ver` 1.0,
/// `appid`, `upn`, aud the App ID URI) and the key set as saved from Entra, whose keys
/// carry the v2 issuer template: minted by PyJWT.
const V1_MINT: &str = r#"
import json, sys, time
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
tid, out = sys.argv[1], sys.argv[2]
k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
jwk = json.loads(RSAAlgorithm.to_jwk(k.public_key()))
jwk.update({"kid": "JDNa_4i4r7FgigL3sHIlI3xV-IU", "x5t": "JDNa_4i4r7FgigL3sHIlI3xV-IU",
            "use": "sig", "issuer": "https://login.microsoftonline.com/{tenantid}/v2.0"})
json.dump({"keys": [jwk]}, open(out, "w"))
now = int(time.time())
claims = {"aud": "api://orders", "iss": f"https://sts.windows.net/{tid}/", "iat": now - 60,
          "nbf": now - 60, "exp": now + 3600, "acr": "1", "aio": "AUQAu/8Z", "amr": ["pwd"],
          "appid": "5a0c7e2b-9d1f-4c3a-b6e8-2f4d6a8c0e1b", "appidacr": "0",
          "ipaddr": "203.0.113.7", "name": "Jane Doe",
          "oid": "7f4ae3b5-5c2a-4e70-9d4b-1e9a0b6c2d31", "scp": "user_impersonation",
          "sub": "hQ9ef_XqgCwL3tVRZm0m2j4HyfP", "tid": tid, "unique_name": "jane@contoso.example",
          "upn": "jane@contoso.example", "uti": "fqiBqXLPj0eQa82S-IYFAA", "ver": "1.0"}
print(jwt.encode(claims, k, algorithm="RS256",
                 headers={"kid": jwk["kid"], "x5t": jwk["x5t"]}))
"#;

#[test]
fn a_v1_token_verifies_offline_against_keys_saved_from_entra() {
    let tid = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    let dir = std::env::temp_dir().join(format!("intraport-v1-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let keys = dir.join("keys.json");
    let token = mint_v1(V1_MINT, tid, &keys);
    let issuer = format!("https://sts.windows.net/{tid}/");
    let args = [
        "token",
        "verify",
        "--issuer",
        &issuer,
        "--jwks",
        keys.to_str().unwrap(),
        "--audience",
        "api://orders",
        "--tenant",
        tid,
        "--format",
        "json",
        "-",
    ];
    let out = run(&args, Some(&token));
    let doc = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{doc}");
    assert_eq!(doc["claims"]["ver"], "1.0");
    assert_eq!(doc["identity"]["username"], "jane@contoso.example");
    assert_eq!(
        doc["identity"]["app_id"],
        "5a0c7e2b-9d1f-4c3a-b6e8-2f4d6a8c0e1b"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A v1 token of tenant `tid` minted by `script` (PyJWT), its key set written to `keys`.
fn mint_v1(script: &str, tid: &str, keys: &std::path::Path) -> String {
    let minted = Command::new(python())
        .args(["-c", script, tid])
        .arg(keys)
        .output()
        .unwrap();
    assert!(
        minted.status.success(),
        "{}",
        String::from_utf8_lossy(&minted.stderr)
    );
    String::from_utf8(minted.stdout).unwrap()
}

#[test]
fn a_token_with_neither_scope_nor_role_is_refused_unless_acl_tokens_are_allowed() {
    let dir = std::env::temp_dir().join(format!("intraport-acl-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let keys = dir.join("keys.json");
    // The v1 minter's token, without its `scp`: any app of the tenant can get one.
    let script = V1_MINT.replace(r#""scp": "user_impersonation","#, "");
    let tid = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    let token = mint_v1(&script, tid, &keys);
    let issuer = format!("https://sts.windows.net/{tid}/");
    let args = [
        "token",
        "verify",
        "--issuer",
        &issuer,
        "--jwks",
        keys.to_str().unwrap(),
        "--audience",
        "api://orders",
        "--format",
        "json",
    ];
    let out = run(&[&args[..], &["-"]].concat(), Some(&token));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json_of(&out)["error"]["code"], "no_scope_or_role");
    let out = run(
        &[&args[..], &["--allow-acl-tokens", "-"]].concat(),
        Some(&token),
    );
    assert_eq!(out.status.code(), Some(0), "{}", json_of(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn token_get_reports_entra_errors() {
    let dev = Dev::start();
    let common = [
        "token",
        "get",
        "--authority",
        &dev.s("authority"),
        "--tenant",
        &dev.s("tenant_id"),
        "--ca",
        &dev.s("ca_file"),
        "--client-id",
        DEMO_CLIENT,
        "--scope",
        "api://intraport-demo/.default",
        "--format",
        "json",
    ]
    .map(str::to_string);
    let mut ok: Vec<&str> = common.iter().map(String::as_str).collect();
    ok.extend(["--client-secret", "demo-client-secret"]);
    let out = run(&ok, None);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = json_of(&out)["access_token"].as_str().unwrap().to_string();
    assert!(verify(&dev, &token).status.success());

    let mut bad: Vec<&str> = common.iter().map(String::as_str).collect();
    bad.extend(["--client-secret", "wrong"]);
    let out = run(&bad, None);
    assert_eq!(out.status.code(), Some(1));
    let doc = json_of(&out);
    assert_eq!(doc["error"]["Endpoint"]["error"], "invalid_client", "{doc}");
    assert!(
        doc["error"]["Endpoint"]["error_codes"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(7000215)),
        "{doc}"
    );
}

#[test]
fn oidc_provider_token_verifies_through_discovery_and_a_config_file() {
    let dir = std::env::temp_dir().join(format!("intraport-cli-idp-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (_guard, issuer) = start_oidc_provider(&dir);
    let out = run(
        &[
            "token",
            "get",
            "--token-endpoint",
            &format!("{issuer}/token"),
            "--client-id",
            "svc-reader",
            "--client-secret",
            "svc-reader-secret",
            "--resource",
            "api://intraport-idp",
            "--raw",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let discovery = format!("{issuer}/.well-known/openid-configuration");
    let out = run(
        &[
            "token",
            "verify",
            "--discovery",
            &discovery,
            "--audience",
            "api://intraport-idp",
            "--format",
            "json",
            "-",
        ],
        Some(&token),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(json_of(&out)["identity"]["app_id"], "svc-reader");
    // --tenant beside --discovery restricts the tenant
    let out = run(
        &[
            "token",
            "verify",
            "--discovery",
            &discovery,
            "--tenant",
            "82229342-1101-4ab6-817b-70c0747630f3",
            "--audience",
            "api://intraport-idp",
            "--format",
            "json",
            "-",
        ],
        Some(&token),
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json_of(&out)["error"]["code"], "tenant_not_allowed");

    // the same provider from a configuration file
    let cfg = dir.join("intraport.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[provider]]\nname = \"idp\"\ndiscovery = \"{discovery}\"\naudiences = [\"api://intraport-idp\"]\n"
        ),
    )
    .unwrap();
    let out = run(
        &[
            "token",
            "verify",
            "--config",
            cfg.to_str().unwrap(),
            "--format",
            "json",
            "-",
        ],
        Some(&token),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // a configuration error names the field and exits 2
    std::fs::write(
        &cfg,
        format!("[[provider]]\nname = \"idp\"\ndiscovery = \"{discovery}\"\naudience = \"x\"\n"),
    )
    .unwrap();
    let out = run(
        &["token", "verify", "--config", cfg.to_str().unwrap(), "-"],
        Some(&token),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("audience") && err.contains("line 4"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
