//! What a stream says before its TLS records: an HTTP CONNECT through a proxy, a
//! SOCKS5 exchange, or a STARTTLS upgrade (SMTP, IMAP, POP3, FTP, LDAP).
//!
//! Hand-written: these are a few lines of text or a few bytes of fixed format, and
//! only their end matters (where TLS starts) plus which wrapper it was. Each
//! direction is scanned on its own, one message at a time; TLS is recognised at a
//! message boundary by its record header, which no line of text and no SOCKS or
//! LDAP message starts with. The scan is bounded: a stream that has not started TLS
//! after [`MAX_PREAMBLE`] bytes is not TLS.

/// Bytes of wrapper protocol read before a stream is called not TLS.
pub(crate) const MAX_PREAMBLE: usize = 64 * 1024;

/// The StartTLS extended operation's name (RFC 4511, 4.14.1).
const LDAP_STARTTLS_OID: &[u8] = b"1.3.6.1.4.1.1466.20037";

/// The protocol that carried the TLS handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Via {
    HttpConnect,
    Socks5,
    SmtpStarttls,
    ImapStarttls,
    Pop3Stls,
    FtpAuthTls,
    LdapStarttls,
    /// A line-based greeting (`220 `) whose protocol the server's side alone does
    /// not tell (SMTP or FTP); the client's side decides.
    Text,
}

impl Via {
    /// The name in reports (`via`).
    pub fn name(self) -> &'static str {
        match self {
            Via::HttpConnect => "http-connect",
            Via::Socks5 => "socks5",
            Via::SmtpStarttls => "smtp-starttls",
            Via::ImapStarttls => "imap-starttls",
            Via::Pop3Stls => "pop3-stls",
            Via::FtpAuthTls => "ftp-auth-tls",
            Via::LdapStarttls => "ldap-starttls",
            Via::Text => "starttls",
        }
    }
}

/// The result of scanning a stream's start.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Need more bytes.
    More,
    /// TLS starts at this offset of the buffer.
    Tls(usize),
    /// Not TLS, and no wrapper this scanner knows; the reason.
    NotTls(String),
}

#[derive(Default)]
enum State {
    #[default]
    Start,
    Lines,
    /// SOCKS5: messages seen so far in this direction.
    Socks5 {
        messages: u8,
    },
    Ldap,
}

/// Scanner state for one direction.
#[derive(Default)]
pub(crate) struct Preamble {
    state: State,
    via: Option<Via>,
    /// What refused the upgrade, when something did (a proxy's 407, a SOCKS
    /// failure, an LDAP resultCode).
    pub refusal: Option<String>,
    /// Bytes of the buffer already scanned (whole messages).
    scanned: usize,
}

impl Preamble {
    /// The wrapper seen so far.
    pub fn via(&self) -> Option<Via> {
        self.via
    }

    /// Scan `buf` (the direction's bytes from its start, growing from call to
    /// call); `client` says whether this is the client's direction.
    pub fn scan(&mut self, buf: &[u8], client: bool) -> Step {
        loop {
            let pos = self.scanned;
            let rest = buf.get(pos..).unwrap_or_default();
            let Some(&b0) = rest.first() else {
                return Step::More;
            };
            if looks_like_tls(rest) {
                return Step::Tls(pos);
            }
            if pos > MAX_PREAMBLE {
                return Step::NotTls(format!(
                    "no TLS after {MAX_PREAMBLE} bytes of {}",
                    self.via.map_or("text", Via::name)
                ));
            }
            let used = match self.state {
                State::Start => {
                    if b0 == 0x05 {
                        self.state = State::Socks5 { messages: 0 };
                        self.via = Some(Via::Socks5);
                        continue;
                    } else if b0 == 0x30 {
                        self.state = State::Ldap;
                        continue;
                    } else if is_text(b0) {
                        let Some(line) = line(rest) else {
                            return more_or_not(rest, "a first line");
                        };
                        match opener(line, client) {
                            Some(v) => {
                                self.via = v;
                                self.state = State::Lines;
                                continue;
                            }
                            None => {
                                return Step::NotTls(format!(
                                    "the stream starts with text {:?}",
                                    shown(line)
                                ));
                            }
                        }
                    } else {
                        return Step::NotTls(format!(
                            "the stream starts with byte 0x{b0:02x}, not a TLS record"
                        ));
                    }
                }
                State::Lines => {
                    if !is_text(b0) {
                        return Step::NotTls(format!(
                            "byte 0x{b0:02x} after {} text, not a TLS record",
                            self.via.map_or("plain", Via::name)
                        ));
                    }
                    let Some(line) = line(rest) else {
                        return more_or_not(rest, "a line");
                    };
                    self.line(line, client);
                    line.len()
                }
                State::Socks5 { messages } => match socks5(rest, client, messages) {
                    Ok(Some((len, refusal))) => {
                        self.state = State::Socks5 {
                            messages: messages.saturating_add(1),
                        };
                        if refusal.is_some() {
                            self.refusal = refusal;
                        }
                        len
                    }
                    Ok(None) => return Step::More,
                    Err(e) => return Step::NotTls(e),
                },
                State::Ldap => match ldap(rest, client) {
                    Ok(Some((len, refusal))) => {
                        self.via = Some(Via::LdapStarttls);
                        if refusal.is_some() {
                            self.refusal = refusal;
                        }
                        len
                    }
                    Ok(None) => return Step::More,
                    Err(e) => return Step::NotTls(e),
                },
            };
            self.scanned += used;
        }
    }

