//! The admin HTTP port: Prometheus metrics, liveness, readiness and `explain`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prometheus_client::registry::Registry;
use serde::Deserialize;

use super::headers::RequestHeaders;
use super::openai::ApiKind;
use super::processor::{Processor, RequestView};

/// What the admin handlers share.
pub struct AdminState {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// The processor `explain` asks.
    pub processor: Arc<Processor>,
    /// Largest body `explain` reads: the data plane's own limit, so both judge one body alike.
    pub max_body_bytes: usize,
}

/// The admin router.
pub fn router(state: Arc<AdminState>) -> Router {
    let limit = DefaultBodyLimit::max(state.max_body_bytes);
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/v1/explain", post(explain).layer(limit))
        .with_state(state)
}

async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &state.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn readyz(State(state): State<Arc<AdminState>>) -> Response {
    match state.processor.table().load() {
        Some(table) => {
            format!("ready: routing table generation {}\n", table.generation).into_response()
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no routing table loaded yet\n",
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct ExplainQuery {
    /// `chat` (default) or `completions`.
    api: Option<String>,
}

/// Explains how the router would route an OpenAI request body sent with these headers.
async fn explain(
    State(state): State<Arc<AdminState>>,
    Query(query): Query<ExplainQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let kind = match query.api.as_deref() {
        None | Some("chat") => ApiKind::Chat,
        Some("completions") => ApiKind::Completions,
        Some(other) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("unknown api {other:?}; use chat or completions\n"),
            )
                .into_response();
        }
    };
    let headers = RequestHeaders::from_pairs(
        headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?))),
    );
    match state
        .processor
        .explain(RequestView {
            kind,
            headers: &headers,
            body: &body,
        })
        .await
    {
        Ok(explanation) => axum::Json(explanation).into_response(),
        Err(error) => (
            StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_REQUEST),
            [(header::CONTENT_TYPE, "application/json")],
            error.to_body(),
        )
            .into_response(),
    }
}
