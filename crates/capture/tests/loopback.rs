//! Real captures: `tcpdump` records real TLS handshakes (rustls peers) and failing
//! servers on 127.0.0.1, and the analysis must give each connection its verdict.
//! Needs `tcpdump` (capture rights: run as root or with CAP_NET_RAW), and for the
//! cross-checks `editcap` and `tshark` (Debian `tshark`, which brings `wireshark-common`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use intraport_capture::{Connection, Outcome, Report, Side, analyze_file};
use rustls::version::{TLS12, TLS13};

/// What each scenario must be classified as.
struct Expect {
    name: &'static str,
    outcome: Outcome,
}

/// Run every scenario once while two tcpdumps record (`-i lo`: Ethernet link type,
/// `-i any`: Linux cooked SLL2); returns the capture paths and client port → scenario.
fn record(
    dir: &Path,
) -> (
    std::path::PathBuf,
    std::path::PathBuf,
    BTreeMap<u16, Expect>,
    Vec<u16>,
) {
    let good = Identity::new("good.test");
    let other = Identity::new("other.test");
    let listeners: Vec<TcpListener> = (0..11)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    let filter = format!(
        "tcp and host 127.0.0.1 and ({})",
        ports
            .iter()
            .map(|p| format!("port {p}"))
            .collect::<Vec<_>>()
            .join(" or ")
    );
    let lo = Tcpdump::start("lo", &dir.join("lo.pcap"), &filter);
    let any = Tcpdump::start("any", &dir.join("any.pcap"), &filter);

    let mut expect = BTreeMap::new();
    let mut l = listeners.into_iter();
    let mut port = ports.iter().copied();

    // Warm-up: both captures must show a connection before the scenarios start.
    let warm = connect_and_close(l.next().unwrap(), port.next().unwrap());
    wait_for_connection(&lo.file, warm);
    wait_for_connection(&any.file, warm);
    expect.insert(
        warm,
        Expect {
            name: "warm-up",
            outcome: Outcome::NoPayload,
        },
    );

    // 1. TLS 1.3 completes.
    let srv = tls_server_once(l.next().unwrap(), server_config(&good, &[&TLS13], &["h2"]));
    let (cp, r) = tls_client(
        port.next().unwrap(),
        "good.test",
        client_config(&good, &[&TLS13, &TLS12], &["h2", "http/1.1"]),
    );
    r.unwrap();
    srv.join().unwrap();
    expect.insert(
        cp,
        Expect {
            name: "tls13",
            outcome: Outcome::Completed,
        },
    );

    // 2. TLS 1.2 completes, ALPN chosen.
    let srv = tls_server_once(
        l.next().unwrap(),
        server_config(&good, &[&TLS12], &["http/1.1"]),
    );
    let (cp, r) = tls_client(
        port.next().unwrap(),
        "good.test",
        client_config(&good, &[&TLS13, &TLS12], &["h2", "http/1.1"]),
    );
    r.unwrap();
    srv.join().unwrap();
    expect.insert(
        cp,
        Expect {
            name: "tls12",
            outcome: Outcome::Completed,
        },
    );

    // 3. TLS 1.2, the client does not trust the server's issuer: plaintext unknown_ca.
    let srv = tls_server_once(l.next().unwrap(), server_config(&good, &[&TLS12], &[]));
    let (cp, r) = tls_client(
        port.next().unwrap(),
        "good.test",
        client_config(&other, &[&TLS12], &[]),
    );
    assert!(r.is_err());
    srv.join().unwrap();
    expect.insert(
        cp,
        Expect {
            name: "unknown_ca_tls12",
            outcome: Outcome::Alert,
        },
    );

    // 4. The same over TLS 1.3: the alert is encrypted.
    let srv = tls_server_once(l.next().unwrap(), server_config(&good, &[&TLS13], &[]));
    let (cp, r) = tls_client(
        port.next().unwrap(),
        "good.test",
        client_config(&other, &[&TLS13], &[]),
    );
    assert!(r.is_err());
    srv.join().unwrap();
    expect.insert(
        cp,
        Expect {
            name: "unknown_ca_tls13",
            outcome: Outcome::Alert,
        },
    );

    // 5. Version mismatch: TLS 1.3-only server, TLS 1.2-only client.
    let srv = tls_server_once(l.next().unwrap(), server_config(&good, &[&TLS13], &[]));
    let (cp, r) = tls_client(
        port.next().unwrap(),
        "good.test",
        client_config(&good, &[&TLS12], &[]),
    );
    assert!(r.is_err());
    srv.join().unwrap();
    expect.insert(
        cp,
        Expect {
            name: "protocol_version",
            outcome: Outcome::Alert,
        },
    );

    // 6. The server resets right after the ClientHello (SO_LINGER 0).
    let listener = l.next().unwrap();
    let srv = std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        read_record(&mut tcp);
        socket2::SockRef::from(&tcp)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    });
    let (cp, r) = tls_client(
        port.next().unwrap(),
        "reset.test",
        client_config(&good, &[&TLS13, &TLS12], &[]),
    );
    assert!(r.is_err());
    srv.join().unwrap();
    expect.insert(
        cp,
        Expect {
            name: "reset",
            outcome: Outcome::ResetAfterClientHello,
        },
    );

    // 7. The server closes (FIN) right after the ClientHello.
    let listener = l.next().unwrap();
    let srv = std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        read_record(&mut tcp);
    });
    let (cp, r) = tls_client(
        port.next().unwrap(),
        "fin.test",
        client_config(&good, &[&TLS13, &TLS12], &[]),
    );
    assert!(r.is_err());
    srv.join().unwrap();
    expect.insert(
        cp,
        Expect {
            name: "fin",
            outcome: Outcome::ClosedBeforeServerHello,
        },
    );

    // 8. The server reads the ClientHello and never answers; the capture ends first.
    let listener = l.next().unwrap();
    let (got_hello, hello_rx) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let stall_srv = std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        read_record(&mut tcp);
        got_hello.send(()).unwrap();
        let _ = release_rx.recv_timeout(Duration::from_secs(60));
    });
    let stall_port = port.next().unwrap();
    let cfg = client_config(&good, &[&TLS13, &TLS12], &[]);
    let stall_client = std::thread::spawn(move || tls_client(stall_port, "stall.test", cfg));
    hello_rx.recv_timeout(Duration::from_secs(20)).unwrap();

    // 9. Not TLS.
    let listener = l.next().unwrap();
    let srv = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut tcp, _) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        tcp.read_exact(&mut buf).unwrap();
        tcp.write_all(b"220 hello\r\n").unwrap();
    });
    let plain_port = port.next().unwrap();
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", plain_port)).unwrap();
    let cp = tcp.local_addr().unwrap().port();
    {
        use std::io::{Read, Write};
        tcp.write_all(b"HELO\n").unwrap();
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).unwrap();
        assert_eq!(answer, b"220 hello\r\n");
    }
    srv.join().unwrap();
    expect.insert(
        cp,
        Expect {
            name: "plain",
            outcome: Outcome::NotTls,
        },
    );

    // A sentinel connection on the last port: once the capture file holds its SYN,
    // it holds every packet before it (one interface, written in order).
    let sp = connect_and_close(l.next().unwrap(), port.next().unwrap());
    wait_for_connection(&lo.file, sp);
    wait_for_connection(&any.file, sp);
    expect.insert(
        sp,
        Expect {
            name: "sentinel",
            outcome: Outcome::NoPayload,
        },
    );

    let lo = lo.stop();
    let any = any.stop();
    release.send(()).unwrap();
    stall_srv.join().unwrap();
    let (cp, r) = stall_client.join().unwrap();
    assert!(r.is_err());
    expect.insert(
        cp,
        Expect {
            name: "stall",
            outcome: Outcome::TimeoutOrIncomplete,
        },
    );
    (lo, any, expect, ports)
}