    /// Learn from one line of a text preamble.
    fn line(&mut self, line: &[u8], client: bool) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end();
        let upper = text.to_ascii_uppercase();
        if client {
            let via = if upper == "STARTTLS" {
                Some(Via::SmtpStarttls)
            } else if upper.ends_with(" STARTTLS") {
                Some(Via::ImapStarttls)
            } else if upper == "STLS" {
                Some(Via::Pop3Stls)
            } else if upper == "AUTH TLS" || upper == "AUTH SSL" {
                Some(Via::FtpAuthTls)
            } else {
                None
            };
            if via.is_some() {
                self.via = via;
            }
        } else if let Some(status) = upper.strip_prefix("HTTP/1.") {
            // "HTTP/1.1 200 Connection established"
            let code = status.get(2..5).unwrap_or("");
            if !code.starts_with('2') {
                self.refusal = Some(format!("the proxy answered {}", text));
            }
        } else if self.via == Some(Via::Text) {
            if upper.starts_with("250") {
                self.via = Some(Via::SmtpStarttls);
            } else if upper.starts_with("234") {
                self.via = Some(Via::FtpAuthTls);
            }
        }
    }
}

/// Whether `b` starts with a TLS record header or an SSLv2-format ClientHello.
fn looks_like_tls(b: &[u8]) -> bool {
    match b {
        [t, 3, minor, ..] => (20..=23).contains(t) && *minor <= 4,
        [t, _, 1, 3 | 0, ..] => t & 0x80 != 0,
        [t] => (20..=23).contains(t) || t & 0x80 != 0,
        [t, 3] => (20..=23).contains(t),
        [t, _] | [t, _, 1] => t & 0x80 != 0,
        _ => false,
    }
}

fn is_text(b: u8) -> bool {
    b == b'\t' || b == b'\r' || b == b'\n' || (0x20..0x7f).contains(&b)
}

/// The first line of `b`, with its end of line; None when it is not complete.
fn line(b: &[u8]) -> Option<&[u8]> {
    let end = b.iter().position(|&c| c == b'\n')?;
    Some(&b[..=end])
}

fn more_or_not(rest: &[u8], what: &str) -> Step {
    if rest.len() > MAX_PREAMBLE {
        Step::NotTls(format!("{what} longer than {MAX_PREAMBLE} bytes"))
    } else {
        Step::More
    }
}

fn shown(line: &[u8]) -> String {
    let s = String::from_utf8_lossy(line);
    let s = s.trim_end();
    s.chars().take(40).collect()
}

/// The wrapper a first line opens (`Some(None)` for a greeting that does not tell
/// yet), or None when it is no opener this scanner knows.
fn opener(line: &[u8], client: bool) -> Option<Option<Via>> {
    let text = String::from_utf8_lossy(line).to_ascii_uppercase();
    let text = text.trim_end();
    let first = text.split(' ').next().unwrap_or("");
    if client {
        match first {
            "CONNECT" => Some(Some(Via::HttpConnect)),
            "EHLO" | "HELO" | "LHLO" => Some(Some(Via::SmtpStarttls)),
            "STARTTLS" => Some(Some(Via::SmtpStarttls)),
            "CAPA" | "STLS" => Some(Some(Via::Pop3Stls)),
            "AUTH" | "FEAT" => Some(Some(Via::FtpAuthTls)),
            // IMAP: "a1 CAPABILITY", "a1 STARTTLS".
            _ => match text.split(' ').nth(1) {
                Some("CAPABILITY" | "STARTTLS") => Some(Some(Via::ImapStarttls)),
                _ => None,
            },
        }
    } else if text.starts_with("HTTP/1.") {
        Some(Some(Via::HttpConnect))
    } else if text.starts_with("220") {
        Some(Some(Via::Text))
    } else if text.starts_with("* OK") {
        Some(Some(Via::ImapStarttls))
    } else if text.starts_with("+OK") {
        Some(Some(Via::Pop3Stls))
    } else {
        None
    }
}

