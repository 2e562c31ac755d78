//! Handshakes made by real TLS stacks and real proxies, recorded with `tcpdump` on
//! loopback, each verdict checked against `tshark` on the same capture: a TLS 1.3
//! HelloRetryRequest (`openssl s_client` offering a key share for X25519 only to an
//! `openssl s_server` that takes P-256 only), a warning alert (`s_server
//! -servername` answering another name with a warning `unrecognized_name`), an
//! SSLv2-format ClientHello answered with TLS 1.0 by `s_server` (no tool of this
//! machine sends one, so its bytes are built here from RFC 5246, E.2), TLS through
//! `mitmproxy` as an HTTP CONNECT and as a SOCKS5 proxy (passing TLS through, with
//! `curl` as the client), SMTP STARTTLS (`aiosmtpd` from PyPI, `openssl s_client
//! -starttls smtp`) and LDAP StartTLS (`slapd`, `openssl s_client -starttls ldap`).
//!
//! Needs `tcpdump` (root or CAP_NET_RAW), `tshark`, `openssl`, `curl`, `slapd` and the
//! test venv (`INTRAPORT_TEST_VENV`, with mitmproxy and aiosmtpd), which
//! `scripts/test.sh` installs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::Tcpdump;
use intraport_capture::{Connection, Outcome, Report, Side, analyze_file};

/// A child process, killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A self-signed certificate for `name`, as PEM files in `dir`.
fn pem_identity(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (c, k) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

/// Lines of a child's stdout and stderr, on a channel.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let outs: Vec<Box<dyn Read + Send>> = vec![
        Box::new(child.stdout.take().unwrap()),
        Box::new(child.stderr.take().unwrap()),
    ];
    for out in outs {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    rx
}

/// Wait (60 s at most) for a line of `rx` that `f` takes a value from.
fn wait_line<T>(rx: &mpsc::Receiver<String>, what: &str, f: impl Fn(&str) -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                if let Some(v) = f(&line) {
                    return v;
                }
                seen.push(line);
            }
            Err(_) => panic!("{what} did not start: {seen:#?}"),
        }
    }
}

/// `openssl s_server` on a port the OS picks; returns it and its port.
fn s_server(cert: &Path, key: &Path, extra: &[&str]) -> (Proc, u16) {
    let mut child = Command::new("openssl")
        .args(["s_server", "-accept", "127.0.0.1:0", "-cert"])
        .arg(cert)
        .arg("-key")
        .arg(key)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl (Debian package `openssl`)");
    let rx = lines_of(&mut child);
    let port = wait_line(&rx, "openssl s_server", |l| {
        l.strip_prefix("ACCEPT ")
            .and_then(|a| a.rsplit(':').next()?.parse().ok())
    });
    // Keep draining its output so that it never blocks on a full pipe.
    std::thread::spawn(move || for _ in rx {});
    (Proc(child), port)
}

