//! The Kubernetes source: watches `ModelPool`, `SemanticRoute` and `EndpointSlice`, compiles
//! the watched state into the live table on every change, and writes status.
//!
//! Every replica keeps its own watches and serves from its own table; only the elected
//! leader writes status. While the API server is unreachable the last table keeps serving
//! and the watches retry with backoff.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::utils::Backoff;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::api::{ModelPool, SemanticRoute};
use crate::routing::{Resources, SharedTable};

use super::endpoints::discover;
use super::publish::compile_and_publish;
use super::status::{condition_events, pool_status, route_status, same_conditions};

/// Field manager of the status the router writes.
pub const FIELD_MANAGER: &str = "semantic-router";

/// How long the source waits for a burst of watch events to settle before recompiling.
const SETTLE: Duration = Duration::from_millis(20);

/// What the source watches and whether it writes status.
pub struct KubeSource {
    /// The API client.
    pub client: Client,
    /// Watch only this namespace; all namespaces when `None`.
    pub namespace: Option<String>,
    /// True while this replica may write status (the elected leader).
    pub leader: watch::Receiver<bool>,
    /// Counts watch errors (API server unreachable, and so on).
    pub on_watch_error: Arc<dyn Fn() + Send + Sync>,
    /// This replica's name in the Events it records (`reportingInstance`).
    pub instance: Option<String>,
}

/// The `action` of the Events the router records: it compiled the object into its table.
const EVENT_ACTION: &str = "Compile";
/// Longest Event note the API accepts, in bytes.
const EVENT_NOTE_LIMIT: usize = 1024;

/// Why the source stopped.
#[derive(Debug, thiserror::Error)]
pub enum KubeSourceError {
    /// A watch stream ended, which a backoff-wrapped watch never does on its own.
    #[error("the {0} watch ended")]
    WatchEnded(&'static str),
}

impl KubeSource {
    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }

