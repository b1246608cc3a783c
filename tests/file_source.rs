//! The file-backed source: a manifests directory drives the live routing table.

use std::path::{Path, PathBuf};
use std::time::Duration;

use semantic_router::controller::file_source;
use semantic_router::routing::SharedTable;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::oneshot;

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/samples")
}

/// A copy of the samples in a temporary directory.
fn sample_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(samples()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    dir
}

/// Waits until the published generation reaches `generation`, for at most `limit`.
async fn wait_generation(shared: &SharedTable, generation: u64, limit: Duration) -> bool {
    let mut rx = shared.subscribe();
    tokio::time::timeout(limit, rx.wait_for(|g| *g >= generation))
        .await
        .is_ok_and(|r| r.is_ok())
}

struct Running {
    shared: SharedTable,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(dir: &Path) -> Self {
        let shared = SharedTable::default();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(file_source::run(dir.to_owned(), shared.clone(), async {
            let _ = stopped.await;
        }));
        let task = tokio::spawn(async move {
            task.await.unwrap().unwrap();
        });
        assert!(wait_generation(&shared, 1, Duration::from_secs(5)).await);
        Self {
            shared,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("source stops")
            .unwrap();
    }
}

#[tokio::test]
async fn editing_a_file_swaps_the_table_within_a_second() {
    let dir = sample_dir();
    let source = Running::start(dir.path()).await;
    let first = source.shared.load().unwrap();
    assert_eq!(first.routes[0].decisions.len(), 2);

    let route = dir.path().join("route.yaml");
    let text = std::fs::read_to_string(&route).unwrap();
    let edited = text.replace("  - name: reasoning\n", "  - name: deep-reasoning\n");
    assert_ne!(text, edited);
    let started = std::time::Instant::now();
    std::fs::write(&route, edited).unwrap();
    assert!(
        wait_generation(&source.shared, 2, Duration::from_secs(1)).await,
        "table not swapped within 1 s"
    );
    let elapsed = started.elapsed();
    let table = source.shared.load().unwrap();
    let names: Vec<&str> = table.routes[0]
        .decisions
        .iter()
        .map(|d| d.name.as_str())
        .collect();
    assert_eq!(names, ["research-reasoning", "deep-reasoning"]);
    eprintln!("table swapped {elapsed:?} after the edit");
    source.stop().await;
}

#[tokio::test]
async fn a_broken_file_keeps_the_last_good_table() {
    let dir = sample_dir();
    let source = Running::start(dir.path()).await;

    std::fs::write(dir.path().join("route.yaml"), "kind: [\n").unwrap();
    assert!(
        !wait_generation(&source.shared, 2, Duration::from_millis(600)).await,
        "a broken file must not publish a table"
    );
    let table = source.shared.load().unwrap();
    assert_eq!(table.generation, 1);
    assert_eq!(table.routes.len(), 1, "the previous table keeps serving");

    std::fs::copy(samples().join("route.yaml"), dir.path().join("route.yaml")).unwrap();
    assert!(wait_generation(&source.shared, 2, Duration::from_secs(2)).await);
    assert_eq!(source.shared.load().unwrap().routes.len(), 1);
    source.stop().await;
}

/// Reads lines from the child's stdout until one contains `needle`, for at most 10 s.
async fn read_until(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    needle: &str,
) -> Vec<String> {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(line)) = lines.next_line().await {
            let hit = line.contains(needle);
            seen.push(line);
            if hit {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(found, "no line with {needle:?} in:\n{}", seen.join("\n"));
    seen
}

#[tokio::test]
async fn run_logs_the_table_and_names_a_broken_file() {
    let dir = sample_dir();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_semantic-router"))
        .args([
            "run",
            "--extproc-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--manifests",
        ])
        .arg(dir.path())
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let log = read_until(&mut lines, "default -> Qwen/Qwen3-1.7B")
        .await
        .join("\n");
    assert!(
        log.contains("routing table generation 1: 3 pools, 1 routes"),
        "{log}"
    );
    assert!(
        log.contains("decision reasoning -> Qwen/Qwen3-30B-A3B @ qwen3-large-h100 (reasoning on)"),
        "{log}"
    );

    std::fs::write(dir.path().join("pools.yaml"), "apiVersion: semantic-router.io/v1alpha1\nkind: ModelPool\nmetadata: {name: x}\nspec: {models: []}\n").unwrap();
    let log = read_until(&mut lines, "previous routing table keeps serving")
        .await
        .join("\n");
    assert!(log.contains("pools.yaml"), "{log}");

    let pid = child.id().unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("exits on SIGTERM")
        .unwrap();
    assert!(status.success());
}

#[test]
fn explain_cli_reads_a_body_and_prints_the_decision() {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_semantic-router"))
        .args(["explain", "--manifests"])
        .arg(samples())
        .args(["-H", "x-team: research"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            br#"{"model":"auto","messages":[{"role":"user","content":"prove this theorem"}]}"#,
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let explained: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(explained["decision"], "research-reasoning");
    assert_eq!(
        explained["rule"],
        "all [team-research] and any [stem, code, stem-domain, multi-step]"
    );
    assert_eq!(explained["target"]["pool"], "qwen3-large-a100");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("SignalNotLoaded"),
        "the policy's model signal is reported as not loaded"
    );
}
