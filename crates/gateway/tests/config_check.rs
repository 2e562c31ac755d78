//! The configuration check: the documented example loads, and a deliberately broken
//! file yields every error, each at its line and field.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::path::Path;

use intraport_gateway::{Config, ConfigError, load_config};
use support::pki::{Pki, write};

fn example_dir(pki: &Pki) -> std::path::PathBuf {
    let dir = pki.dir.join("example");
    std::fs::create_dir_all(dir.join("certs")).unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/gateway.toml");
    std::fs::copy(example, dir.join("gateway.toml")).unwrap();
    for (from, to) in [
        ("server.pem", "certs/gateway.pem"),
        ("server-key.pem", "certs/gateway-key.pem"),
        ("client-ca.pem", "certs/clients-ca.pem"),
        ("server-ca.pem", "certs/siem-ca.pem"),
    ] {
        std::fs::copy(pki.path(from), dir.join(to)).unwrap();
    }
    dir
}

#[test]
fn the_documented_example_is_valid() {
    let pki = Pki::new();
    let dir = example_dir(&pki);
    let cfg = load_config(&dir.join("gateway.toml")).unwrap_or_else(|errors| {
        panic!(
            "{}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    assert_eq!(cfg.listener_names(), ["public", "ldap"]);
    assert_eq!(cfg.worker_threads, Some(2));
    assert_eq!(cfg.admin_listen.to_string(), "127.0.0.1:9901");
    assert_eq!(cfg.providers.len(), 1);
    assert_eq!(cfg.providers[0].name, "entra");
    let public = &cfg.listeners[0].limits;
    assert_eq!(public.conn.per_source, 256);
    assert_eq!(public.max_uri_bytes, 8192);
    assert_eq!(public.rate_per_source.unwrap().burst.get(), 2000);
    assert_eq!(cfg.abuse.bans.failures, 20);
    assert!(cfg.abuse.bans.allowlisted("10.20.0.7".parse().unwrap()));
    assert_eq!(cfg.abuse.idp_fetches_per_minute, 60);
    let audit = cfg.audit.expect("the example's [audit]");
    assert_eq!(audit.sinks.len(), 2);
}

/// A listener with one route, for files about something else (a file without a
/// listener is refused).
const ONE_LISTENER: &str = "[[listener]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"http\"\n\
    [[route]]\nname = \"r\"\nlistener = \"web\"\nupstream = \"http://127.0.0.1:9\"\nidentity = \"none\"\n\
    [route.source]\nallow = [\"127.0.0.1\"]\n";

#[test]
fn audit_settings_are_checked_and_paths_resolved() {
    use intraport_audit::SinkConfig;
    let pki = Pki::new();
    let good = format!(
        "{ONE_LISTENER}[audit]\nspool_dir = \"spool\"\n\
        [[audit.sink]]\ntype = \"file\"\npath = \"logs/audit.jsonl\"\n\
        [[audit.sink]]\ntype = \"syslog\"\ntransport = \"tls\"\naddress = \"127.0.0.1:6514\"\nca = \"server-ca.pem\"\n"
    );
    let cfg = Config::from_toml_str(&good, &pki.dir).unwrap_or_else(|e| panic!("{}", show(&e)));
    let audit = cfg.audit.unwrap();
    assert_eq!(audit.spool_dir, Some(pki.dir.join("spool")));
    match (&audit.sinks[0], &audit.sinks[1]) {
        (SinkConfig::File(f), SinkConfig::Syslog(s)) => {
            assert_eq!(f.path, pki.dir.join("logs/audit.jsonl"));
            assert_eq!(s.ca, Some(pki.dir.join("server-ca.pem")));
        }
        other => panic!("{other:?}"),
    }
    // No sink: no audit pipeline.
    assert!(
        Config::from_toml_str(&format!("{ONE_LISTENER}[audit]\n"), &pki.dir)
            .unwrap()
            .audit
            .is_none()
    );

    // A bad value in the second sink: reported at its line, with its field.
    let bad = "[admin]\nlisten = \"127.0.0.1:0\"\nstatus_sample_interval_ms = 5\n[audit]\n\
        [[audit.sink]]\ntype = \"file\"\npath = \"a.jsonl\"\n\
        [[audit.sink]]\ntype = \"file\"\npath = \"b.jsonl\"\ncommit_interval_ms = 0\n"
        .to_string()
        + ONE_LISTENER;
    let errors = Config::from_toml_str(&bad, &pki.dir).unwrap_err();
    let text = show(&errors);
    assert_eq!(errors.len(), 2, "{text}");
    let at = |path: &str| {
        errors
            .iter()
            .find(|e| e.path == path)
            .unwrap_or_else(|| panic!("no error at {path}: {text}"))
    };
    assert_eq!(at("admin.status_sample_interval_ms").line, 3, "{text}");
    let commit = at("audit.sink[1].commit_interval_ms");
    assert_eq!(commit.line, 11, "{text}");
    assert!(commit.message.contains("1..=10000"), "{text}");
    // An unknown key in a sink, and a syslog TLS sink whose CA file is missing.
    let errors = Config::from_toml_str(
        "[[audit.sink]]\ntype = \"file\"\npath = \"a\"\nfsync = true\n",
        &pki.dir,
    )
    .unwrap_err();
    assert!(show(&errors).contains("fsync"), "{}", show(&errors));
    let errors = Config::from_toml_str(
        "[audit]\nspool_dir = \"s\"\n[[audit.sink]]\ntype = \"syslog\"\ntransport = \"tls\"\naddress = \"h:1\"\nca = \"missing.pem\"\n",
        &pki.dir,
    )
    .unwrap_err();
    assert_eq!(errors[0].path, "audit.sink[0].ca", "{}", show(&errors));
    assert_eq!(errors[0].line, 7, "{}", show(&errors));
}

#[test]
fn abuse_settings_are_checked() {
    let pki = Pki::new();
    let text = r#"[abuse]
store = "redis"
[abuse.bans]
ban_seconds = 0
allow = ["10.0.0.0/33"]

[[listener]]
name = "plain"
listen = "127.0.0.1:0"
protocol = "tcp"
backlog = 0
[listener.limits]
max_connections = 0
max_uri_bytes = 10
send_timeout_ms = 5

[[listener]]
name = "web"
listen = "127.0.0.1:0"
protocol = "http"
backlog = 70000
handshake_timeout_ms = 0
[listener.limits]
max_header_bytes = 100
rate_per_source = { requests = 5, per_seconds = 0 }
send_timeout_ms = 0
max_upstream_requests_per_source = 0

[[route]]
name = "tcp"
listener = "plain"
upstream = "127.0.0.1:1"
[route.source]
allow = ["::/0"]
[route.limits]
max_body_bytes = 1

[[route]]
name = "web"
listener = "web"
upstream = "http://127.0.0.1:1"
identity = "none"
[route.source]
allow = ["::/0"]
"#;
    let errors = Config::from_toml_str(text, &pki.dir).unwrap_err();
    let shown = show(&errors);
    for needle in [
        "abuse.redis_url: store = \"redis\" needs redis_url",
        "abuse.bans.ban_seconds: must be at least 1",
        "abuse.bans.allow[0]",
        "listener[0].limits.max_connections: must be at least 1",
        "listener[0].limits.max_uri_bytes: `max_uri_bytes` applies to HTTP listeners",
        "listener[1].limits.max_header_bytes: must be at least 8192",
        "listener[1].limits.rate_per_source: expected requests",
        "listener[0].backlog: expected 1 to 65535",
        "listener[1].backlog: expected 1 to 65535",
        "listener[1].handshake_timeout_ms: must be at least 1",
        "listener[0].limits.send_timeout_ms: `send_timeout_ms` applies to HTTP listeners",
        "listener[1].limits.send_timeout_ms: must be at least 1",
        "listener[1].limits.max_upstream_requests_per_source: must be at least 1",
        "route[0].limits: `limits` applies to HTTP routes",
    ] {
        assert!(shown.contains(needle), "missing {needle:?} in:\n{shown}");
    }
    assert!(errors.iter().all(|e| e.line > 0), "{shown}");
}

#[test]
fn allow_acl_tokens_is_an_http_route_option() {
    let pki = Pki::new();
    // The key set file is read and parsed by the check: a real one, `jwks.json`.
    support::mint::Minter::new(&pki.dir);
    let text = r#"[[provider]]
name = "entra"
issuer = "https://login.microsoftonline.com/7f1c2a3e-5b6d-4e8f-9a0b-1c2d3e4f5a6b/v2.0"
jwks = "jwks.json"
audiences = ["api://a"]

[[listener]]
name = "web"
listen = "127.0.0.1:0"
protocol = "http"

[[route]]
name = "acl"
listener = "web"
path_prefix = "/acl"
upstream = "http://127.0.0.1:1"
provider = "entra"
allow_acl_tokens = true
[route.source]
allow = ["::/0"]
[route.require]
app_ids = ["5a0c7e2b-9d1f-4c3a-b6e8-2f4d6a8c0e1b"]

[[route]]
name = "default"
listener = "web"
upstream = "http://127.0.0.1:1"
provider = "entra"
[route.source]
allow = ["::/0"]
"#;
    let cfg = Config::from_toml_str(text, &pki.dir).unwrap_or_else(|e| panic!("{}", show(&e)));
    let intraport_gateway::config::Routes::Http { routes, .. } = &cfg.listeners[0].routes else {
        panic!("an HTTP listener");
    };
    let acl: Vec<(&str, bool)> = routes
        .iter()
        .map(|r| (r.name.as_str(), r.allow_acl_tokens))
        .collect();
    assert!(acl.contains(&("acl", true)), "{acl:?}");
    assert!(acl.contains(&("default", false)), "{acl:?}");

    // Not on a TCP route, where no token is read.
    let tcp = r#"[[listener]]
name = "plain"
listen = "127.0.0.1:0"
protocol = "tcp"

[[route]]
name = "tcp"
listener = "plain"
upstream = "127.0.0.1:1"
allow_acl_tokens = true
[route.source]
allow = ["::/0"]
"#;
    let shown = show(&Config::from_toml_str(tcp, &pki.dir).unwrap_err());
    assert!(
        shown.contains("route[0].allow_acl_tokens: `allow_acl_tokens` applies to HTTP routes"),
        "{shown}"
    );
}

const BROKEN: &str = r#"[server]
worker_threads = 0
colour = "blue"

[[provider]]
name = "entra"
tenant = "${INTRAPORT_TEST_SURELY_UNSET_VAR}"
audiences = ["a"]
audience = "x"

[[listener]]
name = "web"
listen = "127.0.0.1:99999"
protocol = "https"

[[listener]]
name = "plain"
listen = "127.0.0.1:0"
protocol = "http"
trusted_proxies = ["10.0.0.300/8"]

[[listener]]
name = "secure"
listen = "127.0.0.1:0"
protocol = "https"
[listener.tls]
cert = "missing.pem"
key = "missing-key.pem"
min_version = "1.1"

[[route]]
name = "a"
listener = "plain"
upstream = "http://127.0.0.1:1"
provider = "nope"
[route.source]
allow = ["10.0.0.1/8"]

[[route]]
name = "b"
listener = "plain"
upstream = "http://127.0.0.1:2"
identity = "none"
[route.source]
allow = ["0.0.0.0/0"]

[[route]]
name = "c"
listener = "ghost"
upstream = "http://127.0.0.1:3"
identity = "none"

[[route]]
name = "d"
listener = "plain"
upstream = "http://127.0.0.1:4"
identity = "client_cert"
path_prefix = "/d"
[route.source]
allow = ["::/0"]

[[route]]
name = "e"
listener = "plain"
upstream = 5
identity = "none"
path_prefix = "/e"
[route.source]
allow = ["::/0"]

[[route]]
name = "f"
listener = "plain"
upstream = "http://127.0.0.1:6/base"
identity = "sometimes"
path_prefix = "/f"
[route.require]
roles_any = ["Reader"]
"#;

fn show(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_error_of_a_broken_file_is_reported_at_its_line() {
    let pki = Pki::new();
    write(&pki.dir, "broken.toml", BROKEN);
    let file = pki.path("broken.toml");
    let errors = load_config(&file).expect_err("the broken file must be refused");
    let all = show(&errors);
    eprintln!("{all}");
    let expect: &[(usize, &str, &str)] = &[
        (2, "server.worker_threads", "at least 1"),
        (3, "server.colour", "unknown field `colour`"),
        (
            7,
            "provider[0].tenant",
            "INTRAPORT_TEST_SURELY_UNSET_VAR is not set",
        ),
        (9, "provider[0].audience", "unknown field `audience`"),
        (13, "listener[0].listen", "not an address"),
        (14, "listener[0].tls", "needs a [listener.tls]"),
        (20, "listener[1].trusted_proxies[0]", "10.0.0.300/8"),
        (27, "listener[2].tls.cert", "missing.pem"),
        (28, "listener[2].tls.key", "missing-key.pem"),
        (29, "listener[2].tls.min_version", "\"1.2\" or \"1.3\""),
        (35, "route[0].provider", "no provider is named `nope`"),
        (37, "route[0].source.allow[0]", "did you mean 10.0.0.0/8"),
        (39, "route[1]", "routes `a` and `b` overlap"),
        (49, "route[2].listener", "no listener is named `ghost`"),
        (57, "route[3].identity", "asks for none"),
        (65, "route[4].upstream", "invalid type"),
        (74, "route[5].upstream", "no path"),
        (71, "route[5].source.allow", "every client would be refused"),
        (75, "route[5].identity", "unknown identity `sometimes`"),
        (11, "listener[0]", "listener `web` has no route"),
        (22, "listener[2]", "listener `secure` has no route"),
    ];
    for (line, path, fragment) in expect {
        assert!(
            errors
                .iter()
                .any(|e| e.line == *line && e.path == *path && e.message.contains(fragment)),
            "missing error at line {line} `{path}` containing {fragment:?}; got:\n{all}"
        );
        assert!(
            errors
                .iter()
                .all(|e| e.file.as_deref() == Some(file.as_path())),
            "every error names the file"
        );
    }
    // Nothing else: no cascade of follow-on errors.
    let extra: Vec<&ConfigError> = errors
        .iter()
        .filter(|e| {
            !expect
                .iter()
                .any(|(l, p, f)| e.line == *l && e.path == *p && e.message.contains(f))
        })
        .collect();
    assert!(extra.is_empty(), "unexpected errors: {extra:#?}");
    // The rendering is file:line:column: path: message.
    let first = errors.iter().find(|e| e.line == 3).unwrap().to_string();
    assert!(
        first.starts_with(&format!("{}:3:1: server.colour: ", file.display())),
        "{first}"
    );
}

#[test]
fn syntax_errors_and_unreadable_files() {
    let errors = intraport_gateway::Config::from_toml_str("[server\nx = 1\n", Path::new("."))
        .expect_err("not TOML");
    assert_eq!(errors[0].line, 1, "{}", show(&errors));
    assert!(errors[0].message.contains("TOML syntax"));
    let errors = load_config(Path::new("/nonexistent/intraport.toml")).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].message.contains("cannot read"),
        "{}",
        show(&errors)
    );
}

#[test]
fn environment_references_fill_values() {
    // Defaults rather than set variables: the test changes no process state.
    let text = r#"
[[listener]]
name = "web"
listen = "${INTRAPORT_TEST_UNSET_LISTEN:-127.0.0.1:0}"
protocol = "http"

[[route]]
name = "r"
listener = "web"
upstream = "${INTRAPORT_TEST_UNSET_UPSTREAM:-http://127.0.0.1:9}"
identity = "none"
[route.source]
allow = ["127.0.0.1", "$$notanet"]
"#;
    let errors = intraport_gateway::Config::from_toml_str(text, Path::new(".")).unwrap_err();
    assert_eq!(errors.len(), 1, "{}", show(&errors));
    assert_eq!(errors[0].path, "route[0].source.allow[1]");
    assert!(errors[0].message.contains("$notanet"), "{}", show(&errors));
    let ok = text.replace(", \"$$notanet\"", "");
    let cfg = intraport_gateway::Config::from_toml_str(&ok, Path::new(".")).unwrap();
    assert_eq!(cfg.listeners[0].listen.to_string(), "127.0.0.1:0");
}

#[test]
fn case_sensitive_routes_are_checked() {
    let pki = Pki::new();
    let web = "[[listener]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"http\"\n";
    let route = |name: &str, prefix: &str, extra: &str| {
        format!(
            "[[route]]\nname = \"{name}\"\nlistener = \"web\"\npath_prefix = \"{prefix}\"\nupstream = \"http://127.0.0.1:9\"\nidentity = \"none\"\n{extra}\n[route.source]\nallow = [\"127.0.0.1\"]\n"
        )
    };
    let strict = "case_sensitive = true";
    // Two spellings are two routes only when both upstreams are case-sensitive.
    let text = format!(
        "{web}{}{}",
        route("a", "/Admin", strict),
        route("b", "/admin", strict)
    );
    Config::from_toml_str(&text, &pki.dir).unwrap_or_else(|e| panic!("{}", show(&e)));
    for (a, b) in [("", ""), (strict, ""), ("", strict)] {
        let text = format!(
            "{web}{}{}",
            route("a", "/Admin", a),
            route("b", "/admin", b)
        );
        let e = show(&Config::from_toml_str(&text, &pki.dir).unwrap_err());
        assert!(e.contains("routes `a` and `b` overlap"), "{a:?} {b:?}: {e}");
        assert!(e.contains("case_sensitive"), "the message says why: {e}");
    }
    let cases = [
        (
            format!("{web}{}", route("a", "/", "case_sensitive = \"yes\"")),
            "route[0].case_sensitive",
            "invalid type",
        ),
        (
            format!("{web}{}", route("a", "/api;v=1", "")),
            "route[0].path_prefix",
            "path parameter",
        ),
        (
            "[[listener]]\nname = \"ldap\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"tcp\"\n\
             [[route]]\nname = \"d\"\nlistener = \"ldap\"\nupstream = \"127.0.0.1:389\"\n\
             case_sensitive = true\n[route.source]\nallow = [\"127.0.0.1\"]\n"
                .to_string(),
            "route[0].case_sensitive",
            "applies to HTTP routes",
        ),
    ];
    for (text, path, fragment) in cases {
        let errors = Config::from_toml_str(&text, &pki.dir).unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.path == path && e.message.contains(fragment)),
            "expected `{path}` containing {fragment:?}; got:\n{}",
            show(&errors)
        );
    }
}
