//! `intraport serve` as a process: SIGHUP reloads the file (a broken one is refused and
//! the old routes keep serving), SIGTERM stops accepting and drains a streaming
//! response before exiting 0. And `intraport config check`'s exit codes and JSON.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Guard, free_port, serve_config as config, upstream, wait_for};

/// `GET path` over a fresh connection: the status, or None when refused.
fn get(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

#[test]
fn sighup_reloads_and_sigterm_drains() {
    let dir = std::env::temp_dir().join(format!("intraport-serve-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("gateway.toml");
    let up = upstream();
    let (port, admin) = (free_port(), free_port());
    std::fs::write(&file, config(port, admin, up, &["a", "stream"])).unwrap();
    let child = Command::new(common::bin())
        .args(["serve", "--config"])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = Guard(child);
    let pid = guard.0.id();
    let stderr = guard.0.stderr.take().unwrap();
    let (tx, logs) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let gw: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let admin_addr: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    wait_for("the gateway", Duration::from_secs(20), || {
        get(admin_addr, "/healthz") == Some(200)
    });
    assert_eq!(get(gw, "/a"), Some(200));
    assert_eq!(get(gw, "/b"), Some(404));

    // A broken file: SIGHUP refuses it with its errors logged; the old routes serve.
    std::fs::write(&file, "[[route]]\nname = \"b\"\nbogus = 1\n").unwrap();
    signal(pid, "-HUP");
    let until = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("reload rejected")) {
        assert!(Instant::now() < until, "no rejection logged: {seen:#?}");
        if let Ok(l) = logs.recv_timeout(Duration::from_millis(200)) {
            seen.push(l);
        }
    }
    assert!(
        seen.iter()
            .any(|l| l.contains("gateway.toml:3:1") && l.contains("unknown field `bogus`")),
        "the error is logged with its location: {seen:#?}"
    );
    assert_eq!(get(gw, "/a"), Some(200));

    // A good file: applied on SIGHUP.
    std::fs::write(&file, config(port, admin, up, &["a", "b", "stream"])).unwrap();
    signal(pid, "-HUP");
    wait_for("the reloaded route", Duration::from_secs(10), || {
        get(gw, "/b") == Some(200)
    });

    // SIGTERM during a two-second streaming response: it completes, then the process
    // exits 0; meanwhile no new connection is accepted.
    let mut s = TcpStream::connect(gw).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(b"GET /stream HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 12];
    s.read_exact(&mut first).unwrap();
    assert!(first.starts_with(b"HTTP/1.1 200"));
    signal(pid, "-TERM");
    wait_for("the listener to close", Duration::from_secs(5), || {
        TcpStream::connect(gw).is_err()
    });
    let mut rest = String::new();
    s.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("part-19"), "the stream was cut: {rest}");
    let until = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(st) = guard.0.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < until, "serve did not exit after draining");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn config_check_exit_codes_and_json() {
    let dir = std::env::temp_dir().join(format!("intraport-check-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        config(
            free_port(),
            free_port(),
            "127.0.0.1:9".parse().unwrap(),
            &["a"],
        ),
    )
    .unwrap();
    let out = common::run(&["config", "check", "--format", "json", &path(&good)], None);
    assert_eq!(out.status.code(), Some(0));
    let doc = common::json_of(&out);
    assert_eq!(doc["valid"], true);
    assert_eq!(doc["routes"], 1);

    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[[listener]]\nname = \"web\"\nlisten = \"nowhere\"\nprotocol = \"http\"\n\
         [[route]]\nname = \"r\"\nlistener = \"web\"\nupstream = \"http://127.0.0.1:9\"\n\
         identity = \"none\"\n[route.source]\nallow = [\"300.0.0.0/8\"]\n",
    )
    .unwrap();
    let out = common::run(&["config", "check", "--format", "json", &path(&bad)], None);
    assert_eq!(out.status.code(), Some(1));
    let doc = common::json_of(&out);
    assert_eq!(doc["valid"], false);
    let errors = doc["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{doc}");
    assert_eq!(errors[0]["line"], 3);
    assert_eq!(errors[0]["field"], "listener[0].listen");
    assert_eq!(errors[1]["line"], 11);
    assert_eq!(errors[1]["field"], "route[0].source.allow[0]");
    let out = common::run(&["config", "check", "--format", "table", &path(&bad)], None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("bad.toml:3:10: listener[0].listen:"),
        "{text}"
    );

    // serve refuses an invalid file with exit code 2 and the errors on stderr.
    let out = common::run(&["serve", "--config", &path(&bad)], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.toml:11:"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `intraport serve --config FILE` with its log lines (ANSI styling removed) read as
/// they come.
struct Serve {
    guard: Guard,
    logs: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
    /// Where the next [`Serve::wait_log`] starts looking.
    mark: usize,
}

impl Serve {
    fn start(file: &Path) -> Serve {
        let mut child = Command::new(common::bin())
            .args(["serve", "--config"])
            .arg(file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, logs) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(plain(&line));
            }
        });
        Serve {
            guard: Guard(child),
            logs,
            seen: Vec::new(),
            mark: 0,
        }
    }

    fn pid(&self) -> u32 {
        self.guard.0.id()
    }

    /// Read log lines until one after the mark satisfies `want`, for at most `secs`
    /// seconds; the mark moves past it.
    fn wait_log(&mut self, secs: u64, what: &str, want: impl Fn(&str) -> bool) {
        let until = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(i) = self.seen[self.mark..].iter().position(|l| want(l)) {
                self.mark += i + 1;
                return;
            }
            assert!(
                Instant::now() < until,
                "{what}: not logged within {secs} s: {:#?}",
                self.seen
            );
            if let Ok(l) = self.logs.recv_timeout(Duration::from_millis(100)) {
                self.seen.push(l);
            }
        }
    }

    /// Move the mark past every line logged so far.
    fn mark_now(&mut self) {
        self.mark = self.drain().len();
    }

    /// Every line logged so far.
    fn drain(&mut self) -> &[String] {
        while let Ok(l) = self.logs.try_recv() {
            self.seen.push(l);
        }
        &self.seen
    }

    /// The exit status, within `secs` seconds.
    fn exit_within(&mut self, secs: u64) -> std::process::ExitStatus {
        let until = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(st) = self.guard.0.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < until, "serve did not exit within {secs} s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A log line without its ANSI styling.
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn temp_dir(what: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("intraport-{what}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The JSON lines of an audit file.
fn audit_events(file: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn an_empty_or_truncated_file_is_refused_on_sighup_and_by_the_watcher() {
    let dir = temp_dir("truncated");
    let file = dir.join("gateway.toml");
    let audit = dir.join("audit.jsonl");
    let up = upstream();
    let (port, admin) = (free_port(), free_port());
    let good = config(port, admin, up, &["a"])
        .replace("watch_config = false", "watch_config = true")
        + &format!(
            "[audit]\n[[audit.sink]]\ntype = \"file\"\npath = \"{}\"\n",
            audit.display()
        );
    std::fs::write(&file, &good).unwrap();
    let mut serve = Serve::start(&file);
    let gw: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let admin_addr: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    wait_for("the gateway", Duration::from_secs(20), || {
        get(admin_addr, "/healthz") == Some(200)
    });
    assert_eq!(get(gw, "/a"), Some(200));

    // Emptied (as `> gateway.toml` does): the watcher reads it once it settles and
    // refuses it; the listener keeps serving.
    std::fs::write(&file, "").unwrap();
    serve.wait_log(20, "the empty file refused", |l| {
        l.contains("no [[listener]]")
    });
    serve.wait_log(5, "the refusal", |l| l.contains("reload rejected"));
    assert_eq!(get(gw, "/a"), Some(200), "the listener must keep serving");

    // Cut short before its listeners, then SIGHUP: refused the same way.
    let cut = &good[..good.find("[[listener]]").unwrap()];
    std::fs::write(&file, cut).unwrap();
    serve.mark_now();
    signal(serve.pid(), "-HUP");
    serve.wait_log(10, "SIGHUP's refusal", |l| l.contains("no [[listener]]"));
    serve.wait_log(5, "SIGHUP's refusal", |l| l.contains("reload rejected"));
    assert_eq!(get(gw, "/a"), Some(200), "the listener must keep serving");

    // Both refusals are audited as refused reloads.
    signal(serve.pid(), "-TERM");
    assert!(serve.exit_within(20).success());
    let refused: Vec<_> = audit_events(&audit)
        .into_iter()
        .filter(|e| e["event"]["action"] == "reload" && e["event"]["outcome"] == "failure")
        .collect();
    assert!(refused.len() >= 2, "{refused:#?}");
    assert!(
        refused.iter().all(|e| e["message"]
            .as_str()
            .unwrap_or("")
            .contains("no [[listener]]")),
        "{refused:#?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_watcher_waits_for_a_file_being_written_and_retries_a_refused_one() {
    let dir = temp_dir("watch");
    let file = dir.join("gateway.toml");
    let up = upstream();
    let (port, admin) = (free_port(), free_port());
    let cfg = |routes: &[&str]| {
        config(port, admin, up, routes).replace("watch_config = false", "watch_config = true")
    };
    std::fs::write(&file, cfg(&["a"])).unwrap();
    let mut serve = Serve::start(&file);
    let gw: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let admin_addr: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    wait_for("the gateway", Duration::from_secs(20), || {
        get(admin_addr, "/healthz") == Some(200)
    });
    assert_eq!(get(gw, "/b"), Some(404));

    // A slow writer: the new file arrives a line every 40 ms (some of its prefixes
    // are not TOML, some are valid configurations with fewer routes). Nothing is read
    // until it stops changing: one reload, of the whole file.
    let next = cfg(&["a", "b", "c"]);
    {
        let mut f = std::fs::File::create(&file).unwrap();
        for line in next.split_inclusive('\n') {
            f.write_all(line.as_bytes()).unwrap();
            f.flush().unwrap();
            std::thread::sleep(Duration::from_millis(40));
        }
    }
    wait_for("the new routes", Duration::from_secs(20), || {
        get(gw, "/c") == Some(200)
    });
    assert_eq!(get(gw, "/b"), Some(200));
    let logs = serve.drain();
    let reloads = logs
        .iter()
        .filter(|l| l.contains("configuration reloaded"))
        .count();
    let refused = logs
        .iter()
        .filter(|l| l.contains("reload rejected"))
        .count();
    assert_eq!(
        (reloads, refused),
        (1, 0),
        "one reload of the whole file: {logs:#?}"
    );

    // Half-written and left so (not TOML): refused once it settles, the old routes
    // serve; completed later, it is read again and applied.
    let last = cfg(&["a", "b", "c", "d"]);
    let half = last.len() - 20;
    std::fs::write(&file, &last[..half]).unwrap();
    serve.mark_now();
    serve.wait_log(20, "the half-written file refused", |l| {
        l.contains("reload rejected")
    });
    assert_eq!(get(gw, "/c"), Some(200));
    assert_eq!(get(gw, "/d"), Some(404));
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap();
    f.write_all(&last.as_bytes()[half..]).unwrap();
    drop(f);
    wait_for("the completed file", Duration::from_secs(20), || {
        get(gw, "/d") == Some(200)
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// An upstream that takes requests and answers slowly: `/slow` never (it holds the
/// connection open), `/drip` a chunk every 200 ms for a minute. Each request's path
/// is sent on the channel once its head has arrived.
fn slow_upstream() -> (SocketAddr, std::sync::mpsc::Receiver<String>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let (mut reader, first) = common::read_head(&s);
                let path = first.split_whitespace().nth(1).unwrap_or("").to_string();
                let _ = tx.send(path.clone());
                if path == "/drip" {
                    let _ = s.write_all(
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
                    );
                    for i in 0..300 {
                        let chunk = format!("drop-{i:03}\n");
                        if s.write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes())
                            .is_err()
                        {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    }
                } else {
                    // Hold the connection until the gateway closes it.
                    let mut sink = [0u8; 64];
                    while reader.read(&mut sink).is_ok_and(|n| n > 0) {}
                }
            });
        }
    });
    (addr, rx)
}

#[test]
fn sigterm_writes_the_events_of_requests_it_cuts() {
    let dir = temp_dir("cut");
    let file = dir.join("gateway.toml");
    let audit = dir.join("audit.jsonl");
    let (up, arrived) = slow_upstream();
    let (port, admin) = (free_port(), free_port());
    let text = config(port, admin, up, &["slow", "drip"])
        .replace("shutdown_grace_seconds = 10", "shutdown_grace_seconds = 1")
        + &format!(
            "[audit]\n[[audit.sink]]\ntype = \"file\"\npath = \"{}\"\n",
            audit.display()
        );
    std::fs::write(&file, text).unwrap();
    let mut serve = Serve::start(&file);
    let gw: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let admin_addr: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    wait_for("the gateway", Duration::from_secs(20), || {
        get(admin_addr, "/healthz") == Some(200)
    });

    // One request waits for its upstream's answer, one streams its response.
    let mut slow = TcpStream::connect(gw).unwrap();
    slow.write_all(b"GET /slow HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let mut drip = TcpStream::connect(gw).unwrap();
    drip.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    drip.write_all(b"GET /drip HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 12];
    drip.read_exact(&mut first).unwrap();
    assert!(first.starts_with(b"HTTP/1.1 200"));
    let mut paths = vec![
        arrived.recv_timeout(Duration::from_secs(10)).unwrap(),
        arrived.recv_timeout(Duration::from_secs(10)).unwrap(),
    ];
    paths.sort();
    assert_eq!(
        paths,
        ["/drip", "/slow"],
        "both requests reached the upstream"
    );

    // SIGTERM: neither ends within the grace period, both are cut.
    signal(serve.pid(), "-TERM");
    assert!(serve.exit_within(20).success());
    let logs = serve.drain().to_vec();
    let closed: Vec<&String> = logs
        .iter()
        .filter(|l| l.contains("audit sink closed"))
        .collect();
    assert_eq!(closed.len(), 1, "{logs:#?}");
    assert!(
        closed[0].contains(" dropped=0"),
        "nothing dropped: {}",
        closed[0]
    );

    let events = audit_events(&audit);
    let of = |path: &str| {
        events
            .iter()
            .find(|e| e["url"]["path"] == path)
            .unwrap_or_else(|| panic!("no event of {path}: {events:#?}"))
    };
    let slow_event = of("/slow");
    assert_eq!(
        slow_event["event"]["action"], "upstream-result",
        "{slow_event:#}"
    );
    assert_eq!(slow_event["event"]["outcome"], "failure", "{slow_event:#}");
    assert_eq!(slow_event["event"]["reason"], "shutdown", "{slow_event:#}");
    assert!(
        slow_event["http"]["response"]["status_code"].is_null(),
        "no answer was sent: {slow_event:#}"
    );
    let drip_event = of("/drip");
    assert_eq!(drip_event["event"]["outcome"], "failure", "{drip_event:#}");
    assert_eq!(drip_event["event"]["reason"], "shutdown", "{drip_event:#}");
    assert_eq!(drip_event["http"]["response"]["status_code"], 200);
    assert!(
        drip_event["destination"]["bytes"].as_u64().unwrap() > 0,
        "{drip_event:#}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn path(p: &Path) -> String {
    p.display().to_string()
}
