//! Property tests: no input makes the analysis panic. Random bytes, random bytes
//! behind a valid pcap or pcapng header, and the stored real captures with bytes
//! overwritten, inserted or cut off are all answered with a report (with warnings)
//! or an error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use intraport_capture::{Error, analyze};
use proptest::prelude::*;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(name),
    )
    .unwrap()
}

/// Analyse; an error must be one a caller can report, a report must be consistent.
fn survives(bytes: &[u8]) {
    match analyze(bytes) {
        Ok(r) => {
            assert_eq!(r.summary.connections, r.connections.len() as u64);
            assert!(r.tcp_packets <= r.packets);
            assert!(r.warnings.len() <= intraport_capture::MAX_WARNINGS);
        }
        Err(Error::NotACapture(_) | Error::Read) => {}
        Err(e) => panic!("unexpected error kind: {e}"),
    }
}

/// Overwrite, insert and cut: `edits` are (position, byte, kind) applied in order.
fn mutate(mut data: Vec<u8>, edits: &[(usize, u8, u8)], cut: Option<usize>) -> Vec<u8> {
    for &(pos, byte, kind) in edits {
        if data.is_empty() {
            break;
        }
        let at = pos % data.len();
        match kind % 3 {
            0 => data[at] = byte,
            1 => data.insert(at, byte),
            _ => {
                data.remove(at);
            }
        }
    }
    if let Some(c) = cut {
        let len = data.len();
        data.truncate(c % (len + 1));
    }
    data
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        survives(&bytes);
    }

    #[test]
    fn random_records_behind_a_valid_header(
        ng in any::<bool>(),
        body in prop::collection::vec(any::<u8>(), 0..8192),
    ) {
        let file = fixture(if ng { "handshakes.pcapng" } else { "handshakes.pcap" });
        // The pcap file header is 24 bytes; pcapng's section header block and first
        // interface description block are the first two blocks.
        let header_len = if ng {
            let shb = u32::from_le_bytes(file[4..8].try_into().unwrap()) as usize;
            let idb = u32::from_le_bytes(file[shb + 4..shb + 8].try_into().unwrap()) as usize;
            shb + idb
        } else {
            24
        };
        let mut data = file[..header_len].to_vec();
        data.extend_from_slice(&body);
        survives(&data);
    }

    #[test]
    fn mutated_real_captures(
        ng in any::<bool>(),
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..40),
        cut in prop::option::of(any::<usize>()),
    ) {
        let file = fixture(if ng { "handshakes.pcapng" } else { "handshakes.pcap" });
        survives(&mutate(file, &edits, cut));
    }
}
