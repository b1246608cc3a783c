//! A real Kubernetes API server for tests: Debian's `etcd` plus `crdapiserver`, a thin wrapper
//! around the upstream `k8s.io/apiextensions-apiserver` (CRDs and custom resources with OpenAPI
//! schema and CEL validation, status subresource, server-side apply, watch; no core/v1).
//!
//! Both binaries are built by `hack/install-tools.sh` into `<repo>/.tools/apiserver/bin`. Each
//! [`ApiServer`] runs in its own temporary folder on free 127.0.0.1 ports, authenticates clients
//! with a v3 client certificate in `system:masters`, and is killed (by pid) when dropped.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, GetParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde::Deserialize;
use tempfile::TempDir;
use tokio::process::{Child, Command};

/// Root of this repository.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Folder that holds `crdapiserver` and `etcd`.
fn apiserver_bin_dir() -> PathBuf {
    repo_root().join(".tools/apiserver/bin")
}

/// Path of a tool that `hack/install-tools.sh` installs, checked to exist.
pub fn tool(path_in_repo: &str) -> PathBuf {
    let path = repo_root().join(path_in_repo);
    assert!(
        path.is_file(),
        "{} is missing: run `make tools` (hack/install-tools.sh) first",
        path.display()
    );
    path
}

/// How long the API server may take to answer `/readyz` after (re)start.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a CRD may take to become Established.
const ESTABLISHED_TIMEOUT: Duration = Duration::from_secs(30);
/// Field manager of everything the harness applies.
pub const FIELD_MANAGER: &str = "semantic-router-e2e";

/// A running etcd + API server pair. Dropping it kills both processes.
pub struct ApiServer {
    dir: TempDir,
    etcd: Option<Child>,
    apiserver: Option<Child>,
    apiserver_args: Vec<String>,
    port: u16,
    kubeconfig: PathBuf,
    config: Config,
}

impl ApiServer {
    /// Starts etcd and the API server on free ports and waits until `/readyz` answers `ok`.
    ///
    /// Panics with the processes' log tails when they do not come up.
    pub async fn start() -> ApiServer {
        for name in ["crdapiserver", "etcd"] {
            tool(&format!(".tools/apiserver/bin/{name}"));
        }
        let dir = tempfile::Builder::new()
            .prefix("semantic-router-apiserver-")
            .tempdir()
            .expect("create a temporary folder for the API server");
        make_certs(dir.path()).await;
        let kubeconfig = dir.path().join("kubeconfig");
        let mut server = ApiServer {
            dir,
            etcd: None,
            apiserver: None,
            apiserver_args: Vec::new(),
            port: 0,
            config: Config::new("https://127.0.0.1".parse().unwrap()),
            kubeconfig,
        };
        // Ports are picked free, then bound by the child processes: another process may take
        // one in between. Then a child fails with "address already in use" and we try again.
        let mut attempts = 0;
        loop {
            attempts += 1;
            match server.launch().await {
                Ok(()) => return server,
                Err(e) => {
                    let in_use = server
                        .log_tail("etcd.log")
                        .contains("address already in use")
                        || server
                            .log_tail("apiserver.log")
                            .contains("address already in use");
                    if !in_use || attempts == 3 {
                        panic!("{e}");
                    }
                    server.kill_all().await;
                    for log in ["etcd.log", "apiserver.log"] {
                        let _ = fs::remove_file(server.dir().join(log));
                    }
                    let _ = fs::remove_dir_all(server.dir().join("etcd"));
                }
            }
        }
    }

    /// Picks ports, writes the kubeconfig, starts etcd and the API server, waits until ready.
    async fn launch(&mut self) -> Result<(), String> {
        let [etcd_port, peer_port, port] = free_ports();
        let pki = self.dir().join("pki");
        self.port = port;
        self.apiserver_args = vec![
            format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
            "--bind-address=127.0.0.1".to_owned(),
            format!("--secure-port={port}"),
            format!("--tls-cert-file={}", pki.join("apiserver.crt").display()),
            format!(
                "--tls-private-key-file={}",
                pki.join("apiserver.key").display()
            ),
            format!("--client-ca-file={}", pki.join("ca.crt").display()),
            format!("--cert-dir={}", pki.join("generated").display()),
        ];
        write_kubeconfig(&self.kubeconfig, &pki, port);
        self.config = load_config(&self.kubeconfig).await;
        self.etcd = Some(spawn_etcd(self.dir.path(), etcd_port, peer_port));
        self.spawn_apiserver();
        self.wait_ready().await
    }

    /// A new client for this server. Build one per test (per tokio runtime).
    pub fn client(&self) -> Client {
        Client::try_from(self.config.clone()).expect("build a kube client from the kubeconfig")
    }

