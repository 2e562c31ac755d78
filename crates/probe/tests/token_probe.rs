//! Token probes against the real dev issuer and a real gateway: every stage timed,
//! each kind of failure classified at its stage, results stored and exported as
//! Prometheus metrics; a periodic delay injected in front of the token endpoint is
//! found by the spike detector with its period and stage.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use intraport_devissuer::demo;
use intraport_probe::report::{Recurrence, analyse};
use intraport_probe::timing::FailureClass;
use intraport_probe::{
    Clock, Metrics, MetricsServer, PreparedProbe, Runner, SteppedClock, Store, SystemClock, config,
};
use support::q;

fn probe_toml(name: &str, endpoint: &str, secret: &str, ca: &str, extra: &str) -> String {
    format!(
        r#"
[[probe]]
name = "{name}"
interval = "60s"
timeout = "5s"

[probe.token]
token_endpoint = {endpoint}
grant = "client_credentials"
client_id = "{client}"
client_secret = {secret}
scope = ["api://intraport-demo/.default"]
ca_file = {ca}
{extra}
"#,
        endpoint = q(endpoint),
        client = demo::CLIENT_ID,
        secret = q(secret),
        ca = q(ca),
    )
}

fn stage_names(r: &intraport_probe::RunResult) -> Vec<&str> {
    r.stages.iter().map(|s| s.stage.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_validation_and_gateway_stages_and_classified_failures() {
    let issuer = support::issuer(true).await;
    let upstream = support::echo_upstream().await;
    let (gw, gw_addr) = support::gateway(&issuer, upstream).await;
    let ca = issuer.ca_pem_path().unwrap().display().to_string();
    let endpoint = support::token_endpoint(&issuer);
    // The issuer by name: the DNS stage resolves `localhost` from the hosts file.
    let endpoint_by_name = endpoint.replace("127.0.0.1", "localhost");
    let validate = |audience: &str| {
        format!(
            "[probe.validate]\nname = \"dev\"\nauthority = {}\ntenant = {}\naudiences = [{}]\nca_file = {}\n",
            q(&issuer.authority()),
            q(&issuer.tenant_id().to_string()),
            q(audience),
            q(&ca)
        )
    };
    let gateway = |path: &str, expect: u16| {
        format!(
            "[probe.gateway]\nurl = \"https://127.0.0.1:{}{path}\"\nexpect_status = {expect}\nca_file = {}\n",
            gw_addr.port(),
            q(&ca)
        )
    };
    let mut text = String::from("retention = \"1d\"\n");
    text += &probe_toml(
        "full",
        &endpoint_by_name,
        demo::CLIENT_SECRET,
        &ca,
        &format!(
            "{}{}",
            validate(&demo::API_APP_ID.to_string()),
            gateway("/orders", 200)
        ),
    );
    text += &probe_toml("bad-secret", &endpoint, "wrong", &ca, "");
    text += &probe_toml(
        "wrong-audience",
        &endpoint,
        demo::CLIENT_SECRET,
        &ca,
        &validate("api://someone-else"),
    );
    text += &probe_toml(
        "forbidden",
        &endpoint,
        demo::CLIENT_SECRET,
        &ca,
        &gateway("/admin/x", 200),
    );
    // Nothing listens on port 1; and a certificate nobody trusts.
    text += &probe_toml(
        "refused",
        "https://127.0.0.1:1/t/oauth2/v2.0/token",
        "x",
        &ca,
        "",
    );
    // Only the system's roots: the issuer's certificate is not trusted.
    text += &probe_toml("untrusted", &endpoint, demo::CLIENT_SECRET, "", "")
        .replace("ca_file = \"\"\n", "");
    let dir = tempfile::tempdir().unwrap();
    let set = config::parse(&text, Path::new("probe.toml"), dir.path()).unwrap();
    let probes: Vec<PreparedProbe> = set
        .probes
        .into_iter()
        .map(|p| PreparedProbe::new(p).unwrap())
        .collect();
    let metrics = Arc::new(Metrics::new());
    let db = dir.path().join("r.db");
    let runner = Runner::new(
        probes,
        Some(Store::open(&db).unwrap()),
        metrics.clone(),
        Arc::new(SystemClock),
        set.retention,
    );
    let results = runner.run_once().await.unwrap();
    let by = |n: &str| results.iter().find(|r| r.probe == n).unwrap();

    let full = by("full");
    assert!(full.ok, "{full:#?}");
    assert_eq!(
        stage_names(full),
        [
            "token_dns",
            "token_connect",
            "token_tls",
            "token_response",
            "token_validate",
            "gateway_connect",
            "gateway_tls",
            "gateway_response"
        ]
    );
    assert!(full.stages.iter().all(|s| s.ok && s.duration_ms >= 0.0));

    let f = by("bad-secret").failure.clone().unwrap();
    assert_eq!(f.stage, "token_response");
    assert_eq!(f.error.class, FailureClass::TokenError);
    assert_eq!(
        f.error.code.as_deref(),
        Some("invalid_client AADSTS7000215")
    );

    let f = by("wrong-audience").failure.clone().unwrap();
    assert_eq!(f.stage, "token_validate");
    assert_eq!(f.error.class, FailureClass::Validation);
    assert_eq!(f.error.code.as_deref(), Some("wrong_audience"));

    let f = by("forbidden").failure.clone().unwrap();
    assert_eq!(f.stage, "gateway_response");
    assert_eq!(f.error.class, FailureClass::HttpStatus);
    assert_eq!(f.error.code.as_deref(), Some("role_missing"));

    let f = by("refused").failure.clone().unwrap();
    assert_eq!(f.stage, "token_connect");
    assert_eq!(f.error.class, FailureClass::Connect);

    let f = by("untrusted").failure.clone().unwrap();
    assert_eq!(f.stage, "token_tls");
    assert_eq!(f.error.class, FailureClass::Tls);
    assert!(f.error.detail.contains("certificate"), "{}", f.error.detail);

    // Stored: one run per probe, stages included.
    let stored = Store::open(&db).unwrap().runs().unwrap();
    assert_eq!(stored.len(), 6);
    let mut sorted = results.clone();
    sorted.sort_by(|a, b| a.probe.cmp(&b.probe));
    let mut stored_sorted = stored.clone();
    stored_sorted.sort_by(|a, b| a.probe.cmp(&b.probe));
    assert_eq!(stored_sorted, sorted);

    // Exported on a loopback address.
    let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), metrics)
        .await
        .unwrap();
    let text = reqwest::get(format!("http://{}/metrics", server.addr()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"intraport_probe_runs_total{probe="full",result="success"} 1"#,
        r#"intraport_probe_runs_total{probe="bad-secret",result="failure"} 1"#,
        r#"intraport_probe_failures_total{probe="wrong-audience",stage="token_validate",class="validation"} 1"#,
        r#"intraport_probe_last_success{probe="full"} 1"#,
        r#"intraport_probe_last_success{probe="refused"} 0"#,
        r#"intraport_probe_stage_duration_seconds_count{probe="full",stage="gateway_tls"} 1"#,
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    server.stop();
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_delay_in_token_issuance_is_found_with_its_period_and_stage() {
    let issuer = support::issuer(false).await;
    // Every 10th token request is held 250 ms (well above the noise of a loaded
    // machine, where 60 ms once went unseen): with one run a minute on the
    // compressed clock, that is a spike every 10 minutes in `token_response`.
    let (proxy, count) = support::slow_proxy(
        support::token_endpoint(&issuer),
        10,
        Duration::from_millis(250),
    )
    .await;
    let text = probe_toml(
        "login",
        &format!("http://{proxy}/t/oauth2/v2.0/token"),
        demo::CLIENT_SECRET,
        "",
        "",
    )
    .replace("ca_file = \"\"\n", "");
    let dir = tempfile::tempdir().unwrap();
    let set = config::parse(&text, Path::new("probe.toml"), dir.path()).unwrap();
    let probes = vec![PreparedProbe::new(set.probes[0].clone()).unwrap()];
    let start = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    let clock = Arc::new(SteppedClock::new(start));
    let db = dir.path().join("r.db");
    let runner = Runner::new(
        probes,
        Some(Store::open(&db).unwrap()),
        Arc::new(Metrics::new()),
        clock.clone(),
        Duration::from_secs(30 * 86_400),
    );
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    runner.run(stop, Some(100)).await.unwrap();
    assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 100);
    assert_eq!(
        clock.now_ms(),
        start + 99 * 60_000,
        "100 runs, one a minute"
    );

    let runs = Store::open(&db).unwrap().runs().unwrap();
    assert_eq!(runs.len(), 100);
    assert!(
        runs.iter().all(|r| r.ok),
        "{:?}",
        runs.iter().find(|r| !r.ok)
    );
    let report = analyse(&runs);
    let p = &report.probes[0];
    assert_eq!(p.interval_seconds, 60.0);
    assert_eq!(p.spikes.len(), 1, "{:#?}", p.spikes);
    let s = &p.spikes[0];
    assert_eq!(s.stage, "token_response");
    assert_eq!(s.recurrence, Recurrence::Interval);
    assert_eq!(s.period_seconds, 600);
    assert_eq!(s.first_ms, start, "the first request is held");
    assert!(s.occurrences >= 8, "{s:#?}");
    assert!(s.spike_ms >= 250.0, "{s:#?}");
    assert!(s.dependency.contains("token issuance"), "{s:#?}");
}
