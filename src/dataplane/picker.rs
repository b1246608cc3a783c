//! Endpoint picking inside a pool, behind a small interface so load-aware policies can replace
//! round-robin without touching the request path.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use rand::Rng;

use crate::api::PickPolicy;
use crate::routing::{ObjectKey, Pool, PoolBackend};

/// Chooses endpoints of a pool for one request.
pub trait EndpointPicker: Send + Sync {
    /// The chosen endpoint first, then up to `pool.fallbacks` others for Envoy to try on
    /// retry; empty when the pool has no endpoint.
    fn pick(&self, pool: &Pool) -> Vec<SocketAddr>;
}

/// The pool's own policy: round-robin or random, with distinct fallbacks after the pick.
#[derive(Default)]
pub struct PolicyPicker {
    next: Mutex<HashMap<ObjectKey, usize>>,
}

impl EndpointPicker for PolicyPicker {
    fn pick(&self, pool: &Pool) -> Vec<SocketAddr> {
        let PoolBackend::Endpoints(endpoints) = &pool.backend else {
            return Vec::new();
        };
        if endpoints.is_empty() {
            return Vec::new();
        }
        let start = match pool.picking {
            PickPolicy::RoundRobin => {
                let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
                let slot = next.entry(pool.key.clone()).or_default();
                let start = *slot % endpoints.len();
                *slot = start + 1;
                start
            }
            PickPolicy::Random => rand::rng().random_range(0..endpoints.len()),
        };
        let count = endpoints.len().min(1 + usize::from(pool.fallbacks));
        (0..count)
            .map(|i| endpoints[(start + i) % endpoints.len()])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: u16, picking: PickPolicy, fallbacks: u8) -> Pool {
        Pool {
            key: ObjectKey::new("default", "p"),
            models: Default::default(),
            backend: PoolBackend::Endpoints(
                (0..n)
                    .map(|i| SocketAddr::from(([10, 0, 0, 1], 8000 + i)))
                    .collect(),
            ),
            picking,
            fallbacks,
            labels: Default::default(),
        }
    }

    #[test]
    fn round_robin_cycles_with_distinct_fallbacks() {
        let picker = PolicyPicker::default();
        let p = pool(3, PickPolicy::RoundRobin, 1);
        let firsts: Vec<u16> = (0..6).map(|_| picker.pick(&p)[0].port()).collect();
        assert_eq!(firsts, [8000, 8001, 8002, 8000, 8001, 8002]);
        let picked = picker.pick(&p);
        assert_eq!(picked.len(), 2);
        assert_ne!(picked[0], picked[1]);
    }

    #[test]
    fn fallbacks_never_exceed_the_endpoints() {
        let picker = PolicyPicker::default();
        assert_eq!(picker.pick(&pool(1, PickPolicy::Random, 8)).len(), 1);
        assert!(picker.pick(&pool(0, PickPolicy::RoundRobin, 1)).is_empty());
    }
}
