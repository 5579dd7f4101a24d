//! The token store contract, run against both backends: memory and a real redis-server.
//! Cross-replica cases use several `RedisStore`s (separate connections, as separate replicas).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tessera::store::{CodeKind, MemoryStore, NewFamily, RedisStore, Rotation, ServerScope, TokenStore};

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// A server name no other test uses, so tests can share one Redis.
fn unique_server() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("srv{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// The backends under test: memory always, Redis when redis-server is available.
fn backends() -> Vec<(&'static str, Arc<dyn TokenStore>)> {
    let mut v: Vec<(&'static str, Arc<dyn TokenStore>)> = vec![("memory", Arc::new(MemoryStore::new()))];
    if let Some(redis) = support::redis::shared() {
        v.push(("redis", Arc::new(RedisStore::new(&redis.url()).unwrap())));
    }
    v
}

/// `n` stores sharing one state: the same memory store, or `n` Redis connections pools.
fn replicas(n: usize) -> Vec<(&'static str, Vec<Arc<dyn TokenStore>>)> {
    let memory: Arc<dyn TokenStore> = Arc::new(MemoryStore::new());
    let mut v = vec![("memory", vec![memory; n])];
    if let Some(redis) = support::redis::shared() {
        let stores = (0..n).map(|_| Arc::new(RedisStore::new(&redis.url()).unwrap()) as Arc<dyn TokenStore>).collect();
        v.push(("redis", stores));
    }
    v
}

#[tokio::test]
async fn revocation_is_seen_until_the_token_expires() {
    for (name, store) in backends() {
        let server = unique_server();
        let s = ServerScope { namespace: "ns", server: &server };
        let t = now();
        store.revoke(s, "j1", t + 2, t).await.unwrap();
        assert!(store.is_revoked(s, "j1", t).await.unwrap(), "{name}");
        assert!(!store.is_revoked(s, "j2", t).await.unwrap(), "{name}");
        let other = ServerScope { namespace: "ns", server: "another" };
        assert!(!store.is_revoked(other, "j1", t).await.unwrap(), "{name}: servers do not share revocations");
        // An already expired token needs no revocation entry.
        store.revoke(s, "old", t - 10, t).await.unwrap();
        assert!(!store.is_revoked(s, "old", t).await.unwrap(), "{name}");
    }
}

#[tokio::test]
async fn a_jti_is_accepted_once() {
    for (name, store) in backends() {
        let server = unique_server();
        let s = ServerScope { namespace: "ns", server: &server };
        let t = now();
        assert!(store.first_use(s, "assertion:c:1", t + 60, t).await.unwrap(), "{name}");
        assert!(!store.first_use(s, "assertion:c:1", t + 60, t).await.unwrap(), "{name}");
        assert!(store.first_use(s, "assertion:c:2", t + 60, t).await.unwrap(), "{name}");
    }
}

#[tokio::test]
async fn a_code_is_taken_once_and_not_overwritten() {
    for (name, store) in backends() {
        let server = unique_server();
        let s = ServerScope { namespace: "ns", server: &server };
        let t = now();
        assert!(store.put_code(s, CodeKind::Authorization, "c1", b"grant-1", t + 60, t).await.unwrap(), "{name}");
        assert!(!store.put_code(s, CodeKind::Authorization, "c1", b"evil", t + 60, t).await.unwrap(), "{name}");
        assert_eq!(
            store.get_code(s, CodeKind::Authorization, "c1", t).await.unwrap().as_deref(),
            Some(&b"grant-1"[..])
        );
        assert_eq!(store.get_code(s, CodeKind::Device, "c1", t).await.unwrap(), None, "{name}: kinds are apart");
        assert_eq!(
            store.take_code(s, CodeKind::Authorization, "c1", t).await.unwrap().as_deref(),
            Some(&b"grant-1"[..])
        );
        assert_eq!(store.take_code(s, CodeKind::Authorization, "c1", t).await.unwrap(), None, "{name}");
        assert_eq!(store.get_code(s, CodeKind::Authorization, "c1", t).await.unwrap(), None, "{name}");
    }
}

#[tokio::test]
async fn a_device_code_is_approved_in_place_then_redeemed_once() {
    for (name, store) in backends() {
        let server = unique_server();
        let s = ServerScope { namespace: "ns", server: &server };
        let t = now();
        assert!(store.put_code(s, CodeKind::Device, "d1", b"pending", t + 60, t).await.unwrap());
        assert!(store.put_code(s, CodeKind::UserCode, "WDJB-MJHT", b"d1", t + 60, t).await.unwrap());
        assert_eq!(store.get_code(s, CodeKind::Device, "d1", t).await.unwrap().as_deref(), Some(&b"pending"[..]));
        assert!(store.update_code(s, CodeKind::Device, "d1", b"approved", t).await.unwrap(), "{name}");
        assert!(!store.update_code(s, CodeKind::Device, "nope", b"approved", t).await.unwrap(), "{name}");
        assert_eq!(store.take_code(s, CodeKind::Device, "d1", t).await.unwrap().as_deref(), Some(&b"approved"[..]));
        assert_eq!(store.take_code(s, CodeKind::Device, "d1", t).await.unwrap(), None, "{name}");
    }
}

#[tokio::test]
async fn codes_expire_with_what_they_guard() {
    for (name, store) in backends() {
        let server = unique_server();
        let s = ServerScope { namespace: "ns", server: &server };
        let t = now();
        store.put_code(s, CodeKind::Authorization, "short", b"g", t + 1, t).await.unwrap();
        store.create_family(s, NewFamily { family: "f", token: "t0", grant: b"g", until: t + 1 }, t).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let later = now();
        assert_eq!(store.take_code(s, CodeKind::Authorization, "short", later).await.unwrap(), None, "{name}");
        assert_eq!(store.rotate_refresh(s, "f", "t0", "t1", later).await.unwrap(), Rotation::Unknown, "{name}");
    }
}

#[tokio::test]
async fn refresh_rotation_and_reuse_revokes_the_family() {
    for (name, store) in backends() {
        let server = unique_server();
        let s = ServerScope { namespace: "ns", server: &server };
        let t = now();
        store
            .create_family(s, NewFamily { family: "fam", token: "t0", grant: b"grant", until: t + 600 }, t)
            .await
            .unwrap();
        assert_eq!(store.rotate_refresh(s, "fam", "t0", "t1", t).await.unwrap(), Rotation::Rotated(b"grant".to_vec()));
        assert_eq!(store.rotate_refresh(s, "fam", "t1", "t2", t).await.unwrap(), Rotation::Rotated(b"grant".to_vec()));
        // t0 is replayed: the family dies, so even the current t2 stops working.
        assert_eq!(store.rotate_refresh(s, "fam", "t0", "t9", t).await.unwrap(), Rotation::ReuseDetected, "{name}");
        assert_eq!(store.rotate_refresh(s, "fam", "t2", "t3", t).await.unwrap(), Rotation::Unknown, "{name}");
        assert_eq!(store.rotate_refresh(s, "nofam", "t0", "t1", t).await.unwrap(), Rotation::Unknown, "{name}");

        store.create_family(s, NewFamily { family: "fam2", token: "a", grant: b"g", until: t + 600 }, t).await.unwrap();
        store.revoke_family(s, "fam2").await.unwrap();
        assert_eq!(store.rotate_refresh(s, "fam2", "a", "b", t).await.unwrap(), Rotation::Unknown, "{name}");
    }
}

#[tokio::test]
async fn refresh_reuse_is_detected_across_replicas() {
    for (name, stores) in replicas(3) {
        let server = unique_server();
        let s = ServerScope { namespace: "ns", server: &server };
        let t = now();
        stores[0]
            .create_family(s, NewFamily { family: "f", token: "t0", grant: b"g", until: t + 600 }, t)
            .await
            .unwrap();
        assert!(matches!(stores[1].rotate_refresh(s, "f", "t0", "t1", t).await.unwrap(), Rotation::Rotated(_)));
        assert_eq!(stores[2].rotate_refresh(s, "f", "t0", "x", t).await.unwrap(), Rotation::ReuseDetected, "{name}");
        assert_eq!(stores[0].rotate_refresh(s, "f", "t1", "t2", t).await.unwrap(), Rotation::Unknown, "{name}");
    }
}

#[tokio::test]
async fn fifty_parallel_redemptions_of_one_code_across_replicas_succeed_once() {
    for (name, stores) in replicas(3) {
        let server = unique_server();
        let t = now();
        let s = ServerScope { namespace: "ns", server: &server };
        stores[0].put_code(s, CodeKind::Authorization, "the-code", b"grant", t + 60, t).await.unwrap();
        let tasks = (0..50).map(|i| {
            let store = stores[i % stores.len()].clone();
            let server = server.clone();
            tokio::spawn(async move {
                let s = ServerScope { namespace: "ns", server: &server };
                store.take_code(s, CodeKind::Authorization, "the-code", now()).await.unwrap()
            })
        });
        let results = futures::future::join_all(tasks).await;
        let won = results.into_iter().filter(|r| r.as_ref().unwrap().is_some()).count();
        assert_eq!(won, 1, "{name}: a code must be redeemed exactly once");
    }
}

#[tokio::test]
async fn fifty_parallel_rotations_of_one_refresh_token_succeed_once() {
    for (name, stores) in replicas(3) {
        let server = unique_server();
        let t = now();
        let s = ServerScope { namespace: "ns", server: &server };
        stores[0]
            .create_family(s, NewFamily { family: "f", token: "t0", grant: b"g", until: t + 600 }, t)
            .await
            .unwrap();
        let tasks = (0..50).map(|i| {
            let store = stores[i % stores.len()].clone();
            let server = server.clone();
            tokio::spawn(async move {
                let s = ServerScope { namespace: "ns", server: &server };
                store.rotate_refresh(s, "f", "t0", &format!("n{i}"), now()).await.unwrap()
            })
        });
        let results: Vec<Rotation> = futures::future::join_all(tasks).await.into_iter().map(Result::unwrap).collect();
        let rotated = results.iter().filter(|r| matches!(r, Rotation::Rotated(_))).count();
        assert_eq!(rotated, 1, "{name}: {results:?}");
    }
}

#[tokio::test]
async fn fifty_parallel_uses_of_one_jti_across_replicas_succeed_once() {
    for (name, stores) in replicas(3) {
        let server = unique_server();
        let tasks = (0..50).map(|i| {
            let store = stores[i % stores.len()].clone();
            let server = server.clone();
            tokio::spawn(async move {
                let s = ServerScope { namespace: "ns", server: &server };
                store.first_use(s, "assertion:c:j", now() + 60, now()).await.unwrap()
            })
        });
        let results = futures::future::join_all(tasks).await;
        assert_eq!(results.into_iter().filter(|r| *r.as_ref().unwrap()).count(), 1, "{name}");
    }
}

/// Redis only: every key is under `tessera:{namespace}/{server}:` and carries a TTL.
#[tokio::test]
async fn every_redis_key_is_namespaced_and_expires() {
    let Some(redis) = support::redis::shared() else { return };
    let store = RedisStore::new(&redis.url()).unwrap();
    let server = unique_server();
    let s = ServerScope { namespace: "team-a", server: &server };
    let t = now();
    store.revoke(s, "j", t + 300, t).await.unwrap();
    store.first_use(s, "assertion:c:j", t + 300, t).await.unwrap();
    store.put_code(s, CodeKind::Authorization, "c", b"g", t + 300, t).await.unwrap();
    store.put_code(s, CodeKind::Device, "d", b"g", t + 300, t).await.unwrap();
    store.update_code(s, CodeKind::Device, "d", b"approved", t).await.unwrap();
    store.create_family(s, NewFamily { family: "f", token: "t0", grant: b"g", until: t + 300 }, t).await.unwrap();
    store.rotate_refresh(s, "f", "t0", "t1", t).await.unwrap();

    let client = redis::Client::open(redis.url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let prefix = format!("tessera:team-a/{server}:");
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut con).await.unwrap();
    assert_eq!(keys.len(), 5, "{keys:?}");
    for k in keys {
        let ttl: i64 = redis::cmd("TTL").arg(&k).query_async(&mut con).await.unwrap();
        assert!((250..=301).contains(&ttl), "{k} has TTL {ttl}");
    }
}

/// Redis only: while Redis is down every operation fails fast with the store error, and the
/// same store works again once Redis is back, without being rebuilt.
#[tokio::test]
async fn redis_outage_is_an_error_then_recovers_without_restart() {
    if !support::redis::available() {
        return;
    }
    let redis = support::redis::RedisServer::start();
    let store = RedisStore::new(&redis.url()).unwrap();
    let server = unique_server();
    let s = ServerScope { namespace: "ns", server: &server };
    store.ping().await.unwrap();
    redis.stop();
    let started = std::time::Instant::now();
    for _ in 0..3 {
        assert!(store.ping().await.is_err());
        assert!(store.take_code(s, CodeKind::Authorization, "c", now()).await.is_err());
    }
    assert!(started.elapsed() < Duration::from_secs(10), "failing took {:?}", started.elapsed());
    redis.resume();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.ping().await.is_err() {
        assert!(std::time::Instant::now() < deadline, "store did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(store.put_code(s, CodeKind::Authorization, "c", b"g", now() + 60, now()).await.unwrap());
    assert!(store.take_code(s, CodeKind::Authorization, "c", now()).await.unwrap().is_some());
}

/// A store built while Redis is down starts working when Redis comes up.
#[tokio::test]
async fn redis_store_built_before_redis_is_up_connects_later() {
    if !support::redis::available() {
        return;
    }
    let redis = support::redis::RedisServer::start();
    redis.stop();
    let store = RedisStore::new(&redis.url()).unwrap();
    assert!(store.ping().await.is_err());
    redis.resume();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.ping().await.is_err() {
        assert!(std::time::Instant::now() < deadline, "store never connected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
