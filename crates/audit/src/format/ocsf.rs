//! OCSF (Open Cybersecurity Schema Framework) 1.7.0 events, one JSON object each.
//!
//! Every audit event maps to one OCSF class: connections, TLS handshakes and TCP
//! routes to Network Activity (4001), HTTP requests to HTTP Activity (4002), refused
//! tokens to Authentication (3002), bans to Detection Finding (2004) and reloads to
//! Application Lifecycle (6002). What OCSF has no attribute for (listener, route, rule,
//! token `kid`, microsecond durations) goes in `unmapped`. The identity of an HTTP
//! request (its token's `oid`, `tid`, `azp`, or its certificate subject) is the `actor`
//! of the `host` profile, declared in `metadata.profiles`. The mapping is in
//! `FIELDS.md`; the gateway's end-to-end tests check the events they produce against
//! the OCSF schema, constraints included.

use std::time::Duration;

use super::{Json, json_escaped, put_ip, put_socket, put_u64};
use crate::event::{Action, Event, Identity, Outcome};
use crate::timefmt::unix_millis;

/// The OCSF schema version the events declare in `metadata.version`.
pub const OCSF_VERSION: &str = "1.7.0";

/// An OCSF class: its uid, its name and its category's uid and name.
struct Class {
    uid: u32,
    name: &'static str,
    category: u32,
    category_name: &'static str,
}

impl Class {
    const fn new(
        uid: u32,
        name: &'static str,
        category: u32,
        category_name: &'static str,
    ) -> Class {
        Class {
            uid,
            name,
            category,
            category_name,
        }
    }
}

const NETWORK_ACTIVITY: Class = Class::new(4001, "Network Activity", 4, "Network Activity");
const HTTP_ACTIVITY: Class = Class::new(4002, "HTTP Activity", 4, "Network Activity");
const AUTHENTICATION: Class = Class::new(3002, "Authentication", 3, "Identity & Access Management");
const DETECTION_FINDING: Class = Class::new(2004, "Detection Finding", 2, "Findings");
const APPLICATION_LIFECYCLE: Class =
    Class::new(6002, "Application Lifecycle", 6, "Application Activity");

/// OCSF `activity_id` 99: the activity is named in `activity_name`.
const OTHER: u32 = 99;

/// An event's class and activity (id and name).
fn class_of(event: &Event) -> (&'static Class, u32, &'static str) {
    let failed = event.outcome == Outcome::Failure;
    let http = event.http.as_deref();
    match event.action {
        Action::ConnectionAccepted => (&NETWORK_ACTIVITY, 1, "Open"),
        Action::ConnectionRefused => (&NETWORK_ACTIVITY, 5, "Refuse"),
        Action::ConnectionClosed => (&NETWORK_ACTIVITY, 2, "Close"),
        Action::TlsHandshake => (&NETWORK_ACTIVITY, OTHER, "TLS Handshake"),
        Action::Authentication => (&AUTHENTICATION, 1, "Logon"),
        Action::PolicyDecision | Action::UpstreamResult if http.is_some() => {
            let (id, name) = http_activity(http.and_then(|h| h.method.as_deref()));
            (&HTTP_ACTIVITY, id, name)
        }
        // A TCP route: refused by its policy, or the end of its relayed connection.
        Action::PolicyDecision => (&NETWORK_ACTIVITY, 5, "Refuse"),
        Action::UpstreamResult if failed => (&NETWORK_ACTIVITY, 4, "Fail"),
        Action::UpstreamResult => (&NETWORK_ACTIVITY, 6, "Traffic"),
        Action::Ban => (&DETECTION_FINDING, 1, "Create"),
        Action::Unban => (&DETECTION_FINDING, 3, "Close"),
        Action::Reload => (&APPLICATION_LIFECYCLE, 8, "Update"),
    }
}

/// HTTP Activity's `activity_id` is the request method.
fn http_activity(method: Option<&str>) -> (u32, &'static str) {
    match method {
        Some("CONNECT") => (1, "Connect"),
        Some("DELETE") => (2, "Delete"),
        Some("GET") => (3, "Get"),
        Some("HEAD") => (4, "Head"),
        Some("OPTIONS") => (5, "Options"),
        Some("POST") => (6, "Post"),
        Some("PUT") => (7, "Put"),
        Some("TRACE") => (8, "Trace"),
        Some("PATCH") => (9, "Patch"),
        _ => (OTHER, "Other"),
    }
}

