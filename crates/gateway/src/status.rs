//! `/status`: a self-contained HTML page (no scripts, no external assets) with the live
//! totals and inline-SVG charts of the last hour: open and new connections, TLS
//! handshake durations and failures, authentication outcomes, requests.
//!
//! Every number on the page is read from the metrics exposition itself (the same text
//! `/metrics` serves), summed over labels: the page cannot disagree with what
//! Prometheus scrapes. A sampler keeps one [`Totals`] per sample interval (10 s by
//! default, `admin.status_sample_interval_ms`); charts plot the differences between
//! consecutive samples.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::gateway::Shared;

/// At most this many samples are kept (one hour at the default 10 s interval; a
/// shorter interval keeps a shorter window).
const MAX_SAMPLES: usize = 720;

/// The totals the page shows, summed over labels from the exposition.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Totals {
    pub connections_active: f64,
    pub connections_accepted: f64,
    pub connections_refused: f64,
    pub handshakes_ok: f64,
    pub handshakes_failed: f64,
    pub handshake_ok_seconds: f64,
    pub requests: f64,
    pub requests_forwarded: f64,
    pub auth_valid: f64,
    pub auth_failed: f64,
    pub bans_active: f64,
    pub audit_written: f64,
    pub audit_dropped: f64,
}

impl Totals {
    /// Sum the samples of an OpenMetrics text exposition.
    pub fn from_exposition(text: &str) -> Totals {
        let mut t = Totals::default();
        for line in text.lines() {
            let Some((name, labels, value)) = parse_sample(line) else {
                continue;
            };
            let label = |k: &str| label_value(labels, k);
            match name {
                "intraport_connections_active" => t.connections_active += value,
                "intraport_connections_total" => match label("outcome") {
                    Some("accepted") => t.connections_accepted += value,
                    Some(_) => t.connections_refused += value,
                    None => {}
                },
                "intraport_tls_handshake_duration_seconds_count" => {
                    if label("outcome") == Some("success") {
                        t.handshakes_ok += value;
                    } else {
                        t.handshakes_failed += value;
                    }
                }
                "intraport_tls_handshake_duration_seconds_sum"
                    if label("outcome") == Some("success") =>
                {
                    t.handshake_ok_seconds += value;
                }
                "intraport_http_requests_total" => {
                    t.requests += value;
                    if label("code") == Some("forwarded") {
                        t.requests_forwarded += value;
                    }
                }
                "intraport_token_validation_duration_seconds_count" => {
                    if label("result") == Some("valid") {
                        t.auth_valid += value;
                    } else {
                        t.auth_failed += value;
                    }
                }
                "intraport_bans_active" => t.bans_active += value,
                "intraport_audit_events_written_total" => t.audit_written += value,
                "intraport_audit_events_dropped_total" => t.audit_dropped += value,
                _ => {}
            }
        }
        t
    }
}

/// `name{labels} value` → (name, labels without braces, value). Comments, `# EOF`
/// and malformed lines give `None`.
fn parse_sample(line: &str) -> Option<(&str, &str, f64)> {
    if line.starts_with('#') || line.is_empty() {
        return None;
    }
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = closing_brace(line, open)?;
            (&line[..open], &line[open + 1..close], &line[close + 1..])
        }
        None => {
            let (n, r) = line.split_once(' ')?;
            (n, "", r)
        }
    };
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some((name, labels, value))
}

/// The `}` that closes the label set opened at `open`, skipping quoted values.
fn closing_brace(line: &str, open: usize) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in line[open..].char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return Some(open + i),
            _ => {}
        }
    }
    None
}

/// The value of label `key` (values without escapes, as this gateway's are).
fn label_value<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    let mut rest = labels;
    while !rest.is_empty() {
        let (k, after) = rest.split_once("=\"")?;
        let end = after.find('"')?;
        if k.trim_start_matches(',') == key {
            return Some(&after[..end]);
        }
        rest = &after[end + 1..];
    }
    None
}

struct Sample {
    at: SystemTime,
    totals: Totals,
}

/// The samples behind the charts.
pub(crate) struct History {
    interval: Duration,
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    pub fn new(interval: Duration) -> History {
        History {
            interval,
            samples: Mutex::new(VecDeque::new()),
        }
    }

    fn push(&self, totals: Totals) {
        let mut s = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        if s.len() == MAX_SAMPLES {
            s.pop_front();
        }
        s.push_back(Sample {
            at: SystemTime::now(),
            totals,
        });
    }
}

/// Sample the metrics every interval until the gateway drains.
pub(crate) fn spawn_sampler(shared: Arc<Shared>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(shared.history.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shared.drain.cancelled() => return,
                _ = tick.tick() => {}
            }
            let totals = Totals::from_exposition(&shared.metrics.encode());
            shared.history.push(totals);
        }
    });
}

/// One chart series: a name, a colour, and (seconds ago, value) points.
struct Series {
    name: &'static str,
    colour: &'static str,
    points: Vec<(f64, f64)>,
}

