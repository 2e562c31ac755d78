//! Test harness: a CA and certificates made with rcgen, TLS servers (rustls in-process,
//! `openssl s_server`), and small TCP relays that misbehave like DPI middleboxes.
//! Everything listens on 127.0.0.1 port 0 and stops when dropped.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use intraport_netcheck::check::{CheckOptions, FindingKind, TargetReport, check_target};
use intraport_netcheck::expect::Expectations;
use intraport_netcheck::target::Target;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A test CA.
pub struct Ca {
    pub issuer: CertifiedIssuer<'static, KeyPair>,
    pub name: String,
}

/// A leaf certificate and its key.
pub struct Leaf {
    pub chain: Vec<CertificateDer<'static>>,
    pub key_der: Vec<u8>,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "intraport tests");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).unwrap(),
            name: name.to_string(),
        }
    }

    pub fn roots(&self) -> Arc<RootCertStore> {
        let mut store = RootCertStore::empty();
        store.add(self.issuer.der().clone()).unwrap();
        Arc::new(store)
    }

    /// A leaf for `names`, valid from `not_before` to `not_after` (offsets in days from now).
    pub fn leaf(&self, names: &[&str], not_before_days: i64, not_after_days: i64) -> Leaf {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        let now = time_now();
        params.not_before = now + time::Duration::days(not_before_days);
        params.not_after = now + time::Duration::days(not_after_days);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            chain: vec![cert.der().clone()],
            key_der: key.serialize_der(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// A task or process that stops when dropped.
pub struct Running {
    pub addr: SocketAddr,
    task: Option<JoinHandle<()>>,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A rustls server presenting `leaf`; answers "hello\n" after the handshake.
pub async fn rustls_server(leaf: &Leaf) -> Running {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key_der.clone()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(leaf.chain.clone(), key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(sock).await {
                    let _ = tls.write_all(b"hello\n").await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    Running {
        addr,
        task: Some(task),
        child: None,
        _dir: None,
    }
}

pub fn have(tool: &str) -> bool {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIPPED: {tool} is not installed");
    }
    ok
}

/// `openssl s_server` presenting `leaf`, with extra arguments (e.g. old versions).
/// Port 0 lets the OS choose; the port is read from its `ACCEPT` line.
pub fn openssl_server(leaf: &Leaf, extra: &[&str]) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, &leaf.cert_pem).unwrap();
    std::fs::write(&key, &leaf.key_pem).unwrap();
    let mut child = Command::new("openssl")
        .args(["s_server", "-accept", "127.0.0.1:0", "-cert"])
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .args(extra)
        // s_server quits when its stdin closes; a pipe kept open keeps it serving.
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("ACCEPT ") {
                let _ = tx.send(rest.to_string());
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("s_server ACCEPT line");
    let port: u16 = line.rsplit(':').next().unwrap().parse().unwrap();
    Running {
        addr: SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port),
        task: None,
        child: Some(child),
        _dir: Some(dir),
    }
}

/// How a relay misbehaves.
#[derive(Clone, Copy, Debug)]
pub enum Middlebox {
    /// Read the ClientHello, then reset (RST) the connection.
    ResetAfterHello,
    /// Read the ClientHello, then say nothing, holding the connection open.
    StallAfterHello,
    /// Close (RST) when the ClientHello's SNI equals the given name; relay otherwise.
    DropSni(&'static str),
}

/// A TCP relay to `upstream` that acts as `mode`.
pub async fn relay(upstream: SocketAddr, mode: Middlebox) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let mut first = vec![0u8; 16 * 1024];
            let n = client.read(&mut first).await.unwrap_or(0);
            first.truncate(n);
            match mode {
                Middlebox::ResetAfterHello => reset(client),
                Middlebox::StallAfterHello => held.push(client),
                Middlebox::DropSni(blocked) => {
                    if sni_of(&first).as_deref() == Some(blocked) {
                        reset(client);
                    } else {
                        tokio::spawn(async move {
                            let Ok(mut up) = TcpStream::connect(upstream).await else {
                                return;
                            };
                            if up.write_all(&first).await.is_err() {
                                return;
                            }
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
                        });
                    }
                }
            }
        }
    });
    Running {
        addr,
        task: Some(task),
        child: None,
        _dir: None,
    }
}

/// Close with a RST: SO_LINGER with a zero timeout makes close() abort the connection.
fn reset(client: TcpStream) {
    let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
    drop(client);
}

/// The SNI host name in a ClientHello record.
pub fn sni_of(record: &[u8]) -> Option<String> {
    use tls_parser::{TlsExtension, TlsMessage, TlsMessageHandshake};
    let (_, rec) = tls_parser::parse_tls_plaintext(record).ok()?;
    let TlsMessage::Handshake(TlsMessageHandshake::ClientHello(ch)) = rec.msg.first()? else {
        return None;
    };
    let (_, exts) = tls_parser::parse_tls_client_hello_extensions(ch.ext?).ok()?;
    exts.iter().find_map(|e| match e {
        TlsExtension::SNI(names) => names
            .first()
            .map(|(_, n)| String::from_utf8_lossy(n).into_owned()),
        _ => None,
    })
}

/// Options for checks against loopback servers.
pub fn options(roots: Arc<RootCertStore>) -> CheckOptions {
    CheckOptions {
        resolvers: vec![],
        roots,
        timeout: Duration::from_secs(3),
        expectations: Expectations::default(),
        legacy: true,
        alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        expiry_warn_days: 30,
        overrides: vec![],
    }
}

/// Check `host` (pinned to `addr` when it is a name) over TLS.
pub async fn check(host: &str, addr: SocketAddr, opts: &CheckOptions) -> TargetReport {
    let mut opts = opts.clone();
    if host.parse::<IpAddr>().is_err() {
        opts.overrides.push((host.to_string(), addr.ip()));
    }
    let target = Target::parse(&format!("tls://{host}:{}", addr.port())).unwrap();
    check_target(target, &opts).await
}

pub fn kinds(r: &TargetReport) -> Vec<FindingKind> {
    r.findings.iter().map(|f| f.kind).collect()
}

/// Poll `f` until it is true or the deadline passes.
pub fn wait_until(deadline: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}
