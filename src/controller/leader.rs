//! Leader election over a `coordination.k8s.io` Lease: only the leader writes status.
//!
//! Every write is a replace guarded by the `resourceVersion` just read, so two replicas can
//! never both take the lease, and any API server accepts it (one that serves Lease as a CRD
//! rejects strategic-merge patches). A follower takes the lease once it has seen it unchanged
//! for the lease duration on its own monotonic clock, as client-go does, so clock skew between
//! replicas does not matter. A leader that cannot renew stops leading a margin before its lease
//! can expire, so two replicas never write status at once.

use std::fmt;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::core::Status;
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Why this replica cannot take part in the election.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused to read or write the Lease (missing kind or namespace, RBAC).
    #[error("the API server refused Lease {lease}: {source}")]
    Refused {
        /// The Lease's namespace/name.
        lease: String,
        /// What the API server said.
        #[source]
        source: kube::Error,
    },
}

/// How long a lease lasts and how often it is renewed. Keep `retry` well under
/// `duration - margin`, so a leader gets more than one try to renew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// A dead leader is replaced after about this long (`leaseDurationSeconds`, rounded up).
    pub duration: Duration,
    /// How often the leader renews and a follower looks at the lease; also the longest a
    /// single read-and-write may take.
    pub retry: Duration,
    /// A leader that has not renewed for `duration - margin` stops leading.
    pub margin: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        LeaseTiming {
            duration: Duration::from_secs(15),
            retry: Duration::from_secs(5),
            margin: Duration::from_secs(2),
        }
    }
}

impl LeaseTiming {
    /// When a leader whose last successful renewal began at `renewed` must stop leading.
    fn step_down_at(&self, renewed: Instant) -> Instant {
        renewed + self.duration.saturating_sub(self.margin)
    }

    /// `leaseDurationSeconds`: the duration rounded up to whole seconds, at least one.
    fn duration_seconds(&self) -> i32 {
        let secs = self.duration.as_secs() + u64::from(self.duration.subsec_nanos() > 0);
        i32::try_from(secs.max(1)).unwrap_or(i32::MAX)
    }
}

/// What a replica does with the lease it has just read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// It holds the lease: renew it.
    Renew,
    /// Nobody holds it, or the holder let it expire: take it over.
    Acquire,
    /// Another replica holds it.
    Follow,
}

/// Decides from the lease's spec and how long it has been seen unchanged.
fn decide(
    spec: Option<&LeaseSpec>,
    identity: &str,
    unchanged_for: Duration,
    fallback: Duration,
) -> Action {
    let holder = spec
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty());
    match holder {
        Some(holder) if holder == identity => Action::Renew,
        Some(_) if !expired(spec, unchanged_for, fallback) => Action::Follow,
        _ => Action::Acquire,
    }
}

/// Whether a lease seen unchanged for `unchanged_for` has expired; a lease without a positive
/// `leaseDurationSeconds` lasts `fallback`.
fn expired(spec: Option<&LeaseSpec>, unchanged_for: Duration, fallback: Duration) -> bool {
    let duration = spec
        .and_then(|s| s.lease_duration_seconds)
        .and_then(|secs| u64::try_from(secs).ok())
        .filter(|&secs| secs > 0)
        .map_or(fallback, Duration::from_secs);
    unchanged_for > duration
}

/// Whether an API error means the election cannot work at all, rather than a passing fault.
fn is_fatal(status: &Status) -> bool {
    (400..500).contains(&status.code) && !matches!(status.code, 408 | 409 | 429)
}

/// The version of the lease last read, and since when it has been seen.
struct Seen {
    version: Option<String>,
    since: Instant,
}

/// Why a round did not settle the lease.
enum RoundError {
    Api(kube::Error),
    TimedOut(Duration),
}

impl fmt::Display for RoundError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoundError::Api(e) => e.fmt(f),
            RoundError::TimedOut(after) => write!(f, "no answer within {after:?}"),
        }
    }
}

/// One replica's side of the election.
struct Elector {
    api: Api<Lease>,
    lease: String,
    name: String,
    identity: String,
    timing: LeaseTiming,
    seen: Option<Seen>,
    /// When the last successful renewal began, while this replica leads.
    renewed: Option<Instant>,
}

