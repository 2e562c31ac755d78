//! The documented example configuration loads and means what its comments say.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

#[test]
fn example_probe_toml_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/probe.toml");
    let set = intraport_probe::config::load(&path).unwrap();
    assert_eq!(set.retention, Duration::from_secs(30 * 86_400));
    assert_eq!(set.metrics_listen, Some("127.0.0.1:9464".parse().unwrap()));
    assert_eq!(
        set.database.as_deref(),
        Some(path.parent().unwrap().join("probe.sqlite").as_path())
    );
    let names: Vec<&str> = set.probes.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        ["app-login", "user-login", "dc1-ldap", "dc-replication"]
    );
    let app = &set.probes[0];
    assert_eq!(app.jitter, Duration::from_secs(5));
    assert!(app.token.is_some() && app.validate.is_some() && app.gateway.is_some());
    assert_eq!(set.probes[1].interval, Duration::from_secs(300));
    let ldap = set.probes[2].ldap.as_ref().unwrap();
    assert_eq!(ldap.url.scheme(), "ldaps");
    assert_eq!(ldap.min_entries, 1);
    let repl = &set.probes[3];
    // The run outlasts the wait for the replicas.
    assert_eq!(repl.timeout, Duration::from_secs(70));
    let r = repl.replication.as_ref().unwrap();
    assert_eq!(r.deadline, Duration::from_secs(60));
    assert_eq!(r.poll_interval, Duration::from_millis(250));
    assert_eq!(r.attribute, "description");
    assert_eq!(r.object_classes, ["top", "contact"]);
    assert_eq!(r.suffix, None);
    let replicas: Vec<&str> = r.replicas.iter().map(|x| x.name.as_str()).collect();
    assert_eq!(replicas, ["dc2", "dc3-branch"]);
    // and each probe can be prepared (TLS configurations, validation provider)
    for p in set.probes {
        intraport_probe::PreparedProbe::new(p).unwrap();
    }
}