/// The page.
pub(crate) fn render(shared: &Shared) -> String {
    let now = Totals::from_exposition(&shared.metrics.encode());
    let samples = shared
        .history
        .samples
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let wall = SystemTime::now();
    let ago = |s: &Sample| wall.duration_since(s.at).unwrap_or_default().as_secs_f64();
    // Rates and means between consecutive samples.
    let pairs: Vec<(f64, &Totals, &Totals, f64)> = samples
        .iter()
        .zip(samples.iter().skip(1))
        .map(|(a, b)| {
            let secs =
                b.at.duration_since(a.at)
                    .unwrap_or_default()
                    .as_secs_f64()
                    .max(1e-3);
            (ago(b), &a.totals, &b.totals, secs)
        })
        .collect();
    let rate = |f: fn(&Totals) -> f64| -> Vec<(f64, f64)> {
        pairs
            .iter()
            .map(|(t, a, b, secs)| (*t, ((f(b) - f(a)) / secs).max(0.0)))
            .collect()
    };
    let connections = [
        Series {
            name: "open",
            colour: "#2563eb",
            points: samples
                .iter()
                .map(|s| (ago(s), s.totals.connections_active))
                .collect(),
        },
        Series {
            name: "new per second",
            colour: "#16a34a",
            points: rate(|t| t.connections_accepted),
        },
        Series {
            name: "refused per second",
            colour: "#dc2626",
            points: rate(|t| t.connections_refused),
        },
    ];
    let handshake = [
        Series {
            name: "mean ms (successful)",
            colour: "#7c3aed",
            points: pairs
                .iter()
                .filter(|(_, a, b, _)| b.handshakes_ok > a.handshakes_ok)
                .map(|(t, a, b, _)| {
                    let ms = 1000.0 * (b.handshake_ok_seconds - a.handshake_ok_seconds)
                        / (b.handshakes_ok - a.handshakes_ok);
                    (*t, ms)
                })
                .collect(),
        },
        Series {
            name: "failed per second",
            colour: "#dc2626",
            points: rate(|t| t.handshakes_failed),
        },
    ];
    let auth = [
        Series {
            name: "valid per second",
            colour: "#16a34a",
            points: rate(|t| t.auth_valid),
        },
        Series {
            name: "refused per second",
            colour: "#dc2626",
            points: rate(|t| t.auth_failed),
        },
    ];
    let requests = [
        Series {
            name: "forwarded per second",
            colour: "#2563eb",
            points: rate(|t| t.requests_forwarded),
        },
        Series {
            name: "refused per second",
            colour: "#dc2626",
            points: rate(|t| t.requests - t.requests_forwarded),
        },
    ];
    let window = samples.front().map_or(0.0, ago);
    let interval = shared.history.interval.as_secs_f64();
    drop(samples);

    let mean_handshake_ms = if now.handshakes_ok > 0.0 {
        1000.0 * now.handshake_ok_seconds / now.handshakes_ok
    } else {
        0.0
    };
    let numbers: [(&str, &str, String); 13] = [
        (
            "connections_active",
            "Connections open",
            int(now.connections_active),
        ),
        (
            "connections_accepted",
            "Connections accepted",
            int(now.connections_accepted),
        ),
        (
            "connections_refused",
            "Connections refused",
            int(now.connections_refused),
        ),
        (
            "handshakes_ok",
            "TLS handshakes completed",
            int(now.handshakes_ok),
        ),
        (
            "handshakes_failed",
            "TLS handshakes failed",
            int(now.handshakes_failed),
        ),
        (
            "handshake_mean_ms",
            "Mean TLS handshake (ms)",
            format!("{mean_handshake_ms:.3}"),
        ),
        ("requests", "HTTP requests", int(now.requests)),
        (
            "requests_forwarded",
            "HTTP requests forwarded",
            int(now.requests_forwarded),
        ),
        ("auth_valid", "Tokens accepted", int(now.auth_valid)),
        ("auth_failed", "Tokens refused", int(now.auth_failed)),
        ("bans_active", "Sources banned now", int(now.bans_active)),
        (
            "audit_written",
            "Audit events written",
            int(now.audit_written),
        ),
        (
            "audit_dropped",
            "Audit events dropped",
            int(now.audit_dropped),
        ),
    ];
    let generated = wall.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());

    let mut h = String::with_capacity(32 * 1024);
    h.push_str(concat!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta http-equiv=\"refresh\" content=\"10\">",
        "<title>intraport status</title><style>",
        "body{font:14px system-ui,sans-serif;margin:24px;color:#111}",
        "h1{font-size:20px}h2{font-size:16px;margin:20px 0 4px}",
        "table{border-collapse:collapse}td,th{padding:3px 12px 3px 0;text-align:left}",
        "td.n{text-align:right;font-variant-numeric:tabular-nums}",
        ".charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));gap:12px}",
        "svg{background:#f8fafc;border:1px solid #e2e8f0}.legend span{margin-right:12px}",
        "small{color:#555}</style></head><body>",
        "<h1>intraport gateway status</h1>"
    ));
    let _ = write!(
        h,
        "<p><small>Generated at <span id=\"generated\">{generated}</span> (Unix seconds). \
         Totals since start, read from <a href=\"/metrics\">/metrics</a>; charts cover the \
         last {:.0} s in {interval} s samples.</small></p>",
        window
    );
    h.push_str("<table><tr><th>Measure</th><th>Value</th></tr>");
    for (id, label, value) in &numbers {
        let _ = write!(
            h,
            "<tr><td>{label}</td><td class=\"n\" id=\"{id}\">{value}</td></tr>"
        );
    }
    h.push_str("</table><div class=\"charts\">");
    chart(&mut h, "chart-connections", "Connections", &connections);
    chart(&mut h, "chart-handshakes", "TLS handshakes", &handshake);
    chart(&mut h, "chart-auth", "Authentication outcomes", &auth);
    chart(&mut h, "chart-requests", "HTTP requests", &requests);
    h.push_str("</div></body></html>\n");
    h
}

