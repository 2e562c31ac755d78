//! `intraport probe run` measuring replication delay between two real OpenLDAP
//! `slapd` (Debian) in a syncrepl provider/consumer pair on loopback: a small lag
//! with `contextCSN` in sync; a consumer paused with SIGSTOP for a known time
//! lengthens the measured lag to at least that pause; a consumer that stays paused
//! and a server that does not replicate at all fail the run with the lag so far.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{
    LDAP_SUFFIX, SyncreplPair, finish, free_port, ldap_read, pause, start_slapd,
    start_syncrepl_pair, wait_for,
};

fn marker_dn() -> String {
    format!("cn=intraport-probe,{LDAP_SUFFIX}")
}

/// A replication probe writing on `provider` (a host:port) and polling `replicas`.
fn config(dir: &Path, provider: &str, replicas: &[(&str, u16)], deadline: &str) -> PathBuf {
    let mut text = format!(
        r#"
[[probe]]
name = "repl"

[probe.replication]
provider = "ldap://{provider}"
bind_dn = "cn=admin,{LDAP_SUFFIX}"
password = "secret"
marker_dn = "{marker}"
suffix = "{LDAP_SUFFIX}"
deadline = "{deadline}"
poll_interval = "20ms"
"#,
        marker = marker_dn()
    );
    for (name, port) in replicas {
        text += &format!(
            "\n[[probe.replication.replica]]\nname = \"{name}\"\nurl = \"ldap://127.0.0.1:{port}\"\n"
        );
    }
    let path = dir.join("probe.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn run_once(config: &Path, db: &Path) -> serde_json::Value {
    let out = common::probe_once(config, db, "json");
    let runs = common::json_of(&out);
    let run = runs[0].clone();
    let want = if run["ok"] == true { 0 } else { 1 };
    assert_eq!(out.status.code(), Some(want), "{run:#}");
    run
}

fn replica<'a>(run: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    run["replication"]["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["replica"] == name)
        .unwrap_or_else(|| panic!("no replica {name}: {run:#}"))
}

fn stage<'a>(run: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    run["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == name)
        .unwrap_or_else(|| panic!("no stage {name}: {run:#}"))
}

