//! Leader election against a real API server that serves Lease as a CRD (which, unlike the
//! built-in kind, rejects strategic-merge patches): two in-process replicas with short timings.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use semantic_router::controller::leader::{self, LeaseTiming};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::support::apiserver::FIELD_MANAGER;
use crate::support::{ApiServer, eventually, repo_root, yaml_documents};

const LEASE: &str = "e2e-leader";
const LEASE_CRD: &str = "leases.coordination.k8s.io";

/// An API server that serves `coordination.k8s.io/v1` Lease (from `tests/e2e/crds/builtin.yaml`).
async fn cluster() -> ApiServer {
    // The election logs what it does; the test harness shows it for failed tests.
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let server = ApiServer::start().await;
    let crds: Api<CustomResourceDefinition> = Api::all(server.client());
    let lease_crd: CustomResourceDefinition =
        yaml_documents(&repo_root().join("tests/e2e/crds/builtin.yaml"))
            .into_iter()
            .map(|doc| serde_yaml::from_value(doc).expect("a CRD"))
            .find(|crd: &CustomResourceDefinition| crd.metadata.name.as_deref() == Some(LEASE_CRD))
            .expect("builtin.yaml defines the Lease CRD");
    crds.patch(
        LEASE_CRD,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&lease_crd),
    )
    .await
    .expect("apply the Lease CRD");
    eventually(
        "the Lease CRD Established",
        Duration::from_secs(30),
        || async {
            crds.get(LEASE_CRD).await.ok().is_some_and(|crd| {
                crd.status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            })
        },
    )
    .await;
    server
}

/// Short timings so a failover takes seconds: step down 3 s after the last renewal, taken over
/// 4 s after the last change a follower saw.
const TIMING: LeaseTiming = LeaseTiming {
    duration: Duration::from_secs(4),
    retry: Duration::from_secs(1),
    margin: Duration::from_secs(1),
};

/// One in-process replica of the election.
struct Replica {
    identity: &'static str,
    leading: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl Replica {
    async fn join(server: &ApiServer, identity: &'static str) -> Replica {
        let (leading, task) = leader::elect_with_timing(
            server.client(),
            "default",
            LEASE,
            identity.to_owned(),
            TIMING,
        )
        .await
        .expect("join the election");
        Replica {
            identity,
            leading,
            task,
        }
    }

    fn leads(&self) -> bool {
        *self.leading.borrow()
    }
}

/// The identities of the replicas that now act as leader.
fn leaders(replicas: &[&Replica]) -> Vec<&'static str> {
    replicas
        .iter()
        .filter(|r| r.leads())
        .map(|r| r.identity)
        .collect()
}

async fn lease(client: &Client) -> Option<LeaseSpec> {
    Api::<Lease>::namespaced(client.clone(), "default")
        .get_opt(LEASE)
        .await
        .ok()??
        .spec
}

/// Waits (bounded) until exactly one replica leads and returns its index.
async fn one_leader(replicas: &[&Replica], timeout: Duration) -> usize {
    eventually("exactly one leader", timeout, || async {
        leaders(replicas).len() == 1
    })
    .await;
    replicas
        .iter()
        .position(|r| r.leads())
        .expect("one replica leads")
}

#[tokio::test(flavor = "multi_thread")]
async fn one_replica_leads_renews_and_is_replaced_within_the_lease_duration_when_it_dies() {
    let server = cluster().await;
    let client = server.client();
    let a = Replica::join(&server, "replica-a").await;
    let b = Replica::join(&server, "replica-b").await;
    let first = one_leader(&[&a, &b], Duration::from_secs(10)).await;
    let (leader, follower) = if first == 0 { (a, b) } else { (b, a) };

    let sampled = Instant::now();
    while sampled.elapsed() < Duration::from_secs(3) {
        assert_eq!(
            leaders(&[&leader, &follower]),
            [leader.identity],
            "exactly one leader at a time, and no flapping"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let spec = lease(&client).await.expect("the Lease exists");
    assert_eq!(spec.holder_identity.as_deref(), Some(leader.identity));
    assert_eq!(spec.lease_duration_seconds, Some(4));
    let renewed = spec.renew_time.expect("the Lease has a renewTime").0;
    eventually(
        "renewTime to advance",
        TIMING.retry * 2 + Duration::from_secs(1),
        || async {
            lease(&client)
                .await
                .and_then(|s| s.renew_time)
                .is_some_and(|t| t.0 > renewed)
        },
    )
    .await;

    leader.task.abort();
    let died = Instant::now();
    eventually(
        "the aborted leader to stop leading",
        Duration::from_secs(1),
        || async { !leader.leads() },
    )
    .await;
    // The follower takes over once it has seen the lease unchanged for the lease duration. It
    // looks once per retry period, so it saw the last renewal up to one period late and notices
    // the expiry up to one period late: at most duration + 2 retry periods after the death.
    eventually(
        "the follower to take over",
        TIMING.duration + TIMING.retry * 2 + Duration::from_secs(1),
        || async { follower.leads() },
    )
    .await;
    eprintln!("failover took {:?}", died.elapsed());
    let spec = lease(&client).await.expect("the Lease exists");
    assert_eq!(spec.holder_identity.as_deref(), Some(follower.identity));
    assert_eq!(spec.lease_transitions, Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_that_loses_the_api_server_steps_down_before_its_lease_expires() {
    let mut server = cluster().await;
    let a = Replica::join(&server, "replica-a").await;
    let b = Replica::join(&server, "replica-b").await;
    let first = one_leader(&[&a, &b], Duration::from_secs(10)).await;
    let (leader, follower) = if first == 0 { (&a, &b) } else { (&b, &a) };
    // Let it renew at least once after winning.
    tokio::time::sleep(TIMING.retry * 2).await;
    assert!(leader.leads());

    server.stop().await;
    let stopped = Instant::now();
    // Its last renewal was before the stop, so its lease may expire at `stopped + duration`.
    while leader.leads() {
        assert!(
            stopped.elapsed() < TIMING.duration,
            "{} still leads {:?} after losing the API server",
            leader.identity,
            stopped.elapsed()
        );
        assert!(!follower.leads(), "two leaders");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "stepped down {:?} after the API server stopped",
        stopped.elapsed()
    );
    while stopped.elapsed() < TIMING.duration + TIMING.retry {
        assert_eq!(
            leaders(&[&a, &b]),
            Vec::<&str>::new(),
            "nobody leads without the API server"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    server.restart().await;
    one_leader(&[&a, &b], TIMING.duration + TIMING.retry * 2).await;
}
