//! The whole simulator in process on 127.0.0.1:0, driven over HTTP with reqwest.
//! Timing assertions are lower bounds and orderings only.

use std::future::IntoFuture;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::app;
use crate::config::Args;
use crate::engine::Sim;

struct Server {
    base: String,
    client: reqwest::Client,
    _stop: oneshot::Sender<()>,
}

async fn start(args: &[&str]) -> Server {
    let args = Args::try_parse_from(std::iter::once("vllm-sim").chain(args.iter().copied()))
        .expect("test arguments parse");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        axum::serve(listener, app::router(Sim::new(args)))
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .into_future(),
    );
    Server {
        base: format!("http://{addr}"),
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
        _stop: stop,
    }
}

fn chat_body(model: &str, prompt: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": prompt}]})
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn get_json(&self, path: &str) -> Value {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "GET {path}");
        r.json().await.unwrap()
    }

    /// The value of one unlabelled-but-`model_name` sample in `/metrics`.
    async fn metric(&self, name: &str) -> f64 {
        let text = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let prefix = format!("{name}{{");
        text.lines()
            .find(|l| l.starts_with(&prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    }

    /// Polls a metric until it has `want`, for at most five seconds.
    async fn await_metric(&self, name: &str, want: f64) {
        let mut last = f64::NAN;
        for _ in 0..500 {
            last = self.metric(name).await;
            if last == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{name} stayed {last}, wanted {want}");
    }

    /// Sends a streaming chat request and returns the time to its first body bytes,
    /// keeping the response (and so the running request) alive.
    async fn stream_ttft(&self, model: &str) -> (Duration, reqwest::Response) {
        let mut body = chat_body(model, "how long until the first token");
        body["stream"] = json!(true);
        let started = Instant::now();
        let resp = self.post("/v1/chat/completions", &body).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let mut resp = resp;
        let first = resp.chunk().await.unwrap();
        assert!(first.is_some(), "stream ended before its first token");
        (started.elapsed(), resp)
    }
}

/// The `data:` payloads of an SSE body, in order.
fn sse_data(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|event| event.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(str::to_string)
        .collect()
}

fn assert_openai_error(body: &Value, code: &str) {
    let e = &body["error"];
    assert!(e["message"].is_string(), "{body}");
    assert!(e["type"].is_string(), "{body}");
    assert_eq!(e["code"], code, "{body}");
}

#[tokio::test]
async fn chat_completion_has_openai_shape_and_usage() {
    let s = start(&["--name", "b1", "--model", "m", "--output-tokens", "8"]).await;
    let resp = s
        .post("/v1/chat/completions", &chat_body("m", "hello there world"))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-sim-name"], "b1");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "m");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert!(v["created"].as_u64().unwrap() > 0);
    let choice = &v["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    let content = choice["message"]["content"].as_str().unwrap();
    assert_eq!(content, "sim b1 answered model m: hello there world");
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 8, "total_tokens": 11})
    );

    // max_tokens below the configured output stops early with finish_reason length.
    let mut body = chat_body("m", "hello");
    body["max_tokens"] = json!(2);
    let v: Value = s
        .post("/v1/chat/completions", &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 2);

    // The legacy completions endpoint.
    let v: Value = s
        .post(
            "/v1/completions",
            &json!({"model": "m", "prompt": "a b c d"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "text_completion");
    assert!(
        v["choices"][0]["text"]
            .as_str()
            .unwrap()
            .contains("sim b1 answered model m: a b")
    );
    assert_eq!(v["usage"]["prompt_tokens"], 4);

    assert_eq!(s.metric("vllm:prompt_tokens_total").await, 8.0);
    assert_eq!(s.metric("vllm:generation_tokens_total").await, 18.0);
}

#[tokio::test]
async fn stream_sends_one_chunk_per_token_then_usage_then_done() {
    let s = start(&["--name", "b2", "--output-tokens", "4", "--itl-ms", "5"]).await;
    let mut body = chat_body("any-model", "stream it please");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let resp = s.post("/v1/chat/completions", &body).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-sim-name"], "b2");
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let data = sse_data(&resp.text().await.unwrap());
    assert_eq!(data.len(), 4 + 1 + 1, "{data:?}");
    assert_eq!(data[5], "[DONE]");
    let chunks: Vec<Value> = data[..5]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let mut text = String::new();
    for (i, c) in chunks[..4].iter().enumerate() {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["model"], "any-model");
        assert_eq!(c["id"], chunks[0]["id"]);
        text.push_str(c["choices"][0]["delta"]["content"].as_str().unwrap());
        let want_finish = if i == 3 { json!("stop") } else { Value::Null };
        assert_eq!(c["choices"][0]["finish_reason"], want_finish);
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(text, "sim b2 answered model");
    assert_eq!(chunks[4]["choices"], json!([]));
    assert_eq!(
        chunks[4]["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7})
    );

    // Without include_usage: token chunks and [DONE] only; completions stream too.
    let resp = s
        .post(
            "/v1/completions",
            &json!({"model": "x", "prompt": "p", "stream": true}),
        )
        .await;
    let data = sse_data(&resp.text().await.unwrap());
    assert_eq!(data.len(), 5, "{data:?}");
    let first: Value = serde_json::from_str(&data[0]).unwrap();
    assert_eq!(first["object"], "text_completion");
    assert_eq!(first["choices"][0]["text"], "sim");
    assert_eq!(data[4], "[DONE]");
    s.await_metric("vllm:generation_tokens_total", 8.0).await;
}

#[tokio::test]
async fn metrics_report_set_load_plus_live_counts() {
    let s = start(&["--model", "m", "--itl-ms", "50", "--output-tokens", "100"]).await;
    let set = s
        .post(
            "/sim/load",
            &json!({"running": 3, "waiting": 2, "kv_cache_usage": 0.5}),
        )
        .await;
    assert_eq!(set.status(), StatusCode::OK);
    assert_eq!(s.metric("vllm:num_requests_running").await, 3.0);
    assert_eq!(s.metric("vllm:num_requests_waiting").await, 2.0);
    assert_eq!(s.metric("vllm:kv_cache_usage_perc").await, 0.5);
    assert_eq!(s.metric("vllm:gpu_cache_usage_perc").await, 0.5);

    // A live streaming request adds to the running figure until the client goes away.
    let (_, resp) = s.stream_ttft("m").await;
    s.await_metric("vllm:num_requests_running", 4.0).await;
    drop(resp);
    s.await_metric("vllm:num_requests_running", 3.0).await;

    // Out-of-range figures are refused; fields left out are kept.
    let bad = s.post("/sim/load", &json!({"kv_cache_usage": 2.0})).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    s.post("/sim/load", &json!({"running": 0})).await;
    assert_eq!(s.metric("vllm:num_requests_running").await, 0.0);
    assert_eq!(s.metric("vllm:num_requests_waiting").await, 2.0);
    let load = s.get_json("/sim/load").await;
    assert_eq!(load["offsets"]["waiting"], 2);
}

#[tokio::test]
async fn requests_beyond_max_running_wait() {
    let s = start(&[
        "--max-running",
        "1",
        "--itl-ms",
        "50",
        "--output-tokens",
        "100",
    ])
    .await;
    let (_, first) = s.stream_ttft("m").await;
    // Headers of a streamed answer come at once; its tokens wait for a slot.
    let mut body = chat_body("m", "queued");
    body["stream"] = json!(true);
    let second = s.post("/v1/chat/completions", &body).await;
    assert_eq!(second.status(), StatusCode::OK);
    s.await_metric("vllm:num_requests_waiting", 1.0).await;
    assert_eq!(s.metric("vllm:num_requests_running").await, 1.0);
    drop(first);
    s.await_metric("vllm:num_requests_waiting", 0.0).await;
    s.await_metric("vllm:num_requests_running", 1.0).await;
    drop(second);
    s.await_metric("vllm:num_requests_running", 0.0).await;
}

#[tokio::test]
async fn requests_are_recorded_newest_last_and_can_be_cleared() {
    let s = start(&[]).await;
    let resp = s
        .client
        .post(s.url("/v1/chat/completions"))
        .header("x-team", "search")
        .json(&chat_body("m", "first"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let bad = s
        .client
        .post(s.url("/v1/completions"))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    s.metric("vllm:num_requests_running").await; // not recorded

    let recorded = s.get_json("/sim/requests").await;
    let recorded = recorded.as_array().unwrap();
    assert_eq!(recorded.len(), 2, "{recorded:?}");
    assert_eq!(recorded[0]["method"], "POST");
    assert_eq!(recorded[0]["path"], "/v1/chat/completions");
    assert_eq!(recorded[0]["headers"]["x-team"], "search");
    assert_eq!(recorded[0]["body"]["messages"][0]["content"], "first");
    assert_eq!(recorded[1]["path"], "/v1/completions");
    assert_eq!(recorded[1]["body"], "not json");

    let cleared = s
        .client
        .delete(s.url("/sim/requests"))
        .send()
        .await
        .unwrap();
    assert_eq!(cleared.status(), StatusCode::OK);
    assert_eq!(s.get_json("/sim/requests").await, json!([]));
}

#[tokio::test]
async fn x_sim_fail_answers_that_status_and_x_sim_delay_delays() {
    let s = start(&["--name", "f"]).await;
    for (status, kind) in [(503, "server_error"), (429, "rate_limit_error")] {
        let resp = s
            .client
            .post(s.url("/v1/chat/completions"))
            .header("x-sim-fail", status.to_string())
            .json(&chat_body("m", "x"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status);
        assert_eq!(resp.headers()["x-sim-name"], "f");
        let v: Value = resp.json().await.unwrap();
        assert_openai_error(&v, "injected_failure");
        assert_eq!(v["error"]["type"], kind);
    }
    let resp = s
        .client
        .post(s.url("/v1/chat/completions"))
        .header("x-sim-fail", "soon")
        .json(&chat_body("m", "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    let started = Instant::now();
    let resp = s
        .client
        .post(s.url("/v1/chat/completions"))
        .header("x-sim-delay-ms", "120")
        .json(&chat_body("m", "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(120));
}

#[tokio::test]
async fn fail_rate_one_fails_every_request_with_500() {
    let s = start(&["--fail-rate", "1.0"]).await;
    for _ in 0..10 {
        let resp = s.post("/v1/chat/completions", &chat_body("m", "x")).await;
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_openai_error(&resp.json().await.unwrap(), "internal_error");
    }
    assert_eq!(s.metric("vllm:request_success_total").await, 0.0);
}

#[tokio::test]
async fn unknown_model_is_404_and_models_are_listed() {
    let s = start(&["--model", "a", "--model", "b"]).await;
    let resp = s.post("/v1/chat/completions", &chat_body("c", "x")).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_openai_error(&resp.json().await.unwrap(), "model_not_found");
    let ok = s.post("/v1/chat/completions", &chat_body("b", "x")).await;
    assert_eq!(ok.status(), StatusCode::OK);

    let models = s.get_json("/v1/models").await;
    assert_eq!(models["object"], "list");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(models["data"][0]["object"], "model");
}

#[tokio::test]
async fn malformed_json_is_400_and_unknown_path_404() {
    let s = start(&[]).await;
    let resp = s
        .client
        .post(s.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body("{\"messages\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_openai_error(&resp.json().await.unwrap(), "invalid_json");

    let resp = s.post("/v1/chat/completions", &json!({"model": "m"})).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_openai_error(&resp.json().await.unwrap(), "invalid_request");

    let resp = s.client.get(s.url("/v2/nothing")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_openai_error(&resp.json().await.unwrap(), "not_found");
}

#[tokio::test]
async fn health_follows_the_control_api() {
    let s = start(&[]).await;
    let ok = s.client.get(s.url("/health")).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.text().await.unwrap(), "ok");
    s.post("/sim/health", &json!({"healthy": false})).await;
    let down = s.client.get(s.url("/health")).send().await.unwrap();
    assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
    s.post("/sim/health", &json!({"healthy": true})).await;
    let up = s.client.get(s.url("/health")).send().await.unwrap();
    assert_eq!(up.status(), StatusCode::OK);
    let bad = s.post("/sim/health", &json!({"healty": true})).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn ttft_grows_with_queue_latency_under_concurrency() {
    let s = start(&[
        "--queue-latency-ms",
        "150",
        "--itl-ms",
        "50",
        "--output-tokens",
        "100",
    ])
    .await;
    let (idle, first) = s.stream_ttft("m").await;
    s.await_metric("vllm:num_requests_running", 1.0).await;
    let (loaded, second) = s.stream_ttft("m").await;
    assert!(
        loaded >= Duration::from_millis(150),
        "one request running should add 150 ms, TTFT was {loaded:?}"
    );
    assert!(loaded > idle, "loaded {loaded:?} vs idle {idle:?}");
    s.await_metric("vllm:num_requests_running", 2.0).await;
    let (busier, _third) = s.stream_ttft("m").await;
    assert!(busier >= Duration::from_millis(300), "TTFT {busier:?}");
    drop((first, second));
}

#[tokio::test]
async fn a_repeated_prompt_prefix_makes_ttft_faster() {
    let s = start(&[
        "--ttft-ms",
        "400",
        "--prefix-cache-speedup",
        "20",
        "--output-tokens",
        "1",
    ])
    .await;
    let prompt = "the same long system prompt ".repeat(40);
    let body = chat_body("m", &prompt);
    let timed = || async {
        let started = Instant::now();
        let resp = s.post("/v1/chat/completions", &body).await;
        assert_eq!(resp.status(), StatusCode::OK);
        started.elapsed()
    };
    let cold = timed().await;
    let warm = timed().await;
    assert!(cold >= Duration::from_millis(400), "cold {cold:?}");
    assert!(
        warm + Duration::from_millis(150) < cold,
        "warm {warm:?} vs cold {cold:?}"
    );
    assert!(s.metric("vllm:prefix_cache_hits_total").await > 0.0);
}

#[tokio::test]
async fn streams_stream_tokens_over_time() {
    let s = start(&["--itl-ms", "30", "--output-tokens", "6"]).await;
    let mut body = chat_body("m", "pace");
    body["stream"] = json!(true);
    let started = Instant::now();
    let resp = s.post("/v1/chat/completions", &body).await;
    let mut stream = resp.bytes_stream();
    let mut arrivals = Vec::new();
    while let Some(chunk) = stream.next().await {
        chunk.unwrap();
        arrivals.push(started.elapsed());
    }
    assert!(arrivals.len() >= 2, "{arrivals:?}");
    assert!(
        arrivals.last().unwrap() >= &Duration::from_millis(150),
        "{arrivals:?}"
    );
}
