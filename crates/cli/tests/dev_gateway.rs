//! `intraport dev` as the README promises: the curl lines it prints, run by the real
//! `curl`, give the four outcomes (allowed with identity headers at the upstream, 401
//! without a token, 401 bad_signature for a tampered token, 403 for a missing role).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::Dev;

/// Run a printed curl line through the shell, as a user pasting it would; with `-w`
/// appended so the status is on the last line.
fn curl(line: &str) -> (u16, String) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{line} -w '\\n%{{http_code}}'"))
        .output()
        .expect("curl (Debian package curl) must be installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (
        code.trim().parse().unwrap_or_else(|_| {
            panic!(
                "no status from {line}:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        }),
        body.to_string(),
    )
}

#[test]
fn dev_prints_curl_lines_for_the_four_outcomes() {
    let dev = Dev::start();
    let lines = &dev.info["curl"];

    let (status, body) = curl(lines["allowed"].as_str().unwrap());
    assert_eq!(status, 200, "{body}");
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["identity"]["x-intraport-roles"], "Reader");
    assert_eq!(echo["identity"]["x-intraport-tid"], dev.s("tenant_id"));
    assert_eq!(echo["identity"]["x-intraport-identity-type"], "app");
    assert_eq!(echo["forwarded"]["x-forwarded-proto"], "https");
    assert_eq!(
        echo["authorization_forwarded"], false,
        "the dev routes strip Authorization"
    );

    let (status, body) = curl(lines["no_token"].as_str().unwrap());
    assert_eq!(status, 401, "{body}");
    assert!(
        body.to_ascii_lowercase()
            .contains("www-authenticate: bearer")
    );

    let (status, body) = curl(lines["tampered"].as_str().unwrap());
    assert_eq!(status, 401, "{body}");
    assert!(
        body.contains(r#"error="invalid_token", error_description="bad_signature""#),
        "{body}"
    );

    let (status, body) = curl(lines["forbidden"].as_str().unwrap());
    assert_eq!(status, 403, "{body}");
    assert!(body.contains(r#"error="insufficient_scope""#), "{body}");

    // Spoofed identity headers from the client never reach the upstream.
    let spoof = format!(
        "{} -H 'X-Intraport-Roles: Writer' -H 'X-Intraport-Oid: forged'",
        lines["allowed"].as_str().unwrap()
    );
    let (status, body) = curl(&spoof);
    assert_eq!(status, 200, "{body}");
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["identity"]["x-intraport-roles"], "Reader");
    assert_ne!(echo["identity"]["x-intraport-oid"], "forged");

    // The generated configuration passes `intraport config check`.
    let out = common::run(&["config", "check", &dev.s("gateway_config")], None);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The benchmark configuration stays valid: it is checked with the environment the
/// shared harness sets, and refused, naming the variable, without it.
#[test]
fn bench_config_checks_with_the_harness_environment() {
    let file = common::root().join("bench/intraport-bench.toml");
    let check = |env: &[(&str, &str)]| {
        let mut cmd = Command::new(common::bin());
        cmd.args(["config", "check", "--format", "json"]).arg(&file);
        for v in ["IDP_URL", "BENCH_TENANT", "BENCH_AUDIENCE", "UPSTREAM_URL"] {
            cmd.env_remove(v);
        }
        cmd.envs(env.iter().copied());
        cmd.output().unwrap()
    };
    let out = check(&[
        ("IDP_URL", "http://127.0.0.1:18079"),
        ("BENCH_TENANT", "7f1c2a3e-5b6d-4e8f-9a0b-1c2d3e4f5a6b"),
        ("BENCH_AUDIENCE", "api://intraport-bench"),
        ("UPSTREAM_URL", "http://127.0.0.1:18080/"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = check(&[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "config check: 1 = the file is invalid"
    );
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("IDP_URL"), "{text}");
}

/// `token verify --route` decides exactly as the gateway's route: its provider, then
/// its policy (claims, and the source address when given).
#[test]
fn token_verify_as_a_route_of_the_dev_gateway() {
    let dev = Dev::start();
    let config = dev.s("gateway_config");
    let token = dev.s("token");
    let verify = |route: &str, extra: &[&str]| {
        let mut args = vec![
            "token", "verify", "--config", &config, "--route", route, "--format", "json",
        ];
        args.extend_from_slice(extra);
        args.push(&token);
        common::run(&args, None)
    };

    let out = verify("demo", &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = common::json_of(&out);
    assert_eq!(doc["valid"], true);
    assert_eq!(doc["allowed"], true);
    assert_eq!(doc["route"], "demo");

    let out = verify("demo-admin", &[]);
    assert_eq!(out.status.code(), Some(1));
    let doc = common::json_of(&out);
    assert_eq!(doc["valid"], true);
    assert_eq!(doc["allowed"], false);
    assert_eq!(doc["policy"]["code"], "role_missing");

    let out = verify("demo", &["--source", "10.9.9.9"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        common::json_of(&out)["policy"]["code"],
        "source_not_allowed"
    );

    let out = verify("no-such-route", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-route"));
}

/// `token verify --route` refuses routes that cannot verify a token: a route without
/// a provider, and a TCP route (exit 2, naming the route).
#[test]
fn token_verify_route_needs_an_http_route_with_a_provider() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    std::fs::write(
        &file,
        r#"[[listener]]
name = "web"
listen = "127.0.0.1:0"
protocol = "http"

[[listener]]
name = "ldap"
listen = "127.0.0.1:0"
protocol = "tcp"

[[route]]
name = "open"
listener = "web"
upstream = "http://127.0.0.1:9"
identity = "none"
[route.source]
allow = ["127.0.0.0/8"]

[[route]]
name = "directory"
listener = "ldap"
upstream = "127.0.0.1:389"
[route.source]
allow = ["127.0.0.0/8"]
"#,
    )
    .unwrap();
    let path = file.display().to_string();
    for (route, says) in [
        ("open", "names no provider"),
        ("directory", "no HTTP route"),
    ] {
        let out = common::run(
            &[
                "token", "verify", "--config", &path, "--route", route, "a.b.c",
            ],
            None,
        );
        assert_eq!(out.status.code(), Some(2), "{route}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says) && err.contains(route), "{route}: {err}");
    }
}
