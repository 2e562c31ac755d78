//! Harness for end-to-end tests of the `intraport` binary: processes that are always
//! stopped, readiness by polling with a deadline, paths of the test components.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_intraport")
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python with `msal` (and the other test packages): INTRAPORT_TEST_PYTHON, else
/// the workspace's .venv made by the README's test command.
pub fn python() -> PathBuf {
    let p = std::env::var_os("INTRAPORT_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv/bin/python"));
    assert!(
        p.exists(),
        "no test Python at {}: run the README's test command (scripts/test.sh), which creates it",
        p.display()
    );
    p
}

/// Run `intraport ARGS` (with optional stdin) to completion.
pub fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
    }
    child.wait_with_output().unwrap()
}

/// `intraport probe run --once --config CONFIG --db DB --format FORMAT`, not yet
/// started (output piped).
pub fn probe_once_command(config: &Path, db: &Path, format: &str) -> Command {
    let mut c = Command::new(bin());
    c.args(["probe", "run", "--once", "--format", format, "--config"])
        .arg(config)
        .arg("--db")
        .arg(db)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// [`probe_once_command`] run to completion (within a minute).
pub fn probe_once(config: &Path, db: &Path, format: &str) -> Output {
    finish(
        probe_once_command(config, db, format).spawn().unwrap(),
        Duration::from_secs(60),
    )
}

/// `intraport probe report --db DB --format FORMAT`.
pub fn probe_report(db: &Path, format: &str) -> Output {
    run(
        &[
            "probe",
            "report",
            "--db",
            db.to_str().unwrap(),
            "--format",
            format,
        ],
        None,
    )
}

/// The element of a JSON array (runs of `probe run`, probes of `probe report`)
/// whose `probe` is `name`.
pub fn probe_named<'a>(list: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|r| r["probe"] == name)
        .unwrap_or_else(|| panic!("no probe {name} in {list:#}"))
}

/// The stage names of one run of `probe run --format json`, in order.
pub fn stage_names(run: &serde_json::Value) -> Vec<&str> {
    run["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect()
}

pub fn json_of(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}; {:?}):\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A child process killed and reaped on drop.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `intraport dev --format json`: the running issuer and its start-up summary.
pub struct Dev {
    pub guard: Guard,
    pub info: serde_json::Value,
}

impl Dev {
    pub fn start() -> Dev {
        let state =
            std::env::temp_dir().join(format!("intraport-dev-test-{}", uuid::Uuid::new_v4()));
        let mut child = Command::new(bin())
            .args(["dev", "--format", "json", "--state-dir"])
            .arg(&state)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut doc = String::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                doc.push_str(&line);
                doc.push('\n');
                if line == "}" {
                    let _ = tx.send(doc);
                    // keep draining so the child never blocks on a full pipe
                    doc = String::new();
                }
            }
        });
        let guard = Guard(child);
        let doc = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("intraport dev printed no summary within 20 s");
        Dev {
            guard,
            info: serde_json::from_str(&doc).unwrap(),
        }
    }

    pub fn s(&self, key: &str) -> String {
        self.info[key].as_str().unwrap_or_default().to_string()
    }

    /// The `token verify` arguments that trust this issuer.
    pub fn verify_args(&self) -> Vec<String> {
        vec![
            "token".into(),
            "verify".into(),
            "--authority".into(),
            self.s("authority"),
            "--tenant".into(),
            self.s("tenant_id"),
            "--ca".into(),
            self.s("ca_file"),
            "--audience".into(),
            self.info["audience"][0].as_str().unwrap().into(),
            "--audience".into(),
            self.info["audience"][1].as_str().unwrap().into(),
            "--format".into(),
            "json".into(),
        ]
    }
}