/// Open and close a connection without data; returns the client port.
fn connect_and_close(listener: TcpListener, port: u16) -> u16 {
    let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let cp = client.local_addr().unwrap().port();
    drop(listener.accept().unwrap());
    drop(client);
    cp
}

/// Poll the capture file (deadline 20 s) until it holds a connection from `port`.
fn wait_for_connection(file: &Path, port: u16) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = analyze_file(file) {
            if by_client_port(&r).contains_key(&port) {
                return;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} never showed port {port}",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn by_client_port(report: &Report) -> BTreeMap<u16, &Connection> {
    report
        .connections
        .iter()
        .map(|c| {
            (
                c.client.rsplit(':').next().unwrap().parse::<u16>().unwrap(),
                c,
            )
        })
        .collect()
}

/// Assert every verdict.
fn check(report: &Report, expect: &BTreeMap<u16, Expect>, label: &str) {
    let conns = by_client_port(report);
    assert_eq!(
        conns.len(),
        expect.len(),
        "{label}: connections {:#?}",
        report.connections
    );
    for (port, e) in expect {
        let c = conns
            .get(port)
            .unwrap_or_else(|| panic!("{label}: no connection from port {port}"));
        assert_eq!(c.outcome, e.outcome, "{label}: {}: {c:#?}", e.name);
        assert!(c.client.starts_with("127.0.0.1:"), "{label}: {c:?}");
        assert!(
            c.notes.is_empty(),
            "{label}: nothing missing from a clean capture: {c:?}"
        );
        match e.name {
            "tls13" => {
                assert_eq!(c.version.as_deref(), Some("TLSv1.3"));
                assert_eq!(c.sni.as_deref(), Some("good.test"));
                let ch = c.client_hello.as_ref().unwrap();
                assert_eq!(ch.legacy_version, "TLSv1.2");
                assert!(
                    ch.supported_versions.contains(&"TLSv1.3".to_string()),
                    "{ch:?}"
                );
                assert!(
                    ch.supported_versions.contains(&"TLSv1.2".to_string()),
                    "{ch:?}"
                );
                assert_eq!(ch.alpn, ["h2", "http/1.1"]);
                assert!(
                    ch.cipher_suites
                        .iter()
                        .any(|s| s == "TLS13_AES_128_GCM_SHA256" || s == "TLS_AES_128_GCM_SHA256"),
                    "{ch:?}"
                );
                assert!(
                    c.cipher_suite.as_deref().unwrap().contains("AES")
                        || c.cipher_suite.as_deref().unwrap().contains("CHACHA")
                );
                assert_eq!(c.alpn_selected, None, "encrypted in TLS 1.3");
                let hs = c.handshake_ms.unwrap();
                assert!(hs > 0.0 && hs < 10_000.0, "{hs}");
                assert!(c.server_hello_ms.unwrap() <= hs);
            }
            "tls12" => {
                assert_eq!(c.version.as_deref(), Some("TLSv1.2"));
                assert_eq!(c.alpn_selected.as_deref(), Some("http/1.1"));
                assert!(
                    c.cipher_suite.as_deref().unwrap().starts_with("TLS_ECDHE_"),
                    "{c:?}"
                );
                assert!(c.handshake_ms.unwrap() > 0.0);
            }
            "unknown_ca_tls12" => {
                let a = c.alert.as_ref().unwrap();
                assert_eq!(a.from, Side::Client);
                assert_eq!(a.level.as_deref(), Some("fatal"));
                assert_eq!(a.description, "unknown_ca");
                assert_eq!(c.version.as_deref(), Some("TLSv1.2"));
            }
            "unknown_ca_tls13" => {
                let a = c.alert.as_ref().unwrap();
                assert_eq!(a.from, Side::Client);
                assert_eq!(a.description, "encrypted");
                assert_eq!(a.level, None);
            }
            "protocol_version" => {
                let a = c.alert.as_ref().unwrap();
                assert_eq!(a.from, Side::Server);
                assert_eq!(a.description, "protocol_version");
                assert!(c.server_hello.is_none());
            }
            "reset" | "fin" => {
                assert_eq!(c.closed_by, Some(Side::Server), "{}", e.name);
                assert!(c.client_hello.is_some());
            }
            "stall" => {
                assert_eq!(c.sni.as_deref(), Some("stall.test"));
                assert!(c.server_hello.is_none());
            }
            _ => {}
        }
    }
    assert_eq!(report.summary.connections, expect.len() as u64);
    assert_eq!(
        report.summary.handshakes,
        expect.len() as u64 - 3,
        "all but the plain one, warm-up and sentinel"
    );
    assert!(report.any_failed());
    assert!(report.warnings.is_empty(), "{label}: {:?}", report.warnings);
    assert_eq!(report.summary.failed, 6, "{:?}", report.summary.by_outcome);
    assert_eq!(report.summary.by_outcome["completed"], 2);
    assert_eq!(report.summary.by_outcome["alert"], 3);
    assert_eq!(report.summary.by_outcome["no_payload"], 2);
}

