//! Test helpers: a `tcpdump` process on loopback, TLS peers, and a pcap writer.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

/// A running `tcpdump`, stopped with SIGINT so that it flushes its file.
pub struct Tcpdump {
    child: Option<Child>,
    pub file: PathBuf,
}

impl Tcpdump {
    /// Start `tcpdump -i IFACE -U -w FILE FILTER` and wait until it says it listens.
    pub fn start(iface: &str, file: &Path, filter: &str) -> Tcpdump {
        Tcpdump::start_in(None, iface, file, filter)
    }

    /// The same in network namespace `netns` (`ip netns exec` execs tcpdump, so the
    /// process is tcpdump itself).
    pub fn start_in(netns: Option<&str>, iface: &str, file: &Path, filter: &str) -> Tcpdump {
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "tcpdump"]);
                c
            }
            None => Command::new("tcpdump"),
        };
        let mut child = cmd
            // Immediate mode hands each packet over at once, and then libpcap uses a
            // ring of snap-length-sized frames: the default 2 MiB buffer holds only
            // 8 of them, so give it 64 MiB or packets are dropped under a burst.
            .args([
                "-i",
                iface,
                "--immediate-mode",
                "-B",
                "65536",
                "-U",
                "-n",
                "-s",
                "0",
                "-w",
            ])
            .arg(file)
            .arg(filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect(
                "tcpdump must be installed (Debian package `tcpdump`) and runnable as this user",
            );
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains("listening on") => break,
                Ok(line) => seen.push(line),
                Err(_) => {
                    let _ = child.kill();
                    panic!("tcpdump did not start listening on {iface}: {seen:?}");
                }
            }
        }
        Tcpdump {
            child: Some(child),
            file: file.to_path_buf(),
        }
    }

    /// SIGINT, then wait (with a deadline) for tcpdump to flush and exit.
    pub fn stop(mut self) -> PathBuf {
        let mut child = self.child.take().unwrap();
        let status = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
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

/// A self-signed certificate and its key for `name`.
pub struct Identity {
    pub cert: CertificateDer<'static>,
    pub key: Vec<u8>,
}

impl Identity {
    pub fn new(name: &str) -> Identity {
        // A distinct subject per identity, so that a client trusting another one
        // fails with "unknown issuer" rather than a signature mismatch.
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Identity {
            cert: cert.der().clone(),
            key: key.serialize_der(),
        }
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()))
    }
}

pub fn server_config(
    id: &Identity,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&str],
) -> Arc<rustls::ServerConfig> {
    let mut cfg = rustls::ServerConfig::builder_with_protocol_versions(versions)
        .with_no_client_auth()
        .with_single_cert(vec![id.cert.clone()], id.key())
        .unwrap();
    cfg.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(cfg)
}

pub fn client_config(
    trust: &Identity,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&str],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trust.cert.clone()).unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_protocol_versions(versions)
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(cfg)
}

/// Accept one connection and run a TLS echo of one message; errors end it quietly
/// (a failing handshake is what some tests want).
pub fn tls_server_once(
    listener: TcpListener,
    cfg: Arc<rustls::ServerConfig>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let conn = rustls::ServerConnection::new(cfg).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut buf = [0u8; 4];
        if tls.read_exact(&mut buf).is_ok() {
            let _ = tls.write_all(b"pong");
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    })
}

/// Connect, handshake, send "ping" and read the answer. Returns the client's local
/// port and whether the exchange worked.
pub fn tls_client(
    port: u16,
    sni: &str,
    cfg: Arc<rustls::ClientConfig>,
) -> (u16, Result<(), String>) {
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let local = tcp.local_addr().unwrap().port();
    let conn =
        rustls::ClientConnection::new(cfg, ServerName::try_from(sni.to_string()).unwrap()).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let result = (|| {
        tls.write_all(b"ping").map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).map_err(|e| e.to_string())?;
        if &buf != b"pong" {
            return Err(format!("unexpected answer {buf:?}"));
        }
        Ok(())
    })();
    (local, result)
}

/// Read one whole TLS record (the ClientHello) from `tcp`.
pub fn read_record(tcp: &mut TcpStream) -> Vec<u8> {
    let mut head = [0u8; 5];
    tcp.read_exact(&mut head).unwrap();
    let len = usize::from(u16::from_be_bytes([head[3], head[4]]));
    let mut body = vec![0u8; len];
    tcp.read_exact(&mut body).unwrap();
    let mut all = head.to_vec();
    all.extend(body);
    all
}

/// A legacy pcap file with the given link type and frames (timestamp in µs, bytes).
pub fn write_pcap(path: &Path, linktype: u32, frames: &[(u64, Vec<u8>)]) {
    let mut out = Vec::new();
    out.extend(0xa1b2_c3d4u32.to_le_bytes());
    out.extend(2u16.to_le_bytes());
    out.extend(4u16.to_le_bytes());
    out.extend(0i32.to_le_bytes());
    out.extend(0u32.to_le_bytes());
    out.extend(262_144u32.to_le_bytes());
    out.extend(linktype.to_le_bytes());
    for (ts, data) in frames {
        out.extend(((ts / 1_000_000) as u32).to_le_bytes());
        out.extend(((ts % 1_000_000) as u32).to_le_bytes());
        out.extend((data.len() as u32).to_le_bytes());
        out.extend((data.len() as u32).to_le_bytes());
        out.extend(data);
    }
    std::fs::write(path, out).unwrap();
}

/// The frames of a pcap/pcapng file: (timestamp µs, link type, bytes).
pub fn read_frames(path: &Path) -> Vec<(u64, u32, Vec<u8>)> {
    use pcap_parser::pcapng::Block;
    use pcap_parser::{PcapBlockOwned, PcapError};
    let mut reader =
        pcap_parser::create_reader(1 << 20, std::fs::File::open(path).unwrap()).unwrap();
    let mut out = Vec::new();
    let mut link = 1u32;
    let mut links = Vec::new();
    loop {
        match reader.next() {
            Ok((off, block)) => {
                match block {
                    PcapBlockOwned::LegacyHeader(h) => link = u32::from(h.network.0 as u16),
                    PcapBlockOwned::Legacy(b) => out.push((
                        u64::from(b.ts_sec) * 1_000_000 + u64::from(b.ts_usec),
                        link,
                        b.data[..b.caplen as usize].to_vec(),
                    )),
                    PcapBlockOwned::NG(Block::InterfaceDescription(i)) => {
                        links.push(i.linktype.0 as u32)
                    }
                    PcapBlockOwned::NG(Block::EnhancedPacket(e)) => out.push((
                        ((u64::from(e.ts_high) << 32) | u64::from(e.ts_low)),
                        links[e.if_id as usize],
                        e.data[..e.caplen as usize].to_vec(),
                    )),
                    _ => {}
                }
                reader.consume(off);
            }
            Err(PcapError::Eof) => break,
            Err(PcapError::Incomplete(_)) => reader.refill().unwrap(),
            Err(e) => panic!("{e:?}"),
        }
    }
    out
}
