//! A file-backed source: manifests in a directory, watched for changes. Runs the whole data
//! plane with no cluster.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::routing::SharedTable;

use super::manifests::load_dir;
use super::publish::compile_and_publish;

/// How long the source waits for a burst of file events to settle before reloading.
const SETTLE: Duration = Duration::from_millis(100);

/// Why the file source could not start.
#[derive(Debug, thiserror::Error)]
pub enum FileSourceError {
    /// The directory could not be watched.
    #[error("cannot watch {path}: {source}")]
    Watch {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: notify::Error,
    },
}

/// Loads `dir`, publishes the table, then reloads on every change until `shutdown` resolves.
/// A directory that fails to load keeps the last good table serving and logs each problem with
/// its file.
pub async fn run(
    dir: PathBuf,
    shared: SharedTable,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), FileSourceError> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.send(());
        }
    })
    .map_err(|source| FileSourceError::Watch {
        path: dir.clone(),
        source,
    })?;
    watcher
        .watch(&dir, RecursiveMode::Recursive)
        .map_err(|source| FileSourceError::Watch {
            path: dir.clone(),
            source,
        })?;
    tracing::info!(dir = %dir.display(), "watching manifests");

    reload(&dir, &shared);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            event = rx.recv() => {
                if event.is_none() {
                    return Ok(());
                }
                tokio::time::sleep(SETTLE).await;
                while rx.try_recv().is_ok() {}
                reload(&dir, &shared);
            }
        }
    }
}

fn reload(dir: &Path, shared: &SharedTable) {
    match load_dir(dir) {
        Ok(mut resources) => {
            resources.models = shared.models();
            compile_and_publish(shared, &resources);
        }
        Err(errors) => {
            for e in &errors {
                tracing::error!("{e}");
            }
            let kept = shared.load().map_or(0, |t| t.generation);
            tracing::error!(
                errors = errors.len(),
                kept_generation = kept,
                "manifests in {} not loaded; the previous routing table keeps serving",
                dir.display()
            );
        }
    }
}
