//! Token state in Redis, shared by every replica of a server.
//!
//! Keys are `tessera:{namespace}/{server}:{kind}:{id}` and every one carries the expiry of
//! what it guards (`EXAT`), so nothing outlives its use. Single-use operations are one Redis
//! command or one Lua script each (SET NX, GETDEL, EVALSHA), so a code or a `jti` is consumed
//! at most once whichever replica asks; a lost reply can only make a code unusable, never
//! usable twice.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script, Value};

use super::{CodeKind, NewFamily, Rotation, ServerScope, StoreError, TokenStore};

/// Connections kept open per process; commands are spread over them round-robin.
const POOL_SIZE: usize = 4;
/// Longest a request waits for Redis before it is answered 503.
const OPERATION_TIMEOUT: Duration = Duration::from_millis(1500);

/// Presents a refresh token: the current one rotates, any other revokes the family.
const ROTATE: &str = r#"
local current = redis.call('HGET', KEYS[1], 'current')
if not current then return 0 end
if current == ARGV[1] then
  redis.call('HSET', KEYS[1], 'current', ARGV[2])
  return redis.call('HGET', KEYS[1], 'grant')
end
redis.call('DEL', KEYS[1])
return 2
"#;

/// Creates a family with its expiry in one step, so no family lives without a TTL.
const CREATE_FAMILY: &str = r#"
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'current', ARGV[1], 'grant', ARGV[2])
redis.call('EXPIREAT', KEYS[1], ARGV[3])
return 1
"#;

pub struct RedisStore {
    pool: Vec<ConnectionManager>,
    next: AtomicUsize,
    rotate: Script,
    create_family: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL holds the password: never shown.
        f.debug_struct("RedisStore").field("connections", &self.pool.len()).finish_non_exhaustive()
    }
}

/// A Redis error as a store error: its category only, never the URL or password.
fn unavailable(e: RedisError) -> StoreError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connection_refusal() {
        "connection refused"
    } else if e.is_io_error() {
        "connection lost"
    } else {
        e.category()
    };
    StoreError(format!("redis: {what}"))
}

fn key(s: ServerScope<'_>, kind: &str, id: &str) -> String {
    format!("tessera:{}:{kind}:{id}", s.prefix())
}

/// A TTL Redis accepts for an entry that must live until `until`: at least a second after `now`.
fn expiry(until: i64, now: i64) -> i64 {
    until.max(now + 1)
}

impl RedisStore {
    /// Connects lazily to `url` (`redis://` or `rediss://`, password in the URL): a store
    /// built while Redis is down works as soon as Redis answers.
    pub fn new(url: &str) -> Result<Self, StoreError> {
        let client =
            redis::Client::open(url).map_err(|e| StoreError(format!("invalid Redis URL: {}", e.category())))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(1000)))
            .set_response_timeout(Some(Duration::from_millis(1000)))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let pool = (0..POOL_SIZE)
            .map(|_| client.get_connection_manager_lazy(config.clone()).map_err(unavailable))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            pool,
            next: AtomicUsize::new(0),
            rotate: Script::new(ROTATE),
            create_family: Script::new(CREATE_FAMILY),
        })
    }

    fn connection(&self) -> ConnectionManager {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.pool[n % self.pool.len()].clone()
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        let mut con = self.connection();
        match tokio::time::timeout(OPERATION_TIMEOUT, cmd.query_async(&mut con)).await {
            Ok(r) => r.map_err(unavailable),
            Err(_) => Err(StoreError("redis: timed out".into())),
        }
    }

    async fn script<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        key: &str,
        args: &[&[u8]],
    ) -> Result<T, StoreError> {
        let mut con = self.connection();
        let mut invocation = script.key(key);
        for a in args {
            invocation.arg(*a);
        }
        match tokio::time::timeout(OPERATION_TIMEOUT, invocation.invoke_async(&mut con)).await {
            Ok(r) => r.map_err(unavailable),
            Err(_) => Err(StoreError("redis: timed out".into())),
        }
    }
}

