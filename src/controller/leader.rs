//! Leader election over a `coordination.k8s.io` Lease: only the leader writes status.

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;

/// Lease duration in seconds: a dead leader is replaced after about this long.
const LEASE_SECONDS: u64 = 15;
/// Seconds before expiry the leader renews.
const GRACE_SECONDS: u64 = 5;

/// Joins the election for `namespace/name`; the receiver is true while this replica leads.
/// The election runs in the background for the life of the process.
pub async fn elect(
    client: Client,
    namespace: &str,
    name: &str,
    identity: Option<String>,
) -> Result<watch::Receiver<bool>, kube_lease_manager::LeaseManagerError> {
    let identity = identity
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("semantic-router-{}", std::process::id()));
    let manager = LeaseManagerBuilder::new(client, name)
        .with_namespace(namespace)
        .with_identity(identity.clone())
        .with_duration(LEASE_SECONDS)
        .with_grace(GRACE_SECONDS)
        .with_field_manager("semantic-router-leader")
        .build()
        .await?;
    let (mut leading, task) = manager.watch().await;
    let observed = leading.clone();
    tokio::spawn(async move {
        while leading.changed().await.is_ok() {
            tracing::info!(%identity, leader = *leading.borrow(), "leadership changed");
        }
        if let Ok(Err(e)) = task.await {
            tracing::error!("leader election stopped: {e}");
        }
    });
    Ok(observed)
}
