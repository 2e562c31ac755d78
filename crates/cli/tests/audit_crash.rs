//! Audit durability when `intraport serve` is killed with SIGKILL under load: in
//! `durability = "sync"` every request that got a response has its event in the file;
//! in group-commit mode the events lost are only those of the last commit interval.
//! And SIGTERM under load flushes every queued event, even with a long commit interval.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Guard, free_port, serve_config, upstream, wait_for};

/// `GET path` over a fresh connection: the status and the `X-Request-Id`.
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let rid = text
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))?
        .trim()
        .to_string();
    // Only a complete response counts as answered.
    text.ends_with("ok").then_some((status, rid))
}

struct Run {
    /// Request ids answered 200, with when the answer was complete.
    answered: Vec<(String, Instant)>,
    killed: Instant,
    /// Request ids in the audit file.
    logged: HashSet<String>,
    /// Connection ids with a `connection-accepted` event, and with a `connection-closed`.
    opened: HashSet<u64>,
    closed: HashSet<u64>,
}

/// Serve with an audit file sink of `durability`, load it from six clients, send
/// `signal` after `load` (and at least 50 answers), and read back the file once the
/// process is gone.
fn crash(durability: &str, commit_ms: u64, load: Duration, signal: &str) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let audit = dir.path().join("audit.jsonl");
    let config = dir.path().join("gateway.toml");
    let text = serve_config(port, admin, upstream(), &["open"])
        + &format!(
            "[audit]\n[[audit.sink]]\ntype = \"file\"\npath = \"{}\"\ndurability = \"{durability}\"\ncommit_interval_ms = {commit_ms}\n",
            audit.display()
        );
    std::fs::write(&config, text).unwrap();
    let mut gw = Guard(
        Command::new(common::bin())
            .args(["serve", "--config"])
            .arg(&config)
            .env("INTRAPORT_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_for("gateway", Duration::from_secs(20), || {
        get(addr, "/open/ready").is_some()
    });
    let answered = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..6)
        .map(|i| {
            let answered = answered.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    if let Some((200, rid)) = get(addr, &format!("/open/{i}/{n}")) {
                        answered.lock().unwrap().push((rid, Instant::now()));
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(load);
    // A busy disk makes `sync` mode slow: load on until enough requests were answered
    // for the run to say something.
    wait_for("50 answered requests", Duration::from_secs(30), || {
        answered.lock().unwrap().len() >= 50
    });
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &gw.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let killed = Instant::now();
    gw.0.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let events: Vec<serde_json::Value> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let logged = events
        .iter()
        .filter_map(|e| e["http"]["request"]["id"].as_str().map(str::to_string))
        .collect();
    let conns = |action: &str| -> HashSet<u64> {
        events
            .iter()
            .filter(|e| e["event"]["action"] == action)
            .filter_map(|e| e["intraport"]["connection_id"].as_u64())
            .collect()
    };
    let (opened, closed) = (conns("connection-accepted"), conns("connection-closed"));
    let answered = std::mem::take(&mut *answered.lock().unwrap());
    Run {
        answered,
        killed,
        logged,
        opened,
        closed,
    }
}

#[test]
fn sync_durability_loses_no_answered_request_on_kill_9() {
    let run = crash("sync", 100, Duration::from_millis(1500), "KILL");
    assert!(
        run.answered.len() >= 50,
        "only {} answered",
        run.answered.len()
    );
    let missing: Vec<&String> = run
        .answered
        .iter()
        .map(|(rid, _)| rid)
        .filter(|rid| !run.logged.contains(*rid))
        .collect();
    eprintln!(
        "sync: {} requests answered before SIGKILL, {} without their event",
        run.answered.len(),
        missing.len()
    );
    assert!(missing.is_empty(), "answered but not on disk: {missing:?}");
}

#[test]
fn group_commit_loses_at_most_the_last_commit_interval_on_kill_9() {
    let commit = Duration::from_millis(100);
    let run = crash("group", 100, Duration::from_millis(1500), "KILL");
    assert!(
        run.answered.len() >= 50,
        "only {} answered",
        run.answered.len()
    );
    let lost: Vec<Duration> = run
        .answered
        .iter()
        .filter(|(rid, _)| !run.logged.contains(rid))
        .map(|(_, at)| run.killed.saturating_duration_since(*at))
        .collect();
    let oldest = lost.iter().max().copied().unwrap_or_default();
    eprintln!(
        "group (commit every {commit:?}): {} requests answered before SIGKILL, {} events lost, the oldest answered {oldest:?} before the kill",
        run.answered.len(),
        lost.len()
    );
    // One interval, and the scheduling slack of a loaded machine.
    assert!(
        oldest <= commit + Duration::from_millis(150),
        "an event answered {oldest:?} before the kill was lost"
    );
}

#[test]
fn sigterm_flushes_every_queued_event() {
    let run = crash("group", 10_000, Duration::from_millis(1000), "TERM");
    assert!(
        run.answered.len() >= 50,
        "only {} answered",
        run.answered.len()
    );
    let missing = run
        .answered
        .iter()
        .filter(|(rid, _)| !run.logged.contains(rid))
        .count();
    assert_eq!(missing, 0, "of {} answered", run.answered.len());
    // The last events of all, written while draining just before exit: every
    // connection's end.
    assert!(run.opened.len() >= run.answered.len());
    let unclosed: Vec<&u64> = run.opened.difference(&run.closed).collect();
    assert!(
        unclosed.is_empty(),
        "connections without their end event: {unclosed:?}"
    );
}
