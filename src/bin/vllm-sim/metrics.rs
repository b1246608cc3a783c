//! `/metrics` in the Prometheus text format, with vLLM's metric names and `model_name`
//! label, so a scraper written for vLLM reads the simulator unchanged.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::engine::Sim;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Escapes a label value per the text exposition format.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out {
    text: String,
    label: String,
}

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        // Writing to a String cannot fail.
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, extra_labels: &str, value: impl std::fmt::Display) {
        let _ = writeln!(
            self.text,
            "{name}{{model_name=\"{}\"{extra_labels}}} {value}",
            self.label
        );
    }

    fn single(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, "", value);
    }
}

pub fn render(sim: &Sim) -> String {
    let load = sim.load();
    let c = &sim.counters;
    let mut out = Out {
        text: String::with_capacity(2048),
        label: escape(sim.args.primary_model()),
    };
    out.single(
        "vllm:num_requests_running",
        "gauge",
        "Number of requests in model execution batches.",
        load.running,
    );
    out.single(
        "vllm:num_requests_waiting",
        "gauge",
        "Number of requests waiting to be processed.",
        load.waiting,
    );
    out.single(
        "vllm:kv_cache_usage_perc",
        "gauge",
        "KV-cache usage. 1 means 100 percent usage.",
        load.kv_cache_usage,
    );
    out.single(
        "vllm:gpu_cache_usage_perc",
        "gauge",
        "GPU KV-cache usage. 1 means 100 percent usage (older name of vllm:kv_cache_usage_perc).",
        load.kv_cache_usage,
    );
    out.single(
        "vllm:prompt_tokens_total",
        "counter",
        "Number of prefill tokens processed.",
        c.prompt_tokens.load(Ordering::Relaxed),
    );
    out.single(
        "vllm:generation_tokens_total",
        "counter",
        "Number of generation tokens processed.",
        c.generation_tokens.load(Ordering::Relaxed),
    );
    out.family(
        "vllm:request_success_total",
        "counter",
        "Count of successfully processed requests.",
    );
    out.sample(
        "vllm:request_success_total",
        ",finished_reason=\"stop\"",
        c.success_stop.load(Ordering::Relaxed),
    );
    out.sample(
        "vllm:request_success_total",
        ",finished_reason=\"length\"",
        c.success_length.load(Ordering::Relaxed),
    );
    out.single(
        "vllm:prefix_cache_queries_total",
        "counter",
        "Prefix cache queries, in terms of number of queried tokens.",
        c.prefix_queries.load(Ordering::Relaxed),
    );
    out.single(
        "vllm:prefix_cache_hits_total",
        "counter",
        "Prefix cache hits, in terms of number of cached tokens.",
        c.prefix_hits.load(Ordering::Relaxed),
    );
    out.text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Args;
    use crate::engine::LoadUpdate;
    use clap::Parser;

    #[test]
    fn renders_vllm_names_with_model_label_and_set_load() {
        let args =
            Args::try_parse_from(["vllm-sim", "--model", "q\"x", "--max-running", "4"]).unwrap();
        let sim = Sim::new(args);
        sim.update_load(LoadUpdate {
            running: Some(3),
            waiting: Some(2),
            kv_cache_usage: Some(0.25),
        })
        .unwrap();
        let text = render(&sim);
        for line in [
            "vllm:num_requests_running{model_name=\"q\\\"x\"} 3",
            "vllm:num_requests_waiting{model_name=\"q\\\"x\"} 2",
            "vllm:kv_cache_usage_perc{model_name=\"q\\\"x\"} 0.25",
            "vllm:gpu_cache_usage_perc{model_name=\"q\\\"x\"} 0.25",
            "vllm:prompt_tokens_total{model_name=\"q\\\"x\"} 0",
            "vllm:generation_tokens_total{model_name=\"q\\\"x\"} 0",
            "vllm:request_success_total{model_name=\"q\\\"x\",finished_reason=\"stop\"} 0",
            "# TYPE vllm:num_requests_running gauge",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
