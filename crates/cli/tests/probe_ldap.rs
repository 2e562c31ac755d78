//! `intraport probe run` against a real OpenLDAP `slapd` (Debian) on loopback: bind
//! and search timed, a refused bind, a search that finds nothing and a directory
//! that is down each classified at their stage; results stored and reported; the
//! long-running service serves metrics and stops cleanly on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Guard, LDAP_SUFFIX, free_port, start_slapd, wait_for};

fn ldap_probe(name: &str, url: &str, password: &str, filter: &str) -> String {
    format!(
        r#"
[[probe]]
name = "{name}"
interval = "1s"
timeout = "5s"

[probe.ldap]
url = "{url}"
bind_dn = "cn=admin,{LDAP_SUFFIX}"
password = "{password}"
base = "{LDAP_SUFFIX}"
filter = "{filter}"
attributes = ["mail"]
"#
    )
}

#[test]
fn ldap_probe_stages_failures_storage_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _slapd = start_slapd(dir.path(), port);
    let down = free_port();
    let mut text = String::new();
    // By name, so the DNS stage runs (the hosts file answers).
    text += &ldap_probe(
        "dc",
        &format!("ldap://localhost:{port}"),
        "secret",
        "(cn=sync-reader)",
    );
    text += &ldap_probe(
        "dc-bad-password",
        &format!("ldap://127.0.0.1:{port}"),
        "wrong",
        "(cn=sync-reader)",
    );
    text += &ldap_probe(
        "dc-no-entry",
        &format!("ldap://127.0.0.1:{port}"),
        "secret",
        "(cn=nobody)",
    );
    text += &ldap_probe(
        "dc-down",
        &format!("ldap://127.0.0.1:{down}"),
        "secret",
        "(cn=sync-reader)",
    );
    let config = dir.path().join("probe.toml");
    std::fs::write(&config, text).unwrap();
    let db = dir.path().join("results.sqlite");
    let out = common::probe_once(&config, &db, "json");
    assert_eq!(
        out.status.code(),
        Some(1),
        "failed probes exit 1: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs = common::json_of(&out);
    let by = |n: &str| common::probe_named(&runs, n).clone();
    let ok = by("dc");
    assert_eq!(ok["ok"], true, "{ok:#}");
    let stages = common::stage_names(&ok);
    assert_eq!(
        stages,
        ["ldap_dns", "ldap_connect", "ldap_bind", "ldap_search"]
    );

    let f = &by("dc-bad-password")["failure"];
    assert_eq!(f["stage"], "ldap_bind", "{f:#}");
    assert_eq!(f["class"], "ldap_bind");
    assert_eq!(f["code"], "49", "invalidCredentials");

    let f = &by("dc-no-entry")["failure"];
    assert_eq!(f["stage"], "ldap_search", "{f:#}");
    assert_eq!(f["class"], "too_few_entries");

    let f = &by("dc-down")["failure"];
    assert_eq!(f["stage"], "ldap_connect", "{f:#}");
    assert_eq!(f["class"], "connect");

    // Stored, and reported.
    let out = common::probe_report(&db, "json");
    assert_eq!(out.status.code(), Some(0));
    let report = common::json_of(&out);
    let probes = report["probes"].as_array().unwrap();
    assert_eq!(probes.len(), 4);
    let dc = probes.iter().find(|p| p["probe"] == "dc").unwrap();
    assert_eq!(dc["runs"], 1);
    assert_eq!(dc["success_rate"], 1.0);
    let bad = probes
        .iter()
        .find(|p| p["probe"] == "dc-bad-password")
        .unwrap();
    assert_eq!(bad["success_rate"], 0.0);
    assert_eq!(bad["failure_classes"]["ldap_bind"], 1);

    // The table format says the same for people.
    let out = common::run(
        &[
            "probe",
            "run",
            "--config",
            config.to_str().unwrap(),
            "--once",
            "--format",
            "table",
        ],
        None,
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("dc-bad-password  FAILED"), "{table}");
    assert!(
        table.contains("failure: ldap_bind at ldap_bind (49)"),
        "{table}"
    );
}

#[test]
fn probe_service_serves_metrics_stores_runs_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _slapd = start_slapd(dir.path(), port);
    let metrics_port = free_port();
    let config = dir.path().join("probe.toml");
    std::fs::write(
        &config,
        format!(
            "database = \"service.sqlite\"\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n{}",
            ldap_probe(
                "dc",
                &format!("ldap://127.0.0.1:{port}"),
                "secret",
                "(cn=sync-reader)"
            )
        ),
    )
    .unwrap();
    let mut service = Guard(
        Command::new(common::bin())
            .args(["probe", "run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut body = String::new();
    wait_for("three runs in the metrics", Duration::from_secs(20), || {
        body = fetch(metrics_port).unwrap_or_default();
        body.lines().any(|l| {
            l.starts_with(r#"intraport_probe_runs_total{probe="dc",result="success"}"#)
                && l.rsplit(' ').next().and_then(|n| n.parse::<u64>().ok()) >= Some(3)
        })
    });
    assert!(
        body.lines().any(
            |l| l.starts_with("intraport_probe_stage_duration_seconds_bucket")
                && l.contains(r#"probe="dc""#)
                && l.contains(r#"stage="ldap_bind""#)
        ),
        "{body}"
    );
    assert!(
        body.contains(r#"intraport_probe_last_success{probe="dc"} 1"#),
        "{body}"
    );
    let pid = service.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let until = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = service.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < until, "probe run did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    // Results went to the configuration's database, next to the file.
    let out = common::probe_report(&dir.path().join("service.sqlite"), "json");
    let report = common::json_of(&out);
    assert!(
        report["probes"][0]["runs"].as_u64().unwrap() >= 3,
        "{report:#}"
    );
    let interval = report["probes"][0]["interval_seconds"].as_f64().unwrap();
    assert!(
        (0.9..1.5).contains(&interval),
        "one run a second: {interval}"
    );
}

fn fetch(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[test]
fn probe_configuration_errors_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("probe.toml");
    std::fs::write(
        &config,
        "[[probe]]\nname = \"dc\"\ninterval = \"often\"\n[probe.ldap]\nurl = \"http://x\"\nbase = \"dc=x\"\n",
    )
    .unwrap();
    let out = common::run(
        &[
            "probe",
            "run",
            "--config",
            config.to_str().unwrap(),
            "--once",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:1: probe[dc].interval: `often`",
            config.display()
        )),
        "{err}"
    );
    assert!(
        err.contains("probe[dc].ldap.url: `http://x` is not an ldap://"),
        "{err}"
    );
    let out = common::run(
        &[
            "probe",
            "report",
            "--db",
            dir.path().join("none.db").to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such results database"));
}
