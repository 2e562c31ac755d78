//! The self-contained HTML report: no scripts, no external assets, plots as inline
//! SVG (latency over time per stage, a time-of-day heatmap, the failure timeline)
//! and the numbers of the JSON report (with, for replication probes, a table per
//! replica) in tables whose cells carry a `data-key`, so
//! a test can read them back from the rendered page.

use std::fmt::Write;

use crate::report::{ProbeReport, Report, StageReport};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn rfc3339(ms: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

const COLORS: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// Render the report as one HTML document.
pub fn render(report: &Report) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>intraport probe report</title>
<style>
body{{font-family:system-ui,sans-serif;margin:1.5em;color:#222}}
table{{border-collapse:collapse;margin:.5em 0 1em}}
td,th{{border:1px solid #ccc;padding:.2em .5em;text-align:right}}
th:first-child,td:first-child{{text-align:left}}
.finding{{background:#fff4e5;border-left:4px solid #ff7f0e;padding:.4em .8em;margin:.4em 0}}
svg{{background:#fafafa;border:1px solid #ddd;margin:.3em 0}}
</style></head><body>
<h1>intraport probe report</h1>
<p>Runs from <span id="from">{}</span> to <span id="to">{}</span> (UTC).</p>
"#,
        rfc3339(report.from_ms),
        rfc3339(report.to_ms)
    );
    for p in &report.probes {
        probe_section(&mut h, p, report);
    }
    h.push_str("</body></html>\n");
    h
}

fn probe_section(h: &mut String, p: &ProbeReport, report: &Report) {
    let name = esc(&p.probe);
    let _ = write!(
        h,
        r#"<section class="probe" data-probe="{name}"><h2>Probe {name}</h2>
<p>Runs: <span data-key="{name}/runs">{}</span>, successful: <span data-key="{name}/successes">{}</span>, success rate: <span data-key="{name}/success_rate">{}</span>, interval: <span data-key="{name}/interval_seconds">{}</span> s.</p>
"#,
        p.runs, p.successes, p.success_rate, p.interval_seconds
    );
    h.push_str("<h3>Periodic spikes</h3>\n");
    if p.spikes.is_empty() {
        h.push_str("<p>None found.</p>\n");
    }
    for s in &p.spikes {
        let _ = writeln!(
            h,
            r#"<div class="finding" data-key="{name}/spike/{stage}/period_seconds" data-value="{period}">{summary}</div>"#,
            stage = esc(&s.stage),
            period = s.period_seconds,
            summary = esc(&s.summary)
        );
    }
    h.push_str(
        "<h3>Stages (successful samples, ms)</h3>\n<table><tr><th>stage</th><th>count</th><th>p50</th><th>p90</th><th>p95</th><th>p99</th><th>max</th><th>failures</th><th>success rate</th></tr>\n",
    );
    let mut row = |label: &str,
                   key: &str,
                   st: &crate::report::Stats,
                   failures: Option<u64>,
                   rate: Option<f64>| {
        let _ = write!(h, "<tr><td>{}</td>", esc(label));
        for (k, v) in [
            ("count", st.count as f64),
            ("p50", st.p50),
            ("p90", st.p90),
            ("p95", st.p95),
            ("p99", st.p99),
            ("max", st.max),
        ] {
            let _ = write!(h, r#"<td data-key="{name}/{key}/{k}">{v}</td>"#);
        }
        match (failures, rate) {
            (Some(f), Some(r)) => {
                let _ = write!(
                    h,
                    r#"<td data-key="{name}/{key}/failures">{f}</td><td data-key="{name}/{key}/success_rate">{r}</td>"#
                );
            }
            _ => h.push_str("<td></td><td></td>"),
        }
        h.push_str("</tr>\n");
    };
    for s in &p.stages {
        let key = format!("stage/{}", esc(&s.stage));
        row(
            &s.stage,
            &key,
            &s.stats,
            Some(s.failures),
            Some(s.success_rate),
        );
    }
    row("whole run", "duration", &p.duration, None, None);
    h.push_str("</table>\n");
    replication_table(h, p);
    h.push_str("<h3>Latency over time</h3>\n");
    latency_plot(h, &p.stages, report);
    h.push_str("<h3>Median latency by hour of day (UTC)</h3>\n");
    heatmap(h, &p.stages);
    h.push_str("<h3>Failures</h3>\n");
    failure_timeline(h, p, report);
    if !p.failure_classes.is_empty() {
        h.push_str("<table><tr><th>class</th><th>runs</th></tr>\n");
        for (class, n) in &p.failure_classes {
            let _ = writeln!(
                h,
                r#"<tr><td>{c}</td><td data-key="{name}/failure_class/{c}">{n}</td></tr>"#,
                c = esc(class)
            );
        }
        h.push_str("</table>\n");
    }
    h.push_str("</section>\n");
}

fn replication_table(h: &mut String, p: &ProbeReport) {
    if p.replication.is_empty() {
        return;
    }
    let name = esc(&p.probe);
    h.push_str(
        "<h3>Replication (lag in ms, from the write on the provider to the marker read on the replica)</h3>\n<table><tr><th>replica</th><th>runs</th><th>caught up</th><th>catch-up rate</th><th>lag p50</th><th>lag p99</th><th>lag max</th><th>worst lag (incl. not caught up)</th><th>contextCSN compared</th><th>contextCSN behind</th></tr>\n",
    );
    for r in &p.replication {
        let key = format!("{name}/replica/{}", esc(&r.replica));
        let _ = write!(h, "<tr><td>{}</td>", esc(&r.replica));
        for (k, v) in [
            ("runs", r.runs as f64),
            ("caught_up", r.caught_up as f64),
            ("catch_up_rate", r.catch_up_rate),
            ("lag/p50", r.lag.p50),
            ("lag/p99", r.lag.p99),
            ("lag/max", r.lag.max),
            ("worst_lag_ms", r.worst_lag_ms),
            ("csn_compared", r.csn_compared as f64),
            ("csn_out_of_sync", r.csn_out_of_sync as f64),
        ] {
            let _ = write!(h, r#"<td data-key="{key}/{k}">{v}</td>"#);
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>\n");
}

const W: f64 = 900.0;
const PLOT_H: f64 = 260.0;
const LEFT: f64 = 60.0;
const BOTTOM: f64 = 30.0;

fn x_of(t: i64, report: &Report) -> f64 {
    let span = (report.to_ms - report.from_ms).max(1) as f64;
    LEFT + (t - report.from_ms) as f64 / span * (W - LEFT - 10.0)
}

/// At most ~`max` points per series: the slowest sample of each bucket, so spikes
/// stay visible.
fn downsample(series: &[(i64, f64)], max: usize) -> Vec<(i64, f64)> {
    if series.len() <= max {
        return series.to_vec();
    }
    let per = series.len().div_ceil(max);
    series
        .chunks(per)
        .filter_map(|c| c.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1)))
        .collect()
}

fn latency_plot(h: &mut String, stages: &[StageReport], report: &Report) {
    let ymax = stages
        .iter()
        .flat_map(|s| s.series.iter().map(|p| p.1))
        .fold(1.0_f64, f64::max)
        * 1.05;
    let y_of = |v: f64| PLOT_H - BOTTOM - v / ymax * (PLOT_H - BOTTOM - 10.0);
    let legend_h = 18.0 * stages.len() as f64;
    let _ = writeln!(
        h,
        r#"<svg class="latency" width="{W}" height="{}" role="img"><title>Latency over time per stage</title>"#,
        PLOT_H + legend_h
    );
    let _ = writeln!(
        h,
        r##"<line x1="{LEFT}" y1="{b}" x2="{r}" y2="{b}" stroke="#888"/><line x1="{LEFT}" y1="10" x2="{LEFT}" y2="{b}" stroke="#888"/><text x="5" y="15" font-size="11">{ymax:.1} ms</text><text x="5" y="{b}" font-size="11">0</text>"##,
        b = PLOT_H - BOTTOM,
        r = W - 10.0
    );
    let _ = writeln!(
        h,
        r#"<text x="{LEFT}" y="{}" font-size="11">{}</text><text x="{}" y="{}" font-size="11" text-anchor="end">{}</text>"#,
        PLOT_H - 10.0,
        rfc3339(report.from_ms),
        W - 10.0,
        PLOT_H - 10.0,
        rfc3339(report.to_ms)
    );
    for (i, s) in stages.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<String> = downsample(&s.series, 1500)
            .iter()
            .map(|(t, v)| format!("{:.1},{:.1}", x_of(*t, report), y_of(*v)))
            .collect();
        let _ = writeln!(
            h,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1" points="{}"><title>{}</title></polyline>"#,
            points.join(" "),
            esc(&s.stage)
        );
        let ly = PLOT_H + 14.0 + 18.0 * i as f64;
        let _ = writeln!(
            h,
            r#"<rect x="{LEFT}" y="{}" width="12" height="8" fill="{color}"/><text x="{}" y="{ly}" font-size="12">{}</text>"#,
            ly - 8.0,
            LEFT + 18.0,
            esc(&s.stage)
        );
    }
    h.push_str("</svg>\n");
}

fn heatmap(h: &mut String, stages: &[StageReport]) {
    let cell = 30.0;
    let label_w = 140.0;
    let _ = writeln!(
        h,
        r#"<svg class="heatmap" width="{}" height="{}" role="img"><title>Median latency by stage and hour of day</title>"#,
        label_w + 24.0 * cell + 10.0,
        20.0 + cell * stages.len() as f64
    );
    for hour in 0..24 {
        let _ = write!(
            h,
            r#"<text x="{}" y="14" font-size="10" text-anchor="middle">{hour:02}</text>"#,
            label_w + cell * (hour as f64 + 0.5)
        );
    }
    for (row, s) in stages.iter().enumerate() {
        let mut buckets: Vec<Vec<f64>> = vec![Vec::new(); 24];
        for (t, v) in &s.series {
            let hour = (t.rem_euclid(86_400_000) / 3_600_000) as usize;
            if let Some(b) = buckets.get_mut(hour) {
                b.push(*v);
            }
        }
        let medians: Vec<Option<f64>> = buckets
            .iter()
            .map(|b| {
                if b.is_empty() {
                    None
                } else {
                    let mut v = b.clone();
                    v.sort_by(f64::total_cmp);
                    Some(v[(v.len() - 1) / 2])
                }
            })
            .collect();
        let max = medians.iter().flatten().fold(0.0_f64, |a, b| a.max(*b));
        let min = medians
            .iter()
            .flatten()
            .fold(f64::INFINITY, |a, b| a.min(*b));
        let y = 20.0 + cell * row as f64;
        let _ = write!(
            h,
            r#"<text x="4" y="{}" font-size="12">{}</text>"#,
            y + cell * 0.6,
            esc(&s.stage)
        );
        for (hour, m) in medians.iter().enumerate() {
            let x = label_w + cell * hour as f64;
            match m {
                Some(m) => {
                    let f = if max > min {
                        (m - min) / (max - min)
                    } else {
                        0.0
                    };
                    let (r, g, b) = (255.0, 255.0 - 200.0 * f, 255.0 - 255.0 * f);
                    let _ = write!(
                        h,
                        r##"<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="rgb({r:.0},{g:.0},{b:.0})" stroke="#fff"><title>{} {hour:02}:00 median {m:.3} ms</title></rect>"##,
                        esc(&s.stage)
                    );
                }
                None => {
                    let _ = write!(
                        h,
                        r##"<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="#eee" stroke="#fff"/>"##
                    );
                }
            }
        }
        h.push('\n');
    }
    h.push_str("</svg>\n");
}

fn failure_timeline(h: &mut String, p: &ProbeReport, report: &Report) {
    let height = 50.0;
    let _ = writeln!(
        h,
        r#"<svg class="failures" width="{W}" height="{height}" role="img"><title>Failure timeline</title>"#
    );
    let _ = writeln!(
        h,
        r##"<line x1="{LEFT}" y1="35" x2="{}" y2="35" stroke="#888"/>"##,
        W - 10.0
    );
    for f in &p.failures {
        let x = x_of(f.at_ms, report);
        let _ = writeln!(
            h,
            r##"<line x1="{x:.1}" y1="8" x2="{x:.1}" y2="35" stroke="#d62728" stroke-width="2"><title>{} {} {}: {}</title></line>"##,
            rfc3339(f.at_ms),
            esc(&f.stage),
            esc(&f.class),
            esc(&f.detail)
        );
    }
    let _ = writeln!(
        h,
        r#"<text x="4" y="30" font-size="11">{} failed</text></svg>"#,
        p.failures.len()
    );
}
