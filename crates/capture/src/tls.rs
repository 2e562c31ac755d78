//! TLS records and handshake messages in one direction of a reassembled stream.
//!
//! `tls-parser` parses the messages (ClientHello, ServerHello, extensions, alerts);
//! this module only frames records from the byte stream and joins handshake
//! messages that span several records, which a record-at-a-time parser cannot do.
//! It never decrypts: after ChangeCipherSpec (TLS 1.2) or in TLS 1.3 the remaining
//! handshake is visible only as record types and lengths.
//!
//! Before the first record, [`crate::wrap`] skips what a proxy or a STARTTLS upgrade
//! put in front of it. An SSLv2-format ClientHello (RFC 5246, E.2: what old clients
//! send to reach servers of any version) is parsed here by hand, as `tls-parser`
//! reads only TLS records; the server then answers with ordinary TLS records.

use tls_parser::{
    TlsAlertDescription, TlsCipherSuite, TlsExtension, TlsVersion,
    parse_tls_client_hello_extensions, parse_tls_handshake_client_hello,
    parse_tls_handshake_server_hello, parse_tls_server_hello_extensions,
};

use crate::report::{ClientHello, ServerHello};
use crate::wrap::{Preamble, Step, Via};

/// Largest record payload TLS allows (2^14 plus expansion for encrypted records).
const MAX_RECORD: usize = (1 << 14) + 2048;
/// Largest handshake message accepted for reassembly (certificate chains are the big ones).
const MAX_HANDSHAKE_MESSAGE: usize = 1 << 18;

/// The random value a TLS 1.3 server puts in a ServerHello that is really a
/// HelloRetryRequest (RFC 8446, 4.1.3).
const HELLO_RETRY_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
    0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];

/// Something seen in the stream, in order.
#[derive(Debug)]
pub(crate) enum Event {
    ClientHello(ClientHello),
    ServerHello(ServerHello),
    /// A TLS 1.3 HelloRetryRequest.
    HelloRetryRequest,
    /// Another plaintext handshake message.
    Handshake,
    ChangeCipherSpec,
    /// A handshake record after ChangeCipherSpec (TLS 1.2: the encrypted Finished).
    EncryptedHandshake,
    /// A plaintext alert.
    Alert {
        level: String,
        description: String,
    },
    /// An alert record after ChangeCipherSpec, whose content is encrypted.
    EncryptedAlert,
    /// An application_data record (in TLS 1.3 also the encrypted handshake).
    ApplicationData {
        len: usize,
    },
    /// The first bytes are not a TLS record, and no wrapper that leads to one; the
    /// wrapper seen, if any, and why it is not TLS.
    NotTls(Option<Via>, String),
    /// TLS starts after this wrapper (a proxy's CONNECT, a STARTTLS upgrade).
    Wrapped(Via),
    /// The stream stopped parsing as TLS; the reason.
    Malformed(String),
}

/// Parser state for one direction.
#[derive(Default)]
pub(crate) struct Direction {
    buf: Vec<u8>,
    handshake: Vec<u8>,
    records: u64,
    ccs_seen: bool,
    stopped: bool,
    preamble: Preamble,
    /// Set once the preamble scan found the first TLS byte.
    in_tls: bool,
}

impl Direction {
    /// Whether the parser wants no more bytes (not TLS, or malformed).
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// The wrapper seen before TLS (or instead of it), and what refused it.
    pub fn wrapper(&self) -> (Option<Via>, Option<&str>) {
        (self.preamble.via(), self.preamble.refusal.as_deref())
    }