/// OCSF `severity_id` and its name, from the CEF severity (0–10) the other formats
/// share: success is informational, a failure low, a refused credential or a failed
/// reload medium, a ban high.
fn severity(event: &Event) -> (u32, &'static str) {
    match event.cef_severity() {
        0..=3 => (1, "Informational"),
        4..=5 => (2, "Low"),
        6 => (3, "Medium"),
        7..=8 => (4, "High"),
        _ => (5, "Critical"),
    }
}

fn status(outcome: Outcome) -> (u32, &'static str) {
    match outcome {
        Outcome::Success => (1, "Success"),
        Outcome::Failure => (2, "Failure"),
        Outcome::Unknown => (0, "Unknown"),
    }
}

/// Whole milliseconds of `d`, at most `max`: OCSF durations are integers of
/// milliseconds, `duration` a signed 64-bit one, `latency` and `handshake_dur` 32-bit.
fn millis(d: Duration, max: u64) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).min(max)
}

const I32_MAX: u64 = i32::MAX as u64;
const I64_MAX: u64 = i64::MAX as u64;

/// `src_endpoint` / `dst_endpoint`: the address, without a port of 0 (not known: a
/// client named by a trusted proxy, a banned address), and a host name (the SNI).
fn endpoint(j: &mut Json<'_>, k: &'static str, a: std::net::SocketAddr, host: Option<&str>) {
    j.obj(k);
    j.raw(key!("ip"), |out| put_ip(out, a.ip()));
    if a.port() != 0 {
        j.num(key!("port"), u64::from(a.port()));
    }
    j.opt_str(key!("hostname"), host);
    j.end();
}

/// `actor`: who made the request, as its token or certificate says (the `host`
/// profile's, in Network and HTTP Activity), with its `user` unless the class has its
/// own (Authentication). OCSF's `actor` needs a user or an application: nothing is
/// written without one.
fn actor(j: &mut Json<'_>, i: &Identity, with_user: bool) {
    let user = with_user && names_user(i);
    if !user && i.azp.is_none() {
        return;
    }
    j.obj(key!("actor"));
    if user {
        write_user(j, i);
    }
    j.opt_str(key!("app_uid"), i.azp.as_deref());
    j.end();
}

/// Whether the identity names a user: OCSF's `user` needs a `uid` or a `name`.
fn names_user(i: &Identity) -> bool {
    i.oid.is_some() || i.cert_subject.is_some()
}

/// `user`: the token's `oid` as `uid`, the certificate's subject as `name`, the tenant
/// (`tid`) as the user's organization.
fn write_user(j: &mut Json<'_>, i: &Identity) {
    j.obj(key!("user"));
    j.opt_str(key!("uid"), i.oid.as_deref());
    j.opt_str(key!("name"), i.cert_subject.as_deref());
    if let Some(tid) = i.tid.as_deref() {
        j.obj(key!("org"));
        j.str(key!("uid"), tid);
        j.end();
    }
    j.end();
}