    /// Runs until `shutdown` resolves: publishes the first table once all three watches have
    /// synced, then recompiles on every change.
    pub async fn run(
        self,
        shared: SharedTable,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), KubeSourceError> {
        let (changed_tx, mut changed) = mpsc::channel::<()>(1);
        let (pools, pool_watch) = self.reflect::<ModelPool>("ModelPool", changed_tx.clone());
        let (routes, route_watch) =
            self.reflect::<SemanticRoute>("SemanticRoute", changed_tx.clone());
        let (slices, slice_watch) =
            self.reflect::<EndpointSlice>("EndpointSlice", changed_tx.clone());
        let mut leader = self.leader.clone();
        let client = self.client.clone();
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.to_string(),
                instance: self.instance.clone(),
            },
        );

        let work = async {
            for (store, kind) in [
                (pools.clone().wait_until_ready().await.is_ok(), "ModelPool"),
                (
                    routes.clone().wait_until_ready().await.is_ok(),
                    "SemanticRoute",
                ),
                (
                    slices.clone().wait_until_ready().await.is_ok(),
                    "EndpointSlice",
                ),
            ] {
                if !store {
                    return Err(KubeSourceError::WatchEnded(kind));
                }
            }
            tracing::info!("initial sync of ModelPool, SemanticRoute and EndpointSlice done");
            let mut last: Option<Fingerprint> = None;
            let mut election_open = true;
            loop {
                let pool_list: Vec<ModelPool> =
                    pools.state().iter().map(|p| (**p).clone()).collect();
                let route_list: Vec<SemanticRoute> =
                    routes.state().iter().map(|r| (**r).clone()).collect();
                let slice_list: Vec<EndpointSlice> =
                    slices.state().iter().map(|s| (**s).clone()).collect();
                let resources = Resources {
                    models: shared.models(),
                    discovered: discover(&pool_list, &slice_list),
                    pools: pool_list,
                    routes: route_list,
                };
                let fingerprint = fingerprint(&resources);
                let is_leader = *leader.borrow_and_update();
                if last.as_ref() != Some(&fingerprint) || is_leader {
                    let compiled = if last.as_ref() != Some(&fingerprint) {
                        let compiled = compile_and_publish(&shared, &resources);
                        last = Some(fingerprint);
                        Some(compiled)
                    } else {
                        None
                    };
                    if is_leader {
                        let compiled =
                            compiled.unwrap_or_else(|| crate::routing::compile(&resources));
                        write_statuses(&client, &recorder, &resources, &compiled).await;
                    }
                }
                tokio::select! {
                    event = changed.recv() => if event.is_none() { return Ok(()) },
                    // A fixed leadership (no election) has no sender: stop watching it.
                    result = leader.changed(), if election_open => election_open = result.is_ok(),
                }
                tokio::time::sleep(SETTLE).await;
                while changed.try_recv().is_ok() {}
            }
        };
        tokio::pin!(shutdown);
        tokio::select! {
            _ = &mut shutdown => Ok(()),
            result = work => result,
            _ = pool_watch => Err(KubeSourceError::WatchEnded("ModelPool")),
            _ = route_watch => Err(KubeSourceError::WatchEnded("SemanticRoute")),
            _ = slice_watch => Err(KubeSourceError::WatchEnded("EndpointSlice")),
        }
    }

    /// A reflector store of `K` and the future that drives its watch, signalling `changed` on
    /// every event.
    fn reflect<K>(
        &self,
        kind: &'static str,
        changed: mpsc::Sender<()>,
    ) -> (Store<K>, impl std::future::Future<Output = ()> + use<K>)
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned
            + Send
            + Sync
            + 'static,
        K::DynamicType: Default + Eq + std::hash::Hash + Clone,
    {
        let (store, writer) = reflector::store();
        let on_error = self.on_watch_error.clone();
        let stream = watcher(self.api::<K>(), watcher::Config::default())
            .backoff(RetryBackoff::default())
            .modify(|o| o.managed_fields_mut().clear())
            .reflect(writer);
        let driver = async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(_) => {
                        let _ = changed.try_send(());
                    }
                    Err(e) if not_served(&e) => {
                        on_error();
                        tracing::warn!(
                            kind,
                            "the API server does not serve {kind}: is its CRD installed? Install \
                             ours with `kubectl apply --server-side -f crds/semantic-router.yaml` \
                             (the Helm chart ships them too); retrying, and not ready until it is"
                        );
                    }
                    Err(e) => {
                        on_error();
                        tracing::warn!(
                            kind,
                            "watch failed, retrying with backoff; the last routing table keeps serving: {e}"
                        );
                    }
                }
            }
        };
        (store, driver)
    }
}

/// What a compiled table depends on: each resource's identity and generation, and the
/// discovered endpoints. Status-only updates leave it unchanged, so they cause no new table.
#[derive(PartialEq, Eq)]
struct Fingerprint {
    objects: Vec<(String, String, Option<i64>)>,
    discovered: BTreeMap<crate::routing::ObjectKey, Vec<std::net::SocketAddr>>,
}

fn fingerprint(resources: &Resources) -> Fingerprint {
    let mut objects: Vec<(String, String, Option<i64>)> = resources
        .pools
        .iter()
        .map(|p| {
            (
                "ModelPool".to_owned(),
                format!("{}", crate::routing::object_key(p)),
                p.metadata.generation,
            )
        })
        .chain(resources.routes.iter().map(|r| {
            (
                "SemanticRoute".to_owned(),
                format!("{}", crate::routing::object_key(r)),
                r.metadata.generation,
            )
        }))
        .collect();
    objects.sort();
    Fingerprint {
        objects,
        discovered: resources.discovered.clone(),
    }
}

