//! HTTP surface: the OpenAI endpoints, health, metrics and the `/sim/` control API.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use crate::engine::{LoadUpdate, Plan, Sim, unix_now};
use crate::openai::{self, ApiError, Endpoint, InferenceRequest, Meta};
use crate::recorder::RecordedRequest;

/// Largest request body accepted.
pub const MAX_BODY: usize = 32 * 1024 * 1024;

/// Response header naming the backend that answered.
pub const NAME_HEADER: HeaderName = HeaderName::from_static("x-sim-name");
/// Request header: answer with this status (400..=599) and an OpenAI-shaped error.
pub const FAIL_HEADER: &str = "x-sim-fail";
/// Request header: extra milliseconds before the first token (or before the failure).
pub const DELAY_HEADER: &str = "x-sim-delay-ms";

/// Longest delay `x-sim-delay-ms` may ask for.
const MAX_DELAY: Duration = Duration::from_secs(600);

pub fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/sim/requests", get(list_requests).delete(clear_requests))
        .route("/sim/load", get(get_load).post(set_load))
        .route("/sim/health", post(set_health))
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(Arc::clone(&sim), record))
        .layer(middleware::map_response_with_state(
            Arc::clone(&sim),
            stamp_name,
        ))
        .with_state(sim)
}

/// Every response says which backend answered.
async fn stamp_name(State(sim): State<Arc<Sim>>, mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(NAME_HEADER, sim.name_header.clone());
    response
}

/// Paths not recorded: the control API and what probes and scrapers poll.
fn is_recorded(path: &str) -> bool {
    !(path.starts_with("/sim/") || path == "/metrics" || path == "/health")
}

/// Records each request (body included) before it is handled.
async fn record(State(sim): State<Arc<Sim>>, request: Request, next: Next) -> Response {
    if !is_recorded(request.uri().path()) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return ApiError::payload_too_large(MAX_BODY).into_response();
    };
    sim.recorder.push(RecordedRequest::new(
        &parts.method,
        &parts.uri,
        &parts.headers,
        &bytes,
    ));
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