impl Elector {
    /// Reads the lease and creates, renews or takes it when it may, bounded in time so a
    /// leader never passes its step-down deadline waiting for the API server. Updates
    /// `renewed`: `Some` while this replica leads.
    async fn step(&mut self) -> Result<(), RoundError> {
        let started = Instant::now();
        let retry = self.timing.retry;
        let deadline = match self.renewed {
            Some(at) => self.timing.step_down_at(at).min(started + retry),
            None => started + retry,
        };
        let outcome = tokio::time::timeout_at(deadline, self.round()).await;
        let result = match outcome {
            Ok(Ok(true)) => {
                self.renewed = Some(started);
                Ok(())
            }
            Ok(Ok(false)) => {
                self.renewed = None;
                Ok(())
            }
            Ok(Err(e)) => Err(RoundError::Api(e)),
            Err(_) => Err(RoundError::TimedOut(deadline - started)),
        };
        self.expire();
        result
    }

    /// Stops leading once the last successful renewal is too old.
    fn expire(&mut self) {
        if self
            .renewed
            .is_some_and(|at| Instant::now() >= self.timing.step_down_at(at))
        {
            tracing::warn!(
                lease = %self.lease,
                identity = %self.identity,
                "could not renew the lease in time; no longer acting as leader"
            );
            self.renewed = None;
        }
    }

    /// One read and at most one write of the lease; true when this replica now holds it.
    async fn round(&mut self) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let created = self
                .api
                .create(&PostParams::default(), &self.new_lease())
                .await;
            return match created {
                Ok(lease) => {
                    self.see(&lease);
                    Ok(true)
                }
                Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(false),
                Err(e) => Err(e),
            };
        };
        let version = lease.resource_version();
        let since = match &self.seen {
            Some(seen) if seen.version == version => seen.since,
            _ => Instant::now(),
        };
        self.seen = Some(Seen { version, since });
        let action = decide(
            lease.spec.as_ref(),
            &self.identity,
            since.elapsed(),
            self.timing.duration,
        );
        if action == Action::Follow {
            return Ok(false);
        }
        let now = MicroTime(Timestamp::now());
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if action == Action::Acquire {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        spec.lease_duration_seconds = Some(self.timing.duration_seconds());
        spec.renew_time = Some(now);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(lease) => {
                self.see(&lease);
                Ok(true)
            }
            // Someone else wrote the lease since we read it: read it again next round.
            Err(kube::Error::Api(s)) if s.is_conflict() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Remembers our own write, so a follower's clock starts from it.
    fn see(&mut self, lease: &Lease) {
        self.seen = Some(Seen {
            version: lease.resource_version(),
            since: Instant::now(),
        });
    }

    fn new_lease(&self) -> Lease {
        let now = MicroTime(Timestamp::now());
        Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(self.timing.duration_seconds()),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        }
    }

    /// Sets the receivers' value, logging a change.
    fn publish(&self, leading: &watch::Sender<bool>) {
        let now = self.renewed.is_some();
        if leading.send_if_modified(|v| std::mem::replace(v, now) != now) {
            tracing::info!(lease = %self.lease, identity = %self.identity, leader = now, "leadership changed");
        }
    }

    fn log_failure(&self, e: &RoundError) {
        tracing::warn!(lease = %self.lease, identity = %self.identity, "leader election: {e}");
    }

    /// Keeps the election going until every receiver is gone; rounds start one retry period
    /// apart, the first after the one that began at `last`.
    async fn run(mut self, leading: watch::Sender<bool>, mut last: Instant) {
        let leading = Publisher(leading);
        loop {
            let mut next = last + self.timing.retry;
            if let Some(at) = self.renewed {
                next = next.min(self.timing.step_down_at(at));
            }
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                () = leading.0.closed() => return,
            }
            // The deadline may have passed while sleeping: step down before waiting on a round.
            self.expire();
            self.publish(&leading.0);
            last = Instant::now();
            if let Err(e) = self.step().await {
                self.log_failure(&e);
            }
            self.publish(&leading.0);
        }
    }
}

/// Turns the receivers false when the election stops, whether it returns or is aborted.
struct Publisher(watch::Sender<bool>);

impl Drop for Publisher {
    fn drop(&mut self) {
        self.0.send_replace(false);
    }
}

/// Joins the election for `namespace/name`; the receiver is true while this replica leads.
/// The identity defaults to the host name. The election runs in the background until every
/// receiver is dropped.
pub async fn elect(
    client: Client,
    namespace: &str,
    name: &str,
    identity: Option<String>,
) -> Result<watch::Receiver<bool>, Error> {
    let identity = identity
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("semantic-router-{}", std::process::id()));
    let (leading, _task) =
        elect_with_timing(client, namespace, name, identity, LeaseTiming::default()).await?;
    Ok(leading)
}

