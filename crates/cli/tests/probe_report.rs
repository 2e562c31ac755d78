//! `intraport probe report`: the HTML report rendered by a real headless Chromium
//! (Debian `chromium`) shows exactly the numbers of the JSON report, and its plots
//! render (screenshot).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use intraport_probe::Store;
use intraport_probe::probe::RunResult;
use intraport_probe::replication::{ReplicaResult, ReplicationResult};
use intraport_probe::timing::{Failure, FailureClass, StageError, StageResult};

/// Two days of a login probe every 10 minutes: token issuance slow at the top of
/// every hour, a few failures; an LDAP probe with a steady directory; and a
/// replication probe whose replica dc2 lags every two hours and dc3 sometimes
/// never catches up.
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
                replication: None,
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
                replication: None,
            })
            .unwrap();
        store
            .insert(&replication_run(i, at + 60_000, noise))
            .unwrap();
    }
}

fn replication_run(i: i64, at: i64, noise: f64) -> RunResult {
    let dc2 = if i % 12 == 3 {
        4_000.0 + noise
    } else {
        40.0 + noise
    };
    let dc3_ok = i % 40 != 9;
    let dc3 = if dc3_ok {
        60.0 + noise
    } else {
        30_000.0 + noise
    };
    let csn = "20260101000000.000000Z#000000#001#000000".to_string();
    let replica = |name: &str, ok: bool, lag: f64| ReplicaResult {
        replica: name.into(),
        caught_up: ok,
        lag_ms: lag,
        context_csn: vec![csn.clone()],
        csn_in_sync: Some(ok),
        csn_behind_ms: Some(if ok { 0.0 } else { lag }),
        error: (!ok).then(|| {
            StageError::new(
                FailureClass::ReplicationTimeout,
                format!("{name} did not show the marker within 30s"),
            )
        }),
    };
    let stage = |stage: &str, duration_ms: f64, ok: bool| StageResult {
        stage: stage.into(),
        duration_ms,
        ok,
    };
    RunResult {
        probe: "dc-replication".into(),
        started_ms: at,
        duration_ms: 3.0 + dc2.max(dc3),
        ok: dc3_ok,
        stages: vec![
            stage("replication_connect", 0.5, true),
            stage("replication_bind", 1.0, true),
            stage("replication_write", 2.0 + noise, true),
            stage("replication:dc2", dc2, true),
            stage("replication:dc3", dc3, dc3_ok),
        ],
        failure: (!dc3_ok).then(|| Failure {
            stage: "replication:dc3".into(),
            error: StageError::new(
                FailureClass::ReplicationTimeout,
                "dc3 did not show the marker",
            ),
        }),
        replication: Some(ReplicationResult {
            marker: format!("intraport-probe dc-replication {i}"),
            provider_context_csn: vec![csn.clone()],
            replicas: vec![replica("dc2", true, dc2), replica("dc3", dc3_ok, dc3)],
        }),
    }
}

fn chromium(dir: &Path, args: &[String]) -> std::process::Output {
    let id = uuid::Uuid::new_v4();
    let profile = dir.join(format!("chromium-profile-{id}"));
    // Output goes to files: a page larger than a pipe's buffer would block
    // Chromium until it is killed.
    let (out_path, err_path) = (
        dir.join(format!("chromium-{id}.out")),
        dir.join(format!("chromium-{id}.err")),
    );
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
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("chromium (Debian package chromium) must be installed");
    // Chromium can hang on exit in containers: wait with a deadline, then kill.
    let until = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    std::process::Output {
        status,
        stdout: std::fs::read(&out_path).unwrap(),
        stderr: std::fs::read(&err_path).unwrap(),
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

    // The replica that lags every two hours is found, pointing at replication.
    let repl = &report["probes"][1];
    assert_eq!(repl["probe"], "dc-replication");
    let spike = &repl["spikes"][0];
    assert_eq!(spike["stage"], "replication:dc2", "{repl:#}");
    assert_eq!(spike["period_seconds"], 7200);
    assert!(
        spike["dependency"]
            .as_str()
            .unwrap()
            .starts_with("replication between the directory servers")
    );
    assert_eq!(repl["replication"][1]["caught_up"], 281, "{repl:#}");
    assert_eq!(repl["failure_classes"]["replication_timeout"], 7);

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
        for r in p["replication"].as_array().into_iter().flatten() {
            let replica = r["replica"].as_str().unwrap();
            for k in [
                "runs",
                "caught_up",
                "catch_up_rate",
                "worst_lag_ms",
                "csn_compared",
                "csn_out_of_sync",
            ] {
                expected.insert(
                    format!("{name}/replica/{replica}/{k}"),
                    r[k].as_f64().unwrap(),
                );
            }
            for k in ["p50", "p99", "max"] {
                expected.insert(
                    format!("{name}/replica/{replica}/lag/{k}"),
                    r["lag"][k].as_f64().unwrap(),
                );
            }
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
