//! RFC 3339 timestamps in UTC with microseconds, as ECS `@timestamp` and the RFC 5424
//! TIMESTAMP want them.
//!
//! Hand-written rather than taken from `time` or `chrono`: it is on the hot path of
//! every event, needs no allocation and no time-zone database, and the civil-date
//! conversion is the short, well-known days-to-civil algorithm.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

/// Appends `2024-05-01T12:34:56.123456Z` for `t` to `out`. Times before 1970 are
/// written as the epoch (the gateway never produces them).
pub fn write_rfc3339(t: SystemTime, out: &mut Vec<u8>) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    // Events come by the thousand per second: the date and time of day (all but the
    // microseconds) are worked out once per second and thread.
    thread_local! {
        static SECOND: Cell<(u64, [u8; 20])> = const { Cell::new((u64::MAX, [0; 20])) };
    }
    let prefix = match SECOND.get() {
        (last, prefix) if last == secs => prefix,
        _ => {
            let prefix = second_text(secs);
            SECOND.set((secs, prefix));
            prefix
        }
    };
    let mut buf = [0u8; 27];
    buf[..20].copy_from_slice(&prefix);
    put(&mut buf[20..26], u64::from(d.subsec_micros()));
    buf[26] = b'Z';
    out.extend_from_slice(&buf);
}

/// `2024-05-01T12:34:56.` for `secs` since the epoch.
fn second_text(secs: u64) -> [u8; 20] {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, day) = civil_from_days(days as i64);
    let (hh, mm, ss) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    let mut buf = [0u8; 20];
    put(&mut buf[0..4], y as u64);
    buf[4] = b'-';
    put(&mut buf[5..7], m as u64);
    buf[7] = b'-';
    put(&mut buf[8..10], day as u64);
    buf[10] = b'T';
    put(&mut buf[11..13], hh);
    buf[13] = b':';
    put(&mut buf[14..16], mm);
    buf[16] = b':';
    put(&mut buf[17..19], ss);
    buf[19] = b'.';
    buf
}

/// Milliseconds since the epoch (CEF `rt`).
pub fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn put(dst: &mut [u8], mut v: u64) {
    for b in dst.iter_mut().rev() {
        *b = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn fmt(secs: u64, micros: u32) -> String {
        let mut v = Vec::new();
        write_rfc3339(
            UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros as u64),
            &mut v,
        );
        String::from_utf8(v).unwrap_or_default()
    }

    #[test]
    fn known_instants() {
        assert_eq!(fmt(0, 0), "1970-01-01T00:00:00.000000Z");
        // 2000-02-29 (leap day) 12:00:00
        assert_eq!(fmt(951_825_600, 5), "2000-02-29T12:00:00.000005Z");
        // 2024-12-31T23:59:59.999999Z
        assert_eq!(fmt(1_735_689_599, 999_999), "2024-12-31T23:59:59.999999Z");
        // 2100-03-01 (2100 is not a leap year)
        assert_eq!(fmt(4_107_542_400, 0), "2100-03-01T00:00:00.000000Z");
    }

    #[test]
    fn the_per_second_cache_follows_the_clock() {
        // Same second twice, the next second, then back (a clock step).
        assert_eq!(fmt(1_735_689_599, 1), "2024-12-31T23:59:59.000001Z");
        assert_eq!(fmt(1_735_689_599, 2), "2024-12-31T23:59:59.000002Z");
        assert_eq!(fmt(1_735_689_600, 3), "2025-01-01T00:00:00.000003Z");
        assert_eq!(fmt(1_735_689_599, 4), "2024-12-31T23:59:59.000004Z");
    }
}