/// The real npm `oidc-provider` (installed into tests/idp by the README's test
/// command), started by tests/idp/launch.mjs on 127.0.0.1 with its signing keys in
/// `dir/keys.json`: client `svc-reader` / `svc-reader-secret` (client credentials),
/// JWT access tokens for resource `api://intraport-idp`. Returns the guard and the
/// issuer URL (`http://127.0.0.1:PORT`, token endpoint `{issuer}/token`).
pub fn start_oidc_provider(dir: &Path) -> (Guard, String) {
    let idp_dir = root().join("tests/idp");
    assert!(
        idp_dir.join("node_modules/oidc-provider").is_dir(),
        "oidc-provider is not installed: run the README's test command (scripts/test.sh)"
    );
    let mut child = Command::new("node")
        .arg(idp_dir.join("launch.mjs"))
        .arg("--keys")
        .arg(dir.join("keys.json"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let guard = Guard(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(i) = line.strip_prefix("READY ") {
                let _ = tx.send(i.to_string());
            }
        }
    });
    let issuer = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("oidc-provider not ready within 30 s");
    (guard, issuer)
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Poll `ready` every 50 ms until it holds; fail the test after `deadline`.
pub fn wait_for(what: &str, deadline: Duration, mut ready: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !ready() {
        assert!(
            Instant::now() < until,
            "{what} not ready within {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The base DN of the test directory.
pub const LDAP_SUFFIX: &str = "dc=intraport,dc=test";

/// The configuration of a test `slapd` under `dir`: the core schemas, an mdb
/// database for [`LDAP_SUFFIX`] in `dir/db` with `cn=admin` / `secret` as root,
/// `modules` loaded beside `back_mdb`, and `database_lines` at the end of the
/// database section (overlays, syncrepl).
fn slapd_conf(dir: &Path, modules: &[&str], database_lines: &str) -> PathBuf {
    let db = dir.join("db");
    std::fs::create_dir_all(&db).unwrap();
    let conf = dir.join("slapd.conf");
    let modules: String = modules
        .iter()
        .map(|m| format!("moduleload {m}\n"))
        .collect();
    std::fs::write(
        &conf,
        format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             pidfile {pid}\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             {modules}\
             database mdb\n\
             suffix \"{LDAP_SUFFIX}\"\n\
             rootdn \"cn=admin,{LDAP_SUFFIX}\"\n\
             rootpw secret\n\
             directory {db}\n\
             maxsize 10485760\n\
             {database_lines}",
            pid = dir.join("slapd.pid").display(),
            db = db.display()
        ),
    )
    .unwrap();
    conf
}

/// Load the suffix entry and `cn=sync-reader` (mail `sync-reader@contoso.example`).
fn slapadd_base(dir: &Path, conf: &Path) {
    let ldif = dir.join("base.ldif");
    std::fs::write(
        &ldif,
        format!(
            "dn: {LDAP_SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: intraport\ndc: intraport\n\n\
             dn: cn=sync-reader,{LDAP_SUFFIX}\nobjectClass: inetOrgPerson\ncn: sync-reader\nsn: Reader\nmail: sync-reader@contoso.example\n"
        ),
    )
    .unwrap();
    let out = Command::new("slapadd")
        .arg("-f")
        .arg(conf)
        .arg("-l")
        .arg(&ldif)
        .output()
        .expect("slapadd (Debian package slapd) must be installed");
    assert!(
        out.status.success(),
        "slapadd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `slapd -f conf` on 127.0.0.1:`port`, returned once it accepts connections.
fn spawn_slapd(conf: &Path, port: u16) -> Guard {
    let child = Command::new("slapd")
        .arg("-f")
        .arg(conf)
        .arg("-h")
        .arg(format!("ldap://127.0.0.1:{port}/"))
        .args(["-d", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("slapd (Debian package slapd) must be installed");
    let guard = Guard(child);
    wait_for("slapd", Duration::from_secs(15), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    guard
}

/// OpenLDAP `slapd` (Debian) with an mdb database under `dir` holding one entry,
/// `cn=sync-reader` (mail `sync-reader@contoso.example`), on 127.0.0.1:`port`;
/// returned once it accepts connections, stopped when the guard drops.
pub fn start_slapd(dir: &Path, port: u16) -> Guard {
    let conf = slapd_conf(dir, &[], "");
    slapadd_base(dir, &conf);
    spawn_slapd(&conf, port)
}

/// Two `slapd` replicating [`LDAP_SUFFIX`]: a provider with the `syncprov` overlay
/// (holding what [`start_slapd`] loads) and a consumer (mdb, `syncrepl ...
/// type=refreshAndPersist`, binding to the provider as `cn=admin`).
pub struct SyncreplPair {
    /// Stopped before `provider` (fields drop in order).
    pub consumer: Guard,
    pub provider: Guard,
    pub provider_port: u16,
    pub consumer_port: u16,
}

/// Start a [`SyncreplPair`] under `dir`, returned once the consumer's first refresh
/// has brought `cn=sync-reader` over.
pub fn start_syncrepl_pair(dir: &Path) -> SyncreplPair {
    let (provider_port, consumer_port) = (free_port(), free_port());
    let pdir = dir.join("provider");
    let conf = slapd_conf(
        &pdir,
        &["syncprov"],
        "index objectClass,entryCSN,entryUUID eq\noverlay syncprov\n",
    );
    slapadd_base(&pdir, &conf);
    let provider = spawn_slapd(&conf, provider_port);
    let conf = slapd_conf(
        &dir.join("consumer"),
        &[],
        &format!(
            "index objectClass,entryCSN,entryUUID eq\n\
             syncrepl rid=001 provider=ldap://127.0.0.1:{provider_port} type=refreshAndPersist \
             retry=\"1 +\" searchbase=\"{LDAP_SUFFIX}\" bindmethod=simple \
             binddn=\"cn=admin,{LDAP_SUFFIX}\" credentials=secret\n"
        ),
    );
    let consumer = spawn_slapd(&conf, consumer_port);
    wait_for(
        "the consumer's first refresh",
        Duration::from_secs(15),
        || {
            ldap_read(
                consumer_port,
                &format!("cn=sync-reader,{LDAP_SUFFIX}"),
                "mail",
            )
            .is_some()
        },
    );
    SyncreplPair {
        consumer,
        provider,
        provider_port,
        consumer_port,
    }
}

/// The values of `attr` of the entry `dn` in the test directory on
/// 127.0.0.1:`port` (`ldapsearch` from Debian's ldap-utils, anonymous); `None`
/// when the entry does not exist or the server does not answer.
pub fn ldap_read(port: u16, dn: &str, attr: &str) -> Option<Vec<String>> {
    let out = Command::new("ldapsearch")
        .args([
            "-x",
            "-LLL",
            "-o",
            "ldif-wrap=no",
            "-o",
            "nettimeout=5",
            "-l",
            "5",
        ])
        .arg("-H")
        .arg(format!("ldap://127.0.0.1:{port}"))
        .args(["-s", "base", "-b", dn, attr])
        .stdin(Stdio::null())
        .output()
        .expect("ldapsearch (Debian package ldap-utils) must be installed");
    if !out.status.success() {
        return None;
    }
    let prefix = format!("{attr}: ");
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix).map(String::from))
            .collect(),
    )
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
}

/// A process stopped with SIGSTOP, continued (SIGCONT) by [`Paused::resume`] or
/// when dropped. Drop it before the process's [`Guard`].
pub struct Paused(u32);

/// Stop the process of `guard` until the returned [`Paused`] resumes it.
pub fn pause(guard: &Guard) -> Paused {
    let pid = guard.0.id();
    signal(pid, "-STOP");
    Paused(pid)
}

impl Paused {
    pub fn resume(self) {}
}

impl Drop for Paused {
    fn drop(&mut self) {
        signal(self.0, "-CONT");
    }
}

/// Wait for `child` to exit within `within` (killed and the test failed otherwise)
/// and collect its output, which must fit the pipes' buffers.
pub fn finish(mut child: Child, within: Duration) -> Output {
    use std::io::Read;
    let until = Instant::now() + within;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the process did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    if let Some(mut o) = child.stdout.take() {
        o.read_to_end(&mut stdout).unwrap();
    }
    if let Some(mut e) = child.stderr.take() {
        e.read_to_end(&mut stderr).unwrap();
    }
    Output {
        status,
        stdout,
        stderr,
    }
}

/// Read a request head from `s` up to its blank line; the reader (for a body, or to
/// wait for the peer to close) and the request line.
pub fn read_head(s: &TcpStream) -> (BufReader<TcpStream>, String) {
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap_or_default();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
    }
    (reader, first)
}

/// A plain HTTP/1.1 upstream: `/…stream` answers 20 chunks 100 ms apart, anything
/// else `ok`.
pub fn upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let (_, first) = read_head(&s);
                if first.contains("stream") {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
                    for i in 0..20 {
                        let chunk = format!("part-{i:02}\n");
                        let _ = s.write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes());
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    let _ = s.write_all(b"0\r\n\r\n");
                } else {
                    let _ = s.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    );
                }
            });
        }
    });
    addr
}

/// An `intraport serve` configuration: one plain HTTP listener `web` on `port`, the
/// admin listener on `admin`, and one open route `/NAME` per name to `upstream`.
pub fn serve_config(port: u16, admin: u16, upstream: SocketAddr, routes: &[&str]) -> String {
    let mut t = format!(
        "[server]\nworker_threads = 1\nshutdown_grace_seconds = 10\nwatch_config = false\n\
         [admin]\nlisten = \"127.0.0.1:{admin}\"\n\
         [[listener]]\nname = \"web\"\nlisten = \"127.0.0.1:{port}\"\nprotocol = \"http\"\n"
    );
    for r in routes {
        t += &format!(
            "[[route]]\nname = \"{r}\"\nlistener = \"web\"\npath_prefix = \"/{r}\"\n\
             upstream = \"http://{upstream}\"\nidentity = \"none\"\n\
             [route.source]\nallow = [\"127.0.0.1\"]\n"
        );
    }
    t
}
