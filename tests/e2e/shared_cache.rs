//! One semantic cache for every replica: two router processes behind one Envoy, sharing a
//! real Redis Stack (`--cache-backend redis`), with the real all-MiniLM-L6-v2 encoder. An
//! answer kept through one router is served by the other, tenants never see each other's
//! answers, and with Redis killed requests still succeed (as counted misses) until it is back.

use std::time::Duration;

use crate::dataplane::{ask, header, write_policy};
use crate::support::envoy::{Envoy, EnvoyConfig, free_port};
use crate::support::redis::Redis;
use crate::support::stack::{Router, Sim};
use crate::support::{eventually, repo_root};

struct Replicas {
    small: Sim,
    large: Sim,
    _a100: Sim,
    _manifests: tempfile::TempDir,
    routers: [Router; 2],
    envoy: Envoy,
    client: reqwest::Client,
}

impl Replicas {
    fn start(redis: &Redis) -> Self {
        let (small, large, a100) = (Sim::start("small"), Sim::start("large"), Sim::start("a100"));
        let manifests = tempfile::tempdir().unwrap();
        write_policy(manifests.path(), &small, &large, &a100);
        let route = manifests.path().join("route.yaml");
        let policy = std::fs::read_to_string(&route).unwrap().replace(
            "\n  decisions:\n",
            "\n  cache: {enabled: true, similarityThreshold: 0.85, tenantHeader: X-Tenant}\n  decisions:\n",
        );
        std::fs::write(&route, policy).unwrap();
        let minilm = repo_root().join(".models/all-MiniLM-L6-v2");
        let url = redis.url();
        // Generous budgets: on a loaded CI machine a prompt decided without its embedding, or
        // a lookup past its deadline, is a miss; right for the router, not what this tests.
        let flags = [
            "--encoder",
            minilm.to_str().unwrap(),
            "--classify-budget-ms",
            "20000",
            "--cache-backend",
            "redis",
            "--cache-redis-url",
            &url,
            "--cache-redis-timeout-ms",
            "1000",
        ];
        let routers = [
            Router::start(manifests.path(), &flags),
            Router::start(manifests.path(), &flags),
        ];
        let envoy = Envoy::start(EnvoyConfig {
            listen_port: free_port(),
            admin_port: free_port(),
            ext_proc_addr: routers[0].extproc,
            ext_proc_replicas: vec![routers[1].extproc],
            endpoints: vec![small.addr, large.addr, a100.addr],
            passthrough: small.addr,
            gateway_clusters: Vec::new(),
            with_ext_proc: true,
            buffered: false,
        });
        Self {
            small,
            large,
            _a100: a100,
            _manifests: manifests,
            routers,
            envoy,
            client: reqwest::Client::new(),
        }
    }

    /// `prompt` as `tenant`: the response's `x-semantic-router-cache` header and status.
    async fn ask_as(&self, tenant: &str, prompt: &str) -> (String, u16) {
        let response = self
            .client
            .post(format!("{}/v1/chat/completions", self.envoy.url()))
            .header("content-type", "application/json")
            .header("x-tenant", tenant)
            .body(ask("auto", prompt).to_string())
            .send()
            .await
            .expect("envoy answers");
        let status = response.status().as_u16();
        (
            header(&response, "x-semantic-router-cache").to_owned(),
            status,
        )
    }

    async fn upstream_requests(&self) -> usize {
        self.small.requests().await.len() + self.large.requests().await.len()
    }

    /// Each router's value of the first metric line starting with `prefix` (0 when absent).
    async fn per_router(&self, prefix: &str) -> [f64; 2] {
        let mut values = [0.0; 2];
        for (value, router) in values.iter_mut().zip(&self.routers) {
            let text = router.metrics().await;
            *value = text
                .lines()
                .find(|l| l.starts_with(prefix))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
        }
        values
    }
}

const HITS: &str = "semantic_router_semantic_cache_redis_lookups_total{result=\"hit\"}";
const ERRORS: &str = "semantic_router_semantic_cache_redis_lookups_total{result=\"error\"}";
const QUESTION: &str = "What is the capital of North Carolina?";
const PARAPHRASE: &str = "What's the capital city of North Carolina?";

#[tokio::test(flavor = "multi_thread")]
async fn replicas_share_one_redis_cache_per_tenant_and_serve_through_an_outage() {
    let mut redis = Redis::start();
    let stack = Replicas::start(&redis);
    // Both routers have the encoder loaded and look up Redis (Envoy alternates between them).
    eventually("both routers caching", Duration::from_secs(60), || async {
        let mut all = true;
        for _ in 0..4 {
            let (cache, _) = stack
                .ask_as("warm-up", "Write me a haiku about autumn")
                .await;
            all &= !cache.is_empty();
        }
        all
    })
    .await;

    let (cache, status) = stack.ask_as("a", QUESTION).await;
    assert_eq!((cache.as_str(), status), ("miss", 200));
    eventually("the answer in Redis", Duration::from_secs(15), || async {
        stack.ask_as("a", PARAPHRASE).await.0 == "hit"
    })
    .await;
    let upstream = stack.upstream_requests().await;
    for _ in 0..4 {
        assert_eq!(stack.ask_as("a", PARAPHRASE).await, ("hit".to_owned(), 200));
    }
    // One router kept the answer; both served it, so the other read it from Redis.
    let hits = stack.per_router(HITS).await;
    assert!(
        hits.iter().all(|&h| h >= 1.0),
        "each router served a hit from Redis: {hits:?}"
    );
    assert_eq!(stack.upstream_requests().await, upstream);

    // Another tenant never gets tenant a's answer (its own miss then fills its own scope).
    assert_eq!(stack.ask_as("b", PARAPHRASE).await.0, "miss");
    assert_eq!(stack.upstream_requests().await, upstream + 1);

    // Redis gone: requests still succeed, upstream, as misses counted on each router.
    redis.kill();
    let upstream = stack.upstream_requests().await;
    for _ in 0..4 {
        assert_eq!(
            stack.ask_as("a", PARAPHRASE).await,
            ("miss".to_owned(), 200)
        );
    }
    assert_eq!(stack.upstream_requests().await, upstream + 4);
    let errors = stack.per_router(ERRORS).await;
    assert!(
        errors.iter().all(|&e| e >= 1.0),
        "each router counted Redis errors: {errors:?}\n{}",
        stack.envoy.logs()
    );

    // Redis back (empty: no persistence): answers are kept and served again.
    redis.restart();
    eventually("hits resume", Duration::from_secs(30), || async {
        stack.ask_as("a", QUESTION).await;
        stack.ask_as("a", PARAPHRASE).await.0 == "hit"
    })
    .await;
}
