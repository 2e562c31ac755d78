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

fn path(p: &Path) -> String {
    p.display().to_string()
}
