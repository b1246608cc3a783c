//! vllm-sim: a vLLM-compatible model-server simulator, in the spirit of llm-d's
//! inference simulator. The router's tests and local demo stack run it where vLLM cannot
//! run. It is self-contained: it uses none of the `semantic_router` library.
//!
//! - `config`: the command line.
//! - `openai`: request parsing, answer and chunk shapes, the one error type.
//! - `engine`: admission, timing, prefix cache, counters, settable load.
//! - `app`: the HTTP routes.
//! - `metrics`, `recorder`, `prefix_cache`: one concern each.

#![forbid(unsafe_code)]

mod app;
mod config;
mod engine;
mod metrics;
mod openai;
mod prefix_cache;
mod recorder;
#[cfg(test)]
mod tests;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use clap::Parser;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tracing_subscriber::EnvFilter;

use crate::config::Args;
use crate::engine::Sim;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_json);
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let grace = Duration::from_secs(args.shutdown_grace_s);
    tracing::info!(
        name = %args.name,
        models = ?args.models,
        ttft_ms = args.ttft_ms,
        itl_ms = args.itl_ms,
        max_running = args.max_running,
        "listening on {addr}"
    );
    let app = app::router(Sim::new(args));
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    // As uvicorn does for vLLM: no Nagle delay on answers written in several pieces.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
    });
    let mut server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                // A dropped sender also means stop.
                let _ = stop_rx.await;
            })
            .into_future(),
    );
    tokio::select! {
        res = &mut server => return res.context("server task failed")?.context("server failed"),
        () = shutdown_signal() => {}
    }
    tracing::info!("shutting down; letting in-flight requests finish for up to {grace:?}");
    let _ = stop_tx.send(());
    match tokio::time::timeout(grace, &mut server).await {
        Ok(res) => {
            res.context("server task failed")?
                .context("server failed")?;
            tracing::info!("stopped");
            Ok(())
        }
        Err(_) => {
            tracing::warn!("in-flight requests did not finish within {grace:?}; exiting");
            server.abort();
            Ok(())
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!("cannot listen for SIGINT: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