impl TokenStore for RedisStore {
    fn revoke<'a>(
        &'a self,
        s: ServerScope<'a>,
        jti: &'a str,
        until: i64,
        now: i64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            if until <= now {
                return Ok(());
            }
            let cmd = redis::cmd("SET").arg(key(s, "revoked", jti)).arg(1).arg("EXAT").arg(until).to_owned();
            self.query::<()>(&cmd).await
        }
        .boxed()
    }

    fn is_revoked<'a>(
        &'a self,
        s: ServerScope<'a>,
        jti: &'a str,
        _now: i64,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        async move { self.query::<bool>(redis::cmd("EXISTS").arg(key(s, "revoked", jti))).await }.boxed()
    }

    fn first_use<'a>(
        &'a self,
        s: ServerScope<'a>,
        id: &'a str,
        until: i64,
        now: i64,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        async move {
            let cmd = redis::cmd("SET")
                .arg(key(s, "used", id))
                .arg(1)
                .arg("NX")
                .arg("EXAT")
                .arg(expiry(until, now))
                .to_owned();
            Ok(self.query::<Option<String>>(&cmd).await?.is_some())
        }
        .boxed()
    }

    fn put_code<'a>(
        &'a self,
        s: ServerScope<'a>,
        kind: CodeKind,
        code: &'a str,
        value: &'a [u8],
        until: i64,
        now: i64,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        async move {
            let cmd = redis::cmd("SET")
                .arg(key(s, kind.as_str(), code))
                .arg(value)
                .arg("NX")
                .arg("EXAT")
                .arg(expiry(until, now))
                .to_owned();
            Ok(self.query::<Option<String>>(&cmd).await?.is_some())
        }
        .boxed()
    }

    fn get_code<'a>(
        &'a self,
        s: ServerScope<'a>,
        kind: CodeKind,
        code: &'a str,
        _now: i64,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>> {
        async move { self.query(redis::cmd("GET").arg(key(s, kind.as_str(), code))).await }.boxed()
    }

    fn update_code<'a>(
        &'a self,
        s: ServerScope<'a>,
        kind: CodeKind,
        code: &'a str,
        value: &'a [u8],
        _now: i64,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        async move {
            let cmd = redis::cmd("SET").arg(key(s, kind.as_str(), code)).arg(value).arg("XX").arg("KEEPTTL").to_owned();
            Ok(self.query::<Option<String>>(&cmd).await?.is_some())
        }
        .boxed()
    }

    fn take_code<'a>(
        &'a self,
        s: ServerScope<'a>,
        kind: CodeKind,
        code: &'a str,
        _now: i64,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>> {
        async move { self.query(redis::cmd("GETDEL").arg(key(s, kind.as_str(), code))).await }.boxed()
    }

    fn create_family<'a>(
        &'a self,
        s: ServerScope<'a>,
        f: NewFamily<'a>,
        now: i64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            let until = expiry(f.until, now).to_string();
            let args: [&[u8]; 3] = [f.token.as_bytes(), f.grant, until.as_bytes()];
            self.script::<i64>(&self.create_family, &key(s, "rf", f.family), &args).await.map(|_| ())
        }
        .boxed()
    }

    fn rotate_refresh<'a>(
        &'a self,
        s: ServerScope<'a>,
        family: &'a str,
        token: &'a str,
        next: &'a str,
        _now: i64,
    ) -> BoxFuture<'a, Result<Rotation, StoreError>> {
        async move {
            let args: [&[u8]; 2] = [token.as_bytes(), next.as_bytes()];
            let v: Value = self.script(&self.rotate, &key(s, "rf", family), &args).await?;
            Ok(match v {
                Value::BulkString(grant) => Rotation::Rotated(grant),
                Value::Int(2) => Rotation::ReuseDetected,
                _ => Rotation::Unknown,
            })
        }
        .boxed()
    }

    fn family_grant<'a>(
        &'a self,
        s: ServerScope<'a>,
        family: &'a str,
        _now: i64,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>> {
        async move { self.query(redis::cmd("HGET").arg(key(s, "rf", family)).arg("grant")).await }.boxed()
    }

    fn revoke_family<'a>(&'a self, s: ServerScope<'a>, family: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        async move { self.query::<()>(redis::cmd("DEL").arg(key(s, "rf", family))).await }.boxed()
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        async move { self.query::<String>(&redis::cmd("PING")).await.map(|_| ()) }.boxed()
    }
}