fn int(v: f64) -> String {
    format!("{v:.0}")
}

/// An inline SVG line chart; x is seconds ago (newest on the right).
fn chart(h: &mut String, id: &str, title: &str, series: &[Series]) {
    const W: f64 = 460.0;
    const H: f64 = 140.0;
    const PAD: f64 = 28.0;
    let span = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(1.0_f64, f64::max);
    let top = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0_f64, f64::max);
    let top = if top > 0.0 { top * 1.1 } else { 1.0 };
    let _ = write!(
        h,
        "<div><h2>{title}</h2><svg id=\"{id}\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" \
         role=\"img\" aria-label=\"{title}\">\
         <line x1=\"{PAD}\" y1=\"{y0}\" x2=\"{W}\" y2=\"{y0}\" stroke=\"#94a3b8\"/>\
         <text x=\"2\" y=\"12\" font-size=\"10\">{top:.3}</text>\
         <text x=\"2\" y=\"{y0}\" font-size=\"10\">0</text>\
         <text x=\"{PAD}\" y=\"{H}\" font-size=\"10\" dy=\"-2\">-{span:.0} s</text>\
         <text x=\"{xr}\" y=\"{H}\" font-size=\"10\" dy=\"-2\">now</text>",
        y0 = H - PAD / 2.0,
        xr = W - 24.0
    );
    for s in series {
        if s.points.is_empty() {
            continue;
        }
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|(ago, v)| {
                let x = PAD + (W - PAD - 4.0) * (1.0 - ago / span);
                let y = (H - PAD / 2.0) - (H - PAD) * (v / top);
                format!("{x:.1},{y:.1}")
            })
            .collect();
        let _ = write!(
            h,
            "<polyline class=\"series\" data-series=\"{}\" fill=\"none\" stroke=\"{}\" \
             stroke-width=\"1.5\" points=\"{}\"/>",
            s.name,
            s.colour,
            pts.join(" ")
        );
    }
    h.push_str("</svg><div class=\"legend\">");
    for s in series {
        let _ = write!(
            h,
            "<span style=\"color:{}\">&#9632; {}</span>",
            s.colour, s.name
        );
    }
    h.push_str("</div></div>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_the_exposition_by_label() {
        let text = "# HELP x\n\
            intraport_connections_total{listener=\"a\",outcome=\"accepted\"} 5\n\
            intraport_connections_total{listener=\"b\",outcome=\"accepted\"} 2\n\
            intraport_connections_total{listener=\"a\",outcome=\"refused_banned\"} 3\n\
            intraport_tls_handshake_duration_seconds_count{listener=\"a\",outcome=\"success\"} 4\n\
            intraport_tls_handshake_duration_seconds_sum{listener=\"a\",outcome=\"success\"} 0.5\n\
            intraport_tls_handshake_duration_seconds_count{listener=\"a\",outcome=\"not_tls\"} 1\n\
            intraport_bans_active 2\n\
            # EOF\n";
        let t = Totals::from_exposition(text);
        assert_eq!(t.connections_accepted, 7.0);
        assert_eq!(t.connections_refused, 3.0);
        assert_eq!(t.handshakes_ok, 4.0);
        assert_eq!(t.handshakes_failed, 1.0);
        assert_eq!(t.handshake_ok_seconds, 0.5);
        assert_eq!(t.bans_active, 2.0);
    }

    #[test]
    fn quoted_braces_do_not_end_a_label_set() {
        let line = "m{a=\"x}y\",outcome=\"accepted\"} 3";
        let (name, labels, v) = parse_sample(line).unwrap_or(("", "", 0.0));
        assert_eq!((name, v), ("m", 3.0));
        assert_eq!(label_value(labels, "outcome"), Some("accepted"));
        assert_eq!(parse_sample("garbage"), None);
    }
}
