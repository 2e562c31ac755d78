//! TCP reassembly for one direction of a connection.
//!
//! Hand-written rather than taken from a crate: the reassembly crates that exist
//! are either tied to live capture or reassemble whole streams into memory; here we
//! need only the first few kilobytes of each direction (the TLS handshake), must
//! count retransmissions, and must stay bounded on hostile input. Byte offsets are
//! relative to the initial sequence number and kept as `u64`, so a sequence number
//! wrapping around 2^32 inside a handshake is handled.

use std::collections::BTreeMap;

/// Bytes held out of order (waiting for a gap to fill) before giving up on a direction.
const MAX_PENDING: usize = 1 << 20;
/// Out-of-order segments held before giving up on a direction.
const MAX_PENDING_SEGMENTS: usize = 4096;
/// Holes remembered after giving up (see [`Stream::holes`]).
const MAX_HOLES: usize = 64;
/// Other initial sequence numbers remembered (see [`Stream::syn`]).
const MAX_OTHER_ISNS: usize = 4;

/// What one segment was.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// Carried at least one byte not seen before.
    New,
    /// Carried only bytes already seen (delivered or held): a retransmission.
    Retransmission,
}

#[derive(Default)]
pub(crate) struct Stream {
    /// Sequence number of byte offset 0 (ISN + 1 when the SYN was seen).
    base: Option<u32>,
    /// Initial sequence number, from the SYN.
    isn: Option<u32>,
    /// Initial sequence numbers of further SYNs (two SYN-ACKs on one connection: a
    /// middlebox answering too, or a server restarted): until the first byte of data,
    /// the data may follow one of these instead, and the stream is re-anchored.
    other_isns: Vec<u32>,
    /// Set when the stream was re-anchored on another SYN's sequence number.
    rebased: bool,
    /// Bytes delivered in order so far.
    delivered: u64,
    /// Segments beyond a gap, by offset; may overlap each other.
    pending: BTreeMap<u64, Vec<u8>>,
    pending_bytes: usize,
    /// Set when the direction is no longer reassembled (too much out of order data,
    /// or the caller said it needs no more); retransmissions are still counted
    /// against `delivered`.
    given_up: bool,
    /// After giving up: byte ranges that segments arriving ahead of their turn
    /// skipped, so that the late segment filling one counts as new data, not as a
    /// retransmission. Bounded (the oldest are forgotten).
    holes: Vec<(u64, u64)>,
}

impl Stream {
    /// A SYN was seen with this sequence number. Returns true when it repeats a SYN
    /// already seen (a retransmitted SYN).
    pub fn syn(&mut self, seq: u32) -> bool {
        match self.isn {
            Some(isn) if isn == seq || self.other_isns.contains(&seq) => true,
            Some(_) => {
                if self.other_isns.len() < MAX_OTHER_ISNS {
                    self.other_isns.push(seq);
                }
                false
            }
            None => {
                if self.base.is_none() {
                    self.isn = Some(seq);
                    self.base = Some(seq.wrapping_add(1));
                }
                false
            }
        }
    }

    /// How many SYNs with different sequence numbers this direction sent.
    pub fn distinct_syns(&self) -> usize {
        usize::from(self.isn.is_some()) + self.other_isns.len()
    }

    /// Whether the data followed a later SYN than the first.
    pub fn rebased(&self) -> bool {
        self.rebased
    }

    /// The ISN recorded from the SYN, if one was seen.
    pub fn isn(&self) -> Option<u32> {
        self.isn
    }