async fn chat_completions(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    inference(sim, Endpoint::Chat, &headers, &body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn completions(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    inference(sim, Endpoint::Completions, &headers, &body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// What the request headers ask of the simulator.
#[derive(Debug, Default)]
struct Directives {
    fail: Option<StatusCode>,
    delay: Duration,
}

impl Directives {
    fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        let text = |name: &str| -> Result<Option<&str>, ApiError> {
            headers
                .get(name)
                .map(|v| {
                    v.to_str().map(str::trim).map_err(|_| {
                        ApiError::bad_request("invalid_header", format!("{name} is not text"))
                    })
                })
                .transpose()
        };
        let fail = match text(FAIL_HEADER)? {
            None => None,
            Some(v) => match v
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
            {
                Some(s) if (400..=599).contains(&s.as_u16()) => Some(s),
                _ => {
                    return Err(ApiError::bad_request(
                        "invalid_header",
                        format!(
                            "{FAIL_HEADER} must be an HTTP error status from 400 to 599, got {v:?}"
                        ),
                    ));
                }
            },
        };
        let delay = match text(DELAY_HEADER)? {
            None => Duration::ZERO,
            Some(v) => match v.parse::<u64>() {
                Ok(ms) if Duration::from_millis(ms) <= MAX_DELAY => Duration::from_millis(ms),
                _ => {
                    return Err(ApiError::bad_request(
                        "invalid_header",
                        format!(
                            "{DELAY_HEADER} must be milliseconds from 0 to {}, got {v:?}",
                            MAX_DELAY.as_millis()
                        ),
                    ));
                }
            },
        };
        Ok(Self { fail, delay })
    }
}

async fn inference(
    sim: Arc<Sim>,
    endpoint: Endpoint,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let directives = Directives::from_headers(headers)?;
    if let Some(status) = directives.fail {
        tokio::time::sleep(directives.delay).await;
        return Err(ApiError::injected(status));
    }
    let req = openai::parse_request(endpoint, body, sim.args.primary_model())?;
    sim.check_model(&req.model)?;
    if sim.draw_failure() {
        tokio::time::sleep(directives.delay).await;
        return Err(ApiError::random_failure());
    }
    let plan = sim.plan(&req, directives.delay);
    tracing::debug!(
        endpoint = ?endpoint,
        model = %req.model,
        stream = req.stream,
        prompt_tokens = req.prompt.tokens,
        output_tokens = plan.output_tokens,
        "inference request"
    );
    if req.stream {
        Ok(stream_answer(sim, req, plan))
    } else {
        Ok(whole_answer(sim, req, plan).await)
    }
}

async fn whole_answer(sim: Arc<Sim>, req: InferenceRequest, plan: Plan) -> Response {
    let running = sim.admit(&req.prompt.text, &plan).await;
    tokio::time::sleep(running.ttft()).await;
    running.prefilled(req.prompt.tokens);
    let remaining = u32::try_from(plan.output_tokens.saturating_sub(1)).unwrap_or(u32::MAX);
    tokio::time::sleep(sim.itl().saturating_mul(remaining)).await;
    let pieces = openai::answer_pieces(
        &sim.args.name,
        &req.model,
        &req.prompt.summary,
        plan.output_tokens,
    );
    let completion_tokens = pieces.len() as u64;
    running.generated(completion_tokens);
    running.finish(plan.finish);
    let meta = Meta::new(req.endpoint, &req.model, unix_now());
    Json(openai::full_response(
        &meta,
        &pieces.concat(),
        plan.finish.as_str(),
        openai::usage(req.prompt.tokens, completion_tokens),
    ))
    .into_response()
}

/// Sleeps, unless the client goes away first; then says so with `false`.
async fn sleep_unless_closed<T>(d: Duration, tx: &mpsc::Sender<T>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        () = tx.closed() => false,
    }
}

/// Answers with headers at once and then one SSE event per output token, paced by the
/// queue, TTFT and ITL; the request holds its running slot until its last event or until
/// the client disconnects.
fn stream_answer(sim: Arc<Sim>, req: InferenceRequest, plan: Plan) -> Response {
    let (tx, rx) = mpsc::channel::<Event>(1);
    tokio::spawn(async move {
        let running = tokio::select! {
            r = sim.admit(&req.prompt.text, &plan) => r,
            () = tx.closed() => return,
        };
        if !sleep_unless_closed(running.ttft(), &tx).await {
            return;
        }
        running.prefilled(req.prompt.tokens);
        let meta = Meta::new(req.endpoint, &req.model, unix_now());
        let pieces = openai::answer_pieces(
            &sim.args.name,
            &req.model,
            &req.prompt.summary,
            plan.output_tokens,
        );
        for (i, piece) in pieces.iter().enumerate() {
            if i > 0 && !sleep_unless_closed(sim.itl(), &tx).await {
                return;
            }
            running.generated(1);
            let finish = (i + 1 == pieces.len()).then_some(plan.finish.as_str());
            let chunk = openai::token_chunk(&meta, i, piece, finish, req.include_usage);
            if tx
                .send(Event::default().data(chunk.to_string()))
                .await
                .is_err()
            {
                return;
            }
        }
        running.finish(plan.finish);
        if req.include_usage {
            let usage = openai::usage(req.prompt.tokens, pieces.len() as u64);
            let chunk = openai::usage_chunk(&meta, usage);
            if tx
                .send(Event::default().data(chunk.to_string()))
                .await
                .is_err()
            {
                return;
            }
        }
        // The client may be gone by now; nothing is left to do either way.
        let _ = tx.send(Event::default().data("[DONE]")).await;
    });
    Sse::new(ReceiverStream::new(rx).map(Ok::<_, Infallible>)).into_response()
}

async fn models(State(sim): State<Arc<Sim>>) -> Json<Value> {
    let data: Vec<Value> = sim
        .listed_models()
        .into_iter()
        .map(|id| {
            json!({
                "id": id,
                "object": "model",
                "created": sim.started_unix,
                "owned_by": "vllm",
                "root": id,
                "parent": null,
            })
        })
        .collect();
    Json(json!({"object": "list", "data": data}))
}

async fn health(State(sim): State<Arc<Sim>>) -> (StatusCode, &'static str) {
    if sim.is_healthy() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unhealthy")
    }
}

async fn metrics(State(sim): State<Arc<Sim>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        crate::metrics::render(&sim),
    )
}

async fn list_requests(State(sim): State<Arc<Sim>>) -> impl IntoResponse {
    Json(sim.recorder.list())
}

async fn clear_requests(State(sim): State<Arc<Sim>>) -> Json<Value> {
    Json(json!({"cleared": sim.recorder.clear()}))
}

fn parse_json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request("invalid_json", format!("{e}")))
}

async fn get_load(State(sim): State<Arc<Sim>>) -> impl IntoResponse {
    Json(sim.load())
}

async fn set_load(State(sim): State<Arc<Sim>>, body: Bytes) -> Result<impl IntoResponse, ApiError> {
    let update: LoadUpdate = parse_json(&body)?;
    Ok(Json(sim.update_load(update)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthUpdate {
    healthy: bool,
}

async fn set_health(State(sim): State<Arc<Sim>>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let update: HealthUpdate = parse_json(&body)?;
    sim.set_healthy(update.healthy);
    Ok(Json(json!({"healthy": update.healthy})))
}

async fn fallback(request: Request) -> ApiError {
    ApiError::not_found(format!(
        "no route for {} {}",
        request.method(),
        request.uri().path()
    ))
}
