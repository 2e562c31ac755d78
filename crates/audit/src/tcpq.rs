//! How many bytes of a TCP connection the peer has not acknowledged yet.
//!
//! Linux reports it per socket as `tx_queue` in `/proc/self/net/tcp{,6}` (the same
//! number as the `SIOCOUTQ` ioctl: bytes written and not yet acknowledged). Reading it
//! from procfs keeps the crate free of `unsafe` (no `getsockopt`/`ioctl` binding in
//! the well-kept socket crates exposes it). It is read rarely: when the collector
//! closes the connection, and every 100 ms while unacknowledged messages are held.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Unacknowledged bytes of the established connection `local` -> `peer`, or `None`
/// when the kernel no longer lists it (reset) or the table cannot be read.
pub(crate) fn unacked(local: SocketAddr, peer: SocketAddr) -> Option<u64> {
    let table = match (local, peer) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) => "/proc/self/net/tcp",
        _ => "/proc/self/net/tcp6",
    };
    // procfs reads never touch a disk; a blocking read here is brief.
    let text = std::fs::read_to_string(table).ok()?;
    find(&text, local, peer)
}

fn find(text: &str, local: SocketAddr, peer: SocketAddr) -> Option<u64> {
    for line in text.lines().skip(1) {
        let mut f = line.split_whitespace();
        let (_sl, l, r, _st, q) = (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
        if parse_addr(l) == Some(local) && parse_addr(r) == Some(peer) {
            let (tx, _rx) = q.split_once(':')?;
            return u64::from_str_radix(tx, 16).ok();
        }
    }
    None
}

/// `0100007F:1F90` (IPv4) or 32 hex digits (IPv6), each 32-bit word in host order.
fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        Some(
            u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16)
                .ok()?
                .to_ne_bytes(),
        )
    };
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            let v6 = Ipv6Addr::from(b);
            match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            }
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_our_own_connection() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (_s, _) = l.accept().unwrap();
        let (local, peer) = (c.local_addr().unwrap(), c.peer_addr().unwrap());
        c.write_all(b"hello").unwrap();
        // The peer never reads, but its kernel acknowledges: tx_queue drops to 0.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let q = unacked(local, peer).expect("listed");
            if q == 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never acknowledged: {q}"
            );
            std::thread::yield_now();
        }
        assert_eq!(unacked(local, "127.0.0.1:1".parse().unwrap()), None);
    }

    #[test]
    fn parses_both_families() {
        assert_eq!(
            parse_addr("0100007F:1F90"),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        #[cfg(target_endian = "little")]
        assert_eq!(
            parse_addr("00000000000000000000000001000000:0050"),
            Some("[::1]:80".parse().unwrap())
        );
    }
}
