//! `intraport config check` and `intraport serve` refuse the same files with the same
//! errors: both run one validation, which builds everything `serve` builds at start
//! short of binding sockets. A table of broken configurations, each refused by both
//! naming its field, and a file with every kind of missing file, all reported in one
//! run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Guard, free_port};

/// A valid configuration: one plain listener, one token route, a provider by
/// discovery (no file, nothing fetched before serving).
fn base(admin: u16, port: u16) -> String {
    format!(
        "[server]\nworker_threads = 1\nshutdown_grace_seconds = 1\nwatch_config = false\n\
         [admin]\nlisten = \"127.0.0.1:{admin}\"\n\
         [[provider]]\nname = \"idp\"\n\
         discovery = \"http://127.0.0.1:9/.well-known/openid-configuration\"\n\
         audiences = [\"api://x\"]\n\
         [[listener]]\nname = \"web\"\nlisten = \"127.0.0.1:{port}\"\nprotocol = \"http\"\n\
         [[route]]\nname = \"r\"\nlistener = \"web\"\nupstream = \"http://127.0.0.1:9\"\n\
         provider = \"idp\"\n[route.source]\nallow = [\"127.0.0.1\"]\n"
    )
}

struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        let d = std::env::temp_dir().join(format!("intraport-agree-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `config check --format json FILE`: its exit code and its errors, each rendered as
/// `serve` prints it (`file:line:column: field: message`), with its field and line.
fn check(file: &Path) -> (Option<i32>, Vec<(String, String, u64)>) {
    let out = common::run(
        &[
            "config",
            "check",
            "--format",
            "json",
            file.to_str().unwrap(),
        ],
        None,
    );
    let doc = common::json_of(&out);
    let errors = doc["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let line = e["line"].as_u64().unwrap();
            let field = e["field"].as_str().unwrap().to_string();
            let mut text = format!("{}:{line}:{}: ", e["file"].as_str().unwrap(), e["column"]);
            if !field.is_empty() {
                text += &format!("{field}: ");
            }
            text += e["message"].as_str().unwrap();
            (text, field, line)
        })
        .collect();
    (out.status.code(), errors)
}

/// `serve --config FILE`, which must exit on its own within 15 s: its exit code and
/// stderr; or, when it starts serving instead, its stderr once stopped.
fn serve_refuses(file: &Path) -> Result<(Option<i32>, String), String> {
    let mut child = Command::new(common::bin())
        .args(["serve", "--config"])
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut { stderr }, &mut s);
        s
    });
    let mut guard = Guard(child);
    let until = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(st) = guard.0.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > until {
            let _ = guard.0.kill();
            let _ = guard.0.wait();
            return Err(reader.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok((status.code(), reader.join().unwrap()))
}

#[test]
fn config_check_and_serve_refuse_the_same_files() {
    let dir = Dir::new();
    let (admin, port) = (free_port(), free_port());
    let good = base(admin, port);
    let file = dir.write("good.toml", &good);
    let (code, errors) = check(&file);
    assert_eq!(code, Some(0), "the base file is valid: {errors:#?}");
    std::fs::write(dir.0.join("plain"), "a regular file").unwrap();

    let listener_at = good.find("[[listener]]").unwrap();
    let other = free_port();
    let cases: Vec<(&str, String, &str, &str)> = vec![
        ("empty", String::new(), "listener", "no [[listener]]"),
        (
            "truncated before its listeners",
            good[..listener_at].to_string(),
            "listener",
            "no [[listener]]",
        ),
        (
            "no audience",
            good.replace("audiences = [\"api://x\"]", "audiences = []"),
            "provider[0].audiences",
            "audience",
        ),
        (
            "a tenant that is not a GUID",
            good.replace(
                "audiences = [\"api://x\"]",
                "audiences = [\"api://x\"]\nallowed_tenants = [\"contoso\"]",
            ),
            "provider[0].allowed_tenants",
            "not a GUID",
        ),
        (
            "a listener on the admin address",
            good.replace(
                &format!("listen = \"127.0.0.1:{port}\""),
                &format!("listen = \"127.0.0.1:{admin}\""),
            ),
            "listener[0].listen",
            "admin",
        ),
        (
            "a wildcard listener on a listener's port",
            format!(
                "{good}[[listener]]\nname = \"all\"\nlisten = \"0.0.0.0:{port}\"\nprotocol = \"http\"\n\
                 [[route]]\nname = \"s\"\nlistener = \"all\"\nupstream = \"http://127.0.0.1:9\"\n\
                 identity = \"none\"\n[route.source]\nallow = [\"127.0.0.1\"]\n"
            ),
            "listener[1].listen",
            "already listens",
        ),
        (
            "an audit file under a regular file",
            format!(
                "{good}[audit]\n[[audit.sink]]\ntype = \"file\"\npath = \"plain/audit.jsonl\"\n"
            ),
            "audit.sink[0].path",
            "is not a directory",
        ),
        (
            "a key set file that is missing",
            good.replace(
                "discovery = \"http://127.0.0.1:9/.well-known/openid-configuration\"",
                "issuer = \"https://issuer.example/\"\njwks = \"missing-jwks.json\"",
            ),
            "provider[0].jwks",
            "missing-jwks.json",
        ),
        (
            "a spool directory that is a regular file",
            format!(
                "{good}[audit]\nspool_dir = \"plain\"\n[[audit.sink]]\ntype = \"syslog\"\n\
                 transport = \"tcp\"\naddress = \"127.0.0.1:{other}\"\n"
            ),
            "audit.spool_dir",
            "is not a directory",
        ),
    ];
    // Every case is tried, and every disagreement listed.
    let mut failed = Vec::new();
    for (case, text, field, fragment) in &cases {
        let file = dir.write("broken.toml", text);
        let (code, errors) = check(&file);
        let Some((line, ..)) = errors
            .iter()
            .find(|(t, f, l)| f == field && *l > 0 && t.contains(fragment))
        else {
            failed.push(format!(
                "{case}: config check exits {code:?} with no error at `{field}` containing {fragment:?}: {errors:#?}"
            ));
            continue;
        };
        if code != Some(1) {
            failed.push(format!("{case}: config check exits {code:?}"));
        }
        match serve_refuses(&file) {
            Err(stderr) => failed.push(format!(
                "{case}: serve started on a file config check refuses; stderr:\n{stderr}"
            )),
            Ok((code, stderr)) => {
                if code != Some(2) || !stderr.contains(line.as_str()) {
                    failed.push(format!(
                        "{case}: serve must exit 2 with config check's error {line:?}; it exits {code:?} with:\n{stderr}"
                    ));
                }
            }
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

#[test]
fn every_missing_file_is_reported_in_one_run() {
    let dir = Dir::new();
    let (admin, port) = (free_port(), free_port());
    let text = format!(
        "[server]\nworker_threads = 1\nwatch_config = false\n\
         [admin]\nlisten = \"127.0.0.1:{admin}\"\n\
         [audit]\nspool_dir = \"spool\"\n\
         [[audit.sink]]\ntype = \"syslog\"\ntransport = \"tls\"\naddress = \"127.0.0.1:6514\"\n\
         ca = \"gone/siem-ca.pem\"\nclient_cert = \"gone/siem-cert.pem\"\nclient_key = \"gone/siem-key.pem\"\n\
         [[provider]]\nname = \"idp\"\nissuer = \"https://issuer.example/\"\n\
         jwks = \"gone/jwks.json\"\nca_file = \"gone/idp-ca.pem\"\naudiences = [\"api://x\"]\n\
         [[listener]]\nname = \"web\"\nlisten = \"127.0.0.1:{port}\"\nprotocol = \"https\"\n\
         [listener.tls]\ncert = \"gone/cert.pem\"\nkey = \"gone/key.pem\"\n\
         client_ca = \"gone/clients-ca.pem\"\n\
         [[route]]\nname = \"r\"\nlistener = \"web\"\nupstream = \"https://127.0.0.1:9\"\n\
         upstream_ca = \"gone/upstream-ca.pem\"\nprovider = \"idp\"\n\
         [route.source]\nallow = [\"127.0.0.1\"]\n"
    );
    let file = dir.write("gateway.toml", &text);
    let (code, errors) = check(&file);
    assert_eq!(code, Some(1));
    let expect = [
        ("audit.sink[0].ca", "siem-ca.pem"),
        ("audit.sink[0].client_cert", "siem-cert.pem"),
        ("audit.sink[0].client_key", "siem-key.pem"),
        ("provider[0].jwks", "jwks.json"),
        ("provider[0].ca_file", "idp-ca.pem"),
        ("listener[0].tls.cert", "cert.pem"),
        ("listener[0].tls.key", "key.pem"),
        ("listener[0].tls.client_ca", "clients-ca.pem"),
        ("route[0].upstream_ca", "upstream-ca.pem"),
    ];
    for (field, name) in expect {
        // The line is the field's own: its key is on it.
        let key = field.rsplit('.').next().unwrap();
        let found = errors.iter().find(|(t, f, l)| {
            f == field
                && t.contains(name)
                && text
                    .lines()
                    .nth(*l as usize - 1)
                    .is_some_and(|s| s.starts_with(key))
        });
        assert!(
            found.is_some(),
            "no error at `{field}` naming {name}: {errors:#?}"
        );
    }
    assert_eq!(errors.len(), expect.len(), "nothing else: {errors:#?}");
    let (code, stderr) = serve_refuses(&file).expect("serve must refuse it");
    assert_eq!(code, Some(2), "{stderr}");
    for (line, ..) in &errors {
        assert!(
            stderr.contains(line.as_str()),
            "serve omits {line:?}:\n{stderr}"
        );
    }
}