/// Number of ClientHellos tshark finds, decoding the given ports as TLS.
fn tshark_client_hellos(file: &Path, ports: &[u16]) -> usize {
    let mut cmd = Command::new("tshark");
    cmd.arg("-n").arg("-r").arg(file);
    for p in ports {
        cmd.arg("-d").arg(format!("tcp.port=={p},tls"));
    }
    let out = cmd
        .args([
            "-Y",
            "tls.handshake.type==1",
            "-T",
            "fields",
            "-e",
            "frame.number",
        ])
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

#[test]
fn real_handshakes_on_loopback_get_the_right_verdicts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (lo, any, expect, ports) = record(dir);

    let report = analyze_file(&lo).unwrap();
    assert_eq!(report.format, "pcap");
    check(&report, &expect, "lo (Ethernet)");

    let report_any = analyze_file(&any).unwrap();
    assert_eq!(report_any.format, "pcap");
    check(&report_any, &expect, "any (Linux cooked SLL2)");

    // The same capture as pcapng.
    let ng = dir.join("lo.pcapng");
    let st = Command::new("editcap")
        .args(["-F", "pcapng"])
        .arg(&lo)
        .arg(&ng)
        .status()
        .expect("editcap (Debian wireshark-common)");
    assert!(st.success());
    let report_ng = analyze_file(&ng).unwrap();
    assert_eq!(report_ng.format, "pcapng");
    check(&report_ng, &expect, "lo as pcapng");

    // tshark agrees on the number of ClientHellos.
    assert_eq!(
        tshark_client_hellos(&lo, &ports),
        report.summary.handshakes as usize
    );

    // Regenerate the stored fixtures on request.
    if std::env::var_os("INTRAPORT_REGENERATE_FIXTURES").is_some() {
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        std::fs::copy(&lo, data.join("handshakes.pcap")).unwrap();
        std::fs::copy(&ng, data.join("handshakes.pcapng")).unwrap();
    }
}
