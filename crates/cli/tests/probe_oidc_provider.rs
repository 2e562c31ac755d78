//! `intraport probe run --once` against the real npm `oidc-provider` (OpenID
//! Certified), started from tests/idp on loopback: a client-credentials login timed
//! stage by stage (DNS, connect, token endpoint, validation through the IdP's
//! discovery and JWKS) and stored; a wrong client secret classified by the token
//! response's `error`, a token for another audience by the validation error code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::start_oidc_provider;

fn probe(name: &str, endpoint: &str, secret: &str, discovery: &str, audience: &str) -> String {
    format!(
        r#"
[[probe]]
name = "{name}"
timeout = "10s"

[probe.token]
token_endpoint = "{endpoint}"
grant = "client_credentials"
client_id = "svc-reader"
client_secret = "{secret}"
resource = "api://intraport-idp"

[probe.validate]
name = "idp"
discovery = "{discovery}"
audiences = ["{audience}"]
"#
    )
}

#[test]
fn token_probe_against_oidc_provider_times_stages_and_classifies_failures() {
    let dir = tempfile::tempdir().unwrap();
    let (_idp, issuer) = start_oidc_provider(dir.path());
    let endpoint = format!("{issuer}/token");
    // By name, so the DNS stage runs (the hosts file answers).
    let by_name = endpoint.replace("127.0.0.1", "localhost");
    let discovery = format!("{issuer}/.well-known/openid-configuration");
    let aud = "api://intraport-idp";
    let mut text = probe("idp-login", &by_name, "svc-reader-secret", &discovery, aud);
    text += &probe(
        "idp-bad-secret",
        &endpoint,
        "not-the-secret",
        &discovery,
        aud,
    );
    text += &probe(
        "idp-other-audience",
        &endpoint,
        "svc-reader-secret",
        &discovery,
        "api://someone-else",
    );
    let config = dir.path().join("probe.toml");
    std::fs::write(&config, text).unwrap();
    let db = dir.path().join("results.sqlite");
    let out = common::probe_once(&config, &db, "json");
    let runs = common::json_of(&out);
    assert_eq!(out.status.code(), Some(1), "two probes fail: {runs:#}");
    let by = |n: &str| common::probe_named(&runs, n).clone();

    let ok = by("idp-login");
    assert_eq!(ok["ok"], true, "{ok:#}");
    // Plain HTTP on loopback: no TLS stage.
    assert_eq!(
        common::stage_names(&ok),
        [
            "token_dns",
            "token_connect",
            "token_response",
            "token_validate"
        ],
        "{ok:#}"
    );
    let mut sum = 0.0;
    for s in ok["stages"].as_array().unwrap() {
        let ms = s["duration_ms"].as_f64().unwrap();
        assert!(s["ok"] == true && ms > 0.0, "{s}");
        sum += ms;
    }
    assert!(
        ok["duration_ms"].as_f64().unwrap() >= sum,
        "the stages are parts of the run: {ok:#}"
    );

    let f = &by("idp-bad-secret")["failure"];
    assert_eq!(f["stage"], "token_response", "{f:#}");
    assert_eq!(f["class"], "token_error");
    assert_eq!(f["code"], "invalid_client");

    let f = &by("idp-other-audience")["failure"];
    assert_eq!(f["stage"], "token_validate", "{f:#}");
    assert_eq!(f["class"], "validation");
    assert_eq!(f["code"], "wrong_audience");

    // Stored: the report counts the same.
    let report = common::json_of(&common::probe_report(&db, "json"));
    let p = |n: &str| common::probe_named(&report["probes"], n).clone();
    assert_eq!(p("idp-login")["success_rate"], 1.0);
    assert_eq!(p("idp-bad-secret")["failure_classes"]["token_error"], 1);
    assert_eq!(p("idp-other-audience")["failure_classes"]["validation"], 1);
}
