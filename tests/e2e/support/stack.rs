//! The router and simulated model servers as real processes on free 127.0.0.1 ports.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::envoy::free_addr;

/// A child process killed (by pid) when dropped, its output in a log file.
pub struct Process {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Process {
    fn spawn(name: &str, command: &mut Command) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = command
            .env("NO_COLOR", "1")
            .stdout(Stdio::from(file.try_clone().expect("log file")))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self {
            child,
            log,
            _dir: dir,
        }
    }

    /// The names of the process's threads (`/proc/PID/task/*/comm`).
    pub fn thread_names(&self) -> Vec<String> {
        let tasks = format!("/proc/{}/task", self.child.id());
        std::fs::read_dir(tasks)
            .map(|dir| {
                dir.flatten()
                    .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                    .map(|name| name.trim().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Everything the process has printed.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        self.signal("-TERM")
    }

    /// Sends SIGKILL (a crash: nothing is finished or closed cleanly) and waits (bounded) for
    /// the exit status.
    pub fn kill(&mut self) -> Option<std::process::ExitStatus> {
        self.signal("-KILL")
    }

    fn signal(&mut self, signal: &str) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn wait_for(&mut self, what: &str, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if ready() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{what} exited with {status}:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("{what} not ready after 20 s:\n{}", self.logs());
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
}

/// A running `vllm-sim`.
pub struct Sim {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The process.
    pub process: Process,
}

/// How [`Sim::start_with`] starts a simulator.
#[derive(Clone, Debug, Default)]
pub struct SimOptions {
    /// Listen here instead of on a fresh free port (e.g. to restart a stopped simulator).
    pub listen: Option<SocketAddr>,
    /// Extra `vllm-sim` flags (`--queue-latency-ms 5`, ...). Without `--itl-ms`, 2 ms.
    pub args: Vec<String>,
}

impl Sim {
    /// Starts a simulator named `name` serving any model.
    pub fn start(name: &str) -> Self {
        Self::start_with(name, SimOptions::default())
    }

    /// Starts a simulator named `name` serving any model, with `options`.
    pub fn start_with(name: &str, options: SimOptions) -> Self {
        let addr = options.listen.unwrap_or_else(free_addr);
        let mut command = Command::new(env!("CARGO_BIN_EXE_vllm-sim"));
        command.args(["--name", name, "--listen", &addr.to_string()]);
        if !options.args.iter().any(|a| a == "--itl-ms") {
            command.args(["--itl-ms", "2"]);
        }
        command.args(&options.args);
        let mut process = Process::spawn(name, &mut command);
        process.wait_for(name, || accepts(addr));
        Self { addr, process }
    }

    /// Sets the load figures its `/metrics` adds to the live ones (`POST /sim/load`).
    pub async fn set_load(&self, running: u64, waiting: u64, kv_cache_usage: f64) {
        let response = reqwest::Client::new()
            .post(format!("http://{}/sim/load", self.addr))
            .body(
                serde_json::json!({"running": running, "waiting": waiting, "kv_cache_usage": kv_cache_usage})
                    .to_string(),
            )
            .send()
            .await
            .expect("sim answers");
        assert!(
            response.status().is_success(),
            "POST /sim/load: {}",
            response.status()
        );
    }

    /// Requests it received, newest last.
    pub async fn requests(&self) -> Vec<serde_json::Value> {
        reqwest::get(format!("http://{}/sim/requests", self.addr))
            .await
            .expect("sim answers")
            .json()
            .await
            .expect("sim requests are JSON")
    }

    /// Forgets the requests it received.
    pub async fn clear(&self) {
        reqwest::Client::new()
            .delete(format!("http://{}/sim/requests", self.addr))
            .send()
            .await
            .expect("sim answers");
    }
}

/// A running `semantic-router run`.
pub struct Router {
    /// The ext_proc gRPC address.
    pub extproc: SocketAddr,
    /// The admin HTTP address.
    pub admin: SocketAddr,
    /// The process.
    pub process: Process,
}

impl Router {
    /// Starts the router on `manifests` with extra flags, and waits until it is ready.
    pub fn start(manifests: &Path, extra: &[&str]) -> Self {
        Self::spawn(Self::on_manifests(manifests, extra))
    }

    /// `semantic-router run --manifests DIR` with extra flags.
    fn on_manifests(manifests: &Path, extra: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_semantic-router"));
        command
            .arg("run")
            .arg("--manifests")
            .arg(manifests)
            .args(extra);
        command
    }

    /// Starts the router watching the API server of `kubeconfig`, and waits until it is
    /// ready (its first full sync is done).
    pub fn start_kube(kubeconfig: &Path, extra: &[&str]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_semantic-router"));
        command
            .arg("run")
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,semantic_router=debug")
            .args(extra);
        Self::spawn(command)
    }

    /// [`Router::start_kube`] with extra environment variables (e.g. a Deployment's `env`).
    pub fn start_kube_with_env(
        kubeconfig: &Path,
        extra: &[&str],
        env: &[(String, String)],
    ) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_semantic-router"));
        command
            .arg("run")
            .env("KUBECONFIG", kubeconfig)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .args(extra);
        Self::spawn(command)
    }

    /// Starts the router watching the API server of `kubeconfig` without waiting for it to
    /// be ready (see [`Router::wait_ready`]).
    pub fn launch_kube(kubeconfig: &Path, extra: &[&str]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_semantic-router"));
        command.arg("run").env("KUBECONFIG", kubeconfig).args(extra);
        Self::launch(command)
    }

    /// Waits (at most 20 s) until `/readyz` answers 2xx; panics with the logs otherwise.
    pub fn wait_ready(&mut self) {
        let url = format!("http://{}/readyz", self.admin);
        self.process
            .wait_for("router", || http::blocking_get_ok(&url));
    }

    /// Whether `/readyz` answers 2xx now.
    pub fn is_ready(&self) -> bool {
        http::blocking_get_ok(&format!("http://{}/readyz", self.admin))
    }

    fn spawn(command: Command) -> Self {
        let mut router = Self::launch(command);
        router.wait_ready();
        router
    }

    /// Starts a router on `manifests` on the addresses this one listened on (after it died or
    /// was stopped), and waits until it is ready.
    pub fn restart(&self, manifests: &Path, extra: &[&str]) -> Self {
        let command = Self::on_manifests(manifests, extra);
        let mut router = Self::launch_on(command, self.extproc, self.admin);
        router.wait_ready();
        router
    }

    fn launch(command: Command) -> Self {
        Self::launch_on(command, free_addr(), free_addr())
    }

    fn launch_on(mut command: Command, extproc: SocketAddr, admin: SocketAddr) -> Self {
        let process = Process::spawn(
            "router",
            command
                .args(["--extproc-listen", &extproc.to_string()])
                .args(["--admin-listen", &admin.to_string()]),
        );
        Self {
            extproc,
            admin,
            process,
        }
    }

    /// What `POST /v1/explain` says about a chat request for `model` with `prompt`.
    pub async fn explain(
        &self,
        model: &str,
        prompt: &str,
        headers: &[(&str, &str)],
    ) -> serde_json::Value {
        let mut request = ::reqwest::Client::new()
            .post(format!("http://{}/v1/explain", self.admin))
            .body(serde_json::json!({"model": model, "messages": [{"role": "user", "content": prompt}]}).to_string());
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        request
            .send()
            .await
            .expect("admin answers")
            .json()
            .await
            .expect("explain is JSON")
    }

    /// The admin `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.admin))
            .await
            .expect("admin answers")
            .text()
            .await
            .expect("metrics text")
    }
}

#[path = "../../support/http.rs"]
mod http;
