//! Does the server still accept TLS 1.0 or 1.1? It must not.
//!
//! rustls cannot speak TLS 1.0/1.1 (by design), and no maintained Rust TLS stack offers
//! them, so this module sends a minimal hand-built ClientHello offering exactly one old
//! version and reads the answer with `tls-parser`. It never completes a handshake: the
//! ServerHello (accepted) or the alert / close (refused) is the whole answer.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;
use tls_parser::{TlsMessage, TlsMessageHandshake, parse_tls_plaintext};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::tcp;

/// The old versions probed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum LegacyVersion {
    /// TLS 1.0 (0x0301).
    #[serde(rename = "TLSv1.0")]
    Tls10,
    /// TLS 1.1 (0x0302).
    #[serde(rename = "TLSv1.1")]
    Tls11,
}

impl LegacyVersion {
    fn wire(self) -> u16 {
        match self {
            LegacyVersion::Tls10 => 0x0301,
            LegacyVersion::Tls11 => 0x0302,
        }
    }
}

/// The server's answer to an old-version ClientHello.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "answer")]
pub enum LegacyAnswer {
    /// A ServerHello selecting the offered version: the server accepts it.
    Accepted {
        /// The cipher suite the server picked, by IANA name.
        cipher_suite: String,
    },
    /// A fatal alert.
    Alert {
        /// The alert's RFC name in snake case, e.g. `protocol_version`.
        description: String,
    },
    /// A ServerHello with another version (a broken server).
    OtherVersion {
        /// The version the server chose (`TLSv1.2`).
        version: String,
    },
    /// Closed or reset without a TLS answer.
    Closed,
    /// No answer in time.
    Timeout,
    /// TCP did not connect, or the answer did not parse.
    Error {
        /// What went wrong.
        detail: String,
    },
}

/// One probe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LegacyProbe {
    /// The version offered.
    pub version: LegacyVersion,
    /// What the server said.
    #[serde(flatten)]
    pub answer: LegacyAnswer,
}

/// Cipher suites a TLS 1.0/1.1 server would pick from: ECDHE with ECDSA or RSA and
/// AES-CBC, plain RSA key exchange, 3DES, and the renegotiation SCSV.
const SUITES: &[u16] = &[
    0xc009, 0xc00a, 0xc013, 0xc014, 0x002f, 0x0035, 0x000a, 0x00ff,
];

/// The ClientHello record for `version`, with SNI when `sni` is given.
pub fn client_hello(version: LegacyVersion, sni: Option<&str>, random: [u8; 32]) -> Vec<u8> {
    let mut ext = Vec::new();
    if let Some(name) = sni {
        let name = name.as_bytes();
        let mut list = Vec::new();
        list.push(0u8); // host_name
        push_u16(&mut list, name.len());
        list.extend_from_slice(name);
        push_u16(&mut ext, 0x0000);
        push_u16(&mut ext, list.len() + 2);
        push_u16(&mut ext, list.len());
        ext.extend_from_slice(&list);
    }
    // supported_groups: x25519, secp256r1, secp384r1 (needed for the ECDHE suites).
    push_u16(&mut ext, 0x000a);
    push_u16(&mut ext, 8);
    push_u16(&mut ext, 6);
    for g in [0x001du16, 0x0017, 0x0018] {
        push_u16(&mut ext, g as usize);
    }
    // ec_point_formats: uncompressed.
    ext.extend_from_slice(&[0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]);

    let mut body = Vec::new();
    push_u16(&mut body, version.wire() as usize);
    body.extend_from_slice(&random);
    body.push(0); // empty session id
    push_u16(&mut body, SUITES.len() * 2);
    for s in SUITES {
        push_u16(&mut body, *s as usize);
    }
    body.extend_from_slice(&[1, 0]); // compression: null
    push_u16(&mut body, ext.len());
    body.extend_from_slice(&ext);

    let mut hs = vec![0x01]; // client_hello
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);

    let mut record = vec![0x16];
    push_u16(&mut record, 0x0301); // record version: TLS 1.0, as old clients send
    push_u16(&mut record, hs.len());
    record.extend_from_slice(&hs);
    record
}

fn push_u16(out: &mut Vec<u8>, v: usize) {
    out.extend_from_slice(&(v as u16).to_be_bytes());
}