/// One SOCKS5 message (RFC 1928, RFC 1929): its length and, for a server's reply,
/// the refusal it carries. `messages` is how many this direction sent before.
fn socks5(b: &[u8], client: bool, messages: u8) -> Result<Option<(usize, Option<String>)>, String> {
    let Some(&b0) = b.first() else {
        return Ok(None);
    };
    let need = |n: usize| if b.len() >= n { Some(n) } else { None };
    let addr_len = |at: usize| -> Option<usize> {
        match b.get(at)? {
            1 => Some(4),
            4 => Some(16),
            3 => Some(1 + usize::from(*b.get(at + 1)?)),
            _ => Some(usize::MAX / 2),
        }
    };
    match (client, b0, messages) {
        // Greeting: version, number of methods, methods.
        (true, 5, 0) => Ok(b
            .get(1)
            .and_then(|n| need(2 + usize::from(*n)))
            .map(|n| (n, None))),
        // Username/password sub-negotiation: 1, ulen, user, plen, password.
        (true, 1, _) => {
            let Some(ulen) = b.get(1) else {
                return Ok(None);
            };
            let at = 2 + usize::from(*ulen);
            Ok(b.get(at)
                .and_then(|p| need(at + 1 + usize::from(*p)))
                .map(|n| (n, None)))
        }
        // Request: 5, command, 0, address type, address, port.
        (true, 5, _) => match addr_len(3) {
            Some(a) if a > 255 + 1 => Err("SOCKS5 request with an unknown address type".into()),
            Some(a) => Ok(need(4 + a + 2).map(|n| (n, None))),
            None => Ok(None),
        },
        // Method choice: 5, method.
        (false, 5, 0) => Ok(need(2).map(|n| {
            let refused = (b[1] == 0xff).then(|| {
                "the SOCKS5 proxy accepted none of the client's authentication methods".to_string()
            });
            (n, refused)
        })),
        // Sub-negotiation status: 1, status.
        (false, 1, _) => Ok(need(2).map(|n| {
            let refused = (b[1] != 0)
                .then(|| "the SOCKS5 proxy refused the username and password".to_string());
            (n, refused)
        })),
        // Reply: 5, reply code, 0, address type, address, port.
        (false, 5, _) => match addr_len(3) {
            Some(a) if a > 255 + 1 => Err("SOCKS5 reply with an unknown address type".into()),
            Some(a) => Ok(need(4 + a + 2).map(|n| {
                let refused = (b[1] != 0).then(|| {
                    format!(
                        "the SOCKS5 proxy refused the connection (reply code {})",
                        b[1]
                    )
                });
                (n, refused)
            })),
            None => Ok(None),
        },
        _ => Err(format!(
            "byte 0x{b0:02x} in a SOCKS5 exchange, not a TLS record"
        )),
    }
}

/// One LDAP message before StartTLS: the client's must be the StartTLS extended
/// request, the server's an extended response. Its length, and the refusal when the
/// response's resultCode is not success.
fn ldap(b: &[u8], client: bool) -> Result<Option<(usize, Option<String>)>, String> {
    let Some((head, len)) = ber_header(b) else {
        return Ok(None);
    };
    if b.first() != Some(&0x30) {
        return Err("an LDAP exchange goes on without StartTLS".into());
    }
    let Some(msg) = b.get(head..head + len) else {
        return if head + len > MAX_PREAMBLE {
            Err("an LDAP message larger than the scan allows".into())
        } else {
            Ok(None)
        };
    };
    // messageID INTEGER, then the protocol operation.
    let Some((id_head, id_len)) = ber_header(msg) else {
        return Err("a malformed LDAP message".into());
    };
    let op = msg.get(id_head + id_len..).unwrap_or_default();
    let total = head + len;
    match (client, op.first()) {
        // [APPLICATION 23] ExtendedRequest naming StartTLS.
        (true, Some(0x77))
            if op
                .windows(LDAP_STARTTLS_OID.len())
                .any(|w| w == LDAP_STARTTLS_OID) =>
        {
            Ok(Some((total, None)))
        }
        // [APPLICATION 24] ExtendedResponse: resultCode ENUMERATED first.
        (false, Some(0x78)) => {
            let body = ber_header(op)
                .and_then(|(h, _)| op.get(h..))
                .unwrap_or_default();
            let refusal = match body {
                [0x0a, 1, 0, ..] => None,
                [0x0a, 1, code, ..] => Some(format!(
                    "the directory refused StartTLS (resultCode {code})"
                )),
                _ => None,
            };
            Ok(Some((total, refusal)))
        }
        _ => Err("an LDAP message other than StartTLS before TLS".into()),
    }
}

