//! The simulated engine: admission (running / waiting), timing, the prefix cache, the
//! counters behind `/metrics`, and the figures tests may set.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::HeaderValue;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Args;
use crate::openai::{ApiError, InferenceRequest};
use crate::prefix_cache::{PrefixCache, PrefixHit};
use crate::recorder::Recorder;

/// Finish reasons counted by `vllm:request_success_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Stop,
    Length,
}

impl Finish {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
        }
    }
}

/// Monotonic counters, exported as `*_total`.
#[derive(Debug, Default)]
pub struct Counters {
    pub prompt_tokens: AtomicU64,
    pub generation_tokens: AtomicU64,
    pub success_stop: AtomicU64,
    pub success_length: AtomicU64,
    pub prefix_queries: AtomicU64,
    pub prefix_hits: AtomicU64,
}

/// Figures set through `POST /sim/load`; running and waiting are added to the live counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LoadOffsets {
    pub running: u64,
    pub waiting: u64,
    pub kv_cache_usage: f64,
}

/// Body of `POST /sim/load`; fields left out keep their value.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadUpdate {
    pub running: Option<u64>,
    pub waiting: Option<u64>,
    pub kv_cache_usage: Option<f64>,
}

/// What `/metrics` reports right now.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LoadSnapshot {
    pub running: u64,
    pub waiting: u64,
    pub kv_cache_usage: f64,
    pub live_running: u64,
    pub live_waiting: u64,
    pub offsets: LoadOffsets,
}

/// One admitted request's plan.
#[derive(Debug, Clone)]
pub struct Plan {
    pub output_tokens: usize,
    pub finish: Finish,
    pub extra_delay: Duration,
}

