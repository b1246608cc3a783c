//! Shared harness of the end-to-end tests: a real API server, CRD installation, waiting helpers.
#![allow(dead_code)] // each test module uses a different part of the harness

pub mod apiserver;
pub mod envoy;
#[path = "../../support/redis.rs"]
pub mod redis;
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

/// The value of one series (`name{labels}` exactly as printed) in a Prometheus text page.
pub fn metric_sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// A bearer token for `team` from `hack/demo-token.sh`: signed with the sample's demo key
/// (which the sample Envoy config trusts), or with `key` to forge one.
pub fn demo_token(team: &str, key: Option<&std::path::Path>) -> String {
    let mut command = std::process::Command::new(repo_root().join("hack/demo-token.sh"));
    command.arg(team);
    if let Some(key) = key {
        command.arg(key);
    }
    let out = command.output().expect("run hack/demo-token.sh");
    assert!(
        out.status.success(),
        "hack/demo-token.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("a token is ASCII")
        .trim()
        .to_owned()
}

/// A fresh RSA signing key in `dir` that no config trusts (for forged tokens).
pub fn untrusted_key(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("forger.pem");
    let status = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&path)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run openssl");
    assert!(status.success(), "openssl genpkey failed");
    path
}
