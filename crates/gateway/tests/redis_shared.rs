//! Several gateways, one port: two gateways share their bans through a real Redis
//! (Debian `redis-server`, started by the test on a loopback port with its own
//! settings). A source banned on one is refused by the other; with Redis killed both
//! keep serving and keep refusing the banned source; when Redis is back they reconnect.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use intraport_gateway::{Gateway, GatewayHandle};
use support::mint::{self, Minter};
use support::pki::Pki;
use support::{eventually, upstream};

struct Redis(Child);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis(port: u16) -> Redis {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server (Debian package redis-server) must be installed");
    Redis(child)
}

async fn redis_up(port: u16) {
    eventually(15, "redis-server accepting", || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ())
    })
    .await;
}

async fn gateway(
    minter: &Minter,
    dir: &std::path::Path,
    up: SocketAddr,
    redis: u16,
    limits: &str,
) -> (Arc<GatewayHandle>, SocketAddr) {
    let text = format!(
        r#"
[server]
watch_config = false
shutdown_grace_seconds = 1
[admin]
listen = "127.0.0.1:0"
[abuse]
store = "redis"
redis_url = "redis://127.0.0.1:{redis}/0"
redis_timeout_ms = 2000    # a busy test machine is not an outage; a killed Redis fails at once
sync_interval_ms = 100
[abuse.bans]
failures = 3
window_seconds = 60
ban_seconds = 300
[[provider]]
name = "local"
issuer = "{iss}"
jwks = "{jwks}"
audiences = ["{aud}"]
[[listener]]
name = "plain"
listen = "127.0.0.1:0"
protocol = "http"
[listener.limits]
{limits}
[[route]]
name = "api"
listener = "plain"
path_prefix = "/api"
upstream = "http://{up}"
provider = "local"
[route.source]
allow = ["127.0.0.0/8"]
"#,
        iss = mint::ISSUER,
        jwks = minter.jwks_path.display(),
        aud = mint::AUDIENCE,
    );
    let config = support::parse_config(&text, dir);
    let gw = Gateway::start(config).await.unwrap();
    let addr = gw.listener_addr("plain").await.unwrap();
    eventually(10, "provider ready", || async {
        gw.is_ready().then_some(())
    })
    .await;
    (gw, addr)
}

fn client_from(from: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(from.parse::<IpAddr>().unwrap())
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// The status of GET `url`, or 0 when the connection is refused or closed.
async fn status(c: &reqwest::Client, url: &str, token: &str) -> u16 {
    match c.get(url).bearer_auth(token).send().await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

#[tokio::test]
async fn two_gateways_share_bans_through_redis_and_survive_its_outage() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let redis = start_redis(port);
    redis_up(port).await;

    let pki = Pki::new();
    let minter = Minter::new(&pki.dir);
    let up = upstream::http1().await;
    let (a, a_addr) = gateway(&minter, &pki.dir, up, port, "").await;
    let (b, b_addr) = gateway(&minter, &pki.dir, up, port, "").await;
    eventually(10, "both gateways on Redis", || async {
        (a.shared_state_available() && b.shared_state_available()).then_some(())
    })
    .await;

    let good = minter.token(&minter.claims());
    let bad = format!("{good}x");
    let sprayer = client_from("127.0.0.21");
    let legit = client_from("127.0.0.22");
    let a_api = format!("http://{a_addr}/api");
    let b_api = format!("http://{b_addr}/api");

    // Failed authentications on gateway A ban the source ...
    for _ in 0..3 {
        assert_eq!(status(&sprayer, &a_api, &bad).await, 401);
    }
    let sprayer_ip: IpAddr = "127.0.0.21".parse().unwrap();
    assert!(a.banned(sprayer_ip).is_some());
    // ... and gateway B learns it through Redis and refuses the source too.
    eventually(10, "gateway B sees the ban", || async {
        b.banned(sprayer_ip).map(|_| ())
    })
    .await;
    assert_ne!(status(&sprayer, &b_api, &good).await, 200);
    assert_eq!(status(&legit, &b_api, &good).await, 200);

    // Redis goes away: both keep serving, and keep refusing the banned source.
    drop(redis);
    eventually(10, "the outage noticed", || async {
        (!a.shared_state_available() || !b.shared_state_available()).then_some(())
    })
    .await;
    for gw in [&a_api, &b_api] {
        assert_eq!(status(&legit, gw, &good).await, 200, "{gw} stopped serving");
        assert_ne!(
            status(&sprayer, gw, &good).await,
            200,
            "{gw} let a banned source through"
        );
    }
    assert!(b.banned(sprayer_ip).is_some());

    // Redis back (empty): the gateways reconnect.
    let _redis = start_redis(port);
    redis_up(port).await;
    eventually(15, "reconnected to Redis", || async {
        (a.shared_state_available() && b.shared_state_available()).then_some(())
    })
    .await;
    assert_eq!(status(&legit, &a_api, &good).await, 200);
    assert_ne!(status(&sprayer, &a_api, &good).await, 200);
    // And they share again: a ban made on B now reaches A.
    let second = client_from("127.0.0.23");
    for _ in 0..3 {
        assert_eq!(status(&second, &b_api, &bad).await, 401);
    }
    let second_ip: IpAddr = "127.0.0.23".parse().unwrap();
    eventually(10, "gateway A sees the new ban", || async {
        a.banned(second_ip).map(|_| ())
    })
    .await;
}

/// A per-source rate limit is counted across both gateways: the budget spent on one
/// is not available on the other.
#[tokio::test]
async fn a_rate_limit_is_counted_across_gateways() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let _redis = start_redis(port);
    redis_up(port).await;
    let pki = Pki::new();
    let minter = Minter::new(&pki.dir);
    let up = upstream::http1().await;
    let limits = "rate_per_source = { requests = 6, per_seconds = 3600, burst = 6 }";
    let (a, a_addr) = gateway(&minter, &pki.dir, up, port, limits).await;
    let (b, b_addr) = gateway(&minter, &pki.dir, up, port, limits).await;
    eventually(10, "both gateways on Redis", || async {
        (a.shared_state_available() && b.shared_state_available()).then_some(())
    })
    .await;
    let good = minter.token(&minter.claims());
    let c = client_from("127.0.0.31");
    let (a_api, b_api) = (
        format!("http://{a_addr}/api"),
        format!("http://{b_addr}/api"),
    );
    for _ in 0..3 {
        assert_eq!(status(&c, &a_api, &good).await, 200);
        assert_eq!(status(&c, &b_api, &good).await, 200);
    }
    // Six requests spent, three on each: the seventh is refused on either gateway.
    assert_eq!(status(&c, &b_api, &good).await, 429);
    assert_eq!(status(&c, &a_api, &good).await, 429);
    // Another source has its own budget.
    assert_eq!(status(&client_from("127.0.0.32"), &a_api, &good).await, 200);
}
