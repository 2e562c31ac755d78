//! Wire formats: ECS JSON lines, OCSF JSON lines, CEF and RFC 5424 syslog framing.
//!
//! Each writer appends to a caller's `Vec<u8>` so a sink formats a whole batch into
//! one buffer without per-event allocation. The JSON writer is hand-written for the
//! same reason (no intermediate `Value`, no per-field allocation); its string escaping
//! is checked against `serde_json` by a property test. What repeats between events is
//! written once and copied: the `event` members that follow from an event's kind, an
//! identity's `user` and `token` members (kept with the shared identity), and the
//! timestamp's date and time of day.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

use crate::event::{Action, Event, Identity, Outcome};
use crate::timefmt::{unix_millis, write_rfc3339};

/// The ECS version, as a literal for the fixed text of [`write_ecs`].
macro_rules! ecs_version {
    () => {
        "8.11.0"
    };
}

/// The product name, as a literal for the fixed text of [`write_ecs`].
macro_rules! product {
    () => {
        "intraport"
    };
}

/// The ECS version the JSON lines declare in `ecs.version`.
pub const ECS_VERSION: &str = ecs_version!();

/// The product and vendor name in CEF headers and ECS `observer.product`.
pub const PRODUCT: &str = product!();

/// How an event is written as text (`"ecs"`, `"ocsf"` or `"cef"` in configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Elastic Common Schema JSON (one object per line in files and on stdout).
    Ecs,
    /// Open Cybersecurity Schema Framework 1.7.0 JSON (one object per line).
    Ocsf,
    /// ArcSight Common Event Format.
    Cef,
}

/// Appends `event` in `format` without a trailing newline.
pub fn write_event(format: Format, event: &Event, out: &mut Vec<u8>) {
    match format {
        Format::Ecs => write_ecs(event, out),
        Format::Ocsf => write_ocsf(event, out),
        Format::Cef => write_cef(event, out),
    }
}

// Numbers and addresses without `core::fmt`: formatting through `Display` cost more
// than all the rest of an event's bytes, and the sink formats every event.

/// Appends `v` in decimal.
pub(crate) fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Appends `ip` in its standard text form (IPv6 compressed as `Display` does).
pub(crate) fn put_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut buf = [0u8; 15];
            let n = ipv4_text(v4.octets(), &mut buf);
            out.extend_from_slice(&buf[..n]);
        }
        // Rare on the hot path and with compression rules worth not rewriting.
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Writes dotted-quad text into `buf` and returns its length: one copy per address
/// into the event, not one per octet.
fn ipv4_text(octets: [u8; 4], buf: &mut [u8; 15]) -> usize {
    let mut n = 0;
    for (i, o) in octets.into_iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        if o >= 100 {
            buf[n] = b'0' + o / 100;
            n += 1;
        }
        if o >= 10 {
            buf[n] = b'0' + (o / 10) % 10;
            n += 1;
        }
        buf[n] = b'0' + o % 10;
        n += 1;
    }
    n
}

/// Appends `a` as `ip:port` (`[ip%scope]:port` for IPv6, as `Display` does).
pub(crate) fn put_socket(out: &mut Vec<u8>, a: SocketAddr) {
    match a {
        SocketAddr::V4(v4) => {
            put_ip(out, IpAddr::V4(*v4.ip()));
            out.push(b':');
            put_u64(out, u64::from(a.port()));
        }
        SocketAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Microseconds of `d`, saturated (a u64 holds 584,000 years of them).
fn micros(d: Option<std::time::Duration>) -> Option<u64> {
    d.map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

// ---------------------------------------------------------------------------------
// ECS

/// ECS `event.category` for an event.
pub fn ecs_category(event: &Event) -> &'static [&'static str] {
    match event.action {
        Action::ConnectionAccepted
        | Action::ConnectionRefused
        | Action::ConnectionClosed
        | Action::TlsHandshake
        | Action::PolicyDecision
        | Action::Ban
        | Action::Unban => &["network"],
        Action::Authentication => &["authentication"],
        Action::UpstreamResult if event.http.is_some() => &["web"],
        Action::UpstreamResult => &["network"],
        Action::Reload => &["configuration"],
    }
}

/// ECS `event.type` for an event.
pub fn ecs_type(event: &Event) -> &'static [&'static str] {
    let ok = event.outcome != Outcome::Failure;
    match event.action {
        Action::ConnectionAccepted => &["connection", "start", "allowed"],
        Action::ConnectionRefused => &["connection", "denied"],
        Action::ConnectionClosed => &["connection", "end"],
        Action::TlsHandshake => &["protocol"],
        Action::Authentication => &["info"],
        Action::PolicyDecision if ok => &["allowed"],
        Action::PolicyDecision => &["denied"],
        Action::UpstreamResult if event.http.is_some() && ok => &["access"],
        Action::UpstreamResult if event.http.is_some() => &["access", "error"],
        Action::UpstreamResult => &["connection", "end"],
        Action::Ban => &["denied"],
        Action::Unban => &["info"],
        Action::Reload => &["change"],
    }
}

/// `,"name":` as one literal, for [`Json`]'s keys: each key is one copy.
macro_rules! key {
    ($name:literal) => {
        concat!(",\"", $name, "\":")
    };
}

/// A minimal streaming JSON object writer: keys are trusted literals made by `key!`,
/// values escaped. Each key, and each run of fixed text, is one copy: an event is a
/// hundred small pieces, and the per-copy cost was most of its formatting time.
struct Json<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Json<'a> {
    fn open(out: &'a mut Vec<u8>) -> Json<'a> {
        out.push(b'{');
        Json { out, first: true }
    }
    /// Writes a `key!` literal, without its comma when it is the object's first.
    fn key(&mut self, k: &'static str) {
        let k = if self.first { &k[1..] } else { k };
        self.first = false;
        self.out.extend_from_slice(k.as_bytes());
    }
    /// Writes fixed text: whole members (`,"name":value`), or a value after a key.
    fn lit(&mut self, text: &[u8]) {
        if text.is_empty() {
            return;
        }
        let text = match text {
            [b',', rest @ ..] if self.first => rest,
            _ => text,
        };
        self.first = false;
        self.out.extend_from_slice(text);
    }
    fn str(&mut self, k: &'static str, v: &str) {
        self.key(k);
        json_string(v, self.out);
    }
    /// A string value that needs no JSON escaping (addresses, ids), written by `put`.
    fn raw(&mut self, k: &'static str, put: impl FnOnce(&mut Vec<u8>)) {
        self.key(k);
        self.out.push(b'"');
        put(self.out);
        self.out.push(b'"');
    }
    fn opt_str(&mut self, k: &'static str, v: Option<&str>) {
        if let Some(v) = v {
            self.str(k, v);
        }
    }
    fn num(&mut self, k: &'static str, v: u64) {
        self.key(k);
        put_u64(self.out, v);
    }
    fn opt_num(&mut self, k: &'static str, v: Option<u64>) {
        if let Some(v) = v {
            self.num(k, v);
        }
    }
    fn bool(&mut self, k: &'static str, v: bool) {
        self.key(k);
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
    }
    fn list(&mut self, k: &'static str, v: &[&str]) {
        self.key(k);
        self.out.push(b'[');
        for (i, s) in v.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            json_string(s, self.out);
        }
        self.out.push(b']');
    }
    /// Opens a nested object under `k`; close it with [`Json::end`].
    fn obj(&mut self, k: &'static str) {
        self.key(k);
        self.out.push(b'{');
        self.first = true;
    }
    fn end(&mut self) {
        self.out.push(b'}');
        self.first = false;
    }
    fn close(self) {
        self.out.push(b'}');
    }
}

