//! A real interception proxy: `mitmdump` (mitmproxy, from the test venv) in reverse
//! mode in front of a rustls server on 127.0.0.1, with its own freshly generated CA.
//! `check` must call the re-signed chain interception and name mitmproxy's CA, both
//! by expected issuer and by SPKI pin, while the same server reached directly passes.
//!
//! Needs `INTRAPORT_TEST_VENV` (set by `scripts/test.sh`, which installs mitmproxy
//! there); without it the test says so and skips.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use intraport_netcheck::check::FindingKind;
use intraport_netcheck::expect::{Expectations, Interception};
use intraport_netcheck::tls::{ChainVerdict, HandshakeOutcome, roots_from_pem};

/// A running `mitmdump`, killed when dropped.
struct Mitmdump {
    child: Child,
    addr: SocketAddr,
    confdir: tempfile::TempDir,
}

impl Drop for Mitmdump {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Mitmdump {
    /// Start `mitmdump` as a reverse proxy to `upstream` on a port the OS picks, with a
    /// private confdir (so it makes its own CA), and wait for its "listening at" line.
    fn start(bin: &Path, upstream: SocketAddr) -> Mitmdump {
        let confdir = tempfile::tempdir().unwrap();
        let mut child = Command::new(bin)
            .arg("--mode")
            .arg(format!("reverse:https://{upstream}@0"))
            .args(["--listen-host", "127.0.0.1"])
            .arg("--set")
            .arg(format!("confdir={}", confdir.path().display()))
            // The upstream's certificate comes from the test CA, which mitmproxy does
            // not trust; an appliance would be configured the same way.
            .arg("--ssl-insecure")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let (tx, rx) = mpsc::channel::<String>();
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    // "reverse proxy to https://127.0.0.1:N listening at 127.0.0.1:M."
                    if let Some(at) = line.split("listening at ").nth(1) {
                        let at = at.trim().trim_end_matches('.');
                        if let Ok(addr) = at.parse::<SocketAddr>() {
                            break addr;
                        }
                    }
                    seen.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!("mitmdump did not start listening within 60 s; it said: {seen:#?}");
                }
            }
        };
        Mitmdump {
            child,
            addr,
            confdir,
        }
    }

    /// mitmproxy's CA certificate, written into the confdir at start-up.
    fn ca_pem(&self) -> PathBuf {
        self.confdir.path().join("mitmproxy-ca-cert.pem")
    }
}

/// `mitmdump` from the test venv, or `None` (with a message) when no venv is given.
fn mitmdump_bin() -> Option<PathBuf> {
    let Some(venv) = std::env::var_os("INTRAPORT_TEST_VENV") else {
        eprintln!(
            "SKIPPED: INTRAPORT_TEST_VENV is not set; run scripts/test.sh (it installs \
             mitmproxy into .venv and exports the variable) to run the interception test"
        );
        return None;
    };
    let bin = PathBuf::from(venv).join("bin/mitmdump");
    assert!(
        bin.is_file(),
        "INTRAPORT_TEST_VENV is set but {} does not exist: install mitmproxy into the venv",
        bin.display()
    );
    Some(bin)
}

#[tokio::test(flavor = "multi_thread")]
async fn mitmproxy_in_the_path_is_reported_as_interception_naming_its_ca() {
    let Some(bin) = mitmdump_bin() else { return };
    let real = Ca::new("Real Issuing CA");
    let server = rustls_server(&real.leaf(&["gw.intraport.test"], -1, 365)).await;
    let mitm = tokio::task::spawn_blocking({
        let upstream = server.addr;
        move || Mitmdump::start(&bin, upstream)
    })
    .await
    .unwrap();
    assert_eq!(mitm.addr.ip(), IpAddr::from([127, 0, 0, 1]));

    // The real server, directly: as expected, and learn its key's pin.
    let by_issuer = Expectations::parse(
        "[[endpoint]]\nhost = \"gw.intraport.test\"\nissuers = [\"Real Issuing CA\"]\n",
        "expect.toml",
    )
    .unwrap();
    let mut opts = options(real.roots());
    opts.expectations = by_issuer.clone();
    let direct = check("gw.intraport.test", server.addr, &opts).await;
    assert!(direct.ok, "{:#?}", direct.findings);
    assert_eq!(direct.interception, Some(Interception::AsExpected));
    let HandshakeOutcome::Completed(n) = &direct.tls[0].outcome else {
        panic!("{:?}", direct.tls)
    };
    let real_pin = n.chain[0].spki_sha256.clone();

    // Through mitmproxy, on a client that trusts mitmproxy's CA (as managed clients
    // behind an inspection appliance do): the chain verifies, only the expectation
    // can tell.
    let mitm_roots = Arc::new(roots_from_pem(&mitm.ca_pem().display().to_string()).unwrap());
    let mut opts = options(Arc::clone(&mitm_roots));
    opts.expectations = by_issuer.clone();
    let r = check("gw.intraport.test", mitm.addr, &opts).await;
    assert!(!r.ok);
    assert_eq!(kinds(&r), [FindingKind::Interception], "{:#?}", r.findings);
    assert!(
        r.findings[0].message.contains("mitmproxy"),
        "the finding names the intercepting CA: {}",
        r.findings[0].message
    );
    match &r.interception {
        Some(Interception::Intercepted {
            intercepting_ca,
            expected,
        }) => {
            assert!(intercepting_ca.contains("mitmproxy"), "{intercepting_ca}");
            assert!(expected.contains("Real Issuing CA"), "{expected}");
        }
        other => panic!("expected interception, got {other:?}"),
    }
    let HandshakeOutcome::Completed(n) = &r.tls[0].outcome else {
        panic!("{:?}", r.tls)
    };
    assert_eq!(n.verdict, ChainVerdict::Valid);
    assert!(n.chain[0].issuer.contains("mitmproxy"), "{:?}", n.chain[0]);
    assert_ne!(
        n.chain[0].spki_sha256, real_pin,
        "mitmproxy re-signs with its own key"
    );

    // By pin: the real server's key is pinned, mitmproxy presents another.
    let pinned = Expectations::parse(
        &format!("[[endpoint]]\nhost = \"gw.intraport.test\"\nspki_sha256 = [\"{real_pin}\"]\n"),
        "pins.toml",
    )
    .unwrap();
    let mut opts = options(Arc::clone(&mitm_roots));
    opts.expectations = pinned.clone();
    let r = check("gw.intraport.test", mitm.addr, &opts).await;
    assert_eq!(kinds(&r), [FindingKind::Interception], "{:#?}", r.findings);
    assert!(
        r.findings[0].message.contains("mitmproxy"),
        "{:?}",
        r.findings
    );
    let mut opts = options(real.roots());
    opts.expectations = pinned;
    assert!(check("gw.intraport.test", server.addr, &opts).await.ok);

    // A client that does not trust mitmproxy's CA sees an untrusted chain as well.
    let mut opts = options(real.roots());
    opts.expectations = by_issuer;
    let r = check("gw.intraport.test", mitm.addr, &opts).await;
    let k = kinds(&r);
    assert!(k.contains(&FindingKind::CertificateUntrusted), "{k:?}");
    assert!(k.contains(&FindingKind::Interception), "{k:?}");
    drop(mitm);
}
