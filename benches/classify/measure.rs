//! Closed-loop throughput windows, process CPU time and percentiles.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use semantic_router::classify::ClassifierService;

use crate::texts::Words;
use crate::{THROUGHPUT_SECS, THROUGHPUT_TOKENS};

/// What one closed-loop window measured.
pub struct Window {
    /// Completed requests per second.
    pub rate: f64,
    /// Process CPU seconds per completed request (robust to other load on the machine).
    pub cpu_per_request: f64,
    /// Share of completed requests the static tier answered.
    pub answered_static: f64,
}

/// Throughput of `concurrency` callers each making request `call(make(caller, i))` back to back
/// for i = 0, 1, … until `make` runs out or the window ends. `call` says whether the request
/// succeeded and, if so, whether the static tier answered it.
pub async fn closed_loop<M, C, F>(concurrency: usize, warmup: f64, make: M, call: C) -> Window
where
    M: Fn(usize, usize) -> Option<String> + Clone + Send + 'static,
    C: Fn(String) -> F + Clone + Send + 'static,
    F: Future<Output = Option<bool>> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let by_static = Arc::new(AtomicU64::new(0));
    let mut callers = Vec::new();
    for caller in 0..concurrency {
        let (make, call) = (make.clone(), call.clone());
        let (stop, done, by_static) = (stop.clone(), done.clone(), by_static.clone());
        callers.push(tokio::spawn(async move {
            for i in 0.. {
                let Some(text) = make(caller, i) else { break };
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if let Some(answered_static) = call(text).await {
                    done.fetch_add(1, Ordering::Relaxed);
                    by_static.fetch_add(u64::from(answered_static), Ordering::Relaxed);
                }
                // The static tier answers without awaiting anything: yield, as a request's
                // network I/O would, so the runtime's timers (the window's end) still run.
                tokio::task::yield_now().await;
            }
        }));
    }
    // Warm up, then count completions over the window.
    tokio::time::sleep(Duration::from_secs_f64(warmup)).await;
    let count = || {
        (
            done.load(Ordering::Relaxed),
            by_static.load(Ordering::Relaxed),
        )
    };
    let ((start_done, start_static), started, cpu) = (count(), Instant::now(), process_cpu());
    tokio::time::sleep(Duration::from_secs_f64(THROUGHPUT_SECS)).await;
    let (end_done, end_static) = count();
    let (elapsed, cpu) = (started.elapsed().as_secs_f64(), process_cpu() - cpu);
    stop.store(true, Ordering::Relaxed);
    for c in callers {
        let _ = c.await;
    }
    let completed = (end_done - start_done).max(1) as f64;
    Window {
        rate: (end_done - start_done) as f64 / elapsed,
        cpu_per_request: cpu / completed,
        answered_static: (end_static - start_static) as f64 / completed,
    }
}

/// Throughput of `concurrency` callers each embedding fresh random texts back to back.
pub async fn embed_loop(
    service: &ClassifierService,
    words: &Words,
    concurrency: usize,
    warmup: f64,
) -> Window {
    // Texts made up front so the loop measures the service, not text generation.
    // Enough for 80 requests/s (above this machine's ~60 at batch 32) over the whole run.
    let per_caller = ((warmup + THROUGHPUT_SECS) * 80.0 / concurrency as f64).ceil() as usize + 4;
    let texts: Arc<Vec<Vec<String>>> = Arc::new(
        (0..concurrency)
            .map(|_| {
                (0..per_caller)
                    .map(|_| words.text(service.encoder(), THROUGHPUT_TOKENS))
                    .collect()
            })
            .collect(),
    );
    let service = service.clone();
    closed_loop(
        concurrency,
        warmup,
        move |caller, i| texts[caller].get(i).cloned(),
        move |text| {
            let service = service.clone();
            async move { service.embed(&text).await.ok().map(|_| false) }
        },
    )
    .await
}

/// Mean texts per forward pass, from the service's exported metrics.
pub fn mean_batch(service: &ClassifierService) -> f64 {
    let mut registry = prometheus_client::registry::Registry::default();
    service.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode metrics");
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let sum = value("semantic_router_classifier_batch_size_sum ");
    sum / value("semantic_router_classifier_batch_size_count ").max(1.0)
}

/// CPU seconds (user + system, all threads) this process has used; Linux `/proc`, 10 ms ticks.
pub fn process_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields 14 and 15 of stat(5) (utime, stime) are the 12th and 13th after the name.
    (ticks(11) + ticks(12)) / 100.0
}

pub fn percentile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort_unstable();
    let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
    samples[i.min(samples.len() - 1)]
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}