/// [`elect`] with explicit timing, also returning the election's task (aborting it is a
/// crash: the lease is left to expire, the receivers turn false).
///
/// The first round runs before this returns, so an API server that refuses the Lease fails
/// here; one that cannot be reached is retried in the background.
pub async fn elect_with_timing(
    client: Client,
    namespace: &str,
    name: &str,
    identity: String,
    timing: LeaseTiming,
) -> Result<(watch::Receiver<bool>, JoinHandle<()>), Error> {
    let mut elector = Elector {
        api: Api::namespaced(client, namespace),
        lease: format!("{namespace}/{name}"),
        name: name.to_owned(),
        identity,
        timing,
        seen: None,
        renewed: None,
    };
    let started = Instant::now();
    match elector.step().await {
        Ok(()) => {}
        Err(RoundError::Api(kube::Error::Api(status))) if is_fatal(&status) => {
            return Err(Error::Refused {
                lease: elector.lease,
                source: kube::Error::Api(status),
            });
        }
        Err(e) => elector.log_failure(&e),
    }
    let leader = elector.renewed.is_some();
    tracing::info!(lease = %elector.lease, identity = %elector.identity, leader, "joined the leader election");
    let (tx, rx) = watch::channel(leader);
    Ok((rx, tokio::spawn(elector.run(tx, started))))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(15);

    fn held_by(holder: &str, secs: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.to_owned()),
            lease_duration_seconds: Some(secs),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn our_lease_is_renewed_even_when_it_looks_expired() {
        let spec = held_by("a", 15);
        assert_eq!(
            decide(Some(&spec), "a", Duration::ZERO, LONG),
            Action::Renew
        );
        assert_eq!(
            decide(Some(&spec), "a", Duration::from_secs(60), LONG),
            Action::Renew
        );
    }

    #[test]
    fn another_holder_is_followed_until_its_lease_has_gone_unchanged_for_its_duration() {
        let spec = held_by("b", 3);
        assert_eq!(
            decide(Some(&spec), "a", Duration::from_secs(3), LONG),
            Action::Follow
        );
        assert_eq!(
            decide(Some(&spec), "a", Duration::from_millis(3001), LONG),
            Action::Acquire
        );
    }

    #[test]
    fn a_lease_without_holder_or_spec_is_free() {
        assert_eq!(decide(None, "a", Duration::ZERO, LONG), Action::Acquire);
        assert_eq!(
            decide(Some(&held_by("", 15)), "a", Duration::ZERO, LONG),
            Action::Acquire
        );
        assert_eq!(
            decide(Some(&LeaseSpec::default()), "a", Duration::ZERO, LONG),
            Action::Acquire
        );
    }

    #[test]
    fn a_missing_or_nonsense_duration_falls_back_to_ours() {
        for secs in [None, Some(0), Some(-5)] {
            let spec = LeaseSpec {
                holder_identity: Some("b".to_owned()),
                lease_duration_seconds: secs,
                ..LeaseSpec::default()
            };
            assert!(
                !expired(Some(&spec), Duration::from_secs(14), LONG),
                "{secs:?}"
            );
            assert!(
                expired(Some(&spec), Duration::from_secs(16), LONG),
                "{secs:?}"
            );
        }
    }

    #[test]
    fn a_leader_steps_down_a_margin_before_its_lease_expires() {
        let timing = LeaseTiming::default();
        let renewed = Instant::now();
        let at = timing.step_down_at(renewed);
        assert_eq!(at - renewed, Duration::from_secs(13));
        assert!(at < renewed + timing.duration);
        // Followers wait at least the full duration after they last saw the lease change.
        assert!(at - renewed < Duration::from_secs(timing.duration_seconds() as u64));
    }

    #[test]
    fn the_written_duration_is_rounded_up_to_whole_seconds() {
        let timing = |ms| LeaseTiming {
            duration: Duration::from_millis(ms),
            ..LeaseTiming::default()
        };
        assert_eq!(timing(15_000).duration_seconds(), 15);
        assert_eq!(timing(2_500).duration_seconds(), 3);
        assert_eq!(timing(10).duration_seconds(), 1);
    }

    #[test]
    fn only_refusals_are_fatal() {
        let status = |code| Status::failure("x", "y").with_code(code);
        for code in [403, 404, 415, 422] {
            assert!(is_fatal(&status(code)), "{code}");
        }
        for code in [409, 429, 500, 503, 504] {
            assert!(!is_fatal(&status(code)), "{code}");
        }
    }
}
