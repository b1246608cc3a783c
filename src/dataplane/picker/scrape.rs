//! Background scraping of model-server metrics: one task per endpoint of every pool with
//! `metrics`, following the live table (tasks start and stop as endpoints come and go), each a
//! plain HTTP/1.1 GET with a timeout whose figures land in the endpoint's state.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::api::ServingEngine;
use crate::routing::{PoolBackend, RoutingTable};

use super::endpoint::Registry;
use super::score::Figures;

/// Longest `/metrics` answer read.
const MAX_RESPONSE: u64 = 4 << 20;
/// Longest time one scrape may take (shorter when the interval is).
const MAX_TIMEOUT: Duration = Duration::from_secs(2);
/// Figures count for this many scrape intervals.
const VALID_INTERVALS: u32 = 3;

/// How one endpoint is scraped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScrapeTarget {
    /// HTTP path of the metrics.
    pub path: String,
    /// Which metric names to read.
    pub engine: ServingEngine,
    /// Time between scrapes.
    pub interval: Duration,
}

impl ScrapeTarget {
    fn timeout(&self) -> Duration {
        self.interval.min(MAX_TIMEOUT)
    }
}

/// Why one scrape gave no figures.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// Connecting, writing or reading failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// No answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Not a 200.
    #[error("answered HTTP {0}")]
    Status(u16),
    /// Not an HTTP answer, or a broken chunked body.
    #[error("malformed HTTP answer")]
    Malformed,
    /// Larger than the limit.
    #[error("answer larger than {MAX_RESPONSE} bytes")]
    TooLarge,
    /// None of the engine's metric names were in it.
    #[error("no {0:?} load metrics in the answer")]
    NoFigures(ServingEngine),
}

/// The scrape task of every endpoint that is scraped now.
#[derive(Default)]
pub struct Scrapers {
    tasks: HashMap<SocketAddr, (ScrapeTarget, JoinHandle<()>)>,
}

impl Drop for Scrapers {
    fn drop(&mut self) {
        for (_, task) in self.tasks.values() {
            task.abort();
        }
    }
}

impl Scrapers {
    /// Starts, restarts and stops tasks so exactly the endpoints of pools with `metrics` in
    /// `table` are scraped, each as its pool asks (the shortest interval where two pools
    /// share an endpoint). Must run inside a Tokio runtime.
    pub fn follow(&mut self, table: &RoutingTable, registry: &Arc<Registry>) {
        let wanted = wanted(table);
        self.tasks.retain(|addr, (target, task)| {
            let keep = wanted.get(addr) == Some(target);
            if !keep {
                task.abort();
            }
            keep
        });
        for (addr, target) in wanted {
            if self.tasks.contains_key(&addr) {
                continue;
            }
            let task = tokio::spawn(scrape_loop(registry.clone(), addr, target.clone()));
            self.tasks.insert(addr, (target, task));
        }
    }

    /// Endpoints being scraped.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }
}

fn wanted(table: &RoutingTable) -> BTreeMap<SocketAddr, ScrapeTarget> {
    let mut wanted: BTreeMap<SocketAddr, ScrapeTarget> = BTreeMap::new();
    for pool in table.pools.values() {
        let (Some(metrics), PoolBackend::Endpoints(endpoints)) = (&pool.metrics, &pool.backend)
        else {
            continue;
        };
        let target = ScrapeTarget {
            path: metrics.path.clone(),
            engine: metrics.engine,
            interval: Duration::from_secs(u64::from(metrics.interval_seconds.max(1))),
        };
        for &addr in endpoints {
            match wanted.get(&addr) {
                Some(t) if t.interval <= target.interval => {}
                _ => {
                    wanted.insert(addr, target.clone());
                }
            }
        }
    }
    wanted
}

