//! The router, as the release binary on a rules-only policy.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::envoy::free_addr;
use crate::http;
use crate::workload::router_manifests;

/// A running router; killed (by pid) when dropped.
pub struct RouterProcess {
    pub child: Child,
    pub extproc: SocketAddr,
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

/// Starts `bin` on the rules-only policy over `backend` and waits until it is ready.
pub fn start_router(bin: &Path, backend: SocketAddr) -> RouterProcess {
    let dir = tempfile::Builder::new()
        .prefix("hop-router-")
        .tempdir()
        .expect("temp dir");
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).expect("manifests dir");
    std::fs::write(manifests.join("policy.yaml"), router_manifests(backend))
        .expect("write the policy");
    let log = dir.path().join("router.log");
    let out = std::fs::File::create(&log).expect("router log");
    let err = out.try_clone().expect("router log");
    let extproc = free_addr();
    let admin = free_addr();
    let child = Command::new(bin)
        .arg("run")
        .arg("--manifests")
        .arg(&manifests)
        .args(["--extproc-listen", &extproc.to_string()])
        .args(["--admin-listen", &admin.to_string()])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let mut router = RouterProcess {
        child,
        extproc,
        log,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if http::blocking_get_ok(&format!("http://{admin}/readyz")) {
            return router;
        }
        let logs = std::fs::read_to_string(&router.log).unwrap_or_default();
        if let Ok(Some(status)) = router.child.try_wait() {
            panic!("the router exited during startup ({status}):\n{logs}");
        }
        if Instant::now() > deadline {
            panic!("the router was not ready within 20 s:\n{logs}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}