    /// Add a segment's payload starting at sequence number `seq`; the bytes that
    /// became contiguous are appended to `out`.
    pub fn insert(&mut self, seq: u32, data: &[u8], out: &mut Vec<u8>) -> Arrival {
        if data.is_empty() {
            return Arrival::New;
        }
        if self.delivered == 0 && self.pending.is_empty() && !self.given_up {
            if let Some(&isn) = self
                .other_isns
                .iter()
                .find(|&&isn| isn.wrapping_add(1) == seq)
            {
                if self.base != Some(seq) {
                    self.isn = Some(isn);
                    self.base = Some(seq);
                    self.rebased = true;
                }
            }
        }
        let base = *self.base.get_or_insert(seq);
        let rel = seq.wrapping_sub(base);
        // A sequence number "before" the start (more than 2^31 behind) is data from
        // before the SYN we anchored on: old, so a retransmission.
        if rel > u32::MAX / 2 {
            return Arrival::Retransmission;
        }
        let start = u64::from(rel);
        let end = start + data.len() as u64;
        if self.given_up {
            let filled = self.fill_holes(start, end.min(self.delivered));
            if end > self.delivered {
                if start > self.delivered {
                    self.add_hole(self.delivered, start);
                }
                self.delivered = end;
                return Arrival::New;
            }
            return if filled {
                Arrival::New
            } else {
                Arrival::Retransmission
            };
        }
        if end <= self.delivered {
            return Arrival::Retransmission;
        }
        if self.covered(start.max(self.delivered), end) {
            return Arrival::Retransmission;
        }
        if start <= self.delivered {
            let skip = (self.delivered - start) as usize; // < data.len() since end > delivered
            out.extend_from_slice(&data[skip..]);
            self.delivered = end;
            self.drain_pending(out);
        } else {
            if self.pending.len() >= MAX_PENDING_SEGMENTS
                || self.pending_bytes + data.len() > MAX_PENDING
            {
                self.give_up();
                self.add_hole(self.delivered, start);
                self.delivered = end;
                return Arrival::New;
            }
            self.pending_bytes += data.len();
            let slot = self.pending.entry(start).or_default();
            if slot.len() < data.len() {
                self.pending_bytes -= slot.len();
                *slot = data.to_vec();
            } else {
                self.pending_bytes -= data.len();
            }
        }
        Arrival::New
    }

    /// Stop reassembling (the analysis needs no more bytes); keep counting retransmissions.
    pub fn give_up(&mut self) {
        self.given_up = true;
        self.pending.clear();
        self.pending_bytes = 0;
    }

    fn add_hole(&mut self, start: u64, end: u64) {
        if start < end {
            if self.holes.len() >= MAX_HOLES {
                self.holes.remove(0);
            }
            self.holes.push((start, end));
        }
    }

    /// Take `[start, end)` out of the holes; whether it filled any part of one.
    fn fill_holes(&mut self, start: u64, end: u64) -> bool {
        if start >= end || self.holes.is_empty() {
            return false;
        }
        let mut filled = false;
        let mut left = Vec::with_capacity(self.holes.len() + 1);
        for &(a, b) in &self.holes {
            if start < b && a < end {
                filled = true;
                if a < start {
                    left.push((a, start));
                }
                if end < b {
                    left.push((end, b));
                }
            } else {
                left.push((a, b));
            }
        }
        let excess = left.len().saturating_sub(MAX_HOLES);
        left.drain(..excess);
        self.holes = left;
        filled
    }

    /// Offset of the first missing byte when data beyond a gap is held, i.e. the
    /// direction cannot be reassembled past that point.
    pub fn gap_at(&self) -> Option<u64> {
        if self.pending.is_empty() {
            None
        } else {
            Some(self.delivered)
        }
    }

    /// Whether every byte of `[start, end)` is already held in `pending`.
    fn covered(&self, mut start: u64, end: u64) -> bool {
        for (&off, seg) in self.pending.range(..end) {
            let seg_end = off + seg.len() as u64;
            if off > start {
                return false;
            }
            if seg_end > start {
                start = seg_end;
            }
            if start >= end {
                return true;
            }
        }
        start >= end
    }

