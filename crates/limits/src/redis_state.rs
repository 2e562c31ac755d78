//! Shared state in Redis, so that gateways behind one load balancer share bans and
//! limits. Every operation touches one key (atomic Lua scripts or single commands),
//! so it works on a Redis Cluster and on managed Redis services.
//!
//! Keys (under a configurable prefix): `rate:<key>` holds a GCRA theoretical arrival
//! time; `fail:<source>` and `offence:<source>` are counters that expire with their
//! window; `bans` is one sorted set of sources scored by the end of their ban.
//!
//! When Redis does not answer, the connection is dropped and the operation fails at
//! once (the [`crate::Guard`] then answers locally); a new connection is tried at most
//! once per `retry` interval, so an outage costs no time on the request path. Until
//! Redis has been reached once, callers wait for the attempt in progress (bounded by
//! the connection timeout) instead: at start-up the first requests and the ban sync
//! race for the first connection, and losing that race is not an outage.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Script};

use crate::store::{BoxFuture, Rate, RateDecision, SharedState, StoreError, now_ms};

/// GCRA in one step: allowed when the theoretical arrival time is within the burst
/// tolerance of now (Redis's own clock, so replicas agree); else the wait in µs.
const GCRA: &str = r"
local period = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local tolerance = period * (burst - 1)
if tat - now > tolerance then
  return tat - tolerance - now
end
local new_tat = tat + period
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.floor((new_tat - now) / 1000) + 1)
return 0
";

/// A counter in a fixed window: `INCR`, and `PEXPIRE` when the window starts.
const WINDOW: &str = r"
local c = redis.call('INCR', KEYS[1])
if c == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return c
";

/// How to reach Redis.
#[derive(Clone, Debug)]
pub struct RedisSettings {
    /// `redis://HOST:PORT/DB` (or `rediss://` for TLS).
    pub url: String,
    /// Prefix of every key, so several deployments can share a server.
    pub prefix: String,
    /// Connect and response timeout of each operation.
    pub timeout: Duration,
    /// Least time between reconnection attempts while Redis is unreachable.
    pub retry: Duration,
}

/// Shared state in Redis.
pub struct RedisState {
    client: redis::Client,
    settings: RedisSettings,
    conn: Mutex<Option<MultiplexedConnection>>,
    next_attempt: Mutex<Option<Instant>>,
    /// Held while a connection is being made.
    connecting: tokio::sync::Mutex<()>,
    /// Whether a connection was ever made: until then the store is starting, not
    /// down, and callers wait for the attempt in progress rather than fail.
    connected_once: AtomicBool,
    gcra: Script,
    window: Script,
}

impl std::fmt::Debug for RedisState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisState")
            .field("prefix", &self.settings.prefix)
            .finish_non_exhaustive()
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisState {
    /// Check the URL; no connection is made until the first operation.
    pub fn new(settings: RedisSettings) -> Result<RedisState, String> {
        let client = redis::Client::open(settings.url.as_str())
            .map_err(|e| format!("redis URL `{}`: {e}", settings.url))?;
        Ok(RedisState {
            client,
            settings,
            conn: Mutex::new(None),
            next_attempt: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            connected_once: AtomicBool::new(false),
            gcra: Script::new(GCRA),
            window: Script::new(WINDOW),
        })
    }

    fn current(&self) -> Option<MultiplexedConnection> {
        self.conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn conn(&self) -> Result<MultiplexedConnection, StoreError> {
        if let Some(c) = self.current() {
            return Ok(c);
        }
        // One attempt at a time. At start-up the others wait for it (the gateway's
        // first requests and its ban sync race for the first connection); once Redis
        // has been up, an attempt in progress means an outage, and they fail at once.
        let _attempt = if self.connected_once.load(Ordering::Acquire) {
            self.connecting
                .try_lock()
                .map_err(|_| StoreError::Unavailable("reconnecting".into()))?
        } else {
            self.connecting.lock().await
        };
        if let Some(c) = self.current() {
            return Ok(c);
        }
        {
            let mut next = self
                .next_attempt
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            if next.is_some_and(|t| now < t) {
                return Err(StoreError::Unavailable("waiting to reconnect".into()));
            }
            *next = Some(now + self.settings.retry);
        }
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.settings.timeout))
            .set_response_timeout(Some(self.settings.timeout));
        let c = self
            .client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        tracing::info!(url = %self.settings.url, "connected to redis");
        *self.conn.lock().unwrap_or_else(PoisonError::into_inner) = Some(c.clone());
        self.connected_once.store(true, Ordering::Release);
        Ok(c)
    }

    fn failed(&self, e: &redis::RedisError) -> StoreError {
        *self.conn.lock().unwrap_or_else(PoisonError::into_inner) = None;
        *self
            .next_attempt
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now() + self.settings.retry);
        StoreError::Unavailable(e.to_string())
    }

    fn key(&self, parts: &[&str]) -> String {
        let mut k = self.settings.prefix.clone();
        k.push_str(&parts.join(":"));
        k
    }

    async fn counter(&self, key: String, window: Duration) -> Result<u64, StoreError> {
        let mut c = self.conn().await?;
        self.window
            .key(key)
            .arg(ms(window))
            .invoke_async(&mut c)
            .await
            .map_err(|e| self.failed(&e))
    }
}

impl SharedState for RedisState {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn check_rate<'a>(
        &'a self,
        key: &'a str,
        rate: Rate,
    ) -> BoxFuture<'a, Result<RateDecision, StoreError>> {
        Box::pin(async move {
            let mut c = self.conn().await?;
            let period = u64::try_from(rate.period.as_micros()).unwrap_or(u64::MAX);
            let wait: i64 = self
                .gcra
                .key(self.key(&["rate", key]))
                .arg(period)
                .arg(rate.burst.get())
                .invoke_async(&mut c)
                .await
                .map_err(|e| self.failed(&e))?;
            Ok(if wait <= 0 {
                RateDecision::Allowed
            } else {
                RateDecision::Limited {
                    retry_after: Duration::from_micros(wait.unsigned_abs()),
                }
            })
        })
    }

    fn count_failure(
        &self,
        source: IpAddr,
        window: Duration,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.counter(self.key(&["fail", &source.to_string()]), window))
    }

    fn add_offence(
        &self,
        source: IpAddr,
        memory: Duration,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.counter(self.key(&["offence", &source.to_string()]), memory))
    }

    fn add_ban(&self, source: IpAddr, until_ms: u64) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let mut c = self.conn().await?;
            redis::cmd("ZADD")
                .arg(self.key(&["bans"]))
                .arg("GT")
                .arg(until_ms)
                .arg(source.to_string())
                .query_async::<i64>(&mut c)
                .await
                .map_err(|e| self.failed(&e))?;
            Ok(())
        })
    }

    fn bans(&self) -> BoxFuture<'_, Result<Vec<(IpAddr, u64)>, StoreError>> {
        Box::pin(async move {
            let mut c = self.conn().await?;
            let key = self.key(&["bans"]);
            let now = now_ms();
            let (_, list): (i64, Vec<(String, f64)>) = redis::pipe()
                .cmd("ZREMRANGEBYSCORE")
                .arg(&key)
                .arg("-inf")
                .arg(now)
                .cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query_async(&mut c)
                .await
                .map_err(|e| self.failed(&e))?;
            Ok(list
                .into_iter()
                .filter_map(|(ip, until)| {
                    // Scores are whole milliseconds below 2^53: exact in an f64.
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    let until = until as u64;
                    Some((ip.parse().ok()?, until))
                })
                .collect())
        })
    }
}
