//! What the router knows about one endpoint: its requests in flight, its last scraped load and
//! its health; and the registry of every endpoint the live table names, shared by the picker
//! (reads on every request) and the scrapers (write in the background).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use crate::api::LoadScore;

use super::health::Health;
use super::score::{Load, Scraped, load};

/// One endpoint's live state; every field is lock-free.
#[derive(Debug)]
pub struct EndpointState {
    /// Requests this router sent it that have not finished.
    in_flight: AtomicU32,
    /// Requests this router ever sent it.
    started: AtomicU64,
    /// The registry's sequence number of the last request sent to it (0: none yet).
    last_sent: AtomicU64,
    /// The last scrape of its model server.
    pub scraped: Scraped,
    /// Scrapes of its model server that gave no figures (unreachable, slow, not 200, garbage).
    scrape_failures: AtomicU64,
    /// Passive health.
    pub health: Health,
}

impl EndpointState {
    fn new() -> Self {
        Self {
            in_flight: AtomicU32::new(0),
            started: AtomicU64::new(0),
            last_sent: AtomicU64::new(0),
            scraped: Scraped::default(),
            scrape_failures: AtomicU64::new(0),
            health: Health::default(),
        }
    }

    /// Its load at `now`.
    pub fn load(&self, now: u64, weights: &LoadScore) -> Load {
        load(
            &self.scraped,
            self.in_flight.load(Ordering::Relaxed),
            self.started.load(Ordering::Relaxed),
            now,
            weights,
        )
    }

    /// Requests this router ever sent it.
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// A scrape of its model server gave no figures.
    pub fn scrape_failed(&self) {
        self.scrape_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Scrapes of its model server that gave no figures.
    pub fn scrape_failures(&self) -> u64 {
        self.scrape_failures.load(Ordering::Relaxed)
    }

    /// Requests in flight from this router.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// When a request was last sent to it, as a sequence number (0: never).
    pub fn last_sent(&self) -> u64 {
        self.last_sent.load(Ordering::Relaxed)
    }

    /// Request number `sequence` was sent to it.
    pub fn begin(&self, sequence: u64) {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.last_sent.store(sequence, Ordering::Relaxed);
    }

    /// A request it had ended (never below zero).
    pub fn end(&self) {
        let _ = self
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }
}

/// Every endpoint the router knows, by address, and the clock their times are read on.
#[derive(Debug)]
pub struct Registry {
    epoch: Instant,
    /// Numbers the requests sent, for "least recently sent to".
    sequence: AtomicU64,
    endpoints: RwLock<HashMap<SocketAddr, Arc<EndpointState>>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            sequence: AtomicU64::new(0),
            endpoints: RwLock::default(),
        }
    }
}

impl Registry {
    /// Milliseconds since the registry was made, plus one (so 0 can mean "never").
    pub fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    /// The next request's sequence number (from 1).
    pub fn next_sequence(&self) -> u64 {
        self.sequence.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The state of `addr`, if it is known.
    pub fn get(&self, addr: SocketAddr) -> Option<Arc<EndpointState>> {
        self.endpoints
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&addr)
            .cloned()
    }

    /// The states of `addrs`, in order, adding those not known yet.
    pub fn states(&self, addrs: &[SocketAddr]) -> Vec<Arc<EndpointState>> {
        {
            let known = self.endpoints.read().unwrap_or_else(|e| e.into_inner());
            if let Some(all) = addrs
                .iter()
                .map(|a| known.get(a).cloned())
                .collect::<Option<Vec<_>>>()
            {
                return all;
            }
        }
        let mut known = self.endpoints.write().unwrap_or_else(|e| e.into_inner());
        addrs
            .iter()
            .map(|&a| {
                known
                    .entry(a)
                    .or_insert_with(|| Arc::new(EndpointState::new()))
                    .clone()
            })
            .collect()
    }

    /// Keeps exactly the endpoints in `live` (state of those already known is kept).
    pub fn follow(&self, live: &HashSet<SocketAddr>) {
        let mut known = self.endpoints.write().unwrap_or_else(|e| e.into_inner());
        known.retain(|a, _| live.contains(a));
        for &a in live {
            known
                .entry(a)
                .or_insert_with(|| Arc::new(EndpointState::new()));
        }
    }

    /// Endpoints known.
    pub fn len(&self) -> usize {
        self.endpoints
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_never_goes_below_zero_and_the_registry_follows_the_table() {
        let a = SocketAddr::from(([10, 0, 0, 1], 1));
        let b = SocketAddr::from(([10, 0, 0, 2], 1));
        let r = Registry::default();
        let s = r.states(&[a, b]);
        s[0].begin(r.next_sequence());
        assert_eq!(s[0].last_sent(), 1);
        s[0].end();
        s[0].end();
        assert_eq!((s[0].in_flight(), s[0].started()), (0, 1));
        assert!(
            Arc::ptr_eq(&r.states(&[a])[0], &s[0]),
            "known state is kept"
        );
        r.follow(&HashSet::from([b]));
        assert!(r.get(a).is_none());
        assert!(Arc::ptr_eq(&r.get(b).unwrap(), &s[1]));
        assert_eq!(r.len(), 1);
        assert!(r.now() >= 1);
    }
}
