//! `check` and `intraport pcap` must tell the same story. `tcpdump` records the
//! connections of real `check` runs on loopback (a good rustls server, `openssl
//! s_server` still accepting TLS 1.0/1.1, and middleboxes that reset after the
//! ClientHello, drop on SNI or stall); the capture analysis must give every connection
//! `check` made the verdict `check` saw — same SNI, same outcome, same version and
//! cipher — and `tshark` must count the same ClientHellos and ServerHellos.
//!
//! Needs `tcpdump` (root or CAP_NET_RAW), `tshark` and `openssl`, which
//! `scripts/test.sh` installs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use intraport_capture::{Connection, Outcome, Report, Side, analyze_file};
use intraport_netcheck::check::{FindingKind, TargetReport};
use intraport_netcheck::legacy::{LegacyAnswer, LegacyVersion};
use intraport_netcheck::tls::HandshakeOutcome;

/// `tcpdump` writing packets to a file as they arrive.
struct Tcpdump {
    child: Option<Child>,
    file: PathBuf,
}

impl Tcpdump {
    fn start(file: &Path, filter: &str) -> Tcpdump {
        let mut child = Command::new("tcpdump")
            .args(["-i", "lo", "--immediate-mode", "-B", "65536", "-U", "-n"])
            .args(["-s", "0", "-w"])
            .arg(file)
            .arg(filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump must be installed (Debian package `tcpdump`)");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if line.contains("listening on") => break,
                Ok(line) => seen.push(line),
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "tcpdump did not start listening (root or CAP_NET_RAW needed): {seen:?}"
                    );
                }
            }
        }
        Tcpdump {
            child: Some(child),
            file: file.to_path_buf(),
        }
    }

    /// SIGINT, then wait with a deadline for tcpdump to flush and exit.
    fn stop(mut self) -> PathBuf {
        let mut child = self.child.take().unwrap();
        let st = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "tcpdump did not exit after SIGINT"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.file.clone()
    }
}