    /// The kube client configuration (cluster URL, CA, client certificate).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Path of a kubeconfig for this server (for `kubectl`), default namespace `default`.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The server's scratch folder (certificates, logs, etcd data).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `.venv/bin/kubectl` against this server and returns its output (whatever the exit
    /// status).
    pub async fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(tool(".venv/bin/kubectl"))
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(args)
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .expect("run kubectl")
    }

    /// Runs `kubectl` and returns its stdout; panics with stderr unless it exits 0.
    pub async fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args).await;
        assert!(
            out.status.success(),
            "kubectl {} failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("kubectl prints UTF-8")
    }

    /// Kills the API server process only; etcd and its data stay. Clients see connection errors
    /// until [`ApiServer::restart`].
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.apiserver.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Starts the API server again on the same port with the same etcd data and certificates
    /// (stopping it first if it runs), and waits until it is ready. Existing clients keep
    /// working.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn_apiserver();
        if let Err(e) = self.wait_ready().await {
            panic!("{e}");
        }
    }

    /// Whether the API server process is running (not stopped, not exited).
    pub fn is_running(&mut self) -> bool {
        self.apiserver
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The last lines of one of the server's logs (`etcd.log` or `apiserver.log`).
    pub fn log_tail(&self, log: &str) -> String {
        tail(&self.dir.path().join(log), 40)
    }

    fn spawn_apiserver(&mut self) {
        let log = log_file(self.dir.path(), "apiserver.log");
        let child = Command::new(apiserver_bin_dir().join("crdapiserver"))
            .args(&self.apiserver_args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn crdapiserver");
        self.apiserver = Some(child);
    }

    /// Polls `/readyz` until it answers `ok`, a process exits, or [`READY_TIMEOUT`] passes.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let client = self.client();
        let start = Instant::now();
        let mut last: String;
        let failure = loop {
            if let Some(Ok(Some(status))) = self.etcd.as_mut().map(|c| c.try_wait()) {
                break format!("etcd exited ({status})");
            }
            match self.apiserver.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(status))) => break format!("crdapiserver exited ({status})"),
                None => break "crdapiserver is not running".to_owned(),
                _ => {}
            }
            // `Request::get` with an empty base path asks for `/readyz`.
            let readyz = kube::core::Request::new("")
                .get("readyz", &GetParams::default())
                .expect("build /readyz request");
            match client.request_text(readyz).await {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                Ok(body) => last = format!("/readyz answered {body:?}"),
                Err(e) => last = format!("/readyz: {e}"),
            }
            if start.elapsed() > READY_TIMEOUT {
                break format!("not ready after {READY_TIMEOUT:?}; last: {last}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Err(format!(
            "API server at {} did not become ready: {failure}\n\
             --- apiserver.log (tail) ---\n{}\n--- etcd.log (tail) ---\n{}",
            self.url(),
            self.log_tail("apiserver.log"),
            self.log_tail("etcd.log"),
        ))
    }

    /// Kills both processes and waits for them to exit.
    async fn kill_all(&mut self) {
        for mut child in [self.apiserver.take(), self.etcd.take()]
            .into_iter()
            .flatten()
        {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        // SIGKILL by pid; `kill_on_drop` would do the same, this makes it happen before the
        // temporary folder goes. Tokio reaps the exited children.
        for child in [self.apiserver.as_mut(), self.etcd.as_mut()]
            .into_iter()
            .flatten()
        {
            let _ = child.start_kill();
        }
    }
}

/// Server-side-applies every CRD in `<repo>/crds/*.yaml` and waits until each is Established.
/// Returns the CRDs as the server holds them.
///
/// Note: for 2 s after a CRD becomes Established, the upstream API server delays every `create`
/// (POST) of its resources by 2 s (on purpose, for HA servers); server-side apply and other
/// verbs are not delayed.
pub async fn install_crds(client: &Client) -> Vec<CustomResourceDefinition> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let wanted = load_crds();
    for crd in &wanted {
        let name = crd.metadata.name.as_deref().expect("CRD has a name");
        api.patch(name, &params, &Patch::Apply(crd))
            .await
            .unwrap_or_else(|e| panic!("the API server rejected CRD {name}: {e}"));
    }
    let mut installed = Vec::new();
    for crd in &wanted {
        let name = crd.metadata.name.as_deref().unwrap();
        let start = Instant::now();
        loop {
            let current = api
                .get(name)
                .await
                .unwrap_or_else(|e| panic!("get CRD {name}: {e}"));
            let conditions = current
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            if conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
            {
                installed.push(current);
                break;
            }
            if start.elapsed() > ESTABLISHED_TIMEOUT {
                let conditions: Vec<String> = conditions
                    .iter()
                    .map(|c| {
                        format!(
                            "{}={} ({}: {})",
                            c.type_,
                            c.status,
                            c.reason.as_deref().unwrap_or(""),
                            c.message.as_deref().unwrap_or("")
                        )
                    })
                    .collect();
                panic!(
                    "CRD {name} not Established after {ESTABLISHED_TIMEOUT:?}; conditions: {conditions:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    installed
}

/// Every CRD in `<repo>/crds/*.yaml` (multi-document YAML), in file then document order.
pub fn load_crds() -> Vec<CustomResourceDefinition> {
    let files = yaml_files(&repo_root().join("crds"));
    assert!(
        !files.is_empty(),
        "no crds/*.yaml: generate them with `make crds`"
    );
    let mut crds = Vec::new();
    for file in files {
        for doc in yaml_documents(&file) {
            let crd: CustomResourceDefinition = serde_yaml::from_value(doc).unwrap_or_else(|e| {
                panic!("{}: not a CustomResourceDefinition: {e}", file.display())
            });
            crds.push(crd);
        }
    }
    crds
}

/// The `*.yaml` files of a folder, sorted by name.
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("read folder entry").path())
        .filter(|p| {
            p.extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
        })
        .collect();
    files.sort();
    files
}

/// The non-empty documents of a multi-document YAML file.
pub fn yaml_documents(file: &Path) -> Vec<serde_yaml::Value> {
    let text = fs::read_to_string(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            serde_yaml::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: invalid YAML: {e}", file.display()))
        })
        .filter(|doc| !doc.is_null())
        .collect()
}