/// A BER tag and length: (header length, content length); None when incomplete.
fn ber_header(b: &[u8]) -> Option<(usize, usize)> {
    let first = *b.get(1)?;
    if first < 0x80 {
        return Some((2, usize::from(first)));
    }
    let n = usize::from(first & 0x7f);
    if n == 0 || n > 4 {
        // Indefinite or absurd lengths: LDAP uses definite lengths only.
        return Some((2, usize::MAX / 4));
    }
    let bytes = b.get(2..2 + n)?;
    let len = bytes
        .iter()
        .fold(0usize, |acc, &x| (acc << 8) | usize::from(x));
    Some((2 + n, len))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn http_connect_is_skipped_to_the_tls_record() {
        let mut p = Preamble::default();
        let c = b"CONNECT dc1:636 HTTP/1.1\r\nHost: dc1:636\r\n\r\n\x16\x03\x01\x00\x05";
        assert_eq!(p.scan(c, true), Step::Tls(c.len() - 5));
        assert_eq!(p.via(), Some(Via::HttpConnect));
        let mut s = Preamble::default();
        let r = b"HTTP/1.1 200 Connection established\r\n\r\n\x16\x03\x03";
        assert_eq!(s.scan(r, false), Step::Tls(r.len() - 3));
        assert!(s.refusal.is_none());
    }

    #[test]
    fn socks5_with_a_password_and_ldap_starttls() {
        let mut c = Preamble::default();
        let mut b = vec![
            5, 1, 2, 1, 1, b'u', 1, b'p', 5, 1, 0, 3, 3, b'd', b'c', b'1', 1, 187,
        ];
        let at = b.len();
        b.extend([0x16, 3, 1]);
        assert_eq!(c.scan(&b, true), Step::Tls(at));
        let mut s = Preamble::default();
        let r = [5, 2, 1, 0, 5, 0, 0, 1, 127, 0, 0, 1, 0, 80, 0x16, 3, 3];
        assert_eq!(s.scan(&r, false), Step::Tls(14));
        assert_eq!(s.via(), Some(Via::Socks5));
        // A truncated reply waits for more; messages that arrive one by one.
        assert_eq!(Preamble::default().scan(&r[..7], false), Step::More);
        let mut s = Preamble::default();
        assert_eq!(s.scan(&r[..2], false), Step::More);
        assert_eq!(s.scan(&r[..4], false), Step::More);
        assert_eq!(s.scan(&r[..9], false), Step::More);
        assert_eq!(s.scan(&r, false), Step::Tls(14));
    }

    #[test]
    fn imap_pop3_and_a_refused_proxy() {
        let mut c = Preamble::default();
        let b = b"a1 CAPABILITY\r\na2 STARTTLS\r\n\x16\x03\x01";
        assert_eq!(c.scan(b, true), Step::Tls(b.len() - 3));
        assert_eq!(c.via(), Some(Via::ImapStarttls));
        let mut s = Preamble::default();
        let b = b"+OK POP3 ready\r\n+OK\r\n\x16\x03\x03";
        assert_eq!(s.scan(b, false), Step::Tls(b.len() - 3));
        assert_eq!(s.via(), Some(Via::Pop3Stls));
        let mut c = Preamble::default();
        let b = b"CAPA\r\nSTLS\r\n\x16\x03\x01";
        assert_eq!(c.scan(b, true), Step::Tls(b.len() - 3));
        assert_eq!(c.via(), Some(Via::Pop3Stls));
        let mut s = Preamble::default();
        assert_eq!(
            s.scan(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n", false),
            Step::More
        );
        assert!(s.refusal.as_deref().unwrap().contains("407"));
        // An LDAP server refusing StartTLS (resultCode 2, protocolError).
        let mut s = Preamble::default();
        let resp = [
            0x30, 0x0c, 0x02, 0x01, 0x01, 0x78, 0x07, 0x0a, 0x01, 0x02, 0x04, 0x00, 0x04, 0x00,
        ];
        assert_eq!(s.scan(&resp, false), Step::More);
        assert!(s.refusal.as_deref().unwrap().contains("resultCode 2"));
    }

    #[test]
    fn plain_text_that_opens_no_wrapper_is_not_tls() {
        let mut p = Preamble::default();
        assert!(matches!(
            p.scan(b"GET / HTTP/1.1\r\n", true),
            Step::NotTls(_)
        ));
    }
}
