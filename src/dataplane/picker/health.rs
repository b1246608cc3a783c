//! Passive health of one endpoint: consecutive failures seen on the response path eject it
//! for a while; the ejection ends by itself (timed re-admission) and grows for an endpoint
//! that keeps failing.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::api::PassiveHealth;

/// Repeated ejections last at most this many times the configured time.
const MAX_EJECTION_MULTIPLIER: u32 = 10;

/// What the response path reported for one attempt at an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// The endpoint answered with a status below 500.
    Succeeded,
    /// It answered 5xx, could not be connected to, or no answer came at all.
    Failed,
}

/// Health counters of one endpoint; lock-free, shared by every pool that lists it.
#[derive(Debug, Default)]
pub struct Health {
    consecutive_failures: AtomicU32,
    /// Milliseconds on the picker's clock until which the endpoint is ejected (0: never was).
    ejected_until: AtomicU64,
    /// Ejections since the last success, for the growing ejection time.
    ejections: AtomicU32,
}

impl Health {
    /// Whether the endpoint is ejected at `now` (milliseconds on the picker's clock).
    pub fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now
    }

    /// Records one attempt's result; true when this failure ejected the endpoint.
    pub fn record(&self, attempt: Attempt, now: u64, policy: &PassiveHealth) -> bool {
        match attempt {
            Attempt::Succeeded => {
                self.consecutive_failures.store(0, Ordering::Relaxed);
                self.ejections.store(0, Ordering::Relaxed);
                false
            }
            // Requests already under way when it was ejected tell nothing new.
            Attempt::Failed if self.is_ejected(now) => false,
            Attempt::Failed => {
                let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
                if failures < policy.consecutive_failures.max(1) {
                    return false;
                }
                self.consecutive_failures.store(0, Ordering::Relaxed);
                let times = (self.ejections.fetch_add(1, Ordering::Relaxed) + 1)
                    .min(MAX_EJECTION_MULTIPLIER);
                let duration = u64::from(policy.ejection_seconds.max(1)) * 1000 * u64::from(times);
                self.ejected_until.store(now + duration, Ordering::Relaxed);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(failures: u32, seconds: u32) -> PassiveHealth {
        PassiveHealth {
            consecutive_failures: failures,
            ejection_seconds: seconds,
        }
    }

    #[test]
    fn ejected_after_consecutive_failures_and_readmitted_in_time() {
        let h = Health::default();
        let p = policy(3, 2);
        assert!(!h.record(Attempt::Failed, 10, &p));
        assert!(!h.record(Attempt::Failed, 11, &p));
        assert!(!h.is_ejected(11));
        assert!(
            h.record(Attempt::Failed, 12, &p),
            "the third failure ejects"
        );
        assert!(h.is_ejected(12));
        assert!(h.is_ejected(2011));
        assert!(!h.is_ejected(2012), "re-admitted after 2 s");
    }

    #[test]
    fn a_success_resets_the_count() {
        let h = Health::default();
        let p = policy(2, 1);
        h.record(Attempt::Failed, 1, &p);
        h.record(Attempt::Succeeded, 2, &p);
        assert!(!h.record(Attempt::Failed, 3, &p));
        assert!(!h.is_ejected(3));
    }

    #[test]
    fn failures_while_ejected_do_not_count_and_repeats_eject_longer() {
        let h = Health::default();
        let p = policy(1, 1);
        assert!(h.record(Attempt::Failed, 0, &p));
        assert!(!h.record(Attempt::Failed, 500, &p), "already ejected");
        assert!(!h.is_ejected(1000));
        assert!(h.record(Attempt::Failed, 1000, &p));
        assert!(
            h.is_ejected(2999),
            "the second ejection lasts twice as long"
        );
        assert!(!h.is_ejected(3000));
        h.record(Attempt::Succeeded, 3000, &p);
        assert!(h.record(Attempt::Failed, 3001, &p));
        assert!(!h.is_ejected(4001), "a success resets the growth");
    }
}
