//! Reading pcap and pcapng files into frames: link type, timestamp and bytes.
//!
//! `pcap-parser` does the block parsing; this module only keeps the per-interface
//! state pcapng needs (link type, timestamp resolution and offset) and turns the
//! reader's error protocol (incomplete, buffer too small, end of file) into a loop
//! that always ends: a truncated or corrupt file stops the reading with a warning,
//! and everything read before it is still analysed.

use std::io::Read;

use pcap_parser::pcapng::Block;
use pcap_parser::{Linktype, PcapBlockOwned, PcapError};

use crate::Error;

/// Initial read buffer; grown (up to [`MAX_BUFFER`]) when a block does not fit.
const INITIAL_BUFFER: usize = 1 << 16;
/// Largest block accepted. pcapng blocks are length-prefixed with a u32; a corrupt
/// length must not make us allocate gigabytes.
const MAX_BUFFER: usize = 1 << 24;

/// One captured frame.
pub(crate) struct Frame<'a> {
    /// 1-based position of the packet in the file, as Wireshark numbers it.
    pub number: u64,
    /// Capture time, nanoseconds since the Unix epoch.
    pub ts_ns: i64,
    pub linktype: Linktype,
    pub data: &'a [u8],
}

/// Per-interface state of a pcapng section.
#[derive(Clone, Copy)]
struct Interface {
    linktype: Linktype,
    /// Timestamp units per second.
    units_per_sec: u64,
    offset_sec: i64,
}

/// What the reader learnt about the file as a whole.
pub(crate) struct FileInfo {
    pub format: &'static str,
    /// Problems with the file itself (not with one packet's content).
    pub warnings: Vec<(Option<u64>, String)>,
}

