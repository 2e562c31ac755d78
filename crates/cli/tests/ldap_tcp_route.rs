//! A real directory behind a TCP route: OpenLDAP `slapd` (Debian) started with its own
//! configuration on a loopback port, `intraport serve` in front of it, and `ldapsearch`
//! (Debian `ldap-utils`) as the client. The allowed source gets its entry; a listener
//! whose route does not allow the source refuses the connection, and the gateway logs
//! the refusal with its reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Guard, LDAP_SUFFIX, free_port, start_slapd, wait_for};

fn ldapsearch(port: u16) -> std::process::Output {
    Command::new("ldapsearch")
        .args(["-x", "-LLL", "-o", "nettimeout=5", "-H"])
        .arg(format!("ldap://127.0.0.1:{port}"))
        .args(["-b", LDAP_SUFFIX, "(cn=sync-reader)", "mail"])
        .output()
        .expect("ldapsearch (Debian package ldap-utils) must be installed")
}

#[test]
fn ldap_through_a_tcp_route_allowed_and_refused_by_source() {
    let dir = tempfile::tempdir().unwrap();
    let ldap_port = free_port();
    let _slapd = start_slapd(dir.path(), ldap_port);

    let (allowed_port, denied_port, admin_port) = (free_port(), free_port(), free_port());
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            r#"[server]
worker_threads = 1
shutdown_grace_seconds = 1

[admin]
listen = "127.0.0.1:{admin_port}"

[[listener]]
name = "ldap"
listen = "127.0.0.1:{allowed_port}"
protocol = "tcp"

[[listener]]
name = "ldap-branch"
listen = "127.0.0.1:{denied_port}"
protocol = "tcp"

[[route]]
name = "directory"
listener = "ldap"
upstream = "127.0.0.1:{ldap_port}"
identity = "none"

[route.source]
allow = ["127.0.0.1"]

[[route]]
name = "directory-branch"
listener = "ldap-branch"
upstream = "127.0.0.1:{ldap_port}"
identity = "none"

[route.source]
allow = ["10.20.0.0/16"]
"#
        ),
    )
    .unwrap();
    let log = dir.path().join("gateway.log");
    let mut gateway = Guard(
        Command::new(common::bin())
            .args(["serve", "--config"])
            .arg(&config)
            .env("INTRAPORT_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for("the gateway", Duration::from_secs(15), || {
        std::net::TcpStream::connect(("127.0.0.1", admin_port)).is_ok()
    });

    // Allowed source: the entry comes back through the gateway.
    let out = ldapsearch(allowed_port);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ldapsearch through the gateway failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("mail: sync-reader@contoso.example"),
        "{stdout}"
    );

    // Source not in the route's allow list: refused, and logged with the reason.
    let out = ldapsearch(denied_port);
    assert!(
        !out.status.success(),
        "a refused source got an answer: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("sync-reader"));
    let mut text = String::new();
    wait_for("the refusal in the log", Duration::from_secs(10), || {
        text.clear();
        std::fs::File::open(&log)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        text.contains("connection refused") && text.contains("directory-branch")
    });
    assert!(text.contains("source_not_allowed"), "{text}");
    let _ = gateway.0.kill();
}