mod ocsf;
pub use ocsf::{OCSF_VERSION, write_ocsf};

/// `"category":[..],"type":[..],"action":"..","outcome":".."` for an event, the part
/// of its `event` object that follows from its action, outcome and whether it is an
/// HTTP event: written once per combination (sixty in all) and then copied whole.
fn ecs_kind(event: &Event) -> &'static [u8] {
    static TABLE: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    const OUTCOMES: [Outcome; 3] = [Outcome::Success, Outcome::Failure, Outcome::Unknown];
    let table = TABLE.get_or_init(|| {
        let mut table = Vec::with_capacity(Action::ALL.len() * OUTCOMES.len() * 2);
        for action in Action::ALL {
            for outcome in OUTCOMES {
                for http in [false, true] {
                    let mut e = Event::new(action, outcome);
                    e.http = http.then(Default::default);
                    let mut text = Vec::new();
                    let mut j = Json {
                        out: &mut text,
                        first: false,
                    };
                    j.list(key!("category"), ecs_category(&e));
                    j.list(key!("type"), ecs_type(&e));
                    j.str(key!("action"), action.as_str());
                    j.str(key!("outcome"), outcome.as_str());
                    table.push(text);
                }
            }
        }
        table
    });
    let action = Action::ALL
        .iter()
        .position(|a| *a == event.action)
        .unwrap_or_default();
    let outcome = OUTCOMES
        .iter()
        .position(|o| *o == event.outcome)
        .unwrap_or_default();
    table
        .get((action * OUTCOMES.len() + outcome) * 2 + usize::from(event.http.is_some()))
        .map_or(&[][..], |t| t.as_slice())
}

/// An identity's ECS members, rendered once per identity (see [`Identity::rendered`]):
/// `,"user":{"id":..}` and `,"token":{"kid":..,"tid":..,"oid":..,"azp":..}`, each
/// empty when the identity has none of its fields.
pub(crate) struct EcsIdentity {
    user: Box<[u8]>,
    token: Box<[u8]>,
}

fn ecs_identity(i: &Identity) -> &EcsIdentity {
    i.rendered.0.get_or_init(|| {
        let mut user = Vec::new();
        if let Some(oid) = i.oid.as_deref() {
            let mut j = Json {
                out: &mut user,
                first: false,
            };
            j.obj(key!("user"));
            j.str(key!("id"), oid);
            j.end();
        }
        let mut token = Vec::new();
        if i.kid.is_some() || i.tid.is_some() || i.oid.is_some() || i.azp.is_some() {
            let mut j = Json {
                out: &mut token,
                first: false,
            };
            j.obj(key!("token"));
            j.opt_str(key!("kid"), i.kid.as_deref());
            j.opt_str(key!("tid"), i.tid.as_deref());
            j.opt_str(key!("oid"), i.oid.as_deref());
            j.opt_str(key!("azp"), i.azp.as_deref());
            j.end();
        }
        EcsIdentity {
            user: user.into(),
            token: token.into(),
        }
    })
}

/// Appends `s` as a JSON string literal (RFC 8259 escaping; non-ASCII kept as UTF-8).
pub fn json_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    json_escaped(s, out);
    out.push(b'"');
}