/// Appends `event` as one OCSF 1.7.0 JSON object (no newline). The mapping is in the
/// crate documentation and `FIELDS.md`.
pub fn write_ocsf(event: &Event, out: &mut Vec<u8>) {
    out.reserve(1536);
    let (class, activity, activity_name) = class_of(event);
    let method = event.http.as_deref().and_then(|h| h.method.as_deref());
    let identity = event.identity.as_deref();
    // Network and HTTP events carry the requester as the `host` profile's actor.
    let as_actor = matches!(class.uid, 4001 | 4002)
        && identity.is_some_and(|i| names_user(i) || i.azp.is_some());
    let mut j = Json::open(out);
    j.num(key!("time"), unix_millis(event.timestamp));
    j.num(key!("class_uid"), u64::from(class.uid));
    j.str(key!("class_name"), class.name);
    j.num(key!("category_uid"), u64::from(class.category));
    j.str(key!("category_name"), class.category_name);
    j.num(key!("activity_id"), u64::from(activity));
    // HTTP Activity's "Other": the method itself (a client's token, escaped).
    let method = method.filter(|_| activity == OTHER && class.uid == 4002);
    j.str(key!("activity_name"), method.unwrap_or(activity_name));
    j.num(
        key!("type_uid"),
        u64::from(class.uid) * 100 + u64::from(activity),
    );
    j.key(key!("type_name"));
    j.out.push(b'"');
    json_escaped(class.name, j.out);
    j.out.extend_from_slice(b": ");
    json_escaped(method.unwrap_or(activity_name), j.out);
    j.out.push(b'"');
    let (sev, sev_name) = severity(event);
    j.num(key!("severity_id"), u64::from(sev));
    j.str(key!("severity"), sev_name);
    // A finding's status is its reviewer's (New, In Progress, Resolved, ...), not ours:
    // the ban's start and end are its activities.
    if class.uid != 2004 {
        let (st, st_name) = status(event.outcome);
        j.num(key!("status_id"), u64::from(st));
        j.str(key!("status"), st_name);
    }
    j.opt_str(key!("status_detail"), event.reason.as_deref());
    match &event.message {
        Some(m) => j.str(key!("message"), m),
        None => {
            j.key(key!("message"));
            super::json_summary(event, j.out);
        }
    }
    j.opt_num(
        key!("duration"),
        event.durations.total.map(|d| millis(d, I64_MAX)),
    );

    j.obj(key!("metadata"));
    j.lit(
        concat!(
            r#","version":"1.7.0","product":{"name":""#,
            product!(),
            r#"","vendor_name":""#,
            product!(),
            r#"","version":""#,
            env!("CARGO_PKG_VERSION"),
            r#""},"log_name":"intraport.audit""#
        )
        .as_bytes(),
    );
    j.raw(key!("uid"), |out| {
        out.extend_from_slice(&event.id.to_bytes())
    });
    if as_actor {
        j.lit(br#","profiles":["host"]"#);
    }
    j.end();

    match class.uid {
        2004 => finding(&mut j, event),
        6002 => j.lit(
            concat!(
                r#","app":{"name":""#,
                product!(),
                r#"","vendor_name":""#,
                product!(),
                r#"","version":""#,
                env!("CARGO_PKG_VERSION"),
                r#""}"#
            )
            .as_bytes(),
        ),
        _ => network(&mut j, event, class.uid, as_actor),
    }

    unmapped(&mut j, event);
    j.close();
}

/// The members of Network, HTTP Activity and Authentication events.
fn network(j: &mut Json<'_>, event: &Event, class: u32, as_actor: bool) {
    if let Some(s) = event.source {
        endpoint(j, key!("src_endpoint"), s, None);
    }
    if let Some(d) = event.destination {
        endpoint(j, key!("dst_endpoint"), d, event.sni.as_deref());
    }
    let identity = event.identity.as_deref();
    if class == 3002 {
        authentication(j, event, identity);
    } else {
        if let Some(c) = event.connection_id {
            j.obj(key!("connection_info"));
            j.raw(key!("uid"), |out| put_u64(out, c));
            // A gateway cannot tell whether its clients come from outside.
            j.lit(br#","direction_id":0,"direction":"Unknown","protocol_name":"tcp","protocol_num":6"#);
            match event.source.map(|s| s.ip().to_canonical()) {
                Some(std::net::IpAddr::V4(_)) => j.lit(
                    br#","protocol_ver_id":4,"protocol_ver":"Internet Protocol version 4 (IPv4)""#,
                ),
                Some(std::net::IpAddr::V6(_)) => j.lit(
                    br#","protocol_ver_id":6,"protocol_ver":"Internet Protocol version 6 (IPv6)""#,
                ),
                None => {}
            }
            j.end();
        }
        // OCSF counts bytes from the destination's side: `bytes_in` went to the
        // source (the client), `bytes_out` came from it.
        if event.bytes_in.is_some() || event.bytes_out.is_some() {
            j.obj(key!("traffic"));
            j.opt_num(key!("bytes_in"), event.bytes_out);
            j.opt_num(key!("bytes_out"), event.bytes_in);
            let total = event
                .bytes_in
                .unwrap_or(0)
                .saturating_add(event.bytes_out.unwrap_or(0));
            j.num(key!("bytes"), total);
            j.end();
        }
        if let (true, Some(i)) = (as_actor, identity) {
            actor(j, i, true);
        }
    }
    // Authentication has no `tls`.
    let tls = event
        .tls
        .as_deref()
        .filter(|t| t.version.is_some() && class != 3002);
    if let Some(t) = tls {
        // `version` is required in OCSF's `tls`: a failed handshake's SNI stays in
        // `dst_endpoint.hostname` alone.
        j.obj(key!("tls"));
        j.opt_str(key!("version"), t.version.as_deref());
        j.opt_str(key!("cipher"), t.cipher.as_deref());
        j.opt_str(key!("sni"), event.sni.as_deref());
        j.opt_num(
            key!("handshake_dur"),
            event.durations.handshake.map(|d| millis(d, I32_MAX)),
        );
        j.end();
    }
    if let Some(h) = event.http.as_deref() {
        j.obj(key!("http_request"));
        j.opt_str(key!("http_method"), h.method.as_deref());
        if let Some(p) = &h.path {
            j.obj(key!("url"));
            j.str(key!("path"), p);
            j.end();
        }
        j.opt_str(key!("uid"), event.request_id.as_deref());
        j.opt_str(key!("version"), h.version.as_deref());
        j.end();
        if let Some(code) = h.status {
            j.obj(key!("http_response"));
            j.num(key!("code"), u64::from(code));
            j.opt_num(
                key!("latency"),
                event.durations.upstream.map(|d| millis(d, I32_MAX)),
            );
            j.end();
        }
    }
}

/// Authentication's own members (the gateway writes one for a refused bearer token):
/// the user, required, and `unknown` when the token named nobody it could trust (a
/// refused token's claims are not); the protocol; the route as the service logged on
/// to.
fn authentication(j: &mut Json<'_>, event: &Event, identity: Option<&Identity>) {
    match identity.filter(|i| names_user(i)) {
        Some(i) => write_user(j, i),
        None => j.lit(br#","user":{"name":"unknown","type_id":0,"type":"Unknown"}"#),
    }
    j.lit(br#","auth_protocol_id":6,"auth_protocol":"OAUTH 2.0""#);
    j.lit(br#","logon_type_id":3,"logon_type":"Network","is_remote":true"#);
    if let Some(r) = &event.route {
        j.obj(key!("service"));
        j.str(key!("name"), r);
        j.end();
    }
    if let Some(i) = identity {
        actor(j, i, false);
    }
}

/// A ban is a finding about its source: created by the ban, closed by the unban, with
/// the same `finding_info.uid` so that a SIEM pairs them.
fn finding(j: &mut Json<'_>, event: &Event) {
    j.obj(key!("finding_info"));
    j.key(key!("uid"));
    j.out.extend_from_slice(b"\"intraport-ban-");
    if let Some(s) = event.source {
        put_ip(j.out, s.ip());
    }
    j.out.push(b'"');
    j.lit(br#","title":"Source banned","types":["ban"]"#);
    j.end();
    j.bool(key!("is_alert"), event.action == Action::Ban);
    if let Some(s) = event.source {
        j.key(key!("evidences"));
        j.out.push(b'[');
        let mut e = Json::open(&mut *j.out);
        endpoint(&mut e, key!("src_endpoint"), s, None);
        e.close();
        j.out.push(b']');
    }
}

/// `unmapped`: what OCSF has no attribute for.
fn unmapped(j: &mut Json<'_>, event: &Event) {
    j.obj(key!("unmapped"));
    j.opt_num(key!("connection_id"), event.connection_id);
    if event.http.is_none() {
        j.opt_str(key!("request_id"), event.request_id.as_deref());
    }
    j.opt_str(key!("listener"), event.listener.as_deref());
    j.opt_str(key!("route"), event.route.as_deref());
    j.opt_str(key!("rule"), event.rule.as_deref());
    if let Some(u) = event.upstream {
        j.raw(key!("upstream"), |out| put_socket(out, u));
    }
    j.opt_str(
        key!("alpn"),
        event.tls.as_deref().and_then(|t| t.alpn.as_deref()),
    );
    if let Some(i) = event.identity.as_deref() {
        j.opt_str(key!("token_kid"), i.kid.as_deref());
        if !names_user(i) {
            // No user to carry the tenant as its organization.
            j.opt_str(key!("tenant_id"), i.tid.as_deref());
        }
    }
    super::durations_and_ban(j, event);
    j.end();
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::event::HttpInfo;

    fn ocsf(e: &Event) -> serde_json::Value {
        let mut v = Vec::new();
        write_ocsf(e, &mut v);
        serde_json::from_slice(&v).unwrap()
    }

    #[test]
    fn a_request_is_http_activity_with_its_actor() {
        let e = super::super::tests::sample();
        let j = ocsf(&e);
        assert_eq!(j["class_uid"], 4002);
        assert_eq!(j["activity_id"], 3);
        assert_eq!(j["type_uid"], 400203);
        assert_eq!(j["type_name"], "HTTP Activity: Get");
        assert_eq!(j["status_id"], 1);
        assert_eq!(j["time"], unix_millis(e.timestamp));
        assert_eq!(j["duration"], 5);
        assert_eq!(j["metadata"]["uid"], e.id.to_string());
        assert_eq!(j["metadata"]["version"], OCSF_VERSION);
        assert_eq!(j["metadata"]["profiles"][0], "host");
        assert_eq!(j["actor"]["user"]["uid"], "o1");
        assert_eq!(j["actor"]["app_uid"], "a1");
        assert_eq!(j["actor"]["user"]["org"]["uid"], "t1");
        assert_eq!(j["connection_info"]["protocol_ver_id"], 4);
        assert_eq!(j["traffic"]["bytes"], 2100);
        assert_eq!(j["src_endpoint"]["ip"], "10.1.2.3");
        assert_eq!(j["dst_endpoint"]["hostname"], "api.example.test");
        // From the destination's side: bytes_in went to the client.
        assert_eq!(j["traffic"]["bytes_in"], 2000);
        assert_eq!(j["traffic"]["bytes_out"], 100);
        assert_eq!(j["tls"]["handshake_dur"], 1);
        assert_eq!(j["http_request"]["url"]["path"], "/v1/items");
        assert_eq!(j["http_response"]["code"], 200);
        assert_eq!(j["http_response"]["latency"], 3);
        assert_eq!(j["unmapped"]["token_kid"], "k1");
        assert_eq!(j["unmapped"]["duration_us"]["auth"], 40);
    }

    #[test]
    fn every_action_has_its_class_and_a_known_method_its_activity() {
        for action in Action::ALL {
            for outcome in [Outcome::Success, Outcome::Failure] {
                let j = ocsf(&Event::new(action, outcome));
                let class = j["class_uid"].as_u64().unwrap();
                let activity = j["activity_id"].as_u64().unwrap();
                assert_eq!(j["type_uid"].as_u64(), Some(class * 100 + activity));
                assert!(
                    [4001, 3002, 2004, 6002].contains(&class),
                    "{action}: {class}"
                );
                assert!(j["unmapped"].is_object());
            }
        }
        let mut e = Event::new(Action::UpstreamResult, Outcome::Success);
        e.http = Some(Box::new(HttpInfo {
            method: Some("PROPFIND".into()),
            ..Default::default()
        }));
        let j = ocsf(&e);
        assert_eq!(
            (j["class_uid"].clone(), j["activity_id"].clone()),
            (4002.into(), 99.into())
        );
        assert_eq!(j["activity_name"], "PROPFIND");
        assert_eq!(j["type_name"], "HTTP Activity: PROPFIND");
    }

    #[test]
    fn a_ban_and_its_unban_are_one_finding() {
        let mut ban = Event::new(Action::Ban, Outcome::Success);
        ban.source = Some("192.0.2.7:0".parse().unwrap());
        let mut unban = Event::new(Action::Unban, Outcome::Success);
        unban.source = ban.source;
        let (b, u) = (ocsf(&ban), ocsf(&unban));
        assert_eq!(b["finding_info"]["uid"], "intraport-ban-192.0.2.7");
        assert_eq!(b["finding_info"]["uid"], u["finding_info"]["uid"]);
        assert_eq!(
            (b["activity_id"].clone(), u["activity_id"].clone()),
            (1.into(), 3.into())
        );
        assert_eq!(b["severity_id"], 4);
        // A finding's status is for its reviewer to set.
        assert!(b.get("status_id").is_none() && u.get("status_id").is_none());
        assert_eq!(b["evidences"][0]["src_endpoint"]["ip"], "192.0.2.7");
        assert!(b["evidences"][0]["src_endpoint"].get("port").is_none());
    }
}
