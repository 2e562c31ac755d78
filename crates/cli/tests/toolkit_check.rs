//! `intraport check` end to end on loopback: exit 0 when every check passes, 1 when
//! one fails (refused port, a "TLS" port that hangs up on the ClientHello), 2 for bad
//! targets and files; JSON per target and a table.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod toolkit_support;

use std::io::Read;
use std::net::TcpListener;

use toolkit_support::*;

fn findings(target: &serde_json::Value) -> Vec<String> {
    target["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn open_and_refused_ports() {
    // Listening (the kernel completes the handshake from the backlog).
    let open = TcpListener::bind("127.0.0.1:0").unwrap();
    let open_port = open.local_addr().unwrap().port();
    // Bound then closed: nothing listens there.
    let closed_port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };

    let t_open = format!("tcp://127.0.0.1:{open_port}");
    let out = intraport(&["check", &t_open, "--format", "json"]);
    assert_exit(&out, 0);
    let v = json(&out);
    assert_eq!(v["ok"], true);
    assert_eq!(v["targets"][0]["ok"], true);
    assert!(findings(&v["targets"][0]).is_empty());
    assert_eq!(v["targets"][0]["tcp"][0]["outcome"], "connected", "{v}");

    let t_closed = format!("tcp://127.0.0.1:{closed_port}");
    let out = intraport(&["check", &t_open, &t_closed, "--format", "json"]);
    assert_exit(&out, 1);
    let v = json(&out);
    assert_eq!(v["ok"], false);
    assert_eq!(v["targets"][0]["ok"], true, "reports stay in target order");
    assert_eq!(v["targets"][1]["ok"], false);
    assert_eq!(findings(&v["targets"][1]), ["tcp_refused"]);

    let out = intraport(&["check", &t_closed, "--format", "table"]);
    assert_exit(&out, 1);
    assert!(stdout(&out).contains("tcp_refused"), "{}", stdout(&out));
}

#[test]
fn a_port_that_hangs_up_on_the_client_hello_is_a_silent_failure() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    // Read what the client sends first (its ClientHello), then close without a word;
    // the TCP-only connect sends nothing and is closed at once.
    let server = std::thread::spawn(move || {
        let mut hellos = 0;
        for _ in 0..2 {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 4096];
            if let Ok(n) = s.read(&mut buf) {
                if n > 5 && buf[0] == 0x16 {
                    hellos += 1;
                }
            }
        }
        hellos
    });
    let out = intraport(&[
        "check",
        &format!("tls://127.0.0.1:{port}"),
        "--format",
        "json",
        "--timeout",
        "3s",
    ]);
    assert_exit(&out, 1);
    let v = json(&out);
    assert_eq!(
        findings(&v["targets"][0]),
        ["tls_closed_after_client_hello"],
        "{v}"
    );
    assert_eq!(v["targets"][0]["tls"][0]["outcome"], "closed");
    assert_eq!(
        server.join().unwrap(),
        1,
        "one ClientHello reached the server"
    );
}

#[test]
fn bad_targets_and_files_exit_2() {
    let out = intraport(&["check", "ftp://example.test/"]);
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("ftp://example.test/"),
        "{}",
        stderr(&out)
    );

    let out = intraport(&["check"]);
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("nothing to check"),
        "{}",
        stderr(&out)
    );

    let dir = Scratch::new("check");
    let expect = dir.file(
        "expect.toml",
        "[[endpoint]]\nhost = \"gw.example.test\"\nissuers = [\"Real CA\"\n",
    );
    let out = intraport(&["check", "tcp://127.0.0.1:1", "--expect", &expect]);
    assert_exit(&out, 2);
    let err = stderr(&out);
    assert!(err.contains(&format!("{expect}:")), "{err}");

    let out = intraport(&[
        "check",
        "tcp://127.0.0.1:1",
        "--ca",
        &dir.path().join("none.pem").display().to_string(),
    ]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("none.pem"), "{}", stderr(&out));
}

#[test]
fn wildcard_endpoints_are_named_as_skipped_and_take_a_name() {
    // The pta rows list *.msappproxy.net and *.servicebus.windows.net: a name that
    // no wildcard covers is a usage error, not a silent no-op.
    let out = intraport(&["check", "--component", "pta", "--name", "dc1.corp.example"]);
    assert_exit(&out, 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--name \"dc1.corp.example\" matches no wildcard endpoint"),
        "{err}"
    );
    let out = intraport(&["check", "--name", "x.servicebus.windows.net"]);
    assert_exit(&out, 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("give --component too"));
}