    /// Feed contiguous stream bytes; returns what they completed. `tls13` says the
    /// connection negotiated TLS 1.3, where handshake records stay plaintext after a
    /// (compatibility) ChangeCipherSpec.
    /// `client` says whether this is the client's direction (a wrapper's messages
    /// differ by side).
    pub fn feed(&mut self, data: &[u8], tls13: bool, client: bool) -> Vec<Event> {
        let mut events = Vec::new();
        if self.stopped {
            return events;
        }
        self.buf.extend_from_slice(data);
        let mut pos = 0;
        if !self.in_tls {
            match self.preamble.scan(&self.buf, client) {
                Step::More => return events,
                Step::NotTls(why) => {
                    events.push(Event::NotTls(self.preamble.via(), why));
                    self.stop();
                    return events;
                }
                Step::Tls(at) => {
                    self.in_tls = true;
                    pos = at;
                    if let Some(via) = self.preamble.via() {
                        events.push(Event::Wrapped(via));
                    }
                }
            }
        }
        loop {
            if self.records == 0 && self.buf.get(pos).is_some_and(|b| b & 0x80 != 0) {
                match sslv2_client_hello(&self.buf[pos..]) {
                    None => break,
                    Some(Ok((ch, len))) => {
                        self.records += 1;
                        events.push(Event::ClientHello(ch));
                        pos += len;
                        continue;
                    }
                    Some(Err(_)) => {
                        events.push(Event::NotTls(None, "not an SSLv2 ClientHello".into()));
                        self.stop();
                        return events;
                    }
                }
            }
            let Some(header) = self.buf.get(pos..pos + 5) else {
                break;
            };
            let (ctype, major, minor) = (header[0], header[1], header[2]);
            let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
            if !(20..=24).contains(&ctype) || major != 3 || minor > 4 || len > MAX_RECORD {
                if self.records == 0 {
                    events.push(Event::NotTls(
                        self.preamble.via(),
                        format!("type {ctype}, version {major}.{minor}"),
                    ));
                } else {
                    events.push(Event::Malformed(format!(
                        "bytes after record {} are not a TLS record header (type {ctype}, version {major}.{minor}, length {len})",
                        self.records
                    )));
                }
                self.stop();
                return events;
            }
            let Some(body) = self.buf.get(pos + 5..pos + 5 + len) else {
                break;
            };
            self.records += 1;
            match ctype {
                20 => {
                    self.ccs_seen = true;
                    events.push(Event::ChangeCipherSpec);
                }
                21 => {
                    if self.ccs_seen && !tls13 || body.len() != 2 {
                        events.push(Event::EncryptedAlert);
                    } else {
                        events.push(Event::Alert {
                            level: alert_level(body[0]),
                            description: alert_name(body[1]),
                        });
                    }
                }
                22 => {
                    if self.ccs_seen && !tls13 {
                        events.push(Event::EncryptedHandshake);
                    } else {
                        let body = body.to_vec();
                        if let Err(reason) = self.handshake_bytes(&body, &mut events) {
                            events.push(Event::Malformed(reason));
                            self.stop();
                            return events;
                        }
                    }
                }
                23 => events.push(Event::ApplicationData { len }),
                _ => {} // heartbeat
            }
            pos += 5 + len;
        }
        self.buf.drain(..pos);
        events
    }

    fn stop(&mut self) {
        self.stopped = true;
        self.buf = Vec::new();
        self.handshake = Vec::new();
    }

    /// Append a handshake record's payload and parse every complete message.
    fn handshake_bytes(&mut self, body: &[u8], events: &mut Vec<Event>) -> Result<(), String> {
        self.handshake.extend_from_slice(body);
        let mut pos = 0;
        while let Some(h) = self.handshake.get(pos..pos + 4) {
            let msg_type = h[0];
            let len = (usize::from(h[1]) << 16) | (usize::from(h[2]) << 8) | usize::from(h[3]);
            if len > MAX_HANDSHAKE_MESSAGE {
                return Err(format!(
                    "handshake message of type {msg_type} claims {len} bytes (over {MAX_HANDSHAKE_MESSAGE})"
                ));
            }
            let Some(msg) = self.handshake.get(pos + 4..pos + 4 + len) else {
                break;
            };
            events.push(match msg_type {
                1 => Event::ClientHello(client_hello(msg)?),
                2 => server_hello(msg)?,
                _ => Event::Handshake,
            });
            pos += 4 + len;
        }
        self.handshake.drain(..pos);
        Ok(())
    }
}

