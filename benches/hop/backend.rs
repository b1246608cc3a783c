//! The backend: a fixed answer, and counters that show what the hop did to the body.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use axum::extract::State;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

use crate::workload::{CHAT_PATH, COMPLETION};

/// What the backend saw of the bodies it was sent.
#[derive(Default)]
pub struct BackendSeen {
    /// Bodies still asking for `auto` (nothing rewrote them).
    pub auto: AtomicU64,
    /// Bodies whose model was rewritten.
    pub rewritten: AtomicU64,
}

async fn complete(
    State(seen): State<Arc<BackendSeen>>,
    body: Bytes,
) -> impl axum::response::IntoResponse {
    let asked_auto = body.windows(14).any(|w| w == br#""model":"auto""#);
    if asked_auto {
        seen.auto.fetch_add(1, Ordering::Relaxed);
    } else {
        seen.rewritten.fetch_add(1, Ordering::Relaxed);
    }
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        COMPLETION,
    )
}

/// The backend on `runtime`: its address, and what it has seen.
pub fn start_backend(runtime: &Runtime) -> (SocketAddr, Arc<BackendSeen>) {
    let seen = Arc::new(BackendSeen::default());
    let app = axum::Router::new()
        .route(CHAT_PATH, axum::routing::post(complete))
        .with_state(seen.clone());
    let listener = runtime
        .block_on(TcpListener::bind("127.0.0.1:0"))
        .expect("bind the backend");
    let addr = listener.local_addr().expect("backend address");
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    runtime.spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("hop: backend stopped: {e}");
        }
    });
    (addr, seen)
}
