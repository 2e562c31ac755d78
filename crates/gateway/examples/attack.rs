//! Attack load for the goodput-under-attack benchmark (README, Performance).
//!
//! The shared harness pins the gateway to one core and its load generator and upstream
//! to the other, so the attacker has to share the load generator's core. An attacker
//! that spends a large part of that core measures the machine, not the gateway: a
//! Python asyncio version of this attack took 57 % of the core at 2,000 reconnects a
//! second, this one takes 16 % (mostly the kernel's side of each TCP connection).
//!
//! Runs until killed, against the gateway on 127.0.0.1 (port 18090 by default):
//!
//! - a token-spraying flood: a forged bearer token over keep-alive connections from 250
//!   loopback addresses (127.0.1.1 ...), each reconnecting as soon as it is cut off, as
//!   a botnet would; the gateway bans each address after its failures and then refuses
//!   it at accept;
//! - a slowloris pool: connections from 127.0.2.x that dribble a header line a second
//!   and never finish a request.
//!
//! ```text
//! cargo build --release -p intraport-gateway --example attack
//! target/release/examples/attack [PORT] [--rate N] [--slow N]
//! ```
//!
//! `--rate N` caps the spray at N requests (or reconnect attempts) per second in total
//! (0: as fast as possible); `--slow N` sets the slowloris pool (default 200).
//! Loopback only.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Spraying source addresses: 127.0.1.1 ..= 127.0.1.250.
const SOURCES: u8 = 250;

const BAD: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\n\
Authorization: Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6ImZvcmdlZCJ9.eyJzdWIiOiJ4In0.c2ln\r\n\r\n";

struct Opts {
    port: u16,
    rate: f64,
    slow: usize,
}

fn parse() -> Result<Opts, String> {
    let mut opts = Opts {
        port: 18090,
        rate: 0.0,
        slow: 200,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--rate" => {
                opts.rate = value("--rate")?
                    .parse()
                    .map_err(|e| format!("--rate: {e}"))?;
            }
            "--slow" => {
                opts.slow = value("--slow")?
                    .parse()
                    .map_err(|e| format!("--slow: {e}"))?;
            }
            port => opts.port = port.parse().map_err(|e| format!("port {port:?}: {e}"))?,
        }
    }
    Ok(opts)
}

async fn connect(src: Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(src), 0))?;
    socket
        .connect(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
        .await
}

/// One sprayer: bad tokens over one connection until it is cut, then reconnect.
async fn spray(src: Ipv4Addr, port: u16, pause: Duration) {
    let mut buf = vec![0u8; 65536];
    loop {
        match connect(src, port).await {
            Ok(mut s) => loop {
                if s.write_all(BAD).await.is_err() {
                    break;
                }
                match s.read(&mut buf).await {
                    Ok(n) if n > 0 => {}
                    _ => break,
                }
                tokio::time::sleep(pause).await;
            },
            Err(_) => {
                tokio::time::sleep(pause.max(Duration::from_millis(50))).await;
                continue;
            }
        }
        tokio::time::sleep(pause).await;
    }
}

/// One slowloris connection: a request head that never ends.
async fn slowloris(src: Ipv4Addr, port: u16) {
    loop {
        if let Ok(mut s) = connect(src, port).await
            && s.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n")
                .await
                .is_ok()
        {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if s.write_all(b"X-Slow: 1\r\n").await.is_err() {
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn main() {
    let opts = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("attack: {e}");
            std::process::exit(2);
        }
    };
    // Each sprayer's pause between requests, so that all together send --rate a second.
    let pause = if opts.rate > 0.0 {
        Duration::from_secs_f64(f64::from(SOURCES) / opts.rate)
    } else {
        Duration::ZERO
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("attack: {e}");
            std::process::exit(1);
        }
    };
    rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 1..=SOURCES {
            tasks.spawn(spray(Ipv4Addr::new(127, 0, 1, i), opts.port, pause));
        }
        for i in 0..opts.slow {
            let last = (i % 250) as u8 + 1;
            tasks.spawn(slowloris(Ipv4Addr::new(127, 0, 2, last), opts.port));
        }
        while tasks.join_next().await.is_some() {}
    });
}