/// Cipher kinds of SSL 2.0 (RFC 6101's predecessor; Netscape's SSL 2.0 document,
/// appendix C), as three-byte specs in an SSLv2-format ClientHello.
const SSL2_CIPHERS: &[(u32, &str)] = &[
    (0x01_0080, "SSL2_RC4_128_WITH_MD5"),
    (0x02_0080, "SSL2_RC4_128_EXPORT40_WITH_MD5"),
    (0x03_0080, "SSL2_RC2_128_CBC_WITH_MD5"),
    (0x04_0080, "SSL2_RC2_128_CBC_EXPORT40_WITH_MD5"),
    (0x05_0080, "SSL2_IDEA_128_CBC_WITH_MD5"),
    (0x06_0040, "SSL2_DES_64_CBC_WITH_MD5"),
    (0x07_00c0, "SSL2_DES_192_EDE3_CBC_WITH_MD5"),
];

/// An SSLv2-format ClientHello (RFC 5246, E.2) at the start of `b`: the hello and
/// its length on the wire; None when more bytes are needed.
fn sslv2_client_hello(b: &[u8]) -> Option<Result<(ClientHello, usize), String>> {
    let head = b.get(..2)?;
    // A two-byte header (high bit set): no padding, length in the other 15 bits.
    let len = (usize::from(head[0] & 0x7f) << 8) | usize::from(head[1]);
    let body = b.get(2..2 + len)?;
    let u16_at = |i: usize| {
        body.get(i..i + 2)
            .map(|x| usize::from(u16::from_be_bytes([x[0], x[1]])))
    };
    let (Some(&1), Some(version), Some(specs), Some(session), Some(challenge)) =
        (body.first(), u16_at(1), u16_at(3), u16_at(5), u16_at(7))
    else {
        return Some(Err("too short".into()));
    };
    if specs % 3 != 0 || 9 + specs + session + challenge != len {
        return Some(Err("lengths do not add up".into()));
    }
    let cipher_suites = body[9..9 + specs]
        .chunks(3)
        .filter(|c| !(c[0] == 0 && is_grease(u16::from_be_bytes([c[1], c[2]]))))
        .map(|c| {
            let spec = (u32::from(c[0]) << 16) | (u32::from(c[1]) << 8) | u32::from(c[2]);
            if c[0] == 0 {
                cipher_name(u16::from_be_bytes([c[1], c[2]]))
            } else {
                SSL2_CIPHERS
                    .iter()
                    .find(|(v, _)| *v == spec)
                    .map_or_else(|| format!("0x{spec:06x}"), |(_, n)| n.to_string())
            }
        })
        .collect();
    Some(Ok((
        ClientHello {
            legacy_version: version_name(version as u16),
            supported_versions: Vec::new(),
            cipher_suites,
            sni: None,
            alpn: Vec::new(),
            sslv2_format: true,
        },
        2 + len,
    )))
}