/// Run `openssl s_client` to the end (stdin closed: it hangs up after the handshake);
/// returns what it printed.
fn s_client(args: &[&str]) -> String {
    let out = Command::new("openssl")
        .arg("s_client")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A capture on `lo` of the given ports, stopped once a sentinel connection made
/// after the scenario is in the file (tcpdump writes in order).
struct Capture {
    dump: Tcpdump,
    sentinel: TcpListener,
    _dir: tempfile::TempDir,
}

impl Capture {
    fn start(ports: &[u16]) -> Capture {
        let dir = tempfile::tempdir().unwrap();
        let sentinel = TcpListener::bind("127.0.0.1:0").unwrap();
        let sp = sentinel.local_addr().unwrap().port();
        let filter = format!(
            "tcp and host 127.0.0.1 and (port {sp}{})",
            ports
                .iter()
                .map(|p| format!(" or port {p}"))
                .collect::<String>()
        );
        let dump = Tcpdump::start("lo", &dir.path().join("c.pcap"), &filter);
        Capture {
            dump,
            sentinel,
            _dir: dir,
        }
    }

    /// Stop; the capture file (kept in `keep`) and its analysis, the sentinel left out.
    fn finish(self, keep: &Path) -> (PathBuf, Report) {
        let sp = self.sentinel.local_addr().unwrap().port();
        drop(TcpStream::connect(("127.0.0.1", sp)).unwrap());
        drop(self.sentinel.accept().unwrap());
        let deadline = Instant::now() + Duration::from_secs(20);
        while !analyze_file(&self.dump.file).is_ok_and(|r| {
            r.connections
                .iter()
                .any(|c| c.server.ends_with(&format!(":{sp}")))
        }) {
            assert!(Instant::now() < deadline, "the sentinel never showed");
            std::thread::sleep(Duration::from_millis(50));
        }
        let file = self.dump.stop();
        let kept = keep.join(file.file_name().unwrap());
        std::fs::copy(&file, &kept).unwrap();
        let mut report = analyze_file(&kept).unwrap();
        report
            .connections
            .retain(|c| !c.server.ends_with(&format!(":{sp}")));
        (kept, report)
    }
}

/// What tshark decodes of one connection: handshake message types in order, and
/// the ServerHellos' cipher suites.
#[derive(Debug, Default)]
struct Shark {
    types: Vec<u8>,
    server_ciphers: Vec<u16>,
    versions: Vec<String>,
}

/// tshark's handshake messages per connection (keyed by the client's port, the end
/// whose port is not one of `servers`), decoding `decode_as` (port, dissector).
fn tshark(file: &Path, servers: &[u16], decode_as: &[(u16, &str)]) -> BTreeMap<u16, Shark> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-n").arg("-r").arg(file);
    for (p, d) in decode_as {
        cmd.arg("-d").arg(format!("tcp.port=={p},{d}"));
    }
    let out = cmd
        .args(["-Y", "tls.handshake.type"])
        .args(["-T", "fields", "-E", "separator=|"])
        .args(["-e", "tcp.srcport", "-e", "tcp.dstport"])
        .args(["-e", "tls.handshake.type", "-e", "tls.handshake.type"])
        .args(["-e", "tls.handshake.ciphersuite"])
        .args(["-e", "tls.handshake.extensions.supported_version"])
        .args(["-e", "tls.handshake.version"])
        .output()
        .expect("tshark (Debian package `tshark`)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut map: BTreeMap<u16, Shark> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split('|').collect();
        let (src, dst): (u16, u16) = (f[0].parse().unwrap(), f[1].parse().unwrap());
        let client = if servers.contains(&src) { dst } else { src };
        let e = map.entry(client).or_default();
        let types: Vec<u8> = f[2]
            .split(',')
            .chain(f[3].split(','))
            .filter_map(|t| t.parse().ok())
            .collect();
        e.types.extend(&types);
        if types.contains(&2) {
            e.server_ciphers.extend(
                f[4].split(',')
                    .filter_map(|c| u16::from_str_radix(c.trim_start_matches("0x"), 16).ok()),
            );
            let v = if f[5].is_empty() { f[6] } else { f[5] };
            e.versions.extend(v.split(',').map(str::to_string));
        }
    }
    map
}

fn client_port(c: &Connection) -> u16 {
    c.client.rsplit(':').next().unwrap().parse().unwrap()
}

fn to_port(r: &Report, port: u16) -> Vec<&Connection> {
    r.connections
        .iter()
        .filter(|c| c.server.ends_with(&format!(":{port}")))
        .collect()
}

/// The IANA name of a cipher suite number, as the analysis reports it.
fn cipher(id: u16) -> String {
    tls_parser::TlsCipherSuite::from_id(id)
        .map(|c| c.name.to_string())
        .unwrap()
}

/// The analysis and tshark agree on the connection: the ClientHellos and
/// ServerHellos (a HelloRetryRequest is a ServerHello to tshark) and the cipher
/// suite the server chose.
fn agree(c: &Connection, shark: &BTreeMap<u16, Shark>) {
    let s = shark
        .get(&client_port(c))
        .unwrap_or_else(|| panic!("tshark decoded no handshake of {c:#?}"));
    let hellos = if c.hello_retry_request { 2 } else { 1 };
    let count = |t: u8| s.types.iter().filter(|x| **x == t).count();
    assert_eq!(count(1), hellos, "ClientHellos: {s:?} {c:#?}");
    assert_eq!(
        count(2),
        if c.server_hello.is_some() { hellos } else { 0 },
        "ServerHellos: {s:?} {c:#?}"
    );
    if let Some(ours) = &c.cipher_suite {
        assert_eq!(&cipher(*s.server_ciphers.last().unwrap()), ours, "{s:?}");
    }
}

