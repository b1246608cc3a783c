//! `run`'s Kubernetes options, and the [`KubeSource`] they assemble: the client, the watched
//! namespace, the leader election that decides who writes status, and the watch-error counter.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use super::kube_source::KubeSource;
use super::leader;

/// Where the router watches resources and how replicas share the status writes.
#[derive(clap::Args, Debug, Clone)]
pub struct KubeArgs {
    /// Kubernetes mode: watch only this namespace (default: all namespaces).
    #[arg(long, env = "SR_WATCH_NAMESPACE", conflicts_with = "manifests")]
    pub watch_namespace: Option<String>,

    /// Kubernetes mode: the Lease used to elect the one replica that writes status.
    #[arg(long, default_value = "semantic-router", env = "SR_LEASE_NAME")]
    pub lease_name: String,

    /// Kubernetes mode: namespace of the Lease (usually the router's own).
    #[arg(long, default_value = "default", env = "POD_NAMESPACE")]
    pub lease_namespace: String,

    /// Kubernetes mode: this replica's identity in the Lease (default: the host name) and
    /// in the Events it records.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// Kubernetes mode: write status without electing a leader (a single replica only).
    #[arg(long, conflicts_with = "manifests")]
    pub no_leader_election: bool,
}

/// Why the Kubernetes source cannot start.
#[derive(Debug, thiserror::Error)]
pub enum KubeArgsError {
    /// Neither in-cluster configuration nor a kubeconfig is usable.
    #[error(
        "no Kubernetes configuration (in-cluster or KUBECONFIG); pass --manifests DIR to run \
         without a cluster: {0}"
    )]
    Config(#[source] kube::Error),
    /// The leader election could not start.
    #[error("cannot start the leader election: {0}")]
    Election(#[from] leader::Error),
}

impl KubeArgs {
    /// Connects to the API server, starts the leader election (unless turned off) and
    /// registers `semantic_router_kube_watch_errors` in `registry`.
    pub async fn source(self, registry: &mut Registry) -> Result<KubeSource, KubeArgsError> {
        let client = kube::Client::try_default()
            .await
            .map_err(KubeArgsError::Config)?;
        let watch_errors = Counter::<u64>::default();
        registry.register(
            "semantic_router_kube_watch_errors",
            "Failed Kubernetes watch attempts (retried with backoff; the last table keeps serving)",
            watch_errors.clone(),
        );
        let leader = if self.no_leader_election {
            watch::channel(true).1
        } else {
            leader::elect(
                client.clone(),
                &self.lease_namespace,
                &self.lease_name,
                self.identity.clone(),
            )
            .await?
        };
        Ok(KubeSource {
            client,
            namespace: self.watch_namespace,
            leader,
            on_watch_error: Arc::new(move || {
                watch_errors.inc();
            }),
            instance: self.identity,
        })
    }
}