fn client_hello(msg: &[u8]) -> Result<ClientHello, String> {
    let (_, ch) = parse_tls_handshake_client_hello(msg)
        .map_err(|e| format!("malformed ClientHello: {e:?}"))?;
    let mut out = ClientHello {
        legacy_version: version_name(ch.version.0),
        supported_versions: Vec::new(),
        cipher_suites: ch
            .ciphers
            .iter()
            .filter(|c| !is_grease(c.0))
            .map(|c| cipher_name(c.0))
            .collect(),
        sni: None,
        alpn: Vec::new(),
        sslv2_format: false,
    };
    if let Some(ext) = ch.ext {
        // Extensions that fail to parse are left out; the rest are still reported.
        let exts = parse_tls_client_hello_extensions(ext)
            .map(|(_, e)| e)
            .unwrap_or_default();
        for e in exts {
            match e {
                TlsExtension::SNI(names) => {
                    out.sni = names
                        .first()
                        .map(|(_, name)| String::from_utf8_lossy(name).into_owned());
                }
                TlsExtension::ALPN(protos) => {
                    out.alpn = protos
                        .iter()
                        .map(|p| String::from_utf8_lossy(p).into_owned())
                        .collect();
                }
                TlsExtension::SupportedVersions(v) => {
                    out.supported_versions = v
                        .iter()
                        .filter(|v| !is_grease(v.0))
                        .map(|v| version_name(v.0))
                        .collect();
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

fn server_hello(msg: &[u8]) -> Result<Event, String> {
    let (_, sh) = parse_tls_handshake_server_hello(msg)
        .map_err(|e| format!("malformed ServerHello: {e:?}"))?;
    if sh.random == HELLO_RETRY_RANDOM {
        return Ok(Event::HelloRetryRequest);
    }
    let mut selected: TlsVersion = sh.version;
    let mut alpn = None;
    if let Some(ext) = sh.ext {
        let exts = parse_tls_server_hello_extensions(ext)
            .map(|(_, e)| e)
            .unwrap_or_default();
        for e in exts {
            match e {
                TlsExtension::SupportedVersions(v) => {
                    if let Some(v) = v.first() {
                        selected = *v;
                    }
                }
                TlsExtension::ALPN(protos) => {
                    alpn = protos
                        .first()
                        .map(|p| String::from_utf8_lossy(p).into_owned());
                }
                _ => {}
            }
        }
    }
    Ok(Event::ServerHello(ServerHello {
        legacy_version: version_name(sh.version.0),
        version: version_name(selected.0),
        cipher_suite: cipher_name(sh.cipher.0),
        alpn,
    }))
}

/// Whether a version or cipher value is a GREASE placeholder (RFC 8701).
fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a
}

/// The usual name of a protocol version ("TLSv1.3"), or its hex value.
pub(crate) fn version_name(v: u16) -> String {
    match v {
        0x0002 => "SSLv2".into(),
        0x0300 => "SSLv3".into(),
        0x0301 => "TLSv1.0".into(),
        0x0302 => "TLSv1.1".into(),
        0x0303 => "TLSv1.2".into(),
        0x0304 => "TLSv1.3".into(),
        v => format!("0x{v:04x}"),
    }
}

/// The IANA name of a cipher suite, or its hex value.
fn cipher_name(id: u16) -> String {
    TlsCipherSuite::from_id(id)
        .map(|c| c.name.to_string())
        .unwrap_or_else(|| format!("0x{id:04x}"))
}

fn alert_level(level: u8) -> String {
    match level {
        1 => "warning".into(),
        2 => "fatal".into(),
        l => format!("level_{l}"),
    }
}

/// The RFC name of an alert description in snake case ("unknown_ca"), as `intraport
/// pcap` and `intraport check` report it; tls-parser names them in camel case
/// ("UnknownCa").
pub fn alert_name(code: u8) -> String {
    let camel = TlsAlertDescription(code).to_string();
    if !camel.chars().all(|c| c.is_ascii_alphabetic()) {
        return format!("unknown_alert_{code}");
    }
    split_camel(&camel, '_')
}

/// A camel-case name in lower-case words joined by `sep`: `UnknownCa` → `unknown_ca`
/// with `'_'`, "unknown ca" with `' '`.
pub fn split_camel(name: &str, sep: char) -> String {
    let mut out = String::with_capacity(name.len() + 8);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push(sep);
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn alert_names_are_snake_case() {
        assert_eq!(alert_name(48), "unknown_ca");
        assert_eq!(alert_name(70), "protocol_version");
        assert_eq!(alert_name(40), "handshake_failure");
        assert_eq!(alert_name(200), "unknown_alert_200");
    }

    #[test]
    fn records_split_anywhere_give_the_same_events() {
        // A fatal handshake_failure alert followed by a record that is not TLS.
        let bytes = [21, 3, 3, 0, 2, 2, 40];
        for split in 0..bytes.len() {
            let mut d = Direction::default();
            let mut ev = d.feed(&bytes[..split], false, false);
            ev.extend(d.feed(&bytes[split..], false, false));
            assert_eq!(ev.len(), 1, "split at {split}: {ev:?}");
            match &ev[0] {
                Event::Alert { level, description } => {
                    assert_eq!(level, "fatal");
                    assert_eq!(description, "handshake_failure");
                }
                e => panic!("{e:?}"),
            }
        }
    }

    #[test]
    fn plain_text_is_not_tls() {
        let mut d = Direction::default();
        let ev = d.feed(b"GET / HTTP/1.1\r\n", false, true);
        assert!(matches!(ev.as_slice(), [Event::NotTls(None, _)]));
        assert!(d.stopped());
    }
}
