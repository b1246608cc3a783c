//! Shared harness of the end-to-end tests: a real API server, CRD installation, waiting helpers.
#![allow(dead_code)] // each test module uses a different part of the harness

pub mod apiserver;
pub mod envoy;
pub mod stack;

use std::future::Future;
use std::time::{Duration, Instant};

#[allow(unused_imports)] // the harness's surface; not every test binary module uses all of it
pub use apiserver::{
    ApiServer, install_crds, load_crds, repo_root, tool, yaml_documents, yaml_files,
};

/// Polls `check` every 50 ms until it returns true; panics naming `what` if that takes longer
/// than `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    if !poll_until(timeout, check).await {
        panic!("timed out after {timeout:?} waiting for {what}");
    }
}

/// Polls `check` every 50 ms until it returns true (→ true) or `timeout` passes (→ false).
/// `check` runs at least once.
pub async fn poll_until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
