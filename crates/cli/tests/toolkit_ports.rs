//! `intraport ports` end to end: the port map as JSON, CSV and a table, filtered by
//! component and role, and as firewall rules for a role's addresses.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod toolkit_support;

use toolkit_support::*;

const HOSTS: &[&str] = &[
    "--host",
    "connect-server=10.0.0.5",
    "--host",
    "domain-controller=10.0.1.0/24",
    "--host",
    "entra-id=0.0.0.0/0",
    "--host",
    "crl-ocsp=0.0.0.0/0",
];

fn rows(v: &serde_json::Value) -> &Vec<serde_json::Value> {
    v["rows"].as_array().unwrap()
}

#[test]
fn json_lists_every_row_with_its_source_document() {
    let out = intraport(&["ports", "--format", "json"]);
    assert_exit(&out, 0);
    let v = json(&out);
    assert_eq!(v["source_repository"], "MicrosoftDocs/entra-docs");
    let rows = rows(&v);
    assert!(rows.len() >= 20, "{} rows", rows.len());
    for r in rows {
        let path = r["source"]["path"].as_str().unwrap_or_default();
        assert!(path.starts_with("docs/") && path.ends_with(".md"), "{r}");
        assert!(
            !r["source"]["heading"]
                .as_str()
                .unwrap_or_default()
                .is_empty(),
            "{r}"
        );
        assert!(r["from"].is_string() && r["to"].is_string(), "{r}");
    }
    for c in [
        "connect-sync",
        "pta",
        "private-network-connector",
        "connect-health",
        "seamless-sso",
        "cloud-sync",
        "password-writeback",
    ] {
        assert!(v["components"][c].is_string(), "component {c}");
        assert!(
            rows.iter()
                .any(|r| r["components"].as_array().unwrap().iter().any(|x| x == c)),
            "no row for {c}"
        );
    }
    let text = v.to_string();
    for host in [
        "login.microsoftonline.com",
        "*.msappproxy.net",
        "*.servicebus.windows.net",
    ] {
        assert!(text.contains(host), "{host} missing");
    }
}

#[test]
fn component_and_role_filters() {
    let v = json(&intraport(&[
        "ports",
        "--component",
        "pta",
        "--format",
        "json",
    ]));
    let pta = rows(&v);
    assert!(!pta.is_empty());
    assert!(pta.iter().all(|r| {
        r["components"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "pta")
    }));
    assert!(pta.iter().any(|r| r["id"] == "pta-https"));

    let v = json(&intraport(&[
        "ports",
        "--role",
        "domain-controller",
        "--format",
        "json",
    ]));
    let dc = rows(&v);
    assert!(!dc.is_empty());
    assert!(
        dc.iter()
            .all(|r| r["from"] == "domain-controller" || r["to"] == "domain-controller")
    );
    let all = json(&intraport(&["ports", "--format", "json"]));
    assert!(dc.len() < rows(&all).len());

    let out = intraport(&["ports", "--component", "toaster"]);
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("unknown component \"toaster\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn csv_and_table_show_the_same_rows() {
    let v = json(&intraport(&[
        "ports",
        "--component",
        "connect-sync",
        "--format",
        "json",
    ]));
    let ids: Vec<&str> = rows(&v).iter().map(|r| r["id"].as_str().unwrap()).collect();

    let out = intraport(&["ports", "--component", "connect-sync", "--format", "csv"]);
    assert_exit(&out, 0);
    let csv = stdout(&out);
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header[0], "id");
    assert!(header.contains(&"source_path") && header.contains(&"ports"));
    let csv_ids: Vec<&str> = lines.map(|l| l.split(',').next().unwrap()).collect();
    assert_eq!(csv_ids, ids);

    let out = intraport(&["ports", "--component", "connect-sync", "--format", "table"]);
    assert_exit(&out, 0);
    let table = stdout(&out);
    assert!(table.starts_with("ID "), "{table}");
    assert_eq!(table.lines().count(), ids.len() + 1);
    for id in ids {
        assert!(table.contains(id), "{id} not in the table");
    }
}

#[test]
fn as_rules_prints_the_allow_rules_for_a_role() {
    let mut args = vec![
        "ports",
        "--component",
        "connect-sync",
        "--role",
        "connect-server",
        "--as-rules",
        "iptables",
    ];
    args.extend_from_slice(HOSTS);
    let out = intraport(&args);
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(
        text.contains("*filter") && text.contains("COMMIT"),
        "{text}"
    );
    assert!(
        text.contains("-A OUTPUT -s 10.0.0.5/32 -d 10.0.1.0/24 -p tcp -m tcp --dport 389 "),
        "{text}"
    );
    assert!(
        text.contains("-A OUTPUT -s 10.0.0.5/32 -d 0.0.0.0/0 -p tcp -m tcp --dport 443 "),
        "{text}"
    );
    assert!(
        !text.contains("-A INPUT -s"),
        "the server opens these flows: {text}"
    );

    // The same from a hosts file, and NSG rules as JSON.
    let dir = Scratch::new("ports");
    let hosts = dir.file(
        "hosts.toml",
        "connect-server = [\"10.0.0.5\"]\ndomain-controller = [\"10.0.1.0/24\"]\nentra-id = [\"0.0.0.0/0\"]\ncrl-ocsp = [\"0.0.0.0/0\"]\n",
    );
    let out = intraport(&[
        "ports",
        "--component",
        "connect-sync",
        "--role",
        "connect-server",
        "--as-rules",
        "iptables",
        "--hosts",
        &hosts,
    ]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), text);
    let out = intraport(&[
        "ports",
        "--component",
        "connect-sync",
        "--role",
        "connect-server",
        "--as-rules",
        "nsg",
        "--hosts",
        &hosts,
    ]);
    assert_exit(&out, 0);
    let nsg = json(&out);
    assert!(nsg.to_string().contains("\"Outbound\""), "{nsg}");

    // No addresses: a usage error; a role missing from the hosts: named with its row.
    let out = intraport(&["ports", "--component", "pta", "--as-rules", "iptables"]);
    assert_exit(&out, 2);
    let out = intraport(&[
        "ports",
        "--component",
        "pta",
        "--as-rules",
        "iptables",
        "--host",
        "pta-agent=10.0.0.9",
    ]);
    assert_exit(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("--host") && err.contains("has no addresses") && err.contains("pta-"),
        "{err}"
    );
    let out = intraport(&[
        "ports",
        "--as-rules",
        "iptables",
        "--host",
        "pta-agent=10.0.0.300",
    ]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("10.0.0.300"), "{}", stderr(&out));
}

#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    // `intraport ports | head -0`: the reader is gone before anything is written.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_intraport"))
        .args(["ports", "--format", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}
