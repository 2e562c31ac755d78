//! A real directory behind a TCP route: OpenLDAP `slapd` (Debian) started with its own
//! configuration on a loopback port, `intraport serve` in front of it, and `ldapsearch`
//! (Debian `ldap-utils`) as the client. The allowed source gets its entry; a listener
//! whose route does not allow the source refuses the connection, and the gateway logs
//! the refusal with its reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Guard;

const SUFFIX: &str = "dc=intraport,dc=test";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for(what: &str, deadline: Duration, mut ready: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !ready() {
        assert!(
            Instant::now() < until,
            "{what} not ready within {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// slapd with an mdb database holding one entry, on 127.0.0.1:`port`.
fn start_slapd(dir: &Path, port: u16) -> Guard {
    let db = dir.join("db");
    std::fs::create_dir_all(&db).unwrap();
    let conf = dir.join("slapd.conf");
    std::fs::write(
        &conf,
        format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             pidfile {pid}\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             database mdb\n\
             suffix \"{SUFFIX}\"\n\
             rootdn \"cn=admin,{SUFFIX}\"\n\
             rootpw secret\n\
             directory {db}\n\
             maxsize 10485760\n",
            pid = dir.join("slapd.pid").display(),
            db = db.display()
        ),
    )
    .unwrap();
    let ldif = dir.join("base.ldif");
    std::fs::write(
        &ldif,
        format!(
            "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: intraport\ndc: intraport\n\n\
             dn: cn=sync-reader,{SUFFIX}\nobjectClass: inetOrgPerson\ncn: sync-reader\nsn: Reader\nmail: sync-reader@contoso.example\n"
        ),
    )
    .unwrap();
    let out = Command::new("slapadd")
        .arg("-f")
        .arg(&conf)
        .arg("-l")
        .arg(&ldif)
        .output()
        .expect("slapadd (Debian package slapd) must be installed");
    assert!(
        out.status.success(),
        "slapadd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let child = Command::new("slapd")
        .arg("-f")
        .arg(&conf)
        .arg("-h")
        .arg(format!("ldap://127.0.0.1:{port}/"))
        .args(["-d", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("slapd (Debian package slapd) must be installed");
    let guard = Guard(child);
    wait_for("slapd", Duration::from_secs(15), || {
        ldapsearch(port).status.success()
    });
    guard
}

fn ldapsearch(port: u16) -> std::process::Output {
    Command::new("ldapsearch")
        .args(["-x", "-LLL", "-o", "nettimeout=5", "-H"])
        .arg(format!("ldap://127.0.0.1:{port}"))
        .args(["-b", SUFFIX, "(cn=sync-reader)", "mail"])
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
