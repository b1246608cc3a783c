//! A stand-in for the Hugging Face Hub on 127.0.0.1, serving one model folder the way the
//! real Hub does for `hf-hub`: the revision API (`/api/models/{repo}/revision/{rev}`, the
//! commit and the file list) and `resolve` downloads with `Range`, `etag`, `x-repo-commit`
//! and `content-range`. The real Hub is unreachable from this machine; this is a real HTTP
//! server speaking its protocol, so the client, the cache layout and the retries are real.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The commit every file is served from.
pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

struct Repo {
    id: String,
    files: Vec<(String, Vec<u8>)>,
    requests: AtomicUsize,
}

/// A running fake Hub; stops when dropped.
pub struct FakeHub {
    pub endpoint: String,
    repo: Arc<Repo>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeHub {
    /// Serves every file of `dir` (plus a README.md) as repository `repo_id` at [`COMMIT`].
    pub fn start(repo_id: &str, dir: &Path) -> Self {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
            .expect("model dir")
            .map(|e| {
                let path = e.expect("entry").path();
                let name = path
                    .file_name()
                    .expect("name")
                    .to_string_lossy()
                    .into_owned();
                (name, std::fs::read(&path).expect("read file"))
            })
            .collect();
        files.push(("README.md".into(), b"# a model card\n".to_vec()));
        let repo = Arc::new(Repo {
            id: repo_id.to_string(),
            files,
            requests: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/api/models/{org}/{name}/revision/{rev}", get(info))
            .route("/{org}/{name}/resolve/{rev}/{*file}", get(resolve))
            .with_state(repo.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
                    .expect("serve");
            });
        });
        Self {
            endpoint: format!("http://{addr}"),
            repo,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// HTTP requests served so far.
    pub fn requests(&self) -> usize {
        self.repo.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn info(
    State(repo): State<Arc<Repo>>,
    UrlPath((org, name, _rev)): UrlPath<(String, String, String)>,
) -> Response {
    repo.requests.fetch_add(1, Ordering::SeqCst);
    if format!("{org}/{name}") != repo.id {
        return (StatusCode::NOT_FOUND, "Repository not found").into_response();
    }
    let siblings: Vec<serde_json::Value> = repo
        .files
        .iter()
        .map(|(name, _)| serde_json::json!({ "rfilename": name }))
        .collect();
    axum::Json(serde_json::json!({ "sha": COMMIT, "siblings": siblings })).into_response()
}

async fn resolve(
    State(repo): State<Arc<Repo>>,
    UrlPath((org, name, _rev, file)): UrlPath<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    repo.requests.fetch_add(1, Ordering::SeqCst);
    let found = (format!("{org}/{name}") == repo.id)
        .then(|| repo.files.iter().find(|(n, _)| *n == file))
        .flatten();
    let Some((_, bytes)) = found else {
        return (StatusCode::NOT_FOUND, "Entry not found").into_response();
    };
    let size = bytes.len();
    // `bytes=START-` or `bytes=START-END`, as hf-hub sends them.
    let (start, end) = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split_once('-'))
        .map(|(s, e)| {
            let start: usize = s.parse().unwrap_or(0);
            let end = e.parse().unwrap_or(size.saturating_sub(1));
            (start, end.min(size.saturating_sub(1)))
        })
        .unwrap_or((0, size.saturating_sub(1)));
    let body = bytes.get(start..=end).unwrap_or_default().to_vec();
    (
        StatusCode::PARTIAL_CONTENT,
        [
            (header::ETAG.as_str(), format!("\"{}\"", etag(&file, size))),
            ("x-repo-commit", COMMIT.to_string()),
            (
                header::CONTENT_RANGE.as_str(),
                format!("bytes {start}-{end}/{size}"),
            ),
        ],
        body,
    )
        .into_response()
}

/// A stable stand-in for the blob hash the Hub sends as the etag.
fn etag(file: &str, size: usize) -> String {
    let sum = file.bytes().fold(size as u64, |h, b| {
        h.wrapping_mul(1_099_511_628_211).wrapping_add(u64::from(b))
    });
    format!("{sum:016x}")
}