/// Three distinct free TCP ports on 127.0.0.1 (held together while picking, so distinct).
fn free_ports() -> [u16; 3] {
    let listeners: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    let port = |i: usize| listeners[i].local_addr().unwrap().port();
    [port(0), port(1), port(2)]
}

fn spawn_etcd(dir: &Path, client_port: u16, peer_port: u16) -> Child {
    let log = log_file(dir, "etcd.log");
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    Command::new(apiserver_bin_dir().join("etcd"))
        .arg("--name=default")
        .arg(format!("--data-dir={}", dir.join("etcd").display()))
        .arg(format!("--listen-client-urls={client_url}"))
        .arg(format!("--advertise-client-urls={client_url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=default={peer_url}"))
        // Test data: speed over durability.
        .arg("--unsafe-no-fsync")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log handle"))
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn etcd")
}

/// A CA, a serving certificate for 127.0.0.1/localhost and an X.509 v3 client certificate in
/// `system:masters` (rustls rejects v1 client certificates), all signed by the CA, under
/// `<dir>/pki`.
async fn make_certs(dir: &Path) {
    let pki = dir.join("pki");
    fs::create_dir_all(&pki).expect("create pki folder");
    fs::write(
        pki.join("server.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    fs::write(
        pki.join("client.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut steps: Vec<Vec<&str>> = vec![
        [
            &["req", "-x509"][..],
            &key,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=semantic-router-e2e-ca",
            ],
            &["-addext", "basicConstraints=critical,CA:TRUE"],
            &["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ]
        .concat(),
    ];
    for (name, subject) in [
        ("apiserver", "/CN=127.0.0.1"),
        ("admin", "/O=system:masters/CN=admin"),
    ] {
        let (keyout, csr, crt, ext) = match name {
            "apiserver" => (
                "apiserver.key",
                "apiserver.csr",
                "apiserver.crt",
                "server.ext",
            ),
            _ => ("admin.key", "admin.csr", "admin.crt", "client.ext"),
        };
        steps.push(
            [
                &["req"][..],
                &key,
                &["-keyout", keyout, "-out", csr, "-subj", subject],
            ]
            .concat(),
        );
        steps.push(vec![
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            crt,
            "-days",
            "2",
            "-extfile",
            ext,
        ]);
    }
    for args in steps {
        let out = Command::new("openssl")
            .args(&args)
            .current_dir(&pki)
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run openssl (install it: hack/install-tools.sh)");
        assert!(
            out.status.success(),
            "openssl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn write_kubeconfig(path: &Path, pki: &Path, port: u16) {
    let text = format!(
        "apiVersion: v1\nkind: Config\n\
         clusters:\n- name: e2e\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority: {ca}\n\
         users:\n- name: admin\n  user:\n    client-certificate: {crt}\n    client-key: {key}\n\
         contexts:\n- name: e2e\n  context:\n    cluster: e2e\n    user: admin\n    namespace: default\n\
         current-context: e2e\n",
        ca = pki.join("ca.crt").display(),
        crt = pki.join("admin.crt").display(),
        key = pki.join("admin.key").display(),
    );
    fs::write(path, text).expect("write kubeconfig");
}

async fn load_config(kubeconfig: &Path) -> Config {
    let kc = Kubeconfig::read_from(kubeconfig).expect("read the kubeconfig we wrote");
    Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kube config from the kubeconfig we wrote")
}

fn log_file(dir: &Path, name: &str) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .unwrap_or_else(|e| panic!("open {name}: {e}"))
}

/// The last `lines` lines of a file (reads at most its last 64 KiB).
fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return format!("({} not found)", path.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut text = String::new();
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    text.push_str(&String::from_utf8_lossy(&bytes));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