/// Call `on_frame` for every packet of the capture in `input`; `on_warning` gets a
/// message for anything skipped. Errors only when the input is not a capture at all.
pub(crate) fn read_frames<R: Read + Send>(
    input: R,
    mut on_frame: impl FnMut(&Frame<'_>),
) -> Result<FileInfo, Error> {
    let mut warnings = Vec::new();
    let mut on_warning = |packet: Option<u64>, message: String| {
        // A file can only produce a few of these (reading stops after most).
        if warnings.len() < crate::MAX_WARNINGS {
            warnings.push((packet, message));
        }
    };
    let mut reader = match pcap_parser::create_reader(INITIAL_BUFFER, input) {
        Ok(r) => r,
        Err(PcapError::Eof) => return Err(Error::NotACapture("the file is empty".into())),
        Err(PcapError::Incomplete(_)) | Err(PcapError::UnexpectedEof) => {
            return Err(Error::NotACapture(
                "the file is shorter than a pcap or pcapng header".into(),
            ));
        }
        Err(PcapError::ReadError) => return Err(Error::Read),
        Err(_) => {
            return Err(Error::NotACapture(
                "no pcap or pcapng header (unknown magic number)".into(),
            ));
        }
    };
    let mut format = "pcap";
    // Legacy pcap: one link type and resolution for the whole file.
    let mut legacy: Option<(Linktype, u64)> = None;
    let mut interfaces: Vec<Interface> = Vec::new();
    let mut number: u64 = 0;
    let mut buffer_size = INITIAL_BUFFER;
    loop {
        match reader.next() {
            Ok((offset, block)) => {
                match block {
                    PcapBlockOwned::LegacyHeader(h) => {
                        // 0xa1b23c4d (and its byte-swapped form) marks nanosecond timestamps.
                        let nanos = matches!(h.magic_number, 0xa1b2_3c4d | 0x4d3c_b2a1);
                        legacy = Some((h.network, if nanos { 1_000_000_000 } else { 1_000_000 }));
                    }
                    PcapBlockOwned::Legacy(b) => {
                        number += 1;
                        let (linktype, units) = legacy.unwrap_or((Linktype::ETHERNET, 1_000_000));
                        let frac =
                            i64::from(b.ts_usec).saturating_mul(1_000_000_000 / units as i64);
                        let data_len = (b.caplen as usize).min(b.data.len());
                        on_frame(&Frame {
                            number,
                            ts_ns: i64::from(b.ts_sec)
                                .saturating_mul(1_000_000_000)
                                .saturating_add(frac),
                            linktype,
                            data: &b.data[..data_len],
                        });
                    }
                    PcapBlockOwned::NG(Block::SectionHeader(_)) => {
                        format = "pcapng";
                        interfaces.clear();
                    }
                    PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                        let units_per_sec =
                            pcap_parser::pcapng::build_ts_resolution(idb.if_tsresol).unwrap_or(0);
                        if units_per_sec == 0 {
                            on_warning(
                                None,
                                format!(
                                    "interface {} has an invalid timestamp resolution ({}); its timestamps are taken as microseconds",
                                    interfaces.len(),
                                    idb.if_tsresol
                                ),
                            );
                        }
                        interfaces.push(Interface {
                            linktype: idb.linktype,
                            units_per_sec: if units_per_sec == 0 {
                                1_000_000
                            } else {
                                units_per_sec
                            },
                            offset_sec: idb.if_tsoffset,
                        });
                    }
                    PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                        number += 1;
                        match interfaces.get(epb.if_id as usize) {
                            Some(iface) => {
                                let ts = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                                let data_len = (epb.caplen as usize).min(epb.data.len());
                                on_frame(&Frame {
                                    number,
                                    ts_ns: ts_to_ns(ts, iface.units_per_sec, iface.offset_sec),
                                    linktype: iface.linktype,
                                    data: &epb.data[..data_len],
                                });
                            }
                            None => on_warning(
                                Some(number),
                                format!(
                                    "packet refers to interface {} which was never described; skipped",
                                    epb.if_id
                                ),
                            ),
                        }
                    }
                    PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                        number += 1;
                        // Simple packets carry no timestamp and belong to interface 0.
                        match interfaces.first() {
                            Some(iface) => on_frame(&Frame {
                                number,
                                ts_ns: 0,
                                linktype: iface.linktype,
                                data: spb.data,
                            }),
                            None => on_warning(
                                Some(number),
                                "simple packet block before any interface description; skipped"
                                    .into(),
                            ),
                        }
                    }
                    PcapBlockOwned::NG(_) => {}
                }
                reader.consume(offset);
            }
            Err(PcapError::Eof) => break,
            Err(PcapError::Incomplete(_)) => {
                let before = reader.consumed();
                if reader.refill().is_err() {
                    on_warning(
                        None,
                        format!("read error after byte {before}; stopped reading"),
                    );
                    break;
                }
            }
            Err(PcapError::BufferTooSmall) => {
                buffer_size = buffer_size.saturating_mul(2);
                if buffer_size > MAX_BUFFER || !reader.grow(buffer_size) {
                    on_warning(
                        None,
                        format!(
                            "a block after packet {number} (byte {}) is larger than {} MiB; the file is probably corrupt; stopped reading",
                            reader.consumed(),
                            MAX_BUFFER >> 20
                        ),
                    );
                    break;
                }
                if reader.refill().is_err() {
                    on_warning(
                        None,
                        format!("read error after packet {number}; stopped reading"),
                    );
                    break;
                }
            }
            Err(PcapError::UnexpectedEof) => {
                on_warning(
                    None,
                    format!(
                        "the capture is truncated: the block after packet {number} is cut off at the end of the file"
                    ),
                );
                break;
            }
            Err(PcapError::ReadError) => {
                on_warning(
                    None,
                    format!("read error after packet {number}; stopped reading"),
                );
                break;
            }
            Err(e) => {
                // The parser error carries the rest of the buffer; name only its kind.
                let what = match e {
                    PcapError::NomError(_, kind) | PcapError::OwnedNomError(_, kind) => {
                        format!("{kind:?}")
                    }
                    _ => "unreadable block".to_string(),
                };
                on_warning(
                    None,
                    format!(
                        "the capture is malformed after packet {number} (byte {}): {what}; stopped reading",
                        reader.consumed()
                    ),
                );
                break;
            }
        }
    }
    Ok(FileInfo { format, warnings })
}

/// Timestamp in `units_per_sec` units plus an offset in seconds, to nanoseconds.
/// Saturating: a corrupt timestamp gives a wrong time, never an overflow.
fn ts_to_ns(ts: u64, units_per_sec: u64, offset_sec: i64) -> i64 {
    let units = u128::from(units_per_sec.max(1));
    let ts = u128::from(ts);
    let secs = ts / units;
    let frac_ns = (ts % units) * 1_000_000_000 / units;
    let ns = secs
        .saturating_mul(1_000_000_000)
        .saturating_add(frac_ns)
        .min(i64::MAX as u128) as i64;
    ns.saturating_add(offset_sec.saturating_mul(1_000_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_in_any_resolution() {
        assert_eq!(ts_to_ns(1_500_000, 1_000_000, 0), 1_500_000_000);
        assert_eq!(ts_to_ns(1_500_000_000, 1_000_000_000, 0), 1_500_000_000);
        assert_eq!(ts_to_ns(3, 2, 10), 11_500_000_000);
        assert_eq!(ts_to_ns(u64::MAX, 1, i64::MAX), i64::MAX);
    }
}