pub struct Sim {
    pub args: Args,
    pub name_header: HeaderValue,
    pub started_unix: u64,
    pub counters: Counters,
    pub recorder: Recorder,
    admission: Arc<Semaphore>,
    running: AtomicU64,
    waiting: AtomicU64,
    offsets: Mutex<LoadOffsets>,
    healthy: AtomicBool,
    prefix: Mutex<PrefixCache>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave the data inconsistent.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Sim {
    pub fn new(args: Args) -> Arc<Self> {
        let name_header = HeaderValue::from_str(&args.name)
            .unwrap_or_else(|_| HeaderValue::from_static("vllm-sim"));
        let permits = usize::try_from(args.max_running)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        let prefix = PrefixCache::new(
            usize::try_from(args.prefix_block_chars).unwrap_or(usize::MAX),
            usize::try_from(args.prefix_cache_blocks).unwrap_or(usize::MAX),
        );
        Arc::new(Self {
            name_header,
            started_unix: unix_now(),
            counters: Counters::default(),
            recorder: Recorder::default(),
            admission: Arc::new(Semaphore::new(permits)),
            running: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
            offsets: Mutex::new(LoadOffsets::default()),
            healthy: AtomicBool::new(true),
            prefix: Mutex::new(prefix),
            args,
        })
    }

    /// Models listed by `/v1/models`.
    pub fn listed_models(&self) -> Vec<String> {
        if self.args.models.is_empty() {
            vec![self.args.primary_model().to_string()]
        } else {
            self.args.models.clone()
        }
    }

    pub fn check_model(&self, model: &str) -> Result<(), ApiError> {
        if self.args.models.is_empty() || self.args.models.iter().any(|m| m == model) {
            Ok(())
        } else {
            Err(ApiError::model_not_found(model))
        }
    }

    /// Draws whether this request fails, per `--fail-rate`.
    pub fn draw_failure(&self) -> bool {
        let rate = self.args.fail_rate;
        rate >= 1.0 || (rate > 0.0 && rand::random::<f64>() < rate)
    }

    pub fn plan(&self, req: &InferenceRequest, extra_delay: Duration) -> Plan {
        let configured = u64::from(self.args.output_tokens);
        let (tokens, finish) = match req.max_tokens {
            Some(max) if max < configured => (max, Finish::Length),
            _ => (configured, Finish::Stop),
        };
        Plan {
            output_tokens: usize::try_from(tokens).unwrap_or(usize::MAX),
            finish,
            extra_delay,
        }
    }

    pub fn itl(&self) -> Duration {
        Duration::from_millis(self.args.itl_ms)
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    pub fn update_load(&self, update: LoadUpdate) -> Result<LoadSnapshot, ApiError> {
        if let Some(kv) = update.kv_cache_usage
            && !(0.0..=1.0).contains(&kv)
        {
            return Err(ApiError::bad_request(
                "invalid_request",
                "`kv_cache_usage` must be between 0.0 and 1.0",
            ));
        }
        {
            let mut o = lock(&self.offsets);
            o.running = update.running.unwrap_or(o.running);
            o.waiting = update.waiting.unwrap_or(o.waiting);
            o.kv_cache_usage = update.kv_cache_usage.unwrap_or(o.kv_cache_usage);
        }
        Ok(self.load())
    }

    /// Live counts plus the offsets. KV-cache usage is the set figure plus the share of
    /// `--max-running` slots in use, capped at 1.
    pub fn load(&self) -> LoadSnapshot {
        let offsets = *lock(&self.offsets);
        let live_running = self.running.load(Ordering::SeqCst);
        let live_waiting = self.waiting.load(Ordering::SeqCst);
        let live_kv = live_running as f64 / self.args.max_running as f64;
        LoadSnapshot {
            running: live_running + offsets.running,
            waiting: live_waiting + offsets.waiting,
            kv_cache_usage: (offsets.kv_cache_usage + live_kv).clamp(0.0, 1.0),
            live_running,
            live_waiting,
            offsets,
        }
    }

    /// Waits for a running slot (counted as waiting meanwhile), then looks the prompt up
    /// in the prefix cache and works out the time to first token.
    pub async fn admit(self: &Arc<Self>, prompt_text: &str, plan: &Plan) -> Running {
        let permit = {
            let _waiting = GaugeGuard::enter(&self.waiting);
            Arc::clone(&self.admission)
                .acquire_owned()
                .await
                .expect("the admission semaphore is never closed")
        };
        let others = self.running.fetch_add(1, Ordering::SeqCst);
        let hit = lock(&self.prefix).lookup_and_insert(prompt_text);
        Running {
            sim: Arc::clone(self),
            _permit: permit,
            ttft: self.ttft(hit, others, plan.extra_delay),
            hit,
        }
    }

    fn ttft(&self, hit: PrefixHit, others_running: u64, extra: Duration) -> Duration {
        let base = self.args.ttft_ms as f64;
        let cached = hit.fraction();
        let prefill_ms = base * (1.0 - cached) + base * cached / self.args.prefix_cache_speedup;
        Duration::from_secs_f64(prefill_ms / 1000.0)
            + Duration::from_millis(self.args.queue_latency_ms.saturating_mul(others_running))
            + extra
    }

    /// Counts a finished prefill: prompt tokens and prefix-cache queries and hits
    /// (in approximate tokens, as vLLM counts them).
    fn count_prefill(&self, prompt_tokens: u64, hit: PrefixHit) {
        let c = &self.counters;
        c.prompt_tokens.fetch_add(prompt_tokens, Ordering::Relaxed);
        c.prefix_queries.fetch_add(prompt_tokens, Ordering::Relaxed);
        let hits = (prompt_tokens as f64 * hit.fraction()).round() as u64;
        c.prefix_hits.fetch_add(hits, Ordering::Relaxed);
    }
}

/// Counts one in a gauge while alive.
struct GaugeGuard<'a>(&'a AtomicU64);

impl<'a> GaugeGuard<'a> {
    fn enter(gauge: &'a AtomicU64) -> Self {
        gauge.fetch_add(1, Ordering::SeqCst);
        Self(gauge)
    }
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An admitted request. Holds its running slot until dropped, also when the client goes
/// away mid-answer.
pub struct Running {
    sim: Arc<Sim>,
    _permit: OwnedSemaphorePermit,
    ttft: Duration,
    hit: PrefixHit,
}

impl Running {
    pub fn ttft(&self) -> Duration {
        self.ttft
    }

    /// Counts the prompt as prefilled, once the first token is due.
    pub fn prefilled(&self, prompt_tokens: u64) {
        self.sim.count_prefill(prompt_tokens, self.hit);
    }

    pub fn generated(&self, tokens: u64) {
        self.sim
            .counters
            .generation_tokens
            .fetch_add(tokens, Ordering::Relaxed);
    }

    pub fn finish(self, finish: Finish) {
        let c = &self.sim.counters;
        match finish {
            Finish::Stop => c.success_stop.fetch_add(1, Ordering::Relaxed),
            Finish::Length => c.success_length.fetch_add(1, Ordering::Relaxed),
        };
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.sim.running.fetch_sub(1, Ordering::SeqCst);
    }
}