    fn drain_pending(&mut self, out: &mut Vec<u8>) {
        while let Some(entry) = self.pending.first_entry() {
            let off = *entry.key();
            if off > self.delivered {
                break;
            }
            let seg = entry.remove();
            self.pending_bytes -= seg.len();
            let seg_end = off + seg.len() as u64;
            if seg_end > self.delivered {
                let skip = (self.delivered - off) as usize;
                out.extend_from_slice(&seg[skip..]);
                self.delivered = seg_end;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn feed(s: &mut Stream, seq: u32, data: &[u8]) -> (Arrival, Vec<u8>) {
        let mut out = Vec::new();
        let a = s.insert(seq, data, &mut out);
        (a, out)
    }

    #[test]
    fn in_order_out_of_order_and_retransmitted() {
        let mut s = Stream::default();
        assert!(!s.syn(999));
        assert_eq!(feed(&mut s, 1000, b"abc"), (Arrival::New, b"abc".to_vec()));
        // "ghi" arrives before "def": held, nothing delivered.
        assert_eq!(feed(&mut s, 1006, b"ghi"), (Arrival::New, vec![]));
        assert_eq!(s.gap_at(), Some(3));
        // The held segment again: a retransmission.
        assert_eq!(feed(&mut s, 1006, b"ghi").0, Arrival::Retransmission);
        // Gap filled: both delivered in order.
        assert_eq!(
            feed(&mut s, 1003, b"def"),
            (Arrival::New, b"defghi".to_vec())
        );
        assert_eq!(s.gap_at(), None);
        // Old data again.
        assert_eq!(feed(&mut s, 1000, b"abc").0, Arrival::Retransmission);
        // Overlapping repacketised retransmission with new bytes at the end.
        assert_eq!(feed(&mut s, 1007, b"hijk"), (Arrival::New, b"jk".to_vec()));
        // A repeated SYN is a retransmission.
        assert!(s.syn(999));
    }

    #[test]
    fn after_giving_up_reordering_is_not_retransmission() {
        let mut s = Stream::default();
        s.syn(999);
        assert_eq!(feed(&mut s, 1000, b"abc").0, Arrival::New);
        s.give_up();
        // "ghi" overtakes "def": "def" then fills the hole, it is not old data.
        assert_eq!(feed(&mut s, 1006, b"ghi").0, Arrival::New);
        assert_eq!(feed(&mut s, 1003, b"def").0, Arrival::New);
        // Now both are old.
        assert_eq!(feed(&mut s, 1003, b"def").0, Arrival::Retransmission);
        assert_eq!(feed(&mut s, 1006, b"ghi").0, Arrival::Retransmission);
        // A hole filled in two pieces.
        assert_eq!(feed(&mut s, 1015, b"xyz").0, Arrival::New);
        assert_eq!(feed(&mut s, 1012, b"pq").0, Arrival::New);
        assert_eq!(feed(&mut s, 1009, b"mno").0, Arrival::New);
        assert_eq!(feed(&mut s, 1014, b"r").0, Arrival::New);
        assert_eq!(feed(&mut s, 1012, b"pqr").0, Arrival::Retransmission);
        assert!(s.holes.is_empty());
    }

    #[test]
    fn data_after_a_second_syn_ack_follows_it() {
        let mut s = Stream::default();
        assert!(!s.syn(1000));
        assert!(!s.syn(50_000));
        assert!(s.syn(50_000), "repeated: a retransmission");
        assert_eq!(s.distinct_syns(), 2);
        // The data follows the second SYN-ACK's numbers.
        assert_eq!(
            feed(&mut s, 50_001, b"abc"),
            (Arrival::New, b"abc".to_vec())
        );
        assert!(s.rebased());
        assert_eq!(feed(&mut s, 50_004, b"de"), (Arrival::New, b"de".to_vec()));
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut s = Stream::default();
        s.syn(u32::MAX - 1);
        assert_eq!(
            feed(&mut s, u32::MAX, b"ab"),
            (Arrival::New, b"ab".to_vec())
        );
        assert_eq!(feed(&mut s, 1, b"cd"), (Arrival::New, b"cd".to_vec()));
    }

    #[test]
    fn bounded_when_the_gap_never_fills() {
        let mut s = Stream::default();
        s.syn(0);
        let chunk = vec![0u8; 1000];
        for i in 0..2000u32 {
            feed(&mut s, 10_000 + i * 1000, &chunk);
        }
        assert!(s.pending_bytes <= MAX_PENDING);
        assert!(s.given_up);
    }
}