#[test]
fn hello_retry_request_warning_alert_and_sslv2_hello() {
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = pem_identity(tmp.path(), "known.test");
    let (_hrr, hrr) = s_server(&cert, &key, &["-tls1_3", "-groups", "P-256", "-www"]);
    let (_warn, warn) = s_server(
        &cert,
        &key,
        &[
            "-tls1_2",
            "-servername",
            "known.test",
            "-cert2",
            cert.to_str().unwrap(),
            "-key2",
            key.to_str().unwrap(),
            "-www",
        ],
    );
    // An RSA certificate: a hello without extensions can only get RSA key exchange.
    let (rsa_cert, rsa_key) = (tmp.path().join("rsa.crt"), tmp.path().join("rsa.key"));
    let st = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=old.test", "-keyout"])
        .arg(&rsa_key)
        .arg("-out")
        .arg(&rsa_cert)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let (_old, old) = s_server(
        &rsa_cert,
        &rsa_key,
        &["-tls1", "-cipher", "DEFAULT:@SECLEVEL=0", "-www"],
    );
    let cap = Capture::start(&[hrr, warn, old]);

    let said = s_client(&[
        "-connect",
        &format!("127.0.0.1:{hrr}"),
        "-tls1_3",
        "-groups",
        "X25519:P-256",
        "-servername",
        "known.test",
    ]);
    assert!(said.contains("TLSv1.3"), "{said}");
    let said = s_client(&[
        "-connect",
        &format!("127.0.0.1:{warn}"),
        "-tls1_2",
        "-servername",
        "unknown.test",
    ]);
    assert!(
        said.contains("Verify return code"),
        "the handshake completed: {said}"
    );

    // An SSLv2-format ClientHello offering TLS 1.0 (RFC 5246, E.2).
    let mut tcp = TcpStream::connect(("127.0.0.1", old)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let specs: [[u8; 3]; 4] = [[0, 0, 0x2f], [0, 0, 0x35], [0, 0, 0x0a], [1, 0, 0x80]];
    let mut body = vec![1u8, 3, 1];
    body.extend((specs.len() as u16 * 3).to_be_bytes());
    body.extend(0u16.to_be_bytes());
    body.extend(16u16.to_be_bytes());
    body.extend(specs.concat());
    body.extend([0x5a; 16]);
    let mut hello = ((body.len() as u16) | 0x8000).to_be_bytes().to_vec();
    hello.extend(&body);
    tcp.write_all(&hello).unwrap();
    // The server's flight: ServerHello, Certificate, ServerHelloDone (TLS records).
    let mut head = [0u8; 5];
    tcp.read_exact(&mut head).unwrap();
    assert_eq!(head[..3], [22, 3, 1], "a TLS 1.0 handshake record");
    drop(tcp);

    let (file, report) = cap.finish(tmp.path());
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let shark = tshark(
        &file,
        &[hrr, warn, old],
        &[(hrr, "tls"), (warn, "tls"), (old, "tls")],
    );

    let [c] = to_port(&report, hrr)[..] else {
        panic!("{:#?}", report.connections)
    };
    assert_eq!(c.outcome, Outcome::Completed, "{c:#?}");
    assert!(c.hello_retry_request);
    assert_eq!(c.version.as_deref(), Some("TLSv1.3"));
    assert!(c.handshake_ms.is_some());
    agree(c, &shark);

    let [c] = to_port(&report, warn)[..] else {
        panic!("{:#?}", report.connections)
    };
    assert_eq!(c.outcome, Outcome::Completed, "{c:#?}");
    assert!(c.alert.is_none());
    let [a] = &c.warning_alerts[..] else {
        panic!("{c:#?}")
    };
    assert_eq!(
        (a.from, a.level.as_deref(), a.description.as_str()),
        (Side::Server, Some("warning"), "unrecognized_name")
    );
    assert_eq!(c.version.as_deref(), Some("TLSv1.2"));
    agree(c, &shark);

    let [c] = to_port(&report, old)[..] else {
        panic!("{:#?}", report.connections)
    };
    let ch = c.client_hello.as_ref().expect("the SSLv2 hello is parsed");
    assert!(ch.sslv2_format);
    assert_eq!(ch.legacy_version, "TLSv1.0");
    assert_eq!(
        ch.cipher_suites,
        [
            "TLS_RSA_WITH_AES_128_CBC_SHA",
            "TLS_RSA_WITH_AES_256_CBC_SHA",
            "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
            "SSL2_RC4_128_WITH_MD5"
        ]
    );
    assert_eq!(c.version.as_deref(), Some("TLSv1.0"), "{c:#?}");
    assert!(
        matches!(
            c.outcome,
            Outcome::ClosedDuringHandshake | Outcome::ResetDuringHandshake
        ),
        "{c:#?}"
    );
    assert_eq!(c.closed_by, Some(Side::Client));
    agree(c, &shark);
    assert!(report.any_failed(), "the SSLv2 probe hung up mid-handshake");
}

/// `mitmdump` in `mode` passing TLS through untouched; returns it and its port.
fn mitmdump(venv: &Path, mode: &str, confdir: &Path) -> (Proc, u16) {
    let mut child = Command::new(venv.join("bin/mitmdump"))
        .args(["--mode", &format!("{mode}@0"), "--listen-host", "127.0.0.1"])
        .args(["--ignore-hosts", ".*"])
        .arg("--set")
        .arg(format!("confdir={}", confdir.display()))
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mitmdump from the test venv");
    let rx = lines_of(&mut child);
    let port = wait_line(&rx, "mitmdump", |l| {
        let at = l.split("listening at ").nth(1)?;
        at.trim()
            .trim_end_matches('.')
            .rsplit(':')
            .next()?
            .parse()
            .ok()
    });
    std::thread::spawn(move || for _ in rx {});
    (Proc(child), port)
}

fn venv() -> Option<PathBuf> {
    match std::env::var_os("INTRAPORT_TEST_VENV") {
        Some(v) => Some(PathBuf::from(v)),
        None => {
            eprintln!("SKIPPED: INTRAPORT_TEST_VENV is not set (scripts/test.sh sets it)");
            None
        }
    }
}

#[test]
fn tls_through_http_connect_and_socks5_proxies() {
    let Some(venv) = venv() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = pem_identity(tmp.path(), "known.test");
    let (_srv, srv) = s_server(&cert, &key, &["-www"]);
    let (_http, http) = mitmdump(&venv, "regular", &tmp.path().join("m1"));
    let (_socks, socks) = mitmdump(&venv, "socks5", &tmp.path().join("m2"));
    let cap = Capture::start(&[srv, http, socks]);
    for proxy in [
        format!("http://127.0.0.1:{http}"),
        format!("socks5://127.0.0.1:{socks}"),
    ] {
        let out = Command::new("curl")
            .args(["-sS", "-k", "--max-time", "20", "--proxy", &proxy])
            .arg(format!("https://127.0.0.1:{srv}/"))
            .output()
            .expect("curl (Debian package `curl`)");
        assert!(
            out.status.success(),
            "{proxy}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (file, report) = cap.finish(tmp.path());
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let shark = tshark(
        &file,
        &[srv, http, socks],
        &[(srv, "tls"), (http, "http"), (socks, "socks")],
    );
    for (port, via) in [(http, "http-connect"), (socks, "socks5")] {
        let [c] = to_port(&report, port)[..] else {
            panic!("{via}: {:#?}", report.connections)
        };
        assert_eq!(c.outcome, Outcome::Completed, "{via}: {c:#?}");
        assert_eq!(c.via.as_deref(), Some(via));
        assert_eq!(c.version.as_deref(), Some("TLSv1.3"));
        if via == "http-connect" {
            // tshark follows the CONNECT tunnel into TLS; its SOCKS dissector hands
            // the tunnel only to a dissector chosen by the target port.
            agree(c, &shark);
        }
    }
    // The proxy's own connections to the server: plain TLS, the same handshakes.
    let upstream = to_port(&report, srv);
    assert_eq!(upstream.len(), 2, "{:#?}", report.connections);
    for c in upstream {
        assert_eq!(c.outcome, Outcome::Completed, "{c:#?}");
        assert_eq!(c.via, None);
        agree(c, &shark);
    }
    assert!(!report.any_failed());
}

/// A free port on 127.0.0.1 (for servers that cannot report the one they got).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether process `pid` holds a listening TCP socket on 127.0.0.1:`port`. A plain
/// connect cannot tell: a port picked by `free_port` lies in the ephemeral range, so a
/// connect to it can pick the same port as its source and connect to itself (and then
/// hold the port the server was about to bind); and another test's socket may have
/// taken the port in between.
fn listens(pid: u32, port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let want = format!("0100007F:{port:04X}");
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local address, state 0A (LISTEN), inode
            (f.len() > 9 && f[1] == want && f[3] == "0A").then(|| format!("socket:[{}]", f[9]))
        })
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|l| inodes.iter().any(|i| l.as_os_str() == i.as_str()))
    })
}