async fn scrape_loop(registry: Arc<Registry>, addr: SocketAddr, target: ScrapeTarget) {
    // Spread the endpoints' scrapes over the interval.
    let jitter = target.interval.mul_f64(rand::random::<f64>() * 0.5);
    tokio::time::sleep(jitter).await;
    let valid_for = u64::try_from((target.interval * VALID_INTERVALS).as_millis()).unwrap_or(0);
    let mut failing = false;
    loop {
        let next = tokio::time::Instant::now() + target.interval;
        let Some(state) = registry.get(addr) else {
            return;
        };
        let started = state.started();
        match scrape(addr, &target).await {
            Ok(figures) => {
                state
                    .scraped
                    .store(figures, started, registry.now(), valid_for);
                if failing {
                    tracing::info!(%addr, "metrics scrape works again");
                    failing = false;
                }
            }
            Err(error) => {
                state.scrape_failed();
                if !failing {
                    tracing::warn!(%addr, path = %target.path, %error, "metrics scrape failed; load figures age out");
                    failing = true;
                }
            }
        }
        drop(state);
        tokio::time::sleep_until(next).await;
    }
}

/// One scrape: GET, then the engine's figures.
pub async fn scrape(addr: SocketAddr, target: &ScrapeTarget) -> Result<Figures, ScrapeError> {
    let timeout = target.timeout();
    let text = tokio::time::timeout(timeout, get(addr, &target.path))
        .await
        .map_err(|_| ScrapeError::Timeout(timeout))??;
    parse(target.engine, &text).ok_or(ScrapeError::NoFigures(target.engine))
}

/// A plain HTTP/1.1 GET (`Connection: close`) of `path`: the body of a 200 answer.
pub async fn get(addr: SocketAddr, path: &str) -> Result<String, ScrapeError> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: semantic-router\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    (&mut stream)
        .take(MAX_RESPONSE + 1)
        .read_to_end(&mut raw)
        .await?;
    if raw.len() as u64 > MAX_RESPONSE {
        return Err(ScrapeError::TooLarge);
    }
    let split = find(&raw, b"\r\n\r\n").ok_or(ScrapeError::Malformed)?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| ScrapeError::Malformed)?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.strip_prefix("HTTP/1."))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or(ScrapeError::Malformed)?;
    if status != 200 {
        return Err(ScrapeError::Status(status));
    }
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        }
    }
    let body = &raw[split + 4..];
    let body = if chunked {
        dechunk(body).ok_or(ScrapeError::Malformed)?
    } else {
        match length {
            Some(n) if n <= body.len() => body[..n].to_vec(),
            Some(_) => return Err(ScrapeError::Malformed),
            None => body.to_vec(),
        }
    };
    String::from_utf8(body).map_err(|_| ScrapeError::Malformed)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = find(rest, b"\r\n")?;
        let size = std::str::from_utf8(&rest[..eol]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        let data = &rest[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        rest = data.get(size..)?.strip_prefix(b"\r\n")?;
    }
}

/// The load figures of a Prometheus text exposition, by the engine's metric names. Samples
/// of one metric with different labels (models, data-parallel ranks) are summed, KV-cache
/// use is the highest. `None` when neither queue metric is present.
pub fn parse(engine: ServingEngine, text: &str) -> Option<Figures> {
    let (waiting, running, kv, kv_old) = match engine {
        ServingEngine::Vllm => (
            "vllm:num_requests_waiting",
            "vllm:num_requests_running",
            "vllm:kv_cache_usage_perc",
            "vllm:gpu_cache_usage_perc",
        ),
        ServingEngine::Sglang => (
            "sglang:num_queue_reqs",
            "sglang:num_running_reqs",
            "sglang:token_usage",
            "sglang:token_usage",
        ),
    };
    let mut found = false;
    let (mut w, mut r) = (0.0, 0.0);
    let (mut k, mut k_old): (Option<f64>, Option<f64>) = (None, None);
    for line in text.lines() {
        let Some((name, value)) = sample(line) else {
            continue;
        };
        let value = if value.is_finite() {
            value.max(0.0)
        } else {
            0.0
        };
        if name == waiting {
            w += value;
            found = true;
        } else if name == running {
            r += value;
            found = true;
        } else if name == kv {
            k = Some(k.map_or(value, |k| k.max(value)));
        } else if name == kv_old {
            k_old = Some(k_old.map_or(value, |k| k.max(value)));
        }
    }
    let count = |v: f64| v.round().min(f64::from(u32::MAX)) as u32;
    found.then(|| Figures {
        waiting: count(w),
        running: count(r),
        kv_cache: k.or(k_old).unwrap_or(0.0).clamp(0.0, 1.0),
    })
}

