//! `intraport probe report`: the HTML report rendered by a real headless Chromium
//! (Debian `chromium`) shows exactly the numbers of the JSON report, and its plots
//! render (screenshot).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use intraport_probe::Store;
use intraport_probe::probe::RunResult;
use intraport_probe::timing::{Failure, FailureClass, StageError, StageResult};

/// Two days of a login probe every 10 minutes: token issuance slow at the top of
/// every hour, a few failures; and an LDAP probe with a steady directory.
fn fill(db: &Path) {
    let mut store = Store::open(db).unwrap();
    let start = 1_767_225_600_000_i64; // 2026-01-01T00:00:00Z
    for i in 0..288_i64 {
        let at = start + i * 600_000;
        let noise = ((i * 7919) % 17) as f64 / 10.0;
        let slow = i % 6 == 0;
        let fail = i % 50 == 7;
        let mut stages = vec![
            StageResult {
                stage: "token_connect".into(),
                duration_ms: 0.3 + noise / 10.0,
                ok: true,
            },
            StageResult {
                stage: "token_tls".into(),
                duration_ms: 4.0 + noise,
                ok: true,
            },
            StageResult {
                stage: "token_response".into(),
                duration_ms: if slow { 180.0 + noise } else { 20.0 + noise },
                ok: !fail,
            },
        ];
        if fail {
            stages.truncate(3);
        }
        let total: f64 = stages.iter().map(|s| s.duration_ms).sum();
        store
            .insert(&RunResult {
                probe: "app-login".into(),
                started_ms: at,
                duration_ms: total,
                ok: !fail,
                stages,
                failure: fail.then(|| Failure {
                    stage: "token_response".into(),
                    error: StageError::coded(
                        FailureClass::TokenError,
                        "invalid_client AADSTS7000215",
                        "token endpoint answered HTTP 401: invalid_client",
                    ),
                }),
            })
            .unwrap();
        store
            .insert(&RunResult {
                probe: "dc1-ldap".into(),
                started_ms: at + 30_000,
                duration_ms: 3.0 + noise,
                ok: true,
                stages: vec![
                    StageResult {
                        stage: "ldap_bind".into(),
                        duration_ms: 1.0 + noise / 2.0,
                        ok: true,
                    },
                    StageResult {
                        stage: "ldap_search".into(),
                        duration_ms: 2.0 + noise / 2.0,
                        ok: true,
                    },
                ],
                failure: None,
            })
            .unwrap();
    }
}

fn chromium(dir: &Path, args: &[String]) -> std::process::Output {
    let profile = dir.join(format!("chromium-profile-{}", uuid::Uuid::new_v4()));
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium (Debian package chromium) must be installed");
    // Chromium can hang on exit in containers: read with a deadline, then kill.
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > until {
            let _ = child.kill();
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every `data-key="K">V<` and `data-key="K" data-value="V"` in the rendered DOM.
fn keyed_values(dom: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = dom;
    while let Some(i) = rest.find("data-key=\"") {
        rest = &rest[i + 10..];
        let Some(end) = rest.find('"') else { break };
        let key = rest[..end].to_string();
        let after = &rest[end + 1..];
        let value = if let Some(v) = after.strip_prefix(" data-value=\"") {
            v[..v.find('"').unwrap()].to_string()
        } else {
            let v = &after[after.find('>').unwrap() + 1..];
            v[..v.find('<').unwrap()].to_string()
        };
        out.insert(key, value);
    }
    out
}

#[test]
fn html_report_in_headless_chromium_shows_the_json_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("results.sqlite");
    fill(&db);
    let html = dir.path().join("report.html");
    let out = common::run(
        &[
            "probe",
            "report",
            "--db",
            db.to_str().unwrap(),
            "--out",
            html.to_str().unwrap(),
            "--format",
            "json",
        ],
        None,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = common::json_of(&out);
    let text = std::fs::read_to_string(&html).unwrap();
    assert!(
        !text.contains("http://") && !text.contains("https://") && !text.contains("<script"),
        "the report must be self-contained"
    );

    // The hourly spike of token issuance is found and named.
    let login = &report["probes"][0];
    assert_eq!(login["probe"], "app-login");
    let spike = &login["spikes"][0];
    assert_eq!(spike["stage"], "token_response", "{login:#}");
    assert_eq!(spike["period_seconds"], 3600);
    assert!(
        spike["dependency"]
            .as_str()
            .unwrap()
            .contains("conditional access")
    );

    let url = format!("file://{}", html.display());
    let dom = chromium(dir.path(), &["--dump-dom".into(), url.clone()]);
    let dom_text = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom_text.contains("intraport probe report"),
        "chromium rendered nothing: {}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let shown = keyed_values(&dom_text);

    // Every number of the JSON report, as the page shows it.
    let mut expected: BTreeMap<String, f64> = BTreeMap::new();
    for p in report["probes"].as_array().unwrap() {
        let name = p["probe"].as_str().unwrap();
        for k in ["runs", "successes", "success_rate", "interval_seconds"] {
            expected.insert(format!("{name}/{k}"), p[k].as_f64().unwrap());
        }
        for k in ["count", "p50", "p90", "p95", "p99", "max"] {
            expected.insert(
                format!("{name}/duration/{k}"),
                p["duration"][k].as_f64().unwrap(),
            );
        }
        for s in p["stages"].as_array().unwrap() {
            let stage = s["stage"].as_str().unwrap();
            for k in ["count", "p50", "p90", "p95", "p99", "max"] {
                expected.insert(
                    format!("{name}/stage/{stage}/{k}"),
                    s["stats"][k].as_f64().unwrap(),
                );
            }
            for k in ["failures", "success_rate"] {
                expected.insert(format!("{name}/stage/{stage}/{k}"), s[k].as_f64().unwrap());
            }
        }
        for (class, n) in p["failure_classes"].as_object().unwrap() {
            expected.insert(format!("{name}/failure_class/{class}"), n.as_f64().unwrap());
        }
        for s in p["spikes"].as_array().unwrap() {
            expected.insert(
                format!(
                    "{name}/spike/{}/period_seconds",
                    s["stage"].as_str().unwrap()
                ),
                s["period_seconds"].as_f64().unwrap(),
            );
        }
    }
    assert!(expected.len() > 60, "{}", expected.len());
    for (key, want) in &expected {
        let got = shown
            .get(key)
            .unwrap_or_else(|| panic!("{key} is not in the rendered page"));
        let got: f64 = got
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{key}: `{got}` is not a number"));
        assert_eq!(got, *want, "{key}");
    }
    assert_eq!(
        shown.len(),
        expected.len(),
        "page and JSON have the same numbers"
    );
    // The three plots are in the rendered page.
    for class in ["latency", "heatmap", "failures"] {
        assert!(
            dom_text.contains(&format!("<svg class=\"{class}\"")),
            "{class}"
        );
    }

    // And the page paints: a real screenshot.
    let png = dir.path().join("report.png");
    let shot = chromium(
        dir.path(),
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1200,2400".into(),
            url,
        ],
    );
    let bytes = std::fs::read(&png).unwrap_or_else(|e| {
        panic!(
            "no screenshot ({e}): {}",
            String::from_utf8_lossy(&shot.stderr)
        )
    });
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert!(
        bytes.len() > 20_000,
        "a blank page is smaller: {}",
        bytes.len()
    );
}