#[test]
fn replication_lag_is_measured_with_context_csn_stored_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let pair = start_syncrepl_pair(dir.path());
    // The provider by name, so its DNS stage runs (the hosts file answers).
    let config = config(
        dir.path(),
        &format!("localhost:{}", pair.provider_port),
        &[("consumer", pair.consumer_port)],
        "10s",
    );
    let db = dir.path().join("results.sqlite");
    assert_eq!(
        ldap_read(pair.provider_port, &marker_dn(), "description"),
        None
    );

    // The first run creates the marker entry, the second modifies it.
    for n in 0..2 {
        let run = run_once(&config, &db);
        assert_eq!(run["ok"], true, "{run:#}");
        let stages = common::stage_names(&run);
        assert_eq!(
            stages,
            [
                "replication_dns",
                "replication_connect",
                "replication_bind",
                "replication_write",
                "replication:consumer"
            ],
            "run {n}"
        );
        let c = replica(&run, "consumer");
        assert_eq!(c["caught_up"], true, "{run:#}");
        let lag = c["lag_ms"].as_f64().unwrap();
        // syncrepl in persist mode on loopback: milliseconds, far from the deadline.
        assert!(lag > 0.0 && lag < 2_000.0, "lag {lag} ms: {run:#}");
        assert_eq!(stage(&run, "replication:consumer")["duration_ms"], lag);
        // The marker the probe wrote is what both servers hold now.
        let marker = run["replication"]["marker"].as_str().unwrap();
        assert!(marker.starts_with("intraport-probe repl "), "{marker}");
        assert_eq!(
            ldap_read(pair.consumer_port, &marker_dn(), "description"),
            Some(vec![marker.to_string()])
        );
        // contextCSN: read on both, the consumer's has caught up.
        let provider_csn = run["replication"]["provider_context_csn"]
            .as_array()
            .unwrap();
        assert_eq!(provider_csn.len(), 1, "one provider, one server id");
        assert!(
            provider_csn[0].as_str().unwrap().ends_with("#000#000000"),
            "{provider_csn:?}"
        );
        assert_eq!(c["context_csn"], run["replication"]["provider_context_csn"]);
        assert_eq!(c["csn_in_sync"], true);
        assert_eq!(c["csn_behind_ms"], 0.0);
    }

    let out = common::probe_report(&db, "json");
    let report = common::json_of(&out);
    let p = &report["probes"][0];
    assert_eq!(p["success_rate"], 1.0);
    let r = &p["replication"][0];
    assert_eq!(r["replica"], "consumer");
    assert_eq!(
        (r["runs"].as_u64(), r["caught_up"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(
        (r["csn_compared"].as_u64(), r["csn_out_of_sync"].as_u64()),
        (Some(2), Some(0))
    );
    let st = p["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "replication:consumer")
        .unwrap();
    assert_eq!(st["stats"], r["lag"], "a replica's lag is its stage");
    let out = common::probe_report(&db, "table");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("replica consumer: caught up 2/2 runs"),
        "{table}"
    );
}

#[test]
fn a_paused_consumer_lengthens_the_lag_to_at_least_the_pause() {
    let dir = tempfile::tempdir().unwrap();
    let pair = start_syncrepl_pair(dir.path());
    let config = config(
        dir.path(),
        &format!("127.0.0.1:{}", pair.provider_port),
        &[("consumer", pair.consumer_port)],
        "10s",
    );
    let db = dir.path().join("results.sqlite");
    // The marker entry exists on both before the measured run.
    let warm = run_once(&config, &db);
    assert_eq!(warm["ok"], true, "{warm:#}");
    let before = ldap_read(pair.provider_port, &marker_dn(), "description");

    let pause_for = Duration::from_millis(1_500);
    let paused = pause(&pair.consumer);
    let child = common::probe_once_command(&config, &db, "json")
        .spawn()
        .unwrap();
    // The pause is counted from the moment the provider holds the new marker, so
    // the consumer stays stopped for at least `pause_for` after the write.
    wait_for(
        "the marker written on the provider",
        Duration::from_secs(10),
        || ldap_read(pair.provider_port, &marker_dn(), "description") != before,
    );
    let resumer = std::thread::spawn(move || {
        std::thread::sleep(pause_for);
        paused.resume();
    });
    let out = finish(child, Duration::from_secs(30));
    resumer.join().unwrap();
    let run = common::json_of(&out)[0].clone();
    assert_eq!(out.status.code(), Some(0), "{run:#}");
    let c = replica(&run, "consumer");
    assert_eq!(c["caught_up"], true, "{run:#}");
    let lag = c["lag_ms"].as_f64().unwrap();
    assert!(
        lag >= 1_500.0,
        "lag {lag} ms is shorter than the pause: {run:#}"
    );
    assert!(lag < 10_000.0, "lag {lag} ms: {run:#}");
    assert_eq!(c["csn_in_sync"], true, "caught up after the pause: {run:#}");
    let warm_lag = replica(&warm, "consumer")["lag_ms"].as_f64().unwrap();
    assert!(warm_lag < lag - 1_000.0, "{warm_lag} vs {lag}");
}

#[test]
fn replicas_that_never_catch_up_fail_with_the_lag_so_far() {
    let dir = tempfile::tempdir().unwrap();
    let pair: SyncreplPair = start_syncrepl_pair(dir.path());
    // A server with the same suffix that is no consumer at all.
    let lone_dir = dir.path().join("standalone");
    std::fs::create_dir_all(&lone_dir).unwrap();
    let lone_port = free_port();
    let _lone = start_slapd(&lone_dir, lone_port);
    let config = config(
        dir.path(),
        &format!("127.0.0.1:{}", pair.provider_port),
        &[("consumer", pair.consumer_port), ("standalone", lone_port)],
        "1s",
    );
    let db = dir.path().join("results.sqlite");

    // Stopped for longer than the deadline: the run ends without it.
    let paused = pause(&pair.consumer);
    let started = Instant::now();
    let run = run_once(&config, &db);
    let took = started.elapsed();
    assert_eq!(run["ok"], false, "{run:#}");
    assert!(
        took < Duration::from_secs(8),
        "bounded by the deadline: {took:?}"
    );
    let f = &run["failure"];
    assert_eq!(f["stage"], "replication:consumer", "{run:#}");
    assert_eq!(f["class"], "replication_timeout");
    assert!(
        f["detail"].as_str().unwrap().contains("lag so far"),
        "{f:#}"
    );
    for name in ["consumer", "standalone"] {
        let r = replica(&run, name);
        assert_eq!(r["caught_up"], false, "{name}: {run:#}");
        let lag = r["lag_ms"].as_f64().unwrap();
        assert!(
            (1_000.0..5_000.0).contains(&lag),
            "{name}: lag so far {lag} ms, deadline 1 s"
        );
        assert_eq!(r["error"]["class"], "replication_timeout", "{name}");
        assert_eq!(
            r.get("csn_in_sync"),
            None,
            "{name}: no contextCSN to compare"
        );
        let s = stage(&run, &format!("replication:{name}"));
        assert_eq!(
            (s["ok"].as_bool(), s["duration_ms"].as_f64()),
            (Some(false), Some(lag))
        );
    }
    // The provider side went through.
    assert_eq!(stage(&run, "replication_write")["ok"], true);

    // Resumed, the consumer catches up with the marker it missed.
    drop(paused);
    let marker = run["replication"]["marker"].as_str().unwrap().to_string();
    wait_for("the resumed consumer", Duration::from_secs(15), || {
        ldap_read(pair.consumer_port, &marker_dn(), "description") == Some(vec![marker.clone()])
    });

    // Stored and reported as failures of both replicas; the table says so too.
    let out = common::probe_report(&db, "json");
    let report = common::json_of(&out);
    let p = &report["probes"][0];
    assert_eq!(p["failure_classes"]["replication_timeout"], 1);
    for r in p["replication"].as_array().unwrap() {
        assert_eq!(r["caught_up"], 0, "{r:#}");
        assert!(r["worst_lag_ms"].as_f64().unwrap() >= 1_000.0, "{r:#}");
    }
    let paused = pause(&pair.consumer);
    let out = common::probe_once(&config, &db, "table");
    drop(paused);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("replica consumer: NOT caught up (replication_timeout) after"),
        "{table}"
    );
    assert!(
        table.contains("failure: replication_timeout at replication:consumer"),
        "{table}"
    );
}
