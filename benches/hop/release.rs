//! The router binary the benchmarks run, and one way to start it (shared by the hop, soak,
//! cache_hop and burst benches; each includes this file with `envoy` and `http` beside it).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::envoy::free_addr;
use crate::http;

/// `$HOP_ROUTER_BIN`, or the release build: `<target dir>/release/semantic-router`.
pub fn router_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("HOP_ROUTER_BIN") {
        return PathBuf::from(bin);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("release").join("semantic-router")
}

/// A running router; killed (by pid) when dropped.
#[allow(
    dead_code,
    reason = "each bench including this file reads the fields it needs"
)]
pub struct RouterProcess {
    pub child: Child,
    pub extproc: SocketAddr,
    pub admin: SocketAddr,
    /// Its stdout and stderr.
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for RouterProcess {
    fn drop(&mut self) {
        // SIGKILL by pid (std's Child::kill), then reap it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `bin` as `run --manifests … --extproc-listen … --admin-listen …` followed by `args`,
/// on `policy` (YAML, written to a folder the router owns), and waits until `/readyz` answers; panics with its log if it exits first or is not ready
/// within `ready_within`.
pub fn start_router(
    bin: &Path,
    policy: &str,
    args: &[OsString],
    ready_within: Duration,
) -> RouterProcess {
    let dir = tempfile::Builder::new()
        .prefix("bench-router-")
        .tempdir()
        .expect("temp dir");
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).expect("manifests dir");
    std::fs::write(manifests.join("policy.yaml"), policy).expect("write the policy");
    let log = dir.path().join("router.log");
    let out = std::fs::File::create(&log).expect("router log");
    let err = out.try_clone().expect("router log");
    let (extproc, admin) = (free_addr(), free_addr());
    let child = Command::new(bin)
        .arg("run")
        .arg("--manifests")
        .arg(&manifests)
        .args(["--extproc-listen", &extproc.to_string()])
        .args(["--admin-listen", &admin.to_string()])
        .args(args)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {} (build it first): {e}", bin.display()));
    let mut router = RouterProcess {
        child,
        extproc,
        admin,
        log,
        _dir: dir,
    };
    let deadline = Instant::now() + ready_within;
    loop {
        if http::blocking_get_ok(&format!("http://{admin}/readyz")) {
            return router;
        }
        let logs = std::fs::read_to_string(&router.log).unwrap_or_default();
        if let Ok(Some(status)) = router.child.try_wait() {
            panic!("the router exited during startup ({status}):\n{logs}");
        }
        if Instant::now() > deadline {
            panic!("the router was not ready within {ready_within:?}:\n{logs}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}