impl Drop for Tcpdump {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One connection `check` made, as it saw it.
#[derive(Debug)]
struct Seen {
    what: String,
    sni: Option<String>,
    outcome: Outcome,
    /// Version and cipher suite of a completed handshake, or the version a legacy
    /// probe got accepted.
    version: Option<String>,
    cipher: Option<String>,
    /// A fatal alert from the server, in snake case.
    server_alert: Option<String>,
}

/// "ProtocolVersion" → "protocol_version".
fn snake(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// The connections `check` opened for one target, in order: the TCP connect, then
/// the TLS handshakes, then the TLS 1.0/1.1 probes.
fn what_check_saw(r: &TargetReport) -> Vec<Seen> {
    let host = r.target.host.clone();
    let mut v = vec![Seen {
        what: "tcp connect".into(),
        sni: None,
        outcome: Outcome::NoPayload,
        version: None,
        cipher: None,
        server_alert: None,
    }];
    for h in &r.tls {
        let (outcome, version, cipher, server_alert) = match &h.outcome {
            HandshakeOutcome::Completed(n) => (
                Outcome::Completed,
                Some(n.version.clone()),
                Some(n.cipher_suite.clone()),
                None,
            ),
            HandshakeOutcome::Reset { server_bytes: 0 } => {
                (Outcome::ResetAfterClientHello, None, None, None)
            }
            HandshakeOutcome::Closed { server_bytes: 0 } => {
                (Outcome::ClosedBeforeServerHello, None, None, None)
            }
            HandshakeOutcome::Stalled { server_bytes: 0 } => {
                (Outcome::TimeoutOrIncomplete, None, None, None)
            }
            HandshakeOutcome::Alert { description } => {
                (Outcome::Alert, None, None, Some(snake(description)))
            }
            other => panic!("{host}: no scenario here ends like this: {other:?}"),
        };
        v.push(Seen {
            what: format!("handshake (sni: {})", h.sni),
            sni: h.sni.then(|| host.clone()),
            outcome,
            version,
            cipher,
            server_alert,
        });
    }
    for p in &r.legacy {
        let name = match p.version {
            LegacyVersion::Tls10 => "TLSv1.0",
            LegacyVersion::Tls11 => "TLSv1.1",
        };
        let (outcome, version, server_alert) = match &p.answer {
            // The probe hangs up after reading the ServerHello: a FIN, or a RST when
            // the rest of the server's flight is still unread (see below).
            LegacyAnswer::Accepted { .. } => {
                (Outcome::ClosedDuringHandshake, Some(name.to_string()), None)
            }
            LegacyAnswer::Alert { description } => (Outcome::Alert, None, Some(snake(description))),
            other => panic!("{host}: no scenario here answers a legacy probe so: {other:?}"),
        };
        v.push(Seen {
            what: format!("{name} probe"),
            sni: Some(host.clone()),
            outcome,
            version,
            cipher: None,
            server_alert,
        });
    }
    v
}

/// The capture's connections to `port`, in the order they were opened.
fn captured_to(report: &Report, port: u16) -> Vec<&Connection> {
    let mut v: Vec<&Connection> = report
        .connections
        .iter()
        .filter(|c| c.server.ends_with(&format!(":{port}")))
        .collect();
    v.sort_by_key(|c| c.first_packet);
    v
}

/// Count TLS handshake messages of `kind` (1 ClientHello, 2 ServerHello) with tshark.
fn tshark_count(file: &Path, ports: &[u16], kind: u8) -> usize {
    let mut cmd = Command::new("tshark");
    cmd.arg("-n").arg("-r").arg(file);
    for p in ports {
        cmd.arg("-d").arg(format!("tcp.port=={p},tls"));
    }
    let out = cmd
        .args(["-Y", &format!("tls.handshake.type=={kind}")])
        .args(["-T", "fields", "-e", "frame.number"])
        .output()
        .expect("tshark must be installed (Debian package `tshark`)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn pcap_verdicts_match_what_check_saw() {
    let ca = Ca::new("Agreement CA");
    let good = rustls_server(&ca.leaf(&["good.intraport.test"], -1, 365)).await;
    let legacy = openssl_server(
        &ca.leaf(&["legacy.intraport.test"], -1, 365),
        // Debian's OpenSSL refuses TLS 1.0/1.1 at its default security level.
        &["-min_protocol", "TLSv1", "-cipher", "DEFAULT:@SECLEVEL=0"],
    );
    let reset = relay(good.addr, Middlebox::ResetAfterHello).await;
    let blocked_server = rustls_server(&ca.leaf(&["blocked.intraport.test"], -1, 365)).await;
    let sni_drop = relay(
        blocked_server.addr,
        Middlebox::DropSni("blocked.intraport.test"),
    )
    .await;
    let stall = relay(good.addr, Middlebox::StallAfterHello).await;

    let targets = [
        ("good.intraport.test", good.addr),
        ("legacy.intraport.test", legacy.addr),
        ("good.intraport.test", reset.addr),
        ("blocked.intraport.test", sni_drop.addr),
        ("good.intraport.test", stall.addr),
    ];
    let ports: Vec<u16> = targets.iter().map(|(_, a)| a.port()).collect();
    let filter = format!(
        "tcp and host 127.0.0.1 and ({})",
        ports
            .iter()
            .map(|p| format!("port {p}"))
            .collect::<Vec<_>>()
            .join(" or ")
    );
    let tmp = tempfile::tempdir().unwrap();
    let dump = Tcpdump::start(&tmp.path().join("check.pcap"), &filter);

    let mut opts = options(ca.roots());
    opts.timeout = Duration::from_secs(2);
    let mut reports = Vec::new();
    for (host, addr) in targets {
        // One at a time, so each port's connections are in check's order.
        reports.push(check(host, addr, &opts).await);
    }

    // What check said, in its own vocabulary.
    let k: Vec<Vec<FindingKind>> = reports.iter().map(kinds).collect();
    assert!(k[0].is_empty(), "good: {:#?}", reports[0].findings);
    assert_eq!(
        k[1],
        [
            FindingKind::LegacyTlsAccepted,
            FindingKind::LegacyTlsAccepted
        ]
    );
    assert_eq!(k[2], [FindingKind::TlsResetAfterClientHello]);
    assert_eq!(
        k[3],
        [
            FindingKind::TlsResetAfterClientHello,
            FindingKind::TlsSniFiltered
        ]
    );
    assert_eq!(k[4], [FindingKind::TlsStallAfterClientHello]);

    // Every connection check made is in the capture before tcpdump is stopped.
    let expected: Vec<Vec<Seen>> = reports.iter().map(what_check_saw).collect();
    let total: usize = expected.iter().map(Vec::len).sum();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = analyze_file(&dump.file).map_or(0, |r| r.connections.len());
        if n >= total {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "capture holds {n} of {total} connections"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let file = dump.stop();
    let report = analyze_file(&file).unwrap();
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!(report.connections.len(), total, "{:#?}", report.connections);

    for ((port, seen), (host, _)) in ports.iter().zip(&expected).zip(&targets) {
        let got = captured_to(&report, *port);
        assert_eq!(
            got.len(),
            seen.len(),
            "{host} on port {port}: check made {seen:#?}, the capture has {got:#?}"
        );
        for (s, c) in seen.iter().zip(got) {
            let label = format!("{host}:{port} {}", s.what);
            if s.outcome == Outcome::ClosedDuringHandshake {
                assert!(
                    matches!(
                        c.outcome,
                        Outcome::ClosedDuringHandshake | Outcome::ResetDuringHandshake
                    ),
                    "{label}: {c:#?}"
                );
                assert_eq!(c.closed_by, Some(Side::Client), "{label}");
            } else {
                assert_eq!(c.outcome, s.outcome, "{label}: {c:#?}");
            }
            assert_eq!(c.sni, s.sni, "{label}");
            if s.outcome == Outcome::Completed {
                assert_eq!(c.version, s.version, "{label}");
                assert_eq!(c.cipher_suite, s.cipher, "{label}");
                assert!(c.handshake_ms.is_some(), "{label}");
            }
            if let Some(v) = &s.version {
                assert_eq!(c.version.as_ref(), Some(v), "{label}");
            }
            if let Some(a) = &s.server_alert {
                let alert = c.alert.as_ref().unwrap();
                assert_eq!(alert.from, Side::Server, "{label}");
                assert_eq!(&alert.description, a, "{label}");
            }
            match s.outcome {
                Outcome::ResetAfterClientHello => {
                    assert_eq!(c.closed_by, Some(Side::Server), "{label}")
                }
                Outcome::TimeoutOrIncomplete => {
                    // check gave up after its deadline; the server never spoke.
                    assert_eq!(c.closed_by, Some(Side::Client), "{label}");
                    assert!(c.server_hello.is_none(), "{label}");
                }
                _ => {}
            }
        }
    }

    // Counted three ways: handshakes check attempted, ClientHellos the analysis
    // parsed, and ClientHellos tshark decodes; ServerHellos likewise.
    let attempted: usize = reports.iter().map(|r| r.tls.len() + r.legacy.len()).sum();
    assert_eq!(report.summary.handshakes as usize, attempted);
    assert_eq!(tshark_count(&file, &ports, 1), attempted);
    let server_hellos = report
        .connections
        .iter()
        .filter(|c| c.server_hello.is_some())
        .count();
    assert_eq!(tshark_count(&file, &ports, 2), server_hellos);
    let outcomes: BTreeMap<&str, u64> = report
        .summary
        .by_outcome
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    // good: 1 completed; legacy: 1 completed; sni-drop: 1 completed without SNI.
    assert_eq!(outcomes.get("completed"), Some(&3), "{outcomes:?}");
    // reset relay: with and without SNI; sni-drop: with SNI.
    assert_eq!(
        outcomes.get("reset_after_client_hello"),
        Some(&3),
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes.get("timeout_or_incomplete"),
        Some(&2),
        "{outcomes:?}"
    );
}