/// Appends the inside of `s`'s JSON string literal. Almost every value needs no
/// escape: one branch-free pass (which the compiler vectorises) finds that out, then
/// the bytes are copied at once.
fn json_escaped(s: &str, out: &mut Vec<u8>) {
    let bytes = s.as_bytes();
    if json_clean(bytes) {
        out.extend_from_slice(bytes);
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            let _ = write!(out, "\\u{:04x}", b);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Whether `bytes` holds no byte that JSON must escape (control characters, `"`, `\`,
/// DEL), tested eight bytes at a time with the exact "has a byte less than / equal
/// to" word tricks. Hand-written: it is one check on the hot path of every event, and
/// no maintained crate offers it on its own (JSON crates escape byte by byte).
fn json_clean(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Non-zero exactly when some byte of `x` is below `n` (for n <= 128).
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH;
    let has = |x: u64, b: u8| below(x ^ (ONES * u64::from(b)), 1);
    let dirty = |c: &[u8]| {
        let mut word = [b' '; 8];
        word[..c.len()].copy_from_slice(c);
        let x = u64::from_le_bytes(word);
        below(x, 0x20) | has(x, b'"') | has(x, b'\\') | has(x, 0x7f) != 0
    };
    if bytes.len() < 8 {
        // Padded with spaces, which need no escape.
        return !dirty(bytes);
    }
    let mut chunks = bytes.chunks_exact(8);
    if chunks.any(dirty) {
        return false;
    }
    // The last eight bytes, overlapping the last whole chunk: no byte-by-byte tail.
    bytes.last_chunk::<8>().is_none_or(|c| !dirty(c))
}

/// Appends the one-line human summary used as ECS `message` when the event has none,
/// as a JSON string literal.
fn json_summary(event: &Event, out: &mut Vec<u8>) {
    out.push(b'"');
    out.extend_from_slice(event.action.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(event.outcome.as_str().as_bytes());
    if let Some(r) = &event.reason {
        out.extend_from_slice(b" reason=");
        json_escaped(r, out);
    }
    if let Some(src) = event.source {
        out.extend_from_slice(b" source=");
        put_socket(out, src);
    }
    if let Some(route) = &event.route {
        out.extend_from_slice(b" route=");
        json_escaped(route, out);
    }
    out.push(b'"');
}

fn addr(j: &mut Json<'_>, k: &'static str, a: Option<SocketAddr>, bytes: Option<u64>) {
    if a.is_none() && bytes.is_none() {
        return;
    }
    j.obj(k);
    if let Some(a) = a {
        j.raw(key!("ip"), |out| put_ip(out, a.ip()));
        j.num(key!("port"), u64::from(a.port()));
    }
    j.opt_num(key!("bytes"), bytes);
    j.end();
}

/// Appends `event` as one ECS JSON object (no newline). The field table is in the
/// crate documentation and `FIELDS.md`.
pub fn write_ecs(event: &Event, out: &mut Vec<u8>) {
    // An event is about a kilobyte: one reservation rather than growth mid-event.
    out.reserve(1536);
    let mut j = Json::open(out);
    j.raw(key!("@timestamp"), |out| {
        write_rfc3339(event.timestamp, out)
    });
    match &event.message {
        Some(m) => j.str(key!("message"), m),
        None => {
            j.key(key!("message"));
            json_summary(event, j.out);
        }
    }
    j.lit(
        concat!(
            r#","ecs":{"version":""#,
            ecs_version!(),
            r#""},"event":{"id":""#
        )
        .as_bytes(),
    );
    j.out.extend_from_slice(&event.id.to_bytes());
    j.lit(br#"","kind":"event""#);
    j.lit(ecs_kind(event));
    j.opt_str(key!("reason"), event.reason.as_deref());
    j.opt_num(
        key!("duration"),
        event
            .durations
            .total
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
    );
    j.lit(
        concat!(
            r#","dataset":"intraport.audit"},"observer":{"product":""#,
            product!(),
            r#"","type":"proxy","version":""#,
            env!("CARGO_PKG_VERSION"),
            r#""}"#
        )
        .as_bytes(),
    );

    addr(&mut j, key!("source"), event.source, event.bytes_in);
    addr(
        &mut j,
        key!("destination"),
        event.destination,
        event.bytes_out,
    );
    if event.source.is_some() || event.destination.is_some() {
        j.lit(br#","network":{"transport":"tcp"}"#);
    }

    let tls = event.tls.as_deref();
    let subject = event
        .identity
        .as_deref()
        .and_then(|i| i.cert_subject.as_deref());
    if tls.is_some() || event.sni.is_some() || event.action == Action::TlsHandshake {
        j.obj(key!("tls"));
        if event.action == Action::TlsHandshake {
            j.bool(key!("established"), event.outcome == Outcome::Success);
        }
        if let Some(t) = tls {
            if t.version.is_some() {
                j.str(key!("version_protocol"), "tls");
            }
            j.opt_str(key!("version"), t.version.as_deref());
            j.opt_str(key!("cipher"), t.cipher.as_deref());
            j.opt_str(key!("next_protocol"), t.alpn.as_deref());
        }
        if event.sni.is_some() || subject.is_some() {
            j.obj(key!("client"));
            j.opt_str(key!("server_name"), event.sni.as_deref());
            j.opt_str(key!("subject"), subject);
            j.end();
        }
        j.end();
    }

    let identity = event.identity.as_deref().map(ecs_identity);
    if let Some(i) = identity {
        j.lit(&i.user);
    }

    if let Some(h) = event.http.as_deref() {
        j.obj(key!("http"));
        if h.method.is_some() || event.request_id.is_some() {
            j.obj(key!("request"));
            j.opt_str(key!("method"), h.method.as_deref());
            j.opt_str(key!("id"), event.request_id.as_deref());
            j.end();
        }
        if let Some(s) = h.status {
            j.obj(key!("response"));
            j.num(key!("status_code"), u64::from(s));
            j.end();
        }
        j.opt_str(key!("version"), h.version.as_deref());
        j.end();
        if let Some(p) = &h.path {
            j.obj(key!("url"));
            j.str(key!("path"), p);
            j.end();
        }
    }

    if let Some(r) = &event.rule {
        j.obj(key!("rule"));
        j.str(key!("name"), r);
        j.end();
    }

    j.obj(key!("intraport"));
    j.opt_num(key!("connection_id"), event.connection_id);
    if event.http.is_none() {
        j.opt_str(key!("request_id"), event.request_id.as_deref());
    }
    j.opt_str(key!("listener"), event.listener.as_deref());
    j.opt_str(key!("route"), event.route.as_deref());
    if let Some(u) = event.upstream {
        j.raw(key!("upstream"), |out| put_socket(out, u));
    }
    if let Some(i) = identity {
        j.lit(&i.token);
    }
    durations_and_ban(&mut j, event);
    j.end();
    j.close();
}

/// `"duration_us":{..}` (the durations known, in µs) and `"ban_seconds"`, the members
/// ECS `intraport` and OCSF `unmapped` share.
fn durations_and_ban(j: &mut Json<'_>, event: &Event) {
    let d = &event.durations;
    if d.handshake.is_some() || d.auth.is_some() || d.upstream.is_some() || d.total.is_some() {
        j.obj(key!("duration_us"));
        j.opt_num(key!("handshake"), micros(d.handshake));
        j.opt_num(key!("auth"), micros(d.auth));
        j.opt_num(key!("upstream"), micros(d.upstream));
        j.opt_num(key!("total"), micros(d.total));
        j.end();
    }
    j.opt_num(key!("ban_seconds"), event.ban_duration.map(|d| d.as_secs()));
}

// ---------------------------------------------------------------------------------
// CEF

/// Appends `s` escaped for a CEF header field: `\` and `|` get a backslash; line
/// breaks and other control characters (not allowed in the header) become spaces.
pub fn cef_header_escape(s: &str, out: &mut Vec<u8>) {
    for c in s.chars() {
        match c {
            '\\' => out.extend_from_slice(b"\\\\"),
            '|' => out.extend_from_slice(b"\\|"),
            c if c.is_control() => out.push(b' '),
            c => {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
}

/// Appends `s` escaped for a CEF extension value: `\` and `=` get a backslash, line
/// breaks become the two-character sequences `\n` and `\r`, other control characters
/// become spaces (CEF defines no escape for them and they must not break the line).
pub fn cef_value_escape(s: &str, out: &mut Vec<u8>) {
    // Printable ASCII other than `\` and `=` (most values) is copied at once.
    let clean = s.bytes().fold(true, |ok, b| {
        ok & (b > 0x1f) & (b < 0x7f) & (b != b'\\') & (b != b'=')
    });
    if clean {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    for c in s.chars() {
        match c {
            '\\' => out.extend_from_slice(b"\\\\"),
            '=' => out.extend_from_slice(b"\\="),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            c if c.is_control() => out.push(b' '),
            c => {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
}

struct Cef<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl Cef<'_> {
    fn key(&mut self, k: &str, suffix: &str) {
        if !self.first {
            self.out.push(b' ');
        }
        self.first = false;
        self.out.extend_from_slice(k.as_bytes());
        self.out.extend_from_slice(suffix.as_bytes());
        self.out.push(b'=');
    }
    fn kv(&mut self, k: &str, v: &str) {
        self.key(k, "");
        cef_value_escape(v, self.out);
    }
    /// A value that needs no escaping (numbers, addresses, ids), written by `put`.
    fn raw(&mut self, k: &str, put: impl FnOnce(&mut Vec<u8>)) {
        self.key(k, "");
        put(self.out);
    }
    fn opt(&mut self, k: &str, v: Option<&str>) {
        if let Some(v) = v {
            self.kv(k, v);
        }
    }
    /// A custom key (`cs1`, `cn2`, ...) preceded by its `...Label`.
    fn labeled(&mut self, k: &str, label: &str, v: Option<&str>) {
        if let Some(v) = v {
            self.key(k, "Label");
            cef_value_escape(label, self.out);
            self.kv(k, v);
        }
    }
    fn labeled_num(&mut self, k: &str, label: &str, v: Option<u64>) {
        if let Some(v) = v {
            self.key(k, "Label");
            cef_value_escape(label, self.out);
            self.num(k, Some(v));
        }
    }
    fn num(&mut self, k: &str, v: Option<u64>) {
        if let Some(v) = v {
            self.raw(k, |out| put_u64(out, v));
        }
    }
}

/// Appends `event` as one CEF record (`CEF:0|intraport|intraport|version|action|name|
/// severity|extension`), no newline. The key table is in `FIELDS.md`.
pub fn write_cef(event: &Event, out: &mut Vec<u8>) {
    out.extend_from_slice(b"CEF:0|");
    cef_header_escape(PRODUCT, out);
    out.push(b'|');
    cef_header_escape(PRODUCT, out);
    out.push(b'|');
    cef_header_escape(env!("CARGO_PKG_VERSION"), out);
    out.push(b'|');
    cef_header_escape(event.action.as_str(), out);
    out.push(b'|');
    cef_header_escape(event.action.title(), out);
    out.push(b'|');
    put_u64(out, u64::from(event.cef_severity()));
    out.push(b'|');

    let mut c = Cef { out, first: true };
    c.num("rt", Some(unix_millis(event.timestamp)));
    c.raw("externalId", |out| {
        out.extend_from_slice(&event.id.to_bytes())
    });
    c.kv("act", event.action.as_str());
    c.kv("outcome", event.outcome.as_str());
    c.opt("reason", event.reason.as_deref());
    if let Some(s) = event.source {
        c.raw("src", |out| put_ip(out, s.ip()));
        c.num("spt", Some(u64::from(s.port())));
    }
    if let Some(d) = event.destination {
        c.raw("dst", |out| put_ip(out, d.ip()));
        c.num("dpt", Some(u64::from(d.port())));
    }
    if event.source.is_some() || event.destination.is_some() {
        c.kv("proto", "TCP");
    }
    c.num("in", event.bytes_in);
    c.num("out", event.bytes_out);
    if let Some(h) = event.http.as_deref() {
        c.opt("requestMethod", h.method.as_deref());
        c.opt("request", h.path.as_deref());
        c.labeled_num("cn1", "httpStatus", h.status.map(u64::from));
    }
    if let Some(i) = event.identity.as_deref() {
        c.opt("suid", i.oid.as_deref());
        c.opt("suser", i.cert_subject.as_deref());
        c.labeled("cs5", "tenantId", i.tid.as_deref());
        c.labeled("cs6", "clientAppId", i.azp.as_deref());
        c.labeled("flexString2", "tokenKid", i.kid.as_deref());
    }
    c.labeled("cs1", "listener", event.listener.as_deref());
    c.labeled("cs2", "route", event.route.as_deref());
    c.labeled("cs3", "rule", event.rule.as_deref());
    c.labeled("cs4", "sni", event.sni.as_deref());
    c.labeled_num("cn2", "connectionId", event.connection_id);
    c.labeled_num(
        "cn3",
        "totalMs",
        event
            .durations
            .total
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    );
    c.labeled("flexString1", "requestId", event.request_id.as_deref());
    if let Some(t) = event.tls.as_deref() {
        c.opt("intraportTlsVersion", t.version.as_deref());
        c.opt("intraportTlsCipher", t.cipher.as_deref());
    }
    if let Some(u) = event.upstream {
        c.raw("intraportUpstream", |out| put_socket(out, u));
    }
    c.num("intraportHandshakeUs", micros(event.durations.handshake));
    c.num("intraportAuthUs", micros(event.durations.auth));
    c.num("intraportUpstreamUs", micros(event.durations.upstream));
    c.num(
        "intraportBanSeconds",
        event.ban_duration.map(|d| d.as_secs()),
    );
    c.opt("msg", event.message.as_deref());
}

// ---------------------------------------------------------------------------------
// RFC 5424

/// Syslog facilities by RFC 5424 number.
pub const FACILITIES: [(&str, u8); 24] = [
    ("kern", 0),
    ("user", 1),
    ("mail", 2),
    ("daemon", 3),
    ("auth", 4),
    ("syslog", 5),
    ("lpr", 6),
    ("news", 7),
    ("uucp", 8),
    ("cron", 9),
    ("authpriv", 10),
    ("ftp", 11),
    ("ntp", 12),
    ("audit", 13),
    ("alert", 14),
    ("clock", 15),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

/// The fixed header fields of RFC 5424 messages from one sink.
#[derive(Clone, Debug)]
pub struct SyslogHeader {
    /// Facility number (0..=23).
    pub facility: u8,
    /// HOSTNAME, already restricted to PRINTUSASCII and 255 characters.
    pub hostname: String,
    /// APP-NAME, at most 48 characters.
    pub app_name: String,
    /// PROCID.
    pub procid: String,
    /// The SD-ID of the structured-data element (`name@enterprise`).
    pub sd_id: String,
}

impl SyslogHeader {
    /// A header with each field restricted to what RFC 5424 allows (PRINTUSASCII,
    /// length limits; `-` when empty).
    pub fn new(facility: u8, hostname: &str, app_name: &str, sd_id: &str) -> SyslogHeader {
        SyslogHeader {
            facility: facility.min(23),
            hostname: header_field(hostname, 255),
            app_name: header_field(app_name, 48),
            procid: std::process::id().to_string(),
            sd_id: sd_name(sd_id),
        }
    }
}

/// Restricts `s` to PRINTUSASCII (33..=126) and `max` characters; `-` when empty.
pub fn header_field(s: &str, max: usize) -> String {
    let f: String = s
        .bytes()
        .filter(|b| (33..=126).contains(b))
        .take(max)
        .map(char::from)
        .collect();
    if f.is_empty() { "-".into() } else { f }
}

/// Restricts `s` to an SD-NAME: PRINTUSASCII except `=`, space, `]`, `"`; 32 chars
/// before the `@` part is not checked (the enterprise number follows it).
fn sd_name(s: &str) -> String {
    let f: String = s
        .bytes()
        .filter(|b| (33..=126).contains(b) && !matches!(b, b'=' | b']' | b'"'))
        .take(64)
        .map(char::from)
        .collect();
    if f.is_empty() {
        "intraport@32473".into()
    } else {
        f
    }
}

/// Appends `s` escaped as an RFC 5424 PARAM-VALUE: `"`, `\` and `]` get a backslash
/// (section 6.3.3); everything else, UTF-8 included, is kept.
pub fn sd_value_escape(s: &str, out: &mut Vec<u8>) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if matches!(b, b'"' | b'\\' | b']') {
            out.extend_from_slice(&bytes[start..i]);
            out.push(b'\\');
            out.push(b);
            start = i + 1;
        }
    }
    out.extend_from_slice(&bytes[start..]);
}

fn sd_param(out: &mut Vec<u8>, name: &str, value: &str) {
    sd_raw(out, name, |out| sd_value_escape(value, out));
}

/// A PARAM whose value `put` writes (already escaped, or needing no escape).
fn sd_raw(out: &mut Vec<u8>, name: &str, put: impl FnOnce(&mut Vec<u8>)) {
    out.push(b' ');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"=\"");
    put(out);
    out.push(b'"');
}

/// Appends one RFC 5424 message: header, one structured-data element with the event's
/// key fields, and the event in `body` format as MSG. No framing, no newline.
pub fn write_syslog(header: &SyslogHeader, body: Format, event: &Event, out: &mut Vec<u8>) {
    let pri = u16::from(header.facility) * 8 + u16::from(event.syslog_severity());
    out.push(b'<');
    put_u64(out, u64::from(pri));
    out.extend_from_slice(b">1 ");
    write_rfc3339(event.timestamp, out);
    out.push(b' ');
    out.extend_from_slice(header.hostname.as_bytes());
    out.push(b' ');
    out.extend_from_slice(header.app_name.as_bytes());
    out.push(b' ');
    out.extend_from_slice(header.procid.as_bytes());
    out.push(b' ');
    out.extend_from_slice(event.action.as_str().as_bytes());
    out.extend_from_slice(b" [");
    out.extend_from_slice(header.sd_id.as_bytes());
    sd_raw(out, "id", |out| out.extend_from_slice(&event.id.to_bytes()));
    sd_param(out, "outcome", event.outcome.as_str());
    if let Some(r) = &event.reason {
        sd_param(out, "reason", r);
    }
    if let Some(s) = event.source {
        sd_raw(out, "src", |out| put_socket(out, s));
    }
    if let Some(d) = event.destination {
        sd_raw(out, "dst", |out| put_socket(out, d));
    }
    let fields = [
        ("listener", event.listener.as_deref()),
        ("route", event.route.as_deref()),
        ("rule", event.rule.as_deref()),
        ("sni", event.sni.as_deref()),
        ("request", event.request_id.as_deref()),
    ];
    for (k, v) in fields {
        if let Some(v) = v {
            sd_param(out, k, v);
        }
    }
    if let Some(c) = event.connection_id {
        sd_raw(out, "conn", |out| put_u64(out, c));
    }
    if let Some(s) = event.http.as_deref().and_then(|h| h.status) {
        sd_raw(out, "status", |out| put_u64(out, u64::from(s)));
    }
    if let Some(oid) = event.identity.as_deref().and_then(|i| i.oid.as_deref()) {
        sd_param(out, "user", oid);
    }
    out.extend_from_slice(b"] ");
    write_event(body, event, out);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::event::{Durations, HttpInfo, Identity, TlsInfo};
    use proptest::prelude::*;
    use std::time::Duration;

    pub(crate) fn sample() -> Event {
        let mut e = Event::new(Action::UpstreamResult, Outcome::Success);
        e.source = Some("10.1.2.3:50000".parse().unwrap());
        e.destination = Some("[::1]:8443".parse().unwrap());
        e.listener = Some("public".into());
        e.route = Some("api".into());
        e.rule = Some("require.roles".into());
        e.sni = Some("api.example.test".into());
        e.connection_id = Some(42);
        e.request_id = Some("req-1".into());
        e.tls = Some(Box::new(TlsInfo {
            version: Some("1.3".into()),
            cipher: Some("TLS13_AES_128_GCM_SHA256".into()),
            alpn: Some("h2".into()),
        }));
        e.identity = Some(std::sync::Arc::new(Identity {
            kid: Some("k1".into()),
            tid: Some("t1".into()),
            oid: Some("o1".into()),
            azp: Some("a1".into()),
            cert_subject: None,
            rendered: Default::default(),
        }));
        e.http = Some(Box::new(HttpInfo {
            method: Some("GET".into()),
            path: Some("/v1/items".into()),
            status: Some(200),
            version: Some("2".into()),
        }));
        e.bytes_in = Some(100);
        e.bytes_out = Some(2000);
        e.durations = Durations {
            handshake: Some(Duration::from_micros(1500)),
            auth: Some(Duration::from_micros(40)),
            upstream: Some(Duration::from_millis(3)),
            total: Some(Duration::from_millis(5)),
        };
        e
    }

    #[test]
    fn ecs_is_json_with_nested_fields() {
        let e = sample();
        let mut v = Vec::new();
        write_ecs(&e, &mut v);
        let j: serde_json::Value = serde_json::from_slice(&v).unwrap();
        assert_eq!(j["event"]["action"], "upstream-result");
        assert_eq!(j["event"]["category"][0], "web");
        assert_eq!(j["event"]["duration"], 5_000_000);
        assert_eq!(j["source"]["ip"], "10.1.2.3");
        assert_eq!(j["source"]["port"], 50000);
        assert_eq!(j["source"]["bytes"], 100);
        assert_eq!(j["destination"]["ip"], "::1");
        assert_eq!(j["destination"]["bytes"], 2000);
        assert_eq!(j["tls"]["version"], "1.3");
        assert_eq!(j["tls"]["client"]["server_name"], "api.example.test");
        assert_eq!(j["http"]["response"]["status_code"], 200);
        assert_eq!(j["http"]["request"]["id"], "req-1");
        assert_eq!(j["url"]["path"], "/v1/items");
        assert_eq!(j["user"]["id"], "o1");
        assert_eq!(j["rule"]["name"], "require.roles");
        assert_eq!(j["intraport"]["token"]["tid"], "t1");
        assert_eq!(j["intraport"]["duration_us"]["handshake"], 1500);
        assert_eq!(j["event"]["id"], e.id.to_string());
        assert!(j["@timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn the_kind_table_agrees_with_category_and_type() {
        for action in Action::ALL {
            for outcome in [Outcome::Success, Outcome::Failure, Outcome::Unknown] {
                for http in [false, true] {
                    let mut e = Event::new(action, outcome);
                    e.http = http.then(Default::default);
                    let mut v = Vec::new();
                    write_ecs(&e, &mut v);
                    let j: serde_json::Value = serde_json::from_slice(&v).unwrap();
                    let list = |k: &str| -> Vec<String> {
                        j["event"][k]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|s| s.as_str().unwrap().to_string())
                            .collect()
                    };
                    assert_eq!(list("category"), ecs_category(&e), "{action} {outcome:?}");
                    assert_eq!(list("type"), ecs_type(&e), "{action} {outcome:?}");
                    assert_eq!(j["event"]["action"], action.as_str());
                    assert_eq!(j["event"]["outcome"], outcome.as_str());
                }
            }
        }
    }

    #[test]
    fn an_identity_is_rendered_once_and_its_clone_afresh() {
        let mut e = Event::new(Action::Authentication, Outcome::Success);
        let id = std::sync::Arc::new(Identity {
            kid: Some("k1".into()),
            oid: Some("o1".into()),
            ..Identity::default()
        });
        e.identity = Some(id.clone());
        let (mut first, mut second) = (Vec::new(), Vec::new());
        write_ecs(&e, &mut first);
        assert!(id.rendered.0.get().is_some());
        write_ecs(&e, &mut second);
        let (a, b): (serde_json::Value, serde_json::Value) = (
            serde_json::from_slice(&first).unwrap(),
            serde_json::from_slice(&second).unwrap(),
        );
        assert_eq!(a["user"]["id"], "o1");
        // The token's ids are the only member of `intraport` here: no stray comma.
        assert_eq!(a["intraport"]["token"]["kid"], "k1");
        assert_eq!(a["intraport"], b["intraport"]);
        assert_eq!(a["user"], b["user"]);
        // A clone may be changed before it is written: it is rendered from its fields.
        let mut changed = (*id).clone();
        assert!(changed.rendered.0.get().is_none());
        assert_eq!(changed, *id, "the rendered text takes no part in equality");
        changed.oid = Some("o2".into());
        e.identity = Some(std::sync::Arc::new(changed));
        let mut third = Vec::new();
        write_ecs(&e, &mut third);
        let c: serde_json::Value = serde_json::from_slice(&third).unwrap();
        assert_eq!(c["user"]["id"], "o2");
        assert_eq!(c["intraport"]["token"]["oid"], "o2");
        // A certificate-only identity renders no token members: nothing, not a comma.
        e.identity = Some(std::sync::Arc::new(Identity {
            cert_subject: Some("CN=client".into()),
            ..Identity::default()
        }));
        e.ban_duration = Some(std::time::Duration::from_secs(60));
        let mut fourth = Vec::new();
        write_ecs(&e, &mut fourth);
        let d: serde_json::Value = serde_json::from_slice(&fourth).unwrap();
        assert_eq!(d["intraport"]["ban_seconds"], 60);
    }

    #[test]
    fn ecs_of_a_bare_event_is_valid() {
        let e = Event::new(Action::Reload, Outcome::Failure).with_reason("bad \"file\"\n");
        let mut v = Vec::new();
        write_ecs(&e, &mut v);
        let j: serde_json::Value = serde_json::from_slice(&v).unwrap();
        assert_eq!(j["event"]["reason"], "bad \"file\"\n");
        assert_eq!(j["event"]["category"][0], "configuration");
        assert!(!v.contains(&b'\n'));
    }

    #[test]
    fn cef_has_header_and_extension() {
        let e = sample();
        let mut v = Vec::new();
        write_cef(&e, &mut v);
        let s = String::from_utf8(v).unwrap();
        assert!(s.starts_with("CEF:0|intraport|intraport|"), "{s}");
        assert!(s.contains("|upstream-result|Upstream result|3|"), "{s}");
        assert!(s.contains(" src=10.1.2.3 spt=50000 "), "{s}");
        assert!(s.contains("cs2Label=route cs2=api"), "{s}");
        assert!(s.contains("cn1Label=httpStatus cn1=200"), "{s}");
    }

    #[test]
    fn syslog_frame_fields() {
        let mut e = sample();
        e.reason = Some("a\"b]c\\d".into());
        let h = SyslogHeader::new(16, "host name", "intraport", "intraport@32473");
        let mut v = Vec::new();
        write_syslog(&h, Format::Cef, &e, &mut v);
        let s = String::from_utf8(v).unwrap();
        // local0.info = 16*8+6
        assert!(s.starts_with("<134>1 "), "{s}");
        assert!(s.contains(" hostname intraport "), "{s}");
        assert!(s.contains(" upstream-result [intraport@32473 id=\""), "{s}");
        assert!(s.contains(r#"reason="a\"b\]c\\d""#), "{s}");
        assert!(s.contains("] CEF:0|"), "{s}");
        // An OCSF message is the whole event after the structured data.
        let mut v = Vec::new();
        write_syslog(&h, Format::Ocsf, &e, &mut v);
        let s = String::from_utf8(v).unwrap();
        let (_, msg) = s.split_once("] {").unwrap();
        let j: serde_json::Value = serde_json::from_str(&format!("{{{msg}")).unwrap();
        assert_eq!(j["metadata"]["uid"], e.id.to_string());
    }

    /// Reverses [`cef_value_escape`] for the characters it escapes.
    fn cef_unescape(s: &str) -> String {
        let mut out = String::new();
        let mut it = s.chars();
        while let Some(c) = it.next() {
            if c == '\\' {
                match it.next() {
                    Some('n') => out.push('\n'),
                    Some('r') => out.push('\r'),
                    Some(o) => out.push(o),
                    None => out.push('\\'),
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    fn sd_unescape(s: &str) -> String {
        let mut out = String::new();
        let mut it = s.chars().peekable();
        while let Some(c) = it.next() {
            if c == '\\' && matches!(it.peek(), Some('"' | '\\' | ']')) {
                out.extend(it.next());
            } else {
                out.push(c);
            }
        }
        out
    }

    fn hostile() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just('|'),
                Just('\\'),
                Just('='),
                Just('"'),
                Just(']'),
                Just('\n'),
                Just('\r'),
                Just(' '),
                Just('é'),
                Just('\u{1F600}'),
                any::<char>(),
            ],
            0..40,
        )
        .prop_map(|v| v.into_iter().collect())
    }

    proptest! {
        #[test]
        fn cef_value_roundtrips_and_never_breaks_the_line(s in hostile()) {
            let mut v = Vec::new();
            cef_value_escape(&s, &mut v);
            let esc = String::from_utf8(v).unwrap();
            prop_assert!(!esc.contains('\n') && !esc.contains('\r'));
            // Every `=` is escaped: no key=value split inside a value.
            let b = esc.as_bytes();
            for (i, &c) in b.iter().enumerate() {
                if c == b'=' {
                    let backslashes = b[..i].iter().rev().take_while(|&&x| x == b'\\').count();
                    prop_assert!(backslashes % 2 == 1, "unescaped = in {esc:?}");
                }
            }
            let expected: String = s
                .chars()
                .map(|c| if c.is_control() && c != '\n' && c != '\r' { ' ' } else { c })
                .collect();
            prop_assert_eq!(cef_unescape(&esc), expected);
        }

        #[test]
        fn cef_header_never_has_a_bare_pipe(s in hostile()) {
            let mut v = Vec::new();
            cef_header_escape(&s, &mut v);
            let esc = String::from_utf8(v).unwrap();
            prop_assert!(!esc.chars().any(char::is_control));
            let b = esc.as_bytes();
            for (i, &c) in b.iter().enumerate() {
                if c == b'|' {
                    let backslashes = b[..i].iter().rev().take_while(|&&x| x == b'\\').count();
                    prop_assert!(backslashes % 2 == 1, "bare | in {esc:?}");
                }
            }
        }

        #[test]
        fn sd_value_roundtrips(s in hostile()) {
            let mut v = Vec::new();
            sd_value_escape(&s, &mut v);
            let esc = String::from_utf8(v).unwrap();
            // No unescaped `"` or `]` that would end the value or the element early.
            let b = esc.as_bytes();
            for (i, &c) in b.iter().enumerate() {
                if c == b'"' || c == b']' {
                    let backslashes = b[..i].iter().rev().take_while(|&&x| x == b'\\').count();
                    prop_assert!(backslashes % 2 == 1, "unescaped {} in {esc:?}", c as char);
                }
            }
            prop_assert_eq!(sd_unescape(&esc), s);
        }

        #[test]
        fn addresses_and_numbers_match_display(a in any::<SocketAddr>(), n in any::<u64>()) {
            let mut v = Vec::new();
            put_socket(&mut v, a);
            prop_assert_eq!(String::from_utf8(v).unwrap(), a.to_string());
            let mut v = Vec::new();
            put_ip(&mut v, a.ip());
            prop_assert_eq!(String::from_utf8(v).unwrap(), a.ip().to_string());
            let mut v = Vec::new();
            put_u64(&mut v, n);
            prop_assert_eq!(String::from_utf8(v).unwrap(), n.to_string());
        }

        #[test]
        fn json_clean_agrees_with_the_byte_by_byte_rule(
            v in proptest::collection::vec(prop_oneof![30 => 0x20u8..0x7f, 1 => any::<u8>()], 0..40)
        ) {
            let naive = v.iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\' && b != 0x7f);
            prop_assert_eq!(json_clean(&v), naive);
        }

        #[test]
        fn json_string_matches_serde_json(s in hostile()) {
            let mut v = Vec::new();
            json_string(&s, &mut v);
            let back: String = serde_json::from_slice(&v).unwrap();
            prop_assert_eq!(back, s);
        }

        #[test]
        fn ecs_with_hostile_fields_parses(s in hostile()) {
            let mut e = sample();
            e.reason = Some(s.as_str().into());
            e.route = Some(s.as_str().into());
            e.message = Some(s.as_str().into());
            e.identity = Some(std::sync::Arc::new(Identity {
                kid: Some(s.as_str().into()),
                oid: Some(s.as_str().into()),
                ..Identity::default()
            }));
            let mut v = Vec::new();
            write_ecs(&e, &mut v);
            prop_assert!(!v.contains(&b'\n'));
            let j: serde_json::Value = serde_json::from_slice(&v).unwrap();
            prop_assert_eq!(j["event"]["reason"].as_str().unwrap(), s.as_str());
            prop_assert_eq!(j["intraport"]["route"].as_str().unwrap(), s.as_str());
            prop_assert_eq!(j["user"]["id"].as_str().unwrap(), s.as_str());
            prop_assert_eq!(j["intraport"]["token"]["kid"].as_str().unwrap(), s.as_str());
        }

        #[test]
        fn ocsf_with_hostile_fields_parses(s in hostile()) {
            let mut e = sample();
            e.reason = Some(s.as_str().into());
            e.route = Some(s.as_str().into());
            e.message = Some(s.as_str().into());
            e.http = Some(Box::new(HttpInfo {
                method: Some(s.as_str().into()),
                ..HttpInfo::default()
            }));
            e.identity = Some(std::sync::Arc::new(Identity {
                kid: Some(s.as_str().into()),
                oid: Some(s.as_str().into()),
                ..Identity::default()
            }));
            let mut v = Vec::new();
            write_ocsf(&e, &mut v);
            prop_assert!(!v.contains(&b'\n'));
            let j: serde_json::Value = serde_json::from_slice(&v).unwrap();
            prop_assert_eq!(j["status_detail"].as_str().unwrap(), s.as_str());
            prop_assert_eq!(j["unmapped"]["route"].as_str().unwrap(), s.as_str());
            prop_assert_eq!(j["actor"]["user"]["uid"].as_str().unwrap(), s.as_str());
            prop_assert_eq!(j["unmapped"]["token_kid"].as_str().unwrap(), s.as_str());
            prop_assert_eq!(j["http_request"]["http_method"].as_str().unwrap(), s.as_str());
        }
    }
}