/// Offer `version` to `addr` and report the answer.
pub async fn probe(
    addr: SocketAddr,
    sni: Option<&str>,
    version: LegacyVersion,
    timeout: Duration,
) -> LegacyProbe {
    let answer = probe_inner(addr, sni, version, timeout).await;
    LegacyProbe { version, answer }
}

async fn probe_inner(
    addr: SocketAddr,
    sni: Option<&str>,
    version: LegacyVersion,
    timeout: Duration,
) -> LegacyAnswer {
    let deadline = Instant::now() + timeout;
    let (report, stream) = tcp::connect(addr, timeout).await;
    let Some(mut stream) = stream else {
        return LegacyAnswer::Error {
            detail: format!("could not connect: {}", report.outcome.describe()),
        };
    };
    let mut random = [0u8; 32];
    if aws_lc_rs::rand::fill(&mut random).is_err() {
        return LegacyAnswer::Error {
            detail: "no randomness".into(),
        };
    }
    if let Err(e) = stream.write_all(&client_hello(version, sni, random)).await {
        return LegacyAnswer::Error {
            detail: format!("sending the ClientHello failed: {}", e.kind()),
        };
    }
    let mut buf = Vec::with_capacity(4096);
    loop {
        if let Some(answer) = parse_answer(&buf, version) {
            return answer;
        }
        if buf.len() > 64 * 1024 {
            return LegacyAnswer::Error {
                detail: "no ServerHello in the first 64 KiB".into(),
            };
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(remaining, stream.read(&mut chunk)).await {
            Err(_) => return LegacyAnswer::Timeout,
            Ok(Ok(0)) | Ok(Err(_)) => return LegacyAnswer::Closed,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The answer in `buf`, or None when more bytes are needed.
fn parse_answer(buf: &[u8], offered: LegacyVersion) -> Option<LegacyAnswer> {
    let mut rest = buf;
    while !rest.is_empty() {
        match parse_tls_plaintext(rest) {
            Ok((tail, record)) => {
                for msg in &record.msg {
                    match msg {
                        TlsMessage::Handshake(TlsMessageHandshake::ServerHello(sh)) => {
                            let v = sh.version.0;
                            return Some(if v == offered.wire() {
                                LegacyAnswer::Accepted {
                                    cipher_suite: crate::tls::cipher_name(sh.cipher.0),
                                }
                            } else {
                                LegacyAnswer::OtherVersion {
                                    version: crate::tls::version_name(v),
                                }
                            });
                        }
                        TlsMessage::Alert(alert) => {
                            return Some(LegacyAnswer::Alert {
                                description: intraport_capture::alert_name(alert.code.0),
                            });
                        }
                        _ => {}
                    }
                }
                rest = tail;
            }
            Err(tls_parser::nom::Err::Incomplete(_)) => return None,
            Err(_) => {
                return Some(LegacyAnswer::Error {
                    detail: "the answer is not a TLS record".into(),
                });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use tls_parser::TlsVersion;

    #[test]
    fn our_client_hello_parses_with_tls_parser() {
        let bytes = client_hello(LegacyVersion::Tls11, Some("dc1.corp.test"), [7; 32]);
        let (rest, record) = parse_tls_plaintext(&bytes).unwrap();
        assert!(rest.is_empty());
        let TlsMessage::Handshake(TlsMessageHandshake::ClientHello(ch)) = &record.msg[0] else {
            panic!("not a ClientHello: {:?}", record.msg);
        };
        assert_eq!(ch.version, TlsVersion::Tls11);
        assert_eq!(ch.ciphers.len(), SUITES.len());
        let (_, exts) = tls_parser::parse_tls_client_hello_extensions(ch.ext.unwrap()).unwrap();
        assert!(exts.iter().any(|e| matches!(
            e,
            tls_parser::TlsExtension::SNI(names) if names[0].1 == b"dc1.corp.test"
        )));
    }

    #[test]
    fn partial_answers_wait_for_more_bytes() {
        // A handshake record header announcing more bytes than present.
        assert_eq!(
            parse_answer(&[0x16, 0x03, 0x01, 0x00, 0x40, 0x02], LegacyVersion::Tls10),
            None
        );
        // A fatal protocol_version alert.
        let alert = [0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x46];
        assert_eq!(
            parse_answer(&alert, LegacyVersion::Tls10),
            Some(LegacyAnswer::Alert {
                description: "protocol_version".into()
            })
        );
    }
}
