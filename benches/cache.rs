//! The semantic cache's lookup latency: the in-memory store against Redis vector search.
//!
//! For 1k, 10k and 100k entries (384-wide random unit vectors, one scope: the worst case for
//! the in-memory store), lookups that hit (a stored vector, slightly moved) from 1 and from 8
//! concurrent clients; p50 and p99 per lookup. For the in-memory store also: the cost of an
//! insert while loading and once full (each insert then evicts one), and its recall@1, how
//! often it serves the best match an exact scan of every entry finds (for a paraphrase and
//! for a query at the edge of a typical threshold), with the exact scan's own time. Redis is
//! a real Redis Stack from `.tools/redis` (`make tools`) on 127.0.0.1, started and stopped by
//! this bench. The targets at 100k entries: an in-memory lookup at most 1 ms p99 with
//! 8 clients, and a Redis hit at most 2 ms p99 over the in-memory hit.
//!
//! Run: `cargo bench --bench cache`. Knobs: `CACHE_SIZES` (comma-separated, `1000,10000,100000`),
//! `CACHE_LOOKUPS` (per client, 400), `CACHE_LOAD_SECS` (most seconds to load Redis per size,
//! 120), `CACHE_REDIS` (0 measures the in-memory store alone). Every loop is bounded in count and time. Prints numbers, asserts nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use semantic_router::cache::{
    Answer, CacheBackend, CacheLimits, Fingerprint, RedisCache, RedisConfig, Scope, SemanticCache,
    dot,
};

const WIDTH: usize = 384;

/// The similarity threshold of every lookup.
const THRESHOLD: f32 = 0.9;

/// Noise of a paraphrase (cosine about 0.9996 to its stored vector).
const PARAPHRASE: f32 = 0.005;

/// How long every answer is kept: longer than any run.
const TTL: Duration = Duration::from_secs(3600);

/// Noise of a query at the edge of a typical threshold (cosine about 0.92).
const EDGE: f32 = 0.075;

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

/// `v` moved by `noise` (see [`PARAPHRASE`] and [`EDGE`]).
fn near(v: &[f32], rng: &mut Rng, noise: f32) -> Vec<f32> {
    normalise(v.iter().map(|x| x + noise * rng.next()).collect())
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
                    let query = near(&stored[target], &mut rng, PARAPHRASE);
                    let fp = fingerprint(target);
                    let started = Instant::now();
                    let hit = cache.lookup(scope, &query, &fp, THRESHOLD).await;
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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn report(backend: &str, size: usize, clients: usize, (lat, hits): &(Vec<Duration>, usize)) {
    println!(
        "{backend:<7} {size:>7} entries  {clients} client(s): p50 {:>9.3} ms  p99 {:>9.3} ms  ({} lookups, {} hits)",
        ms(percentile(lat, 0.50)),
        ms(percentile(lat, 0.99)),
        lat.len(),
        hits
    );
}

/// Inserts of `vectors` (fingerprints from `first` on), each timed; sorted.
fn inserts(
    cache: &SemanticCache,
    scope: Scope,
    vectors: &[Vec<f32>],
    first: usize,
    limit: Duration,
) -> Vec<Duration> {
    let deadline = Instant::now() + limit;
    let mut out = Vec::with_capacity(vectors.len());
    for (i, v) in vectors.iter().enumerate() {
        if Instant::now() > deadline {
            break;
        }
        let (embedding, fp) = (v.clone().into(), fingerprint(first + i));
        let started = Instant::now();
        cache.insert(scope, embedding, fp, answer(), TTL);
        out.push(started.elapsed());
    }
    out.sort();
    out
}

fn report_inserts(size: usize, what: &str, lat: &[Duration]) {
    println!(
        "memory  {size:>7} entries: {what}: insert p50 {:>9.3} ms  p99 {:>9.3} ms  ({} inserts)",
        ms(percentile(lat, 0.50)),
        ms(percentile(lat, 0.99)),
        lat.len()
    );
}

/// Recall@1 of the store against an exact scan of `stored`, for up to `queries` queries
/// `noise` from a stored vector whose best match is at or above the threshold; prints the
/// recall, the queries' mean best similarity and the exact scan's mean time.
fn recall(
    cache: &SemanticCache,
    scope: Scope,
    stored: &[Vec<f32>],
    noise: f32,
    queries: usize,
    limit: Duration,
) {
    let deadline = Instant::now() + limit;
    let mut rng = Rng(0x5851_F42D_4C95_7F2D ^ noise.to_bits() as u64);
    let (mut asked, mut served, mut similarity, mut scanning) = (0, 0, 0.0, Duration::ZERO);
    for i in 0..queries {
        if Instant::now() > deadline {
            break;
        }
        let query = near(&stored[(i * 7919) % stored.len()], &mut rng, noise);
        let started = Instant::now();
        let exact = stored
            .iter()
            .enumerate()
            .map(|(j, v)| (dot(v, &query), j))
            .max_by(|a, b| a.0.total_cmp(&b.0));
        scanning += started.elapsed();
        let Some((best, j)) = exact.filter(|(s, _)| *s >= THRESHOLD) else {
            continue;
        };
        asked += 1;
        similarity += f64::from(best);
        let hit = cache.lookup(scope, &query, &fingerprint(j), THRESHOLD);
        served += usize::from(hit.is_some_and(|h| (h.similarity - best).abs() <= 1e-6));
    }
    let n = asked.max(1);
    println!(
        "memory  {:>7} entries: recall@1 {:.4} at cosine {:.4} ({asked} queries; exact scan {:.3} ms each)",
        stored.len(),
        served as f64 / n as f64,
        similarity / n as f64,
        ms(scanning / u32::try_from(n).unwrap_or(u32::MAX)),
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
    let redis = (env("CACHE_REDIS", 1) != 0).then(Redis::start);
    println!("semantic-cache lookups (hits), {WIDTH}-wide unit vectors, one scope");
    for &size in &sizes {
        let mut rng = Rng(0x2545_F491_4F6C_DD1D ^ size as u64);
        let stored: Arc<Vec<Vec<f32>>> = Arc::new((0..size).map(|_| rng.unit()).collect());

        let memory = Arc::new(SemanticCache::new(CacheLimits {
            max_entries: size,
            max_bytes: usize::MAX,
        }));
        let started = Instant::now();
        let loading = inserts(&memory, scope, &stored, 0, load_limit);
        println!(
            "memory  {size:>7} entries: loaded {} in {:.1} s",
            loading.len(),
            started.elapsed().as_secs_f64()
        );
        report_inserts(size, "loading", &loading);
        let backend = CacheBackend::from(memory.clone());
        for clients in [1, 8] {
            let r = measure(&backend, scope, &stored, clients, per_client, measure_limit).await;
            report("memory", size, clients, &r);
        }
        for noise in [PARAPHRASE, EDGE] {
            recall(&memory, scope, &stored, noise, 200, measure_limit);
        }
        let more: Vec<Vec<f32>> = (0..size.min(2000)).map(|_| rng.unit()).collect();
        report_inserts(
            size,
            "full",
            &inserts(&memory, scope, &more, size, measure_limit),
        );

        let Some(redis) = &redis else { continue };
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
            cache.insert(scope, v.clone().into(), fingerprint(i), answer(), TTL);
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
