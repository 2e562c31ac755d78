//! `intraport pcap` end to end on stored real captures (recorded with tcpdump by the
//! capture crate's tests): exit 1 when a handshake failed, 0 for a capture holding
//! only good handshakes (cut from the same recording here), 2 for a file that is not
//! a capture, with a message saying so.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod toolkit_support;

use std::collections::BTreeSet;

use toolkit_support::*;

/// Keep the packets of a classic little-endian pcap (Ethernet link type) whose TCP
/// ports include one of `ports`. Written out here because the capture crate only
/// reads; the format is 24 bytes of file header, then a 16-byte header per packet.
fn filter_pcap(data: &[u8], ports: &BTreeSet<u16>) -> Vec<u8> {
    assert_eq!(&data[..4], &[0xd4, 0xc3, 0xb2, 0xa1], "little-endian pcap");
    assert_eq!(
        u32::from_le_bytes(data[20..24].try_into().unwrap()),
        1,
        "Ethernet"
    );
    let mut out = data[..24].to_vec();
    let mut at = 24;
    while at + 16 <= data.len() {
        let caplen = u32::from_le_bytes(data[at + 8..at + 12].try_into().unwrap()) as usize;
        let frame = &data[at + 16..at + 16 + caplen];
        // Ethernet (14) + IPv4 header (IHL words), then the TCP ports.
        let ihl = usize::from(frame[14] & 0x0f) * 4;
        let tcp = &frame[14 + ihl..];
        let sport = u16::from_be_bytes([tcp[0], tcp[1]]);
        let dport = u16::from_be_bytes([tcp[2], tcp[3]]);
        if ports.contains(&sport) || ports.contains(&dport) {
            out.extend_from_slice(&data[at..at + 16 + caplen]);
        }
        at += 16 + caplen;
    }
    out
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn a_capture_with_failed_handshakes_exits_1() {
    let file = capture_fixture("handshakes.pcap");
    let out = intraport(&["pcap", &file, "--format", "json"]);
    assert_exit(&out, 1);
    let v = json(&out);
    assert_eq!(v["format"], "pcap");
    let by = &v["summary"]["by_outcome"];
    assert_eq!(by["completed"], 2, "{by}");
    assert_eq!(by["alert"], 3, "{by}");
    assert_eq!(by["reset_after_client_hello"], 1, "{by}");
    assert_eq!(by["closed_before_server_hello"], 1, "{by}");
    assert!(v["summary"]["failed"].as_u64().unwrap() >= 5);
    let conns = v["connections"].as_array().unwrap();
    let alert = conns
        .iter()
        .find(|c| c["alert"]["description"] == "protocol_version")
        .unwrap();
    assert_eq!(alert["alert"]["from"], "server");

    // pcapng gives the same report.
    let ng = intraport(&[
        "pcap",
        &capture_fixture("handshakes.pcapng"),
        "--format",
        "json",
    ]);
    assert_exit(&ng, 1);
    let w = json(&ng);
    assert_eq!(w["format"], "pcapng");
    assert_eq!(w["summary"], v["summary"]);

    // The table, and --failed-only.
    let out = intraport(&["pcap", &file, "--format", "table"]);
    assert_exit(&out, 1);
    let t = stdout(&out);
    assert!(t.contains("OUTCOME") && t.contains("completed"), "{t}");
    assert!(t.contains("alert:protocol_version"), "{t}");
    assert!(t.contains("reset_after_client_hello"), "{t}");
    let out = intraport(&["pcap", &file, "--format", "table", "--failed-only"]);
    let failed = stdout(&out);
    let conn_lines = |s: &str| {
        s.lines()
            .take_while(|l| !l.trim().is_empty())
            .skip(1)
            .count()
    };
    assert!(
        !failed
            .lines()
            .take_while(|l| !l.trim().is_empty())
            .any(|l| l.ends_with(" completed"))
    );
    assert!(conn_lines(&failed) < conn_lines(&t));
}

#[test]
fn a_capture_of_good_handshakes_only_exits_0() {
    let file = capture_fixture("handshakes.pcap");
    let v = json(&intraport(&["pcap", &file, "--format", "json"]));
    let good: BTreeSet<u16> = v["connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["outcome"] == "completed")
        .map(|c| port_of(c["client"].as_str().unwrap()))
        .collect();
    assert_eq!(good.len(), 2);
    let dir = Scratch::new("pcap");
    let cut = dir.file(
        "good.pcap",
        filter_pcap(&std::fs::read(&file).unwrap(), &good),
    );
    let out = intraport(&["pcap", &cut, "--format", "json"]);
    assert_exit(&out, 0);
    let v = json(&out);
    assert_eq!(v["summary"]["connections"], 2);
    assert_eq!(v["summary"]["failed"], 0);
    assert_eq!(v["summary"]["by_outcome"]["completed"], 2);
}

#[test]
fn files_that_are_not_captures_exit_2_with_a_message() {
    let dir = Scratch::new("pcap-bad");
    let text = dir.file("notes.txt", "this is not a packet capture\n");
    let out = intraport(&["pcap", &text]);
    assert_exit(&out, 2);
    let err = stderr(&out);
    assert!(err.contains("not a pcap or pcapng capture"), "{err}");
    assert!(stdout(&out).is_empty());

    let missing = dir.path().join("missing.pcap").display().to_string();
    let out = intraport(&["pcap", &missing]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("missing.pcap"), "{}", stderr(&out));

    // A capture cut off in the middle of a packet is still read, with a warning.
    let data = std::fs::read(capture_fixture("handshakes.pcap")).unwrap();
    let cut = dir.file("cut.pcap", &data[..data.len() / 2 + 7]);
    let out = intraport(&["pcap", &cut, "--format", "json"]);
    assert!(matches!(out.status.code(), Some(0 | 1)), "{}", stderr(&out));
    let v = json(&out);
    assert!(!v["warnings"].as_array().unwrap().is_empty(), "{v}");
}
