//! The data plane behind a real Envoy whose ext_proc filter runs with
//! `request_body_mode: BUFFERED` (the other tests use `FULL_DUPLEX_STREAMED`): Envoy answers
//! nothing upstream until the router has seen the whole body in one message, and applies the
//! router's header mutations (destination, `content-length`, decision headers) and the new
//! body from its answer to that body message.

use serde_json::{Value, json};

use crate::dataplane::{Stack, header, only_request};
use crate::support::stack::Sim;

fn ask(prompt: &str) -> Value {
    crate::dataplane::ask("auto", prompt)
}

/// The data-plane stack with Envoy's ext_proc filter in BUFFERED mode.
fn start() -> Stack {
    let stack = Stack::start_buffered();
    let config = std::fs::read_to_string(stack.envoy.config_path()).unwrap();
    assert!(config.contains("request_body_mode: BUFFERED"), "{config}");
    stack
}

/// What a backend received for a routed prompt: the rewritten body, a `content-length` that
/// fits it (and no chunked encoding), the decision headers and the destination.
fn assert_rewritten(received: &Value, sim: &Sim, model: &str, pool: &str, thinking: bool) {
    let body = &received["body"];
    assert_eq!(body["model"], model, "{received:#}");
    assert_eq!(
        body["chat_template_kwargs"]["enable_thinking"], thinking,
        "{received:#}"
    );
    assert_eq!(body["temperature"], 0.2, "other fields are kept");
    assert_eq!(body["user"], "u-42");
    assert_eq!(body["messages"][0]["content"], "be brief");
    let headers = &received["headers"];
    assert_eq!(headers["x-semantic-router-pool"], pool);
    assert_eq!(
        headers["x-semantic-router-reasoning"],
        if thinking { "on" } else { "off" }
    );
    assert_eq!(
        headers["x-gateway-destination-endpoint"],
        sim.addr.to_string()
    );
    assert!(
        headers.get("transfer-encoding").is_none(),
        "no chunked encoding next to content-length: {headers:#}"
    );
    let length: usize = headers["content-length"]
        .as_str()
        .expect("a content-length")
        .parse()
        .unwrap();
    assert_eq!(
        length,
        serde_json::to_vec(body).unwrap().len(),
        "content-length fits the new body: {received:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn buffered_prompts_reach_the_right_pool_with_the_rewritten_body() {
    let stack = start();

    let simple = stack
        .raw(ask("What is the capital of North Carolina?").to_string())
        .await;
    assert_eq!(simple.status(), 200, "{}", stack.logs());
    assert_eq!(header(&simple, "x-sim-name"), "small");
    assert_eq!(header(&simple, "x-semantic-router-decision"), "default");
    assert_eq!(header(&simple, "x-semantic-router-pool"), "qwen3-small");
    assert_eq!(
        header(&simple, "x-semantic-router-model"),
        "Qwen/Qwen3-1.7B"
    );
    let answer: Value = simple.json().await.unwrap();
    assert_eq!(answer["model"], "Qwen/Qwen3-1.7B", "{answer}");
    let received = only_request(&stack.small).await;
    assert_eq!(received["path"], "/v1/chat/completions");
    assert_rewritten(
        &received,
        &stack.small,
        "Qwen/Qwen3-1.7B",
        "qwen3-small",
        false,
    );
    assert_eq!(
        received["body"]["messages"][1]["content"],
        "What is the capital of North Carolina?"
    );

    let math = stack
        .raw(ask("Compute the integral of x^2 from 0 to 3, step by step.").to_string())
        .await;
    assert_eq!(math.status(), 200, "{}", stack.logs());
    assert_eq!(header(&math, "x-sim-name"), "large");
    assert_eq!(header(&math, "x-semantic-router-decision"), "reasoning");
    assert_eq!(header(&math, "x-semantic-router-pool"), "qwen3-large-h100");
    assert_rewritten(
        &only_request(&stack.large).await,
        &stack.large,
        "Qwen/Qwen3-30B-A3B",
        "qwen3-large-h100",
        true,
    );

    // A chunked upload (no client content-length) is buffered whole and sent on with the
    // router's content-length.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = ask("Prove this theorem about primes.")
        .to_string()
        .into_bytes()
        .chunks(7)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let chunked = stack
        .raw(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .await;
    assert_eq!(chunked.status(), 200, "{}", stack.logs());
    assert_eq!(header(&chunked, "x-sim-name"), "large");
    assert_rewritten(
        &stack.large.requests().await[1],
        &stack.large,
        "Qwen/Qwen3-30B-A3B",
        "qwen3-large-h100",
        true,
    );

    // A body larger than one read: Envoy buffers it whole before the router sees it.
    let long = format!(
        "{} What is the capital of France?",
        "hello there ".repeat(20_000)
    );
    let big = stack.raw(ask(&long).to_string()).await;
    assert_eq!(big.status(), 200, "{}", stack.logs());
    assert_eq!(header(&big, "x-sim-name"), "small");
    let received = stack.small.requests().await.pop().unwrap();
    assert_rewritten(
        &received,
        &stack.small,
        "Qwen/Qwen3-1.7B",
        "qwen3-small",
        false,
    );
    assert_eq!(received["body"]["messages"][1]["content"], long.as_str());

    assert!(
        stack.a100.requests().await.is_empty(),
        "nothing for the research pool"
    );
    let metrics = stack.router.metrics().await;
    assert!(
        metrics.contains(r#"semantic_router_requests_total{decision="reasoning",model="Qwen/Qwen3-30B-A3B",pool="qwen3-large-h100",outcome="upstream"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"semantic_router_requests_total{decision="default",model="Qwen/Qwen3-1.7B",pool="qwen3-small",outcome="upstream"} 2"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn buffered_malformed_bodies_get_openai_errors() {
    let stack = start();
    for (body, code) in [
        ("{not json", "invalid_json"),
        (r#"{"model":"auto"}"#, "missing_messages"),
    ] {
        let response = stack.raw(body).await;
        assert_eq!(response.status(), 400, "{code}\n{}", stack.logs());
        assert_eq!(header(&response, "x-semantic-router-path"), "error");
        assert_eq!(header(&response, "x-semantic-router-error"), code);
        assert!(header(&response, "content-type").starts_with("application/json"));
        let error: Value = response.json().await.expect("JSON error body");
        assert_eq!(error["error"]["code"], code, "{error}");
        assert!(error["error"]["type"].is_string(), "{error}");
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{error}"
        );
    }
    for sim in [&stack.small, &stack.large, &stack.a100] {
        assert!(
            sim.requests().await.is_empty(),
            "no refused request reaches a backend"
        );
    }
    let metrics = stack.router.metrics().await;
    assert!(
        metrics.contains(r#"semantic_router_errors_total{reason="invalid_json"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn buffered_other_paths_and_models_are_refused_or_served_directly() {
    let stack = start();

    // Paths outside the inference API: Envoy's 404, no model server sees them.
    for (method, path) in [("GET", "/v1/files"), ("POST", "/v1/embeddings")] {
        let request = match method {
            "GET" => stack.client.get(format!("{}{path}", stack.envoy.url())),
            _ => stack
                .client
                .post(format!("{}{path}", stack.envoy.url()))
                .header("content-type", "application/json")
                .body(json!({"model": "auto", "input": "hello"}).to_string()),
        };
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}: {}", stack.logs());
        assert!(response.headers().get("x-sim-name").is_none());
    }
    assert!(stack.small.requests().await.is_empty());

    // A model no route governs and no pool serves: the router's own 404 after the body.
    let unknown = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    let response = stack.raw(unknown.to_string()).await;
    assert_eq!(response.status(), 404, "{}", stack.logs());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_not_found");
    assert!(stack.small.requests().await.is_empty());

    // A served model named directly: its pool, the body as sent, a fitting content-length.
    let direct =
        json!({"model": "Qwen/Qwen3-1.7B", "messages": [{"role": "user", "content": "hi"}]});
    let response = stack.raw(direct.to_string()).await;
    assert_eq!(response.status(), 200, "{}", stack.logs());
    assert_eq!(header(&response, "x-sim-name"), "small");
    assert_eq!(header(&response, "x-semantic-router-decision"), "direct");
    let received = only_request(&stack.small).await;
    assert_eq!(received["body"], direct);
    assert_eq!(
        received["headers"]["content-length"],
        direct.to_string().len().to_string()
    );
}

/// An h2c (prior knowledge) POST to `/v1/chat/completions` over a raw TCP stream (no
/// HTTP/2 client is among the dev-dependencies), its body optionally followed by request
/// trailers. Returns the response's `:status` and its DATA bytes.
fn h2c_post(addr: std::net::SocketAddr, body: &[u8], trailers: bool) -> (String, Vec<u8>) {
    use std::io::{Read, Write};
    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = u32::try_from(payload.len()).unwrap().to_be_bytes()[1..].to_vec();
        out.extend([kind, flags]);
        out.extend(stream.to_be_bytes());
        out.extend(payload);
        out
    }
    // HPACK literal without indexing, new name, no Huffman (short strings only).
    fn literal(name: &str, value: &str) -> Vec<u8> {
        let mut out = vec![0, u8::try_from(name.len()).unwrap()];
        out.extend(name.as_bytes());
        out.push(u8::try_from(value.len()).unwrap());
        out.extend(value.as_bytes());
        out
    }
    const DATA: u8 = 0;
    const HEADERS: u8 = 1;
    const RST_STREAM: u8 = 3;
    const SETTINGS: u8 = 4;
    const END_STREAM: u8 = 0x1;
    const END_HEADERS: u8 = 0x4;
    assert!(body.len() <= 16_384, "one DATA frame");
    let mut headers = Vec::new();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/v1/chat/completions"),
        (":authority", "127.0.0.1"),
        ("content-type", "application/json"),
    ] {
        headers.extend(literal(name, value));
    }
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    out.extend(frame(HEADERS, END_HEADERS, 1, &headers));
    if trailers {
        out.extend(frame(DATA, 0, 1, body));
        let trailer = literal("x-client-trailer", "yes");
        out.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, &trailer));
    } else {
        out.extend(frame(DATA, END_STREAM, 1, body));
    }
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to envoy");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    stream.write_all(&out).unwrap();

    let (mut status, mut data, mut buf) = (String::new(), Vec::new(), Vec::new());
    let mut chunk = [0u8; 16_384];
    for _ in 0..1000 {
        // Complete frames first, then read more.
        while buf.len() >= 9 {
            let len = usize::try_from(u32::from_be_bytes([0, buf[0], buf[1], buf[2]])).unwrap();
            if buf.len() < 9 + len {
                break;
            }
            let (kind, flags) = (buf[3], buf[4]);
            let id = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
            let payload: Vec<u8> = buf[9..9 + len].to_vec();
            buf.drain(..9 + len);
            if kind == SETTINGS && flags & 1 == 0 {
                stream.write_all(&frame(SETTINGS, 1, 0, &[])).unwrap();
            }
            if id != 1 {
                continue;
            }
            if kind == HEADERS && status.is_empty() {
                // Envoy sends :status first: an indexed static entry (8..=14) or a literal
                // with the :status name (index 8) and a plain 3-digit value.
                status = match payload.as_slice() {
                    [0x88, ..] => "200".into(),
                    [0x8c, ..] => "400".into(),
                    [0x8e, ..] => "500".into(),
                    [0x48, 3, a, b, c, ..] => String::from_utf8_lossy(&[*a, *b, *c]).into(),
                    other => format!("undecoded {:02x?}", &other[..other.len().min(8)]),
                };
            }
            if kind == DATA {
                data.extend(&payload);
            }
            if kind == RST_STREAM || (matches!(kind, DATA | HEADERS) && flags & END_STREAM != 0) {
                return (status, data);
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend(&chunk[..n]),
        }
    }
    (status, data)
}

#[tokio::test(flavor = "multi_thread")]
async fn buffered_http2_requests_are_routed() {
    let stack = start();
    let addr = stack.envoy.listen_addr();
    let body = ask("Compute the integral of x^2 from 0 to 3, step by step.").to_string();
    let (status, data) =
        tokio::task::spawn_blocking(move || h2c_post(addr, body.as_bytes(), false))
            .await
            .unwrap();
    assert_eq!(
        status,
        "200",
        "{}\n{}",
        String::from_utf8_lossy(&data),
        stack.logs()
    );
    let answer: Value = serde_json::from_slice(&data).expect("a JSON answer");
    assert_eq!(answer["model"], "Qwen/Qwen3-30B-A3B", "{answer}");
    assert_rewritten(
        &only_request(&stack.large).await,
        &stack.large,
        "Qwen/Qwen3-30B-A3B",
        "qwen3-large-h100",
        true,
    );
}

/// With request trailers (an HTTP/2 client may send them; Envoy drops HTTP/1 trailers by
/// default) Envoy's BUFFERED mode sends the buffered body with `end_of_stream: false` when the
/// trailers arrive and waits for the answer to that body message before it sends the
/// trailers; the router must answer it as the whole body.
#[tokio::test(flavor = "multi_thread")]
async fn buffered_http2_request_with_trailers_is_routed() {
    let stack = start();
    let addr = stack.envoy.listen_addr();
    let body = ask("What is the capital of North Carolina?").to_string();
    let (status, data) = tokio::task::spawn_blocking(move || h2c_post(addr, body.as_bytes(), true))
        .await
        .unwrap();
    assert_eq!(
        status,
        "200",
        "{}\n{}",
        String::from_utf8_lossy(&data),
        stack.logs()
    );
    assert_rewritten(
        &only_request(&stack.small).await,
        &stack.small,
        "Qwen/Qwen3-1.7B",
        "qwen3-small",
        false,
    );
}
