//! The semantic cache's lookup latency: the in-memory store against Redis vector search.
//!
//! For 1k, 10k and 100k entries (384-wide random unit vectors, one scope: the worst case for
//! the in-memory scan), lookups that hit (a stored vector, slightly moved) from 1 and from 8
//! concurrent clients; p50 and p99 per lookup. Redis is a real Redis Stack from
//! `.tools/redis` (`make tools`) on 127.0.0.1, started and stopped by this bench. The issue's
//! target: a Redis hit adds at most 2 ms p99 over the in-memory hit at 100k entries.
//!
//! Run: `cargo bench --bench cache`. Knobs: `CACHE_SIZES` (comma-separated, `1000,10000,100000`),
//! `CACHE_LOOKUPS` (per client, 400), `CACHE_LOAD_SECS` (most seconds to load Redis per size,
//! 120). Every loop is bounded in count and time. Prints numbers, asserts nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use semantic_router::cache::{
    Answer, CacheBackend, CacheLimits, Fingerprint, RedisCache, RedisConfig, Scope, SemanticCache,
};

const WIDTH: usize = 384;

/// A small deterministic generator (xorshift), so runs compare.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }

    fn unit(&mut self) -> Vec<f32> {
        let v: Vec<f32> = (0..WIDTH).map(|_| self.next()).collect();
        normalise(v)
    }
}

fn normalise(v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

/// `v` moved a little (cosine about 0.99): a paraphrase.
fn near(v: &[f32], rng: &mut Rng) -> Vec<f32> {
    normalise(v.iter().map(|x| x + 0.005 * rng.next()).collect())
}

fn answer() -> Answer {
    Answer {
        model: "m".into(),
        content: "A cached answer of a typical length, a sentence or two long.".into(),
        finish_reason: "stop".into(),
    }
}

/// The guard's fingerprint of stored prompt `i` (each differs, as real prompts do).
fn fingerprint(i: usize) -> Fingerprint {
    Fingerprint::of(&format!("What is the answer to question number {i}?"))
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Lookups from `clients` concurrent tasks, `per_client` each, at most `limit` long;
/// (latencies, hits).
async fn measure(
    cache: &CacheBackend,
    scope: Scope,
    stored: &Arc<Vec<Vec<f32>>>,
    clients: usize,
    per_client: usize,
    limit: Duration,
) -> (Vec<Duration>, usize) {
    let deadline = Instant::now() + limit;
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (cache, stored) = (cache.clone(), stored.clone());
            tokio::spawn(async move {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (c as u64 + 1));
                let mut out = Vec::with_capacity(per_client);
                let mut hits = 0;
                for i in 0..per_client {
                    if Instant::now() > deadline {
                        break;
                    }
                    let target = (i * 7919 + c * 104_729) % stored.len();
                    let query = near(&stored[target], &mut rng);
                    let fp = fingerprint(target);
                    let started = Instant::now();
                    let hit = cache.lookup(scope, &query, &fp, 0.9).await;
                    out.push(started.elapsed());
                    hits += usize::from(hit.is_some());
                }
                (out, hits)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut hits = 0;
    for task in tasks {
        if let Ok((mut l, h)) = task.await {
            all.append(&mut l);
            hits += h;
        }
    }
    all.sort();
    (all, hits)
}

fn report(backend: &str, size: usize, clients: usize, (lat, hits): &(Vec<Duration>, usize)) {
    println!(
        "{backend:<7} {size:>7} entries  {clients} client(s): p50 {:>9.3} ms  p99 {:>9.3} ms  ({} lookups, {} hits)",
        percentile(lat, 0.50).as_secs_f64() * 1e3,
        percentile(lat, 0.99).as_secs_f64() * 1e3,
        lat.len(),
        hits
    );
}

#[path = "../tests/support/redis.rs"]
mod redis_server;

use redis_server::Redis;

fn writes(cache: &RedisCache) -> usize {
    let mut registry = Registry::default();
    cache.register(&mut registry);
    let mut text = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text.lines()
        .find(|l| l.starts_with("semantic_router_semantic_cache_redis_writes_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as usize)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let sizes: Vec<usize> = std::env::var("CACHE_SIZES")
        .unwrap_or_else(|_| "1000,10000,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let per_client = env("CACHE_LOOKUPS", 400);
    let load_limit = Duration::from_secs(env("CACHE_LOAD_SECS", 120) as u64);
    let measure_limit = Duration::from_secs(30);
    let scope = Scope::new("bench/route", "m", "");
    let ttl = Duration::from_secs(3600);
    let redis = Redis::start();
    println!("semantic-cache lookups (hits), {WIDTH}-wide unit vectors, one scope");
    for &size in &sizes {
        let mut rng = Rng(0x2545_F491_4F6C_DD1D ^ size as u64);
        let stored: Arc<Vec<Vec<f32>>> = Arc::new((0..size).map(|_| rng.unit()).collect());

        let memory = Arc::new(SemanticCache::new(CacheLimits {
            max_entries: size,
            max_bytes: usize::MAX,
        }));
        let started = Instant::now();
        for (i, v) in stored.iter().enumerate() {
            memory.insert(scope, v.clone().into(), fingerprint(i), answer(), ttl);
        }
        println!(
            "memory  {size:>7} entries: loaded in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let memory = CacheBackend::from(memory);
        for clients in [1, 8] {
            let r = measure(&memory, scope, &stored, clients, per_client, measure_limit).await;
            report("memory", size, clients, &r);
        }

        let config = RedisConfig {
            key_prefix: format!("bench{size}:"),
            call_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(5),
            write_queue: size + 1,
            ..RedisConfig::new(redis.url())
        };
        let cache = match RedisCache::connect(config) {
            Ok(cache) => Arc::new(cache),
            Err(e) => {
                println!("redis: {e}");
                continue;
            }
        };
        let started = Instant::now();
        for (i, v) in stored.iter().enumerate() {
            cache.insert(scope, v.clone().into(), fingerprint(i), answer(), ttl);
        }
        while writes(&cache) < size && started.elapsed() < load_limit {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let loaded = writes(&cache);
        println!(
            "redis   {size:>7} entries: {loaded} written in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let backend = CacheBackend::from(cache);
        for clients in [1, 8] {
            let r = measure(&backend, scope, &stored, clients, per_client, measure_limit).await;
            report("redis", size, clients, &r);
        }
    }
}
