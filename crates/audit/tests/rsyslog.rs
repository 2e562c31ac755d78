//! The syslog sinks against a real rsyslog (Debian `rsyslog` and `rsyslog-gnutls`),
//! started by the test on loopback with its own configuration: imtcp (octet-counted
//! framing), imtcp with the gtls netstream driver (RFC 5425) and imudp, each writing
//! rsyslog's own parse of the message (facility, severity, app-name, msgid,
//! structured data, msg) to a file. The test parses CEF, the SD element and ECS and
//! OCSF JSON back, then stops the receiver mid-run, keeps emitting, restarts it and
//! checks that every event arrived once, in order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use intraport_audit::{Action, Audit, AuditConfig, Event, Identity, Outcome};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

const RSYSLOGD: &str = "/usr/sbin/rsyslogd";

fn free_port(udp: bool) -> u16 {
    if udp {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}

/// A CA and a server certificate for 127.0.0.1/localhost, as PEM files in `dir`.
fn pki(dir: &Path) -> PathBuf {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "audit test collector CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::default();
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf.subject_alt_names = vec![
        SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
        SanType::DnsName("localhost".try_into().unwrap()),
    ];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    dir.join("ca.pem")
}

struct Rsyslog {
    dir: PathBuf,
    tcp: u16,
    tls: u16,
    udp: u16,
    child: Option<Child>,
}

impl Rsyslog {
    fn new(dir: &Path) -> Rsyslog {
        assert!(
            Path::new(RSYSLOGD).exists(),
            "rsyslogd not found: install Debian rsyslog and rsyslog-gnutls (scripts/test.sh does)"
        );
        pki(dir);
        let r = Rsyslog {
            dir: dir.to_path_buf(),
            tcp: free_port(false),
            tls: free_port(false),
            udp: free_port(true),
            child: None,
        };
        let d = dir.display();
        let conf = format!(
            r#"global(workDirectory="{d}" maxMessageSize="64k"
  defaultNetstreamDriverCAFile="{d}/ca.pem"
  defaultNetstreamDriverCertFile="{d}/server.pem"
  defaultNetstreamDriverKeyFile="{d}/server.key")
module(load="imtcp" maxSessions="64")
module(load="imudp")
template(name="parsed" type="list") {{
  property(name="syslogfacility-text") constant(value="\t")
  property(name="syslogseverity-text") constant(value="\t")
  property(name="hostname") constant(value="\t")
  property(name="app-name") constant(value="\t")
  property(name="msgid") constant(value="\t")
  property(name="structured-data") constant(value="\t")
  property(name="msg") constant(value="\n")
}}
ruleset(name="tcp") {{ action(type="omfile" file="{d}/tcp.log" template="parsed") }}
ruleset(name="tls") {{ action(type="omfile" file="{d}/tls.log" template="parsed") }}
ruleset(name="udp") {{ action(type="omfile" file="{d}/udp.log" template="parsed") }}
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="tcp")
input(type="imtcp" address="127.0.0.1" port="{tls}" ruleset="tls"
  streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imudp" address="127.0.0.1" port="{udp}" ruleset="udp")
"#,
            tcp = r.tcp,
            tls = r.tls,
            udp = r.udp
        );
        std::fs::write(dir.join("rsyslog.conf"), conf).unwrap();
        r
    }

    fn start(&mut self) {
        let child = Command::new(RSYSLOGD)
            .arg("-n")
            .arg("-f")
            .arg(self.dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(self.dir.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("rsyslogd.stderr")).unwrap())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let tcp = std::net::TcpStream::connect(("127.0.0.1", self.tcp)).is_ok();
            let tls = std::net::TcpStream::connect(("127.0.0.1", self.tls)).is_ok();
            let udp = udp_bound(self.udp);
            if tcp && tls && udp {
                return;
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "rsyslogd exited with {st}: {}",
                    std::fs::read_to_string(self.dir.join("rsyslogd.stderr")).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "rsyslogd not listening");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and wait: rsyslog writes what it received and closes its connections.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while c.try_wait().unwrap().is_none() {
                assert!(Instant::now() < deadline, "rsyslogd did not stop");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// The whole lines rsyslog has written to `name` so far (a line it is still
    /// writing, without its newline yet, is left for the next look).
    fn lines(&self, name: &str) -> Vec<Line> {
        std::fs::read_to_string(self.dir.join(name))
            .unwrap_or_default()
            .split_inclusive('\n')
            .filter_map(|l| l.strip_suffix('\n'))
            .map(Line::parse)
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Whether something listens on UDP 127.0.0.1:`port` (from the kernel's table).
fn udp_bound(port: u16) -> bool {
    let text = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    let want = format!("0100007F:{port:04X}");
    text.lines()
        .skip(1)
        .any(|l| l.split_whitespace().nth(1) == Some(want.as_str()))
}

/// One line of rsyslog's output: its own parse of our RFC 5424 message.
#[derive(Debug)]
struct Line {
    facility: String,
    severity: String,
    app: String,
    msgid: String,
    sd: HashMap<String, String>,
    msg: String,
}

impl Line {
    fn parse(l: &str) -> Line {
        let f: Vec<&str> = l.splitn(7, '\t').collect();
        assert_eq!(f.len(), 7, "{l}");
        Line {
            facility: f[0].into(),
            severity: f[1].into(),
            app: f[3].into(),
            msgid: f[4].into(),
            sd: parse_sd(f[5]),
            msg: f[6].trim_start().into(),
        }
    }
}

/// `[id k="v" ...]` with RFC 5424 unescaping; the SD-ID under the key `@id`.
fn parse_sd(s: &str) -> HashMap<String, String> {
    let mut m = HashMap::new();
    let s = s.strip_prefix('[').expect("SD element");
    let (id, mut rest) = s.split_once(' ').expect("SD params");
    m.insert("@id".into(), id.to_string());
    loop {
        rest = rest.trim_start();
        if rest == "]" || rest.is_empty() {
            break;
        }
        let (k, r) = rest.split_once("=\"").expect("param");
        let mut v = String::new();
        let mut chars = r.char_indices();
        let end = loop {
            let (i, c) = chars.next().expect("unterminated value");
            match c {
                '\\' => {
                    let (_, n) = chars.next().unwrap();
                    if !matches!(n, '"' | '\\' | ']') {
                        v.push('\\');
                    }
                    v.push(n);
                }
                '"' => break i,
                c => v.push(c),
            }
        };
        m.insert(k.to_string(), v);
        rest = &r[end + 1..];
    }
    m
}

/// A CEF record: the 7 header fields and the extension map, unescaped.
fn parse_cef(s: &str) -> (Vec<String>, HashMap<String, String>) {
    let mut header = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while header.len() < 7 {
        match chars.next().expect("short CEF header") {
            '\\' => cur.push(chars.next().unwrap()),
            '|' => header.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    let ext: String = chars.collect();
    // Split at unescaped ` key=`: a key is [A-Za-z0-9]+ followed by an unescaped `=`.
    let mut map = HashMap::new();
    let mut pairs: Vec<(String, String)> = Vec::new();
    let b: Vec<char> = ext.chars().collect();
    let mut i = 0;
    let mut key = String::new();
    let mut val = String::new();
    let mut in_key = true;
    while i < b.len() {
        let c = b[i];
        if in_key {
            if c == '=' {
                in_key = false;
            } else {
                key.push(c);
            }
            i += 1;
            continue;
        }
        if c == '\\' && i + 1 < b.len() {
            match b[i + 1] {
                'n' => val.push('\n'),
                'r' => val.push('\r'),
                o => val.push(o),
            }
            i += 2;
            continue;
        }
        if c == ' ' {
            // Next key?
            let mut j = i + 1;
            while j < b.len() && b[j].is_ascii_alphanumeric() {
                j += 1;
            }
            if j > i + 1 && j < b.len() && b[j] == '=' {
                pairs.push((std::mem::take(&mut key), std::mem::take(&mut val)));
                in_key = true;
                i += 1;
                continue;
            }
        }
        val.push(c);
        i += 1;
    }
    pairs.push((key, val));
    for (k, v) in pairs {
        map.insert(k, v);
    }
    (header, map)
}

fn hostile_event(i: u64) -> Event {
    let mut e = Event::new(Action::Authentication, Outcome::Failure);
    e.connection_id = Some(i);
    e.reason = Some("expired".into());
    e.route = Some(format!("r|o=u\\t]e\"{i} é").into());
    e.message = Some("line one\nline two = | ] \" \\ end".into());
    e.source = Some("192.0.2.7:40000".parse().unwrap());
    e.destination = Some("127.0.0.1:8443".parse().unwrap());
    e.identity = Some(std::sync::Arc::new(Identity {
        kid: Some("kid-1".into()),
        tid: Some("tenant-1".into()),
        oid: Some("oid-1".into()),
        azp: Some("app-1".into()),
        cert_subject: None,
        rendered: Default::default(),
    }));
    e
}

fn plain_event(i: u64) -> Event {
    let mut e = Event::new(Action::ConnectionAccepted, Outcome::Success);
    e.connection_id = Some(i);
    e.listener = Some("public".into());
    e
}

fn audit_config(r: &Rsyslog, spool: &Path, udp: bool) -> AuditConfig {
    #[derive(serde::Deserialize)]
    struct Doc {
        audit: AuditConfig,
    }
    let mut t = format!(
        r#"[audit]
spool_dir = {spool:?}
shutdown_grace_ms = 10000
[[audit.sink]]
type = "syslog"
name = "tcp"
transport = "tcp"
address = "127.0.0.1:{tcp}"
hostname = "gw1"
reconnect_max_ms = 200
[[audit.sink]]
type = "syslog"
name = "tls"
transport = "tls"
address = "127.0.0.1:{tls}"
ca = {ca:?}
reconnect_max_ms = 200
"#,
        tcp = r.tcp,
        tls = r.tls,
        ca = r.dir.join("ca.pem"),
    );
    if udp {
        // Two sinks to the one UDP input: the JSON formats, ECS and OCSF.
        for format in ["ecs", "ocsf"] {
            t.push_str(&format!(
                "[[audit.sink]]\ntype = \"syslog\"\nname = \"udp-{format}\"\ntransport = \"udp\"\naddress = \"127.0.0.1:{}\"\nformat = \"{format}\"\nfacility = \"authpriv\"\n",
                r.udp
            ));
        }
    }
    toml::from_str::<Doc>(&t).unwrap().audit
}

async fn wait_lines(r: &Rsyslog, file: &str, n: usize, secs: u64) -> Vec<Line> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let l = r.lines(file);
        if l.len() >= n {
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "{file}: {} of {n} lines arrived",
            l.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsyslog_receives_cef_rfc5424_ecs_and_ocsf_over_tcp_tls_udp() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = Rsyslog::new(dir.path());
    r.start();
    let (audit, handle) = Audit::start(&audit_config(&r, &dir.path().join("spool"), true)).unwrap();
    let n = 40;
    let mut sent = Vec::new();
    for i in 0..n {
        let e = hostile_event(i);
        sent.push(e.clone());
        audit.emit(e).await;
    }
    for file in ["tcp.log", "tls.log"] {
        let lines = wait_lines(&r, file, n as usize, 20).await;
        assert_eq!(lines.len(), n as usize, "{file}: duplicates");
        for (line, e) in lines.iter().zip(&sent) {
            // rsyslog parsed our RFC 5424 header and structured data.
            assert_eq!(line.facility, "local0");
            assert_eq!(line.severity, "warning");
            assert_eq!(line.app, "intraport");
            assert_eq!(line.msgid, "authentication");
            assert_eq!(line.sd["@id"], "intraport@32473");
            assert_eq!(line.sd["id"], e.id.to_string());
            assert_eq!(line.sd["outcome"], "failure");
            assert_eq!(line.sd["reason"], "expired");
            assert_eq!(line.sd["route"], e.route.as_deref().unwrap(), "{file}");
            assert_eq!(line.sd["user"], "oid-1");
            // The MSG is CEF, escaping intact through a real collector.
            let (h, ext) = parse_cef(&line.msg);
            assert_eq!(h[0], "CEF:0");
            assert_eq!(h[4], "authentication");
            assert_eq!(h[6], "6");
            assert_eq!(ext["externalId"], e.id.to_string());
            assert_eq!(ext["cs2"], e.route.as_deref().unwrap());
            assert_eq!(ext["msg"], e.message.as_deref().unwrap());
            assert_eq!(ext["reason"], "expired");
            assert_eq!(ext["cs5"], "tenant-1");
            assert_eq!(ext["src"], "192.0.2.7");
            assert_eq!(ext["cn2"], e.connection_id.unwrap().to_string());
        }
    }
    let lines = wait_lines(&r, "udp.log", 2 * n as usize, 20).await;
    let (ocsf, ecs): (Vec<serde_json::Value>, Vec<serde_json::Value>) = lines
        .iter()
        .map(|line| {
            assert_eq!(line.facility, "authpriv");
            serde_json::from_str::<serde_json::Value>(&line.msg).unwrap()
        })
        .partition(|j| j.get("class_uid").is_some());
    assert_eq!((ecs.len(), ocsf.len()), (n as usize, n as usize));
    for ((j, o), e) in ecs.iter().zip(&ocsf).zip(&sent) {
        assert_eq!(j["event"]["id"], e.id.to_string());
        assert_eq!(j["intraport"]["route"], e.route.as_deref().unwrap());
        assert_eq!(j["message"], e.message.as_deref().unwrap());
        // OCSF: the refused token as an Authentication event, strings intact.
        assert_eq!(o["metadata"]["uid"], e.id.to_string());
        assert_eq!(
            (o["class_uid"].as_u64(), o["status_id"].as_u64()),
            (Some(3002), Some(2))
        );
        assert_eq!(o["status_detail"], "expired");
        assert_eq!(o["unmapped"]["route"], e.route.as_deref().unwrap());
        assert_eq!(o["message"], e.message.as_deref().unwrap());
        assert_eq!(o["src_endpoint"]["ip"], "192.0.2.7");
        assert_eq!(o["user"]["uid"], "oid-1");
    }
    let stats = handle.shutdown().await;
    for s in &stats {
        assert_eq!(s.written, n, "{s:?}");
        assert_eq!(s.dropped, 0, "{s:?}");
    }
    r.stop();
}

fn conn_ids(lines: &[Line]) -> Vec<u64> {
    lines
        .iter()
        .map(|l| l.sd["conn"].parse().unwrap())
        .collect()
}

async fn wait_written(audit: &Audit, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while audit.stats().iter().any(|s| s.written < n) {
        assert!(
            Instant::now() < deadline,
            "not confirmed: {:?}",
            audit.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_spooling(audit: &Audit, pending: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = audit.stats();
        if s.iter()
            .all(|s| s.connected == Some(false) && s.spool_pending >= pending)
        {
            return;
        }
        assert!(Instant::now() < deadline, "not spooling: {s:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The receiver stops between events (everything sent was read): events emitted while
/// it is down are spooled, and after its restart the collector has every event exactly
/// once, in order, including those emitted during the replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_restart_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = Rsyslog::new(dir.path());
    r.start();
    let spool = dir.path().join("spool");
    let (audit, handle) = Audit::start(&audit_config(&r, &spool, false)).unwrap();
    for i in 0..300 {
        audit.emit(plain_event(i)).await;
    }
    wait_written(&audit, 300).await;
    r.stop();
    for i in 300..900 {
        audit.emit(plain_event(i)).await;
    }
    wait_spooling(&audit, 600).await;
    r.start();
    // Keep emitting while the spool replays: newer events wait behind it.
    for i in 900..1500 {
        audit.emit(plain_event(i)).await;
        if i % 50 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let stats = handle.shutdown().await;
    for file in ["tcp.log", "tls.log"] {
        let got = conn_ids(&wait_lines(&r, file, 1500, 30).await);
        assert_eq!(got, (0..1500).collect::<Vec<_>>(), "{file}");
    }
    for s in &stats {
        assert_eq!(
            (s.written, s.dropped, s.spool_pending),
            (1500, 0, 0),
            "{s:?}"
        );
        assert!(s.spooled >= 600, "{s:?}");
    }
    r.stop();
}

/// The receiver stops in the middle of a steady stream: rsyslog resets connections
/// that still hold unread bytes, so which acknowledged bytes it read is unknowable to
/// any plain-syslog sender. Nothing may be lost and the order must hold; the replay
/// from the last acknowledgement sample may repeat a bounded run of events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_stopped_under_load_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = Rsyslog::new(dir.path());
    r.start();
    let spool = dir.path().join("spool");
    let (audit, handle) = Audit::start(&audit_config(&r, &spool, false)).unwrap();
    let total: u64 = 1500;
    let a = audit.clone();
    let producer = tokio::spawn(async move {
        for i in 0..total {
            a.emit(plain_event(i)).await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    wait_lines(&r, "tcp.log", 200, 20).await;
    r.stop();
    wait_spooling(&audit, 20).await;
    assert!(!producer.is_finished(), "emit too fast for the test");
    r.start();
    producer.await.unwrap();
    let stats = handle.shutdown().await;
    for file in ["tcp.log", "tls.log"] {
        let lines = wait_lines(&r, file, total as usize, 30).await;
        let got = conn_ids(&lines);
        let mut seen = std::collections::HashSet::new();
        let first: Vec<u64> = got.iter().copied().filter(|i| seen.insert(*i)).collect();
        assert_eq!(
            first,
            (0..total).collect::<Vec<_>>(),
            "{file}: loss or reorder"
        );
        let repeats = got.len() - total as usize;
        eprintln!("{file}: {repeats} events repeated after the reset");
        // At most the events of one acknowledgement sample interval (100 ms at about
        // one event per ms), replayed as one contiguous run.
        assert!(repeats <= 250, "{file}: {repeats} repeats");
        let back: Vec<_> = got.windows(2).filter(|w| w[1] != w[0] + 1).collect();
        assert!(back.len() <= 1, "{file}: {back:?}");
    }
    for s in &stats {
        assert_eq!((s.dropped, s.spool_pending), (0, 0), "{s:?}");
    }
    r.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_survives_a_restart_of_the_sender() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = Rsyslog::new(dir.path());
    let spool = dir.path().join("spool");
    // Collector down for the whole first run: everything is spooled on disk (and the
    // shutdown gives up reconnecting after its grace period).
    let mut cfg = audit_config(&r, &spool, false);
    cfg.shutdown_grace_ms = 300;
    let (audit, handle) = Audit::start(&cfg).unwrap();
    for i in 0..100 {
        audit.emit(plain_event(i)).await;
    }
    let stats = handle.shutdown().await;
    for s in &stats {
        assert_eq!(
            (s.written, s.spool_pending, s.dropped),
            (0, 100, 0),
            "{s:?}"
        );
    }
    // Second run with the collector up: the spool goes first, then new events.
    r.start();
    let (audit, handle) = Audit::start(&audit_config(&r, &spool, false)).unwrap();
    for i in 100..150 {
        audit.emit(plain_event(i)).await;
    }
    for file in ["tcp.log", "tls.log"] {
        let lines = wait_lines(&r, file, 150, 30).await;
        let got: Vec<u64> = lines
            .iter()
            .map(|l| l.sd["conn"].parse().unwrap())
            .collect();
        assert_eq!(got, (0..150).collect::<Vec<_>>(), "{file}");
    }
    let stats = handle.shutdown().await;
    for s in &stats {
        assert_eq!((s.written, s.spool_pending), (150, 0), "{s:?}");
    }
    r.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_wrong_ca_is_refused_and_spooled() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = Rsyslog::new(dir.path());
    r.start();
    // A CA that did not sign the collector's certificate.
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let wrong_ca = pki(&other);
    let mut cfg = audit_config(&r, &dir.path().join("spool"), false);
    cfg.sinks.retain(
        |s| matches!(s, intraport_audit::SinkConfig::Syslog(c) if c.name.as_deref() == Some("tls")),
    );
    if let intraport_audit::SinkConfig::Syslog(c) = &mut cfg.sinks[0] {
        c.ca = Some(wrong_ca);
    }
    let (audit, handle) = Audit::start(&cfg).unwrap();
    for i in 0..5 {
        audit.emit(plain_event(i)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = &audit.stats()[0];
        if s.spool_pending == 5 && s.errors > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{s:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = handle.shutdown().await;
    assert_eq!(stats[0].written, 0);
    assert!(r.lines("tls.log").is_empty());
    r.stop();
}