/// Server-side-applies the status of every resource whose status changed, and records an
/// Event for each condition that failed or recovered.
async fn write_statuses(
    client: &Client,
    recorder: &Recorder,
    resources: &Resources,
    compiled: &crate::routing::Compiled,
) {
    for route in &resources.routes {
        let status = route_status(route, compiled, &compiled.table);
        let current = route.status.as_ref();
        if current.is_some_and(|c| {
            c.observed_generation == status.observed_generation
                && c.decisions == status.decisions
                && same_conditions(&c.conditions, &status.conditions)
        }) {
            continue;
        }
        if apply_status::<SemanticRoute, _>(client, route, "SemanticRoute", &status).await {
            let previous = current.map(|c| c.conditions.as_slice()).unwrap_or_default();
            record_events(recorder, route, previous, &status.conditions).await;
        }
    }
    for pool in &resources.pools {
        let status = pool_status(pool, compiled, &compiled.table);
        let current = pool.status.as_ref();
        if current.is_some_and(|c| {
            c.observed_generation == status.observed_generation
                && c.ready_endpoints == status.ready_endpoints
                && same_conditions(&c.conditions, &status.conditions)
        }) {
            continue;
        }
        if apply_status::<ModelPool, _>(client, pool, "ModelPool", &status).await {
            let previous = current.map(|c| c.conditions.as_slice()).unwrap_or_default();
            record_events(recorder, pool, previous, &status.conditions).await;
        }
    }
}

/// Records the Events the change from `previous` to `next` conditions deserves on `object`;
/// a refused Event is logged, never retried (status already says the same).
async fn record_events<K>(
    recorder: &Recorder,
    object: &K,
    previous: &[Condition],
    next: &[Condition],
) where
    K: Resource<DynamicType = ()>,
{
    let events = condition_events(previous, next);
    if events.is_empty() {
        return;
    }
    let reference = object.object_ref(&());
    for change in events {
        let event = Event {
            type_: if change.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: change.reason,
            note: Some(truncate(change.note, EVENT_NOTE_LIMIT)),
            action: EVENT_ACTION.to_string(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &reference).await {
            tracing::warn!(
                kind = reference.kind.as_deref().unwrap_or_default(),
                name = reference.name.as_deref().unwrap_or_default(),
                reason = %event.reason,
                "cannot record an Event: {e}"
            );
        }
    }
}

/// `text` cut to at most `limit` bytes on a character boundary, marked with an ellipsis.
fn truncate(mut text: String, limit: usize) -> String {
    if text.len() <= limit {
        return text;
    }
    let mut end = limit - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
    text
}

/// Whether the status was written.
async fn apply_status<K, S>(client: &Client, object: &K, kind: &str, status: &S) -> bool
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + serde::de::DeserializeOwned
        + Clone
        + std::fmt::Debug,
    S: Serialize,
{
    let namespace = object.namespace().unwrap_or_default();
    let name = object.name_any();
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": kind,
        "status": status,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match api
        .patch_status(&name, &params, &Patch::Apply(&patch))
        .await
    {
        Ok(_) => {
            tracing::debug!(kind, %namespace, %name, "status written");
            true
        }
        Err(e) => {
            tracing::warn!(kind, %namespace, %name, "cannot write status: {e}");
            false
        }
    }
}

/// Whether a watch failed because the API server does not serve the resource at all (404 on
/// the list: its CRD is not installed).
fn not_served(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status)) => status.code == 404,
        _ => false,
    }
}

/// Watch retry delays: 100 ms doubling to 5 s, so a returning API server is noticed within
/// seconds. They start over once no error has come for [`QUIET`]; not on the stream's `Ok`
/// items, because the watcher yields one (`Init`) before every relist attempt, which would
/// retry a failing list (a missing CRD) ten times a second for ever.
struct RetryBackoff {
    next: Duration,
    last_error: Option<std::time::Instant>,
}

/// How long without a watch error before retry delays start over from the shortest.
const QUIET: Duration = Duration::from_secs(30);
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LONGEST_RETRY: Duration = Duration::from_secs(5);

