//! The Redis semantic cache against a real Redis Stack (redis-server with RediSearch, from
//! `.tools/redis/`, installed by `make tools`): answers shared between two caches (two
//! replicas), scope and tenant isolation, the false-hit guard, TTL expiry, index creation by
//! replicas starting together, and Redis killed and restarted under it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use semantic_router::cache::{Answer, Fingerprint, RedisCache, RedisConfig, Scope};

#[path = "support/redis.rs"]
mod redis_server;

use redis_server::{Redis, RedisOptions};

fn config(redis: &Redis, prefix: &str) -> RedisConfig {
    RedisConfig {
        key_prefix: format!("test-{prefix}:"),
        // Generous for a loaded CI machine: these tests are about behaviour, not speed.
        call_timeout: Duration::from_millis(500),
        write_timeout: Duration::from_millis(500),
        ..RedisConfig::new(redis.url())
    }
}

/// A 384-wide unit vector pointing mostly along `axis`.
fn unit(axis: usize, wobble: f32) -> Arc<[f32]> {
    let mut v = vec![0.01f32; 384];
    v[axis] = 1.0;
    v[(axis + 1) % 384] = wobble;
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

fn answer(text: &str) -> Answer {
    Answer {
        model: "m".into(),
        content: text.into(),
        finish_reason: "stop".into(),
    }
}

fn metrics(cache: &RedisCache) -> String {
    let mut registry = Registry::default();
    cache.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    text
}

/// The value of the first metric line starting with `prefix` (0 when absent).
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Polls `lookup` until it hits (an asynchronous write landing), for at most `limit`.
async fn eventually_hit(
    cache: &RedisCache,
    scope: Scope,
    embedding: &[f32],
    prompt: &str,
    limit: Duration,
) -> Option<String> {
    let fp = Fingerprint::of(prompt);
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(hit) = cache.lookup(scope, embedding, &fp, 0.9).await {
            return Some(hit.answer.content.clone());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

const HOUR: Duration = Duration::from_secs(3600);
const BUY: &str = "Should I buy Tesla stock today?";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_kept_by_one_replica_is_served_by_another_in_its_scope_only() {
    let redis = Redis::start();
    let a = RedisCache::connect(config(&redis, "shared")).expect("connect a");
    let b = RedisCache::connect(config(&redis, "shared")).expect("connect b");
    let scope = Scope::new("default/auto", "m", "");
    a.insert(
        scope,
        unit(0, 0.0),
        Fingerprint::of(BUY),
        answer("Nobody knows."),
        HOUR,
    );
    let hit = eventually_hit(
        &b,
        scope,
        &unit(0, 0.05),
        "should i buy tesla stock today",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(hit.as_deref(), Some("Nobody knows."), "b serves a's answer");

    let fp = Fingerprint::of(BUY);
    let other_route = Scope::new("default/other", "m", "");
    assert!(
        b.lookup(other_route, &unit(0, 0.0), &fp, 0.5)
            .await
            .is_none()
    );
    assert!(
        b.lookup(scope.with_tenant("team-b"), &unit(0, 0.0), &fp, 0.5)
            .await
            .is_none(),
        "another tenant never sees it"
    );
    assert!(
        b.lookup(scope, &unit(7, 0.0), &fp, 0.9).await.is_none(),
        "a different prompt"
    );
    let sell = Fingerprint::of("Should I sell Tesla stock today?");
    assert!(
        b.lookup(scope, &unit(0, 0.0), &sell, 0.5).await.is_none(),
        "the guard refuses sell for buy"
    );
    let text = metrics(&b);
    assert_eq!(
        metric(
            &text,
            "semantic_router_semantic_cache_redis_guard_rejections_total"
        ),
        1.0,
        "{text}"
    );
    assert!(
        metric(
            &text,
            "semantic_router_semantic_cache_redis_lookups_total{result=\"hit\"}"
        ) >= 1.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &metrics(&a),
            "semantic_router_semantic_cache_redis_writes_total"
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_expire_with_their_ttl() {
    let redis = Redis::start();
    let cache = RedisCache::connect(config(&redis, "ttl")).expect("connect");
    let scope = Scope::new("r", "m", "");
    cache.insert(
        scope,
        unit(3, 0.0),
        Fingerprint::of(BUY),
        answer("x"),
        Duration::from_millis(800),
    );
    assert!(
        eventually_hit(&cache, scope, &unit(3, 0.0), BUY, Duration::from_secs(5))
            .await
            .is_some()
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let fp = Fingerprint::of(BUY);
    assert!(
        cache.lookup(scope, &unit(3, 0.0), &fp, 0.5).await.is_none(),
        "expired"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_all_create_or_find_the_index() {
    let redis = Redis::start();
    let caches: Vec<RedisCache> = (0..6)
        .map(|_| RedisCache::connect(config(&redis, "together")).expect("connect"))
        .collect();
    let scope = Scope::new("r", "m", "");
    let fp = Fingerprint::of(BUY);
    let embedding = unit(1, 0.0);
    let results = futures::future::join_all(
        caches
            .iter()
            .map(|c| c.try_lookup(scope, &embedding, &fp, 0.9)),
    )
    .await;
    for result in results {
        assert!(matches!(result, Ok(None)), "{result:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_a_counted_miss_within_the_deadline_and_redis_back_serves_again() {
    let mut redis = Redis::start();
    let deadline = Duration::from_millis(50);
    let cache = RedisCache::connect(RedisConfig {
        call_timeout: deadline,
        write_queue: 2,
        ..config(&redis, "outage")
    })
    .expect("connect");
    let scope = Scope::new("r", "m", "");
    let (embedding, fp) = (unit(2, 0.0), Fingerprint::of(BUY));
    // A generous deadline for the first answer: the first call also creates the index.
    let warm = RedisCache::connect(config(&redis, "outage")).expect("connect");
    warm.insert(scope, embedding.clone(), fp.clone(), answer("before"), HOUR);
    assert!(
        eventually_hit(&warm, scope, &embedding, BUY, Duration::from_secs(5))
            .await
            .is_some()
    );

    redis.kill();
    for _ in 0..5 {
        let started = Instant::now();
        assert!(cache.lookup(scope, &embedding, &fp, 0.5).await.is_none());
        assert!(
            started.elapsed() < deadline + Duration::from_millis(450),
            "a miss within the deadline, not a hang: {:?}",
            started.elapsed()
        );
    }
    for i in 0..50 {
        cache.insert(scope, unit(10 + i, 0.0), fp.clone(), answer("lost"), HOUR);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = metrics(&cache);
    assert_eq!(
        metric(
            &text,
            "semantic_router_semantic_cache_redis_lookups_total{result=\"error\"}"
        ),
        5.0,
        "{text}"
    );
    let failed_writes = metric(
        &text,
        "semantic_router_semantic_cache_redis_errors_total{op=\"write\"",
    );
    let dropped = metric(
        &text,
        "semantic_router_semantic_cache_redis_dropped_writes_total",
    );
    assert!(dropped >= 1.0, "a full queue drops writes: {text}");
    assert!(failed_writes + dropped >= 50.0 - 2.0, "{text}");
    assert_eq!(
        metric(&text, "semantic_router_semantic_cache_redis_writes_total"),
        0.0
    );

    // Back (empty: no persistence): the cache makes its index again and serves new answers.
    redis.restart();
    let recovered = Instant::now() + Duration::from_secs(15);
    let mut served = None;
    while served.is_none() && Instant::now() < recovered {
        cache.insert(scope, embedding.clone(), fp.clone(), answer("after"), HOUR);
        tokio::time::sleep(Duration::from_millis(100)).await;
        served = cache
            .lookup(scope, &embedding, &fp, 0.5)
            .await
            .map(|h| h.answer.content.clone());
    }
    assert_eq!(served.as_deref(), Some("after"), "{}", metrics(&cache));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca_and_a_password_from_a_file() {
    let redis = Redis::start_with(RedisOptions {
        tls: true,
        password: Some("s3cret-pass".into()),
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let password = dir.path().join("password");
    std::fs::write(&password, "s3cret-pass\n").expect("write");
    let trusted = RedisConfig {
        ca_file: Some(redis.ca_file()),
        ..config(&redis, "tls")
    }
    .password_from_file(&password)
    .expect("password");
    assert!(redis.url().starts_with("rediss://"));
    let cache = RedisCache::connect(trusted.clone()).expect("connect");
    let scope = Scope::new("r", "m", "");
    let embedding = unit(3, 0.0);
    cache.insert(
        scope,
        embedding.clone(),
        Fingerprint::of(BUY),
        answer("over TLS"),
        HOUR,
    );
    assert_eq!(
        eventually_hit(&cache, scope, &embedding, BUY, Duration::from_secs(10))
            .await
            .as_deref(),
        Some("over TLS"),
        "{}",
        metrics(&cache)
    );

    // The system roots do not know the test CA, and a wrong password is refused: both are
    // counted misses, never a hang or a panic.
    let untrusted = RedisConfig {
        ca_file: None,
        ..trusted.clone()
    };
    let no_password = RedisConfig {
        ca_file: Some(redis.ca_file()),
        ..config(&redis, "tls")
    };
    for (what, config) in [("untrusted CA", untrusted), ("no password", no_password)] {
        let refused = RedisCache::connect(config).expect("connect is lazy");
        assert!(
            refused
                .lookup(scope, &embedding, &Fingerprint::of(BUY), 0.5)
                .await
                .is_none(),
            "{what}"
        );
        let text = metrics(&refused);
        assert_eq!(
            metric(
                &text,
                "semantic_router_semantic_cache_redis_lookups_total{result=\"error\"}"
            ),
            1.0,
            "{what}: {text}"
        );
    }
}