/// Name and value of one sample line; `None` for comments, blanks and malformed lines.
fn sample(line: &str) -> Option<(&str, f64)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    if rest.starts_with('{') {
        // Skip the labels; values are quoted and may hold `}` or escaped quotes.
        let mut quoted = false;
        let mut escaped = false;
        let mut end = None;
        for (i, c) in rest.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                '}' if !quoted => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        rest = &rest[end? + 1..];
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VLLM: &str = r#"# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="qwen"} 3.0
vllm:num_requests_running{model_name="lora-a"} 1
vllm:num_requests_waiting{model_name="qwen",note="a } and \" inside"} 7.0
vllm:gpu_cache_usage_perc{model_name="qwen"} 0.9
vllm:kv_cache_usage_perc{model_name="qwen"} 0.25
vllm:kv_cache_usage_perc{model_name="lora-a"} 0.5 1700000000000
vllm:prompt_tokens_total{model_name="qwen"} 12345
"#;

    #[test]
    fn vllm_figures_sum_queues_and_take_the_newer_kv_name() {
        let f = parse(ServingEngine::Vllm, VLLM).unwrap();
        assert_eq!((f.waiting, f.running), (7, 4));
        assert!((f.kv_cache - 0.5).abs() < 1e-9, "{f:?}");
    }

    #[test]
    fn older_vllm_kv_name_and_sglang_names() {
        let old = "vllm:num_requests_waiting 2\nvllm:gpu_cache_usage_perc{m=\"x\"} 0.4\n";
        let f = parse(ServingEngine::Vllm, old).unwrap();
        assert_eq!(f.waiting, 2);
        assert!((f.kv_cache - 0.4).abs() < 1e-9);
        let sglang = "sglang:num_queue_reqs{tp_rank=\"0\"} 5\nsglang:num_running_reqs{tp_rank=\"0\"} 9\nsglang:token_usage{tp_rank=\"0\"} 0.75\n";
        let f = parse(ServingEngine::Sglang, sglang).unwrap();
        assert_eq!((f.waiting, f.running), (5, 9));
        assert!((f.kv_cache - 0.75).abs() < 1e-9);
        assert_eq!(parse(ServingEngine::Sglang, VLLM), None, "wrong engine");
        assert_eq!(
            parse(
                ServingEngine::Vllm,
                "vllm:num_requests_waiting NaN\nbroken{ 1\n"
            ),
            Some(Figures::default())
        );
    }

    async fn serve_once(answer: &'static [u8]) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(answer).await;
        });
        addr
    }

    #[tokio::test]
    async fn get_reads_plain_and_chunked_bodies_and_refuses_errors() {
        let plain = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").await;
        assert_eq!(get(plain, "/metrics").await.unwrap(), "hello");
        let chunked = serve_once(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2;x=y\r\nlo\r\n0\r\n\r\n",
        )
        .await;
        assert_eq!(get(chunked, "/metrics").await.unwrap(), "hello");
        let error =
            serve_once(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n").await;
        assert!(matches!(
            get(error, "/metrics").await,
            Err(ScrapeError::Status(503))
        ));
        let garbage = serve_once(b"nonsense").await;
        assert!(matches!(
            get(garbage, "/metrics").await,
            Err(ScrapeError::Malformed)
        ));
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target = ScrapeTarget {
            path: "/metrics".into(),
            engine: ServingEngine::Vllm,
            interval: Duration::from_millis(100),
        };
        let started = std::time::Instant::now();
        assert!(matches!(
            scrape(addr, &target).await,
            Err(ScrapeError::Timeout(_))
        ));
        assert!(started.elapsed() < Duration::from_secs(1));
        drop(listener);
    }
}