impl Default for RetryBackoff {
    fn default() -> Self {
        Self {
            next: FIRST_RETRY,
            last_error: None,
        }
    }
}

impl Iterator for RetryBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let now = std::time::Instant::now();
        if self.last_error.is_some_and(|last| now - last > QUIET) {
            self.next = FIRST_RETRY;
        }
        self.last_error = Some(now);
        let current = self.next;
        self.next = (self.next * 2).min(LONGEST_RETRY);
        Some(current)
    }
}

impl Backoff for RetryBackoff {
    /// Ignored: see [`RetryBackoff`].
    fn reset(&mut self) {}
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};
    use kube::runtime::utils::Backoff;
    use serde::Deserialize;

    use super::{FIRST_RETRY, LONGEST_RETRY, RetryBackoff};

    fn allows(rules: &[PolicyRule], group: &str, resource: &str, verb: &str) -> bool {
        rules.iter().any(|r| {
            r.api_groups.iter().flatten().any(|g| g == group)
                && r.resources.iter().flatten().any(|x| x == resource)
                && r.verbs.iter().any(|v| v == verb)
        })
    }

    /// The shipped RBAC grants exactly what the controller does: watch policy and endpoints,
    /// patch status, hold a Lease; and nothing that writes specs.
    #[test]
    fn rbac_covers_what_the_controller_does_and_no_more() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/rbac/rbac.yaml");
        let text = std::fs::read_to_string(path).unwrap();
        let mut cluster = Vec::new();
        let mut lease = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(doc).unwrap();
            match value["kind"].as_str() {
                Some("ClusterRole") => {
                    cluster = serde_yaml::from_value::<ClusterRole>(value)
                        .unwrap()
                        .rules
                        .unwrap_or_default()
                }
                Some("Role") => {
                    lease = serde_yaml::from_value::<Role>(value)
                        .unwrap()
                        .rules
                        .unwrap_or_default()
                }
                _ => {}
            }
        }
        for resource in ["semanticroutes", "modelpools"] {
            for verb in ["list", "watch"] {
                assert!(
                    allows(&cluster, "semantic-router.io", resource, verb),
                    "{resource} {verb}"
                );
            }
            assert!(allows(
                &cluster,
                "semantic-router.io",
                &format!("{resource}/status"),
                "patch"
            ));
            for verb in ["create", "update", "patch", "delete"] {
                assert!(
                    !allows(&cluster, "semantic-router.io", resource, verb),
                    "{resource} {verb}"
                );
            }
        }
        assert!(allows(
            &cluster,
            "discovery.k8s.io",
            "endpointslices",
            "watch"
        ));
        for verb in ["get", "create", "patch"] {
            assert!(
                allows(&lease, "coordination.k8s.io", "leases", verb),
                "leases {verb}"
            );
        }
        // Events go to each object's own namespace; a series is patched.
        for verb in ["create", "patch"] {
            assert!(
                allows(&cluster, "events.k8s.io", "events", verb),
                "events {verb}"
            );
        }
        assert!(!allows(&cluster, "events.k8s.io", "events", "delete"));
    }

    #[test]
    fn retries_back_off_even_though_the_watcher_resets_before_each_relist() {
        let mut backoff = RetryBackoff::default();
        let mut delays = Vec::new();
        for _ in 0..8 {
            delays.push(backoff.next().expect("retries for ever"));
            backoff.reset();
        }
        assert_eq!(delays[0], FIRST_RETRY);
        assert_eq!(delays[3], Duration::from_millis(800));
        assert_eq!(delays[7], LONGEST_RETRY);
    }

    #[test]
    fn event_notes_are_cut_on_a_character_boundary() {
        assert_eq!(super::truncate("short".into(), 1024), "short");
        let long = "é".repeat(600);
        let cut = super::truncate(long, 1024);
        assert!(cut.len() <= 1024 && cut.ends_with('…'), "{}", cut.len());
    }
}