/// Start the server that `command` makes for a port, on a free one, and wait (20 s)
/// until that very process listens there. A server that exits first (its port taken
/// meanwhile) is started again on another port; its stderr is in the panic otherwise.
fn start_listening(what: &str, dir: &Path, command: impl Fn(u16) -> Command) -> (Proc, u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let log = dir.join(format!("{what}.stderr"));
    loop {
        let port = free_port();
        let mut child = Proc(
            command(port)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap_or_else(|e| panic!("{what}: {e}")),
        );
        loop {
            if listens(child.0.id(), port) {
                return (child, port);
            }
            let said = || std::fs::read_to_string(&log).unwrap_or_default();
            assert!(
                Instant::now() < deadline,
                "{what} never listened on {port}: {}",
                said()
            );
            if let Some(status) = child.0.try_wait().unwrap() {
                eprintln!(
                    "{what} exited ({status}) before listening on {port}: {}",
                    said()
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn smtp_and_ldap_starttls() {
    let Some(venv) = venv() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = pem_identity(tmp.path(), "known.test");

    let (_smtp_server, smtp) = start_listening("aiosmtpd", tmp.path(), |port| {
        let mut c = Command::new(venv.join("bin/python"));
        c.args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .arg("--tlscert")
            .arg(&cert)
            .arg("--tlskey")
            .arg(&key);
        c
    });

    let db = tmp.path().join("db");
    std::fs::create_dir(&db).unwrap();
    let conf = tmp.path().join("slapd.conf");
    std::fs::write(
        &conf,
        format!(
            "include /etc/ldap/schema/core.schema\n\
             pidfile {dir}/slapd.pid\n\
             TLSCertificateFile {cert}\n\
             TLSCertificateKeyFile {key}\n\
             database ldif\n\
             directory {db}\n\
             suffix \"dc=test\"\n",
            dir = tmp.path().display(),
            cert = cert.display(),
            key = key.display(),
            db = db.display()
        ),
    )
    .unwrap();
    // `-d 0` keeps slapd in the foreground, so the child is the listener.
    let (slapd, ldap) = start_listening("slapd", tmp.path(), |port| {
        let mut c = Command::new("slapd");
        c.arg("-f")
            .arg(&conf)
            .args(["-h", &format!("ldap://127.0.0.1:{port}/"), "-d", "0"]);
        c
    });

    let cap = Capture::start(&[smtp, ldap]);
    for (port, proto) in [(smtp, "smtp"), (ldap, "ldap")] {
        let said = s_client(&["-connect", &format!("127.0.0.1:{port}"), "-starttls", proto]);
        assert!(said.contains("Verify return code"), "{proto}: {said}");
    }
    let (file, report) = cap.finish(tmp.path());
    drop(slapd);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let shark = tshark(&file, &[smtp, ldap], &[(smtp, "smtp"), (ldap, "ldap")]);
    for (port, via) in [(smtp, "smtp-starttls"), (ldap, "ldap-starttls")] {
        let [c] = to_port(&report, port)[..] else {
            panic!("{via}: {:#?}", report.connections)
        };
        assert_eq!(c.outcome, Outcome::Completed, "{via}: {c:#?}");
        assert_eq!(c.via.as_deref(), Some(via));
        assert!(c.version.is_some());
        agree(c, &shark);
    }
}

/// Two network namespaces joined by a veth pair, deleted when dropped.
struct Netns {
    names: [String; 2],
}

impl Netns {
    fn ip(args: &[&str]) -> bool {
        Command::new("ip")
            .args(args)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn exec(&self, i: usize, cmd: &str) -> bool {
        let mut args = vec!["netns", "exec", &self.names[i]];
        args.extend(cmd.split(' '));
        Netns::ip(&args)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.names {
            Netns::ip(&["netns", "del", n]);
        }
    }
}

/// A real VXLAN tunnel between two network namespaces (veth underlay
/// 10.77.0.0/24, tunnel 10.78.0.0/24, VNI 42, port 4789); TLS 1.3 between
/// `openssl s_server` and `s_client` over it, captured on the underlay, where every
/// TCP packet is inside VXLAN. (GRE and Geneve need kernel modules this machine
/// does not have, and no tool here makes GTP-U: `fixtures.rs` wraps real frames in
/// those.)
#[test]
fn tls_inside_a_real_vxlan_tunnel() {
    let pid = std::process::id();
    let ns = Netns {
        names: [format!("ipcap-a-{pid}"), format!("ipcap-b-{pid}")],
    };
    let (va, vb) = (
        format!("ipva{}", pid % 10_000),
        format!("ipvb{}", pid % 10_000),
    );
    let made = Netns::ip(&["netns", "add", &ns.names[0]])
        && Netns::ip(&["netns", "add", &ns.names[1]])
        && Netns::ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb])
        && Netns::ip(&["link", "set", &va, "netns", &ns.names[0]])
        && Netns::ip(&["link", "set", &vb, "netns", &ns.names[1]]);
    assert!(made, "network namespaces and a veth pair need root");
    for (i, dev, me, peer) in [(0, &va, 1, 2), (1, &vb, 2, 1)] {
        let steps = [
            "ip link set lo up".to_string(),
            format!("ip addr add 10.77.0.{me}/24 dev {dev}"),
            format!("ip link set {dev} up"),
        ];
        for s in &steps {
            assert!(ns.exec(i, s), "{s}");
        }
        let vxlan = format!(
            "ip link add vx0 type vxlan id 42 local 10.77.0.{me} remote 10.77.0.{peer} dstport 4789 dev {dev}"
        );
        if !ns.exec(i, &vxlan) {
            eprintln!("SKIPPED: this kernel cannot make a VXLAN device");
            return;
        }
        for s in [
            format!("ip addr add 10.78.0.{me}/24 dev vx0"),
            "ip link set vx0 up".to_string(),
        ] {
            assert!(ns.exec(i, &s), "{s}");
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = pem_identity(tmp.path(), "known.test");
    let mut server = Command::new("ip")
        .args(["netns", "exec", &ns.names[1], "openssl", "s_server"])
        .args(["-accept", "10.78.0.2:0", "-www", "-cert"])
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines_of(&mut server);
    let port: u16 = wait_line(&rx, "openssl s_server in a namespace", |l| {
        l.strip_prefix("ACCEPT ")
            .and_then(|a| a.rsplit(':').next()?.parse().ok())
    });
    std::thread::spawn(move || for _ in rx {});
    let _server = Proc(server);
    let dump = Tcpdump::start_in(
        Some(&ns.names[0]),
        &va,
        &tmp.path().join("underlay.pcap"),
        "udp port 4789",
    );
    let connect = |name: &str| {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns.names[0], "openssl", "s_client"])
            .args([
                "-connect",
                &format!("10.78.0.2:{port}"),
                "-servername",
                name,
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("TLSv1.3"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    connect("first.test");
    // A second connection after the first: once it is in the file, all of the
    // first is.
    connect("sentinel.test");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !analyze_file(&dump.file).is_ok_and(|r| r.connections.len() >= 2) {
        assert!(Instant::now() < deadline, "the capture never held both");
        std::thread::sleep(Duration::from_millis(50));
    }
    let file = dump.stop();
    let report = analyze_file(&file).unwrap();
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!(report.tunnels.get("vxlan"), Some(&report.tcp_packets));
    let c = &report.connections[0];
    assert_eq!(c.sni.as_deref(), Some("first.test"));
    assert_eq!(c.outcome, Outcome::Completed, "{c:#?}");
    assert_eq!(c.tunnel.as_deref(), Some("vxlan"));
    assert_eq!(c.server, format!("10.78.0.2:{port}"));
    assert_eq!(c.version.as_deref(), Some("TLSv1.3"));
    // tshark decodes VXLAN on its port and TLS inside it.
    let shark = tshark(&file, &[port], &[(port, "tls")]);
    agree(c, &shark);
}
