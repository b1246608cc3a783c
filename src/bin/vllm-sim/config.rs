//! Command line of the simulator: what it serves and how it behaves under load.

use std::net::SocketAddr;

use axum::http::HeaderValue;
use clap::Parser;

/// Model name used in metrics, `/v1/models` and for requests without `model` when no
/// `--model` is given.
pub const DEFAULT_MODEL: &str = "sim-model";

/// vllm-sim: a vLLM-compatible model-server simulator for tests and local demos.
///
/// Serves the OpenAI endpoints vLLM serves (`/v1/chat/completions`, `/v1/completions`,
/// `/v1/models`), `/health` and Prometheus `/metrics` with vLLM's metric names. Answers
/// are synthetic ("sim NAME answered model M: ..."), paced by a time to first token and
/// an inter-token latency, and slow down under load the way a real server does.
///
/// Per-request fault injection by header: `x-sim-fail: 503` answers that status,
/// `x-sim-delay-ms: 250` adds delay before the first token.
///
/// Control API for tests: `GET|DELETE /sim/requests` (requests received, newest last,
/// the last 1000), `POST /sim/load` `{"running":n,"waiting":n,"kv_cache_usage":f}`
/// (offsets added to the live figures in /metrics), `POST /sim/health` `{"healthy":b}`.
///
/// Example: vllm-sim --listen 127.0.0.1:8001 --name small-0 --model qwen3-8b
/// --ttft-ms 40 --itl-ms 10 --queue-latency-ms 5 --max-running 8
#[derive(Debug, Clone, Parser)]
#[command(name = "vllm-sim", version, verbatim_doc_comment)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, env = "VLLM_SIM_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,

    /// Name of this backend: every response carries `x-sim-name: NAME` and answers say
    /// which backend produced them.
    #[arg(long, env = "VLLM_SIM_NAME", default_value = "vllm-sim", value_parser = parse_name)]
    pub name: String,

    /// A model this server serves (repeatable, or comma-separated). A request for any
    /// other model gets a 404.
    /// With none given, any model is accepted and `sim-model` is listed. The first one
    /// labels the metrics (`model_name`), like vLLM's served model name.
    #[arg(
        long = "model",
        value_name = "NAME",
        env = "VLLM_SIM_MODELS",
        value_delimiter = ','
    )]
    pub models: Vec<String>,

    /// Time to first token, in milliseconds (the prefill of an uncached prompt).
    #[arg(long, env = "VLLM_SIM_TTFT_MS", default_value_t = 0)]
    pub ttft_ms: u64,

    /// Inter-token latency: time per output token after the first, in milliseconds.
    #[arg(long, env = "VLLM_SIM_ITL_MS", default_value_t = 0)]
    pub itl_ms: u64,

    /// Output tokens per answer (a request's smaller `max_tokens` wins, with
    /// finish_reason `length`).
    #[arg(long, env = "VLLM_SIM_OUTPUT_TOKENS", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub output_tokens: u32,

    /// Extra time to first token per request already running when a request is admitted,
    /// in milliseconds, so latency grows with load. Counts live requests only, not the
    /// figures set with `POST /sim/load`.
    #[arg(long, env = "VLLM_SIM_QUEUE_LATENCY_MS", default_value_t = 0)]
    pub queue_latency_ms: u64,

    /// Requests admitted to run at once (vLLM's max-num-seqs); more wait in a queue and
    /// count as `vllm:num_requests_waiting`. `vllm:kv_cache_usage_perc` reports the share
    /// of these slots in use plus the figure set with `POST /sim/load`, capped at 1.
    #[arg(long, env = "VLLM_SIM_MAX_RUNNING", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_running: u64,

    /// Fraction of valid inference requests answered with a 500 (0.0 to 1.0).
    #[arg(long, env = "VLLM_SIM_FAIL_RATE", default_value_t = 0.0, value_parser = parse_fraction)]
    pub fail_rate: f64,

    /// How much faster the prefill of a cached prompt prefix is (1.0 = no prefix cache
    /// effect). A fully cached prompt's TTFT is `ttft-ms / speedup`.
    #[arg(long, env = "VLLM_SIM_PREFIX_CACHE_SPEEDUP", default_value_t = 1.0,
          value_parser = parse_speedup)]
    pub prefix_cache_speedup: f64,

    /// Prefix cache block size, in characters of prompt text.
    #[arg(long, env = "VLLM_SIM_PREFIX_BLOCK_CHARS", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub prefix_block_chars: u64,

    /// Prefix cache capacity in blocks; the least recently used block is evicted first.
    #[arg(long, env = "VLLM_SIM_PREFIX_CACHE_BLOCKS", default_value_t = 4096)]
    pub prefix_cache_blocks: u64,

    /// Seconds to let in-flight requests finish after SIGTERM/SIGINT before exiting.
    #[arg(long, env = "VLLM_SIM_SHUTDOWN_GRACE_S", default_value_t = 10)]
    pub shutdown_grace_s: u64,

    /// Log as JSON lines instead of text (level from RUST_LOG, default info).
    #[arg(long, env = "VLLM_SIM_LOG_JSON")]
    pub log_json: bool,
}

impl Args {
    /// The model named in metrics and used when a request names none.
    pub fn primary_model(&self) -> &str {
        self.models.first().map_or(DEFAULT_MODEL, String::as_str)
    }
}

fn parse_name(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("the name must not be empty".into());
    }
    HeaderValue::from_str(s)
        .map(|_| s.to_string())
        .map_err(|_| "the name must be usable as an HTTP header value (visible ASCII)".into())
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not between 0.0 and 1.0"))
    }
}

fn parse_speedup(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if v >= 1.0 && v.is_finite() {
        Ok(v)
    } else {
        Err(format!("{v} must be a finite factor of at least 1.0"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("vllm-sim").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_and_repeated_models() {
        let a = parse(&["--model", "a", "--model", "b"]).unwrap();
        assert_eq!(a.listen.to_string(), "127.0.0.1:8000");
        assert_eq!(a.models, ["a", "b"]);
        assert_eq!(a.primary_model(), "a");
        assert_eq!(a.output_tokens, 16);
        assert_eq!(parse(&[]).unwrap().primary_model(), DEFAULT_MODEL);
    }

    #[test]
    fn rejects_out_of_range_values() {
        assert!(parse(&["--fail-rate", "1.5"]).is_err());
        assert!(parse(&["--fail-rate", "-0.1"]).is_err());
        assert!(parse(&["--prefix-cache-speedup", "0.5"]).is_err());
        assert!(parse(&["--max-running", "0"]).is_err());
        assert!(parse(&["--output-tokens", "0"]).is_err());
        assert!(parse(&["--name", "bad\nname"]).is_err());
        assert!(parse(&["--fail-rate", "1.0"]).is_ok());
    }
}
