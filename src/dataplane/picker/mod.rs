//! Endpoint picking inside a pool, behind the [`EndpointPicker`] interface the request path
//! calls: `pick` for a request (no side effects, so `explain` may call it too), then, once the
//! request is sent, an [`InFlight`] that reports `started`, each attempt's result and
//! `finished` back to the picker.
//!
//! [`PolicyPicker`] implements the pool's `endpointPicking` policy:
//! - `score`: each endpoint's load from scraped model-server figures and the router's own
//!   requests in flight; `scrape`: the background scrapers that follow the live table;
//! - `prefix`: prompt blocks → the endpoint that last served them; `sessions`: session header
//!   → endpoint; both bounded (`lru`);
//! - `health`: passive ejection after consecutive failures, timed re-admission;
//! - `endpoint`: the per-endpoint state those share, lock-free on the request path.
//!
//! Every policy picks only inside the proxy's subset hint when there is one, skips ejected
//! endpoints (unless all are) and endpoints past the pool's `maxQueueDepth`, and lists up to
//! `fallbacks` further endpoints for Envoy to retry on.

mod endpoint;
mod gauges;
mod health;
mod lru;
mod prefix;
mod score;
mod scrape;
mod sessions;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use rand::Rng;

use super::headers::RequestHeaders;
use crate::api::{EndpointPicking, PassiveHealth, PickPolicy};
use crate::routing::{Headers, ObjectKey, Pool, PoolBackend, RoutingTable, SharedTable};

pub use gauges::EndpointGauges;
pub use health::Attempt;
pub use prefix::{MAX_BLOCKS, block_hashes};
pub use score::{Figures, Load};
pub use scrape::{ScrapeError, ScrapeTarget, parse as parse_metrics, scrape};
pub use sessions::session_key;

use endpoint::{EndpointState, Registry};
use prefix::PrefixIndex;
use scrape::Scrapers;
use sessions::Sessions;

/// What a picker may know about one request.
#[derive(Clone, Copy, Debug, Default)]
pub struct PickRequest<'a> {
    /// The model the request is sent as (prompt blocks are per model).
    pub model: &'a str,
    /// The prompt as the model server reads it, in order: for a chat, each message's role
    /// and text; for a completion, the prompt.
    pub prompt: &'a [&'a str],
    /// Request headers by lower-case name.
    pub headers: Option<&'a RequestHeaders>,
    /// The proxy's subset hint: pick only among these. `Some(&[])` is an empty subset.
    pub subset: Option<&'a [SocketAddr]>,
}

/// The endpoints picked for one request, best first, and what the picker remembers about it
/// once it is sent.
#[derive(Clone, Debug, PartialEq)]
pub struct Pick {
    /// The pool picked in.
    pub pool: ObjectKey,
    /// The chosen endpoint, then the fallbacks Envoy tries on retry, in order.
    pub endpoints: Vec<SocketAddr>,
    /// The pool's passive-health policy, applied to what the response path reports.
    pub health: PassiveHealth,
    /// Prefix blocks and session to remember for the endpoint that serves the request.
    pub affinity: Affinity,
}

impl Pick {
    /// A pick of `endpoints` in `pool` with default health policy and no affinity.
    pub fn new(pool: ObjectKey, endpoints: Vec<SocketAddr>) -> Self {
        Self {
            pool,
            endpoints,
            health: PassiveHealth::default(),
            affinity: Affinity::default(),
        }
    }
}

/// What a served request teaches the affinity maps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Affinity {
    /// Chained hashes of the prompt's blocks (prefix affinity).
    pub blocks: Vec<u64>,
    /// Key of the session header's value (session affinity).
    pub session: Option<u64>,
}

/// Why a pool cannot take a request now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// The pool has no ready endpoint.
    NoEndpoint,
    /// None of the pool's endpoints is in the proxy's subset hint.
    OutsideSubset,
    /// Every eligible endpoint's queue has reached the pool's `maxQueueDepth`.
    Saturated {
        /// The pool's limit.
        max_queue_depth: u32,
    },
}

/// Chooses endpoints of a pool for each request and learns from how requests went.
pub trait EndpointPicker: Send + Sync {
    /// The chosen endpoint first, then up to the pool's `fallbacks` others. No accounting
    /// happens until [`started`](Self::started).
    fn pick(&self, pool: &Pool, request: &PickRequest<'_>) -> Result<Pick, Unavailable>;

    /// The request of `pick` is in flight to `endpoint`: count it there and remember its
    /// affinity for that endpoint.
    fn started(&self, pick: &Pick, endpoint: SocketAddr);

    /// The request of `pick` on `endpoint` is over (response or stream ended).
    fn finished(&self, pick: &Pick, endpoint: SocketAddr);

    /// One attempt at `endpoint` succeeded or failed, for passive health.
    fn attempted(&self, pick: &Pick, endpoint: SocketAddr, attempt: Attempt);
}

/// One routed request from the moment it is sent: tells the picker it started, what the
/// response said, and that it finished — also when it is dropped without a response.
///
/// Only a response says anything about the endpoint's health: every failure of an endpoint
/// (connect error, reset, timeout, 5xx) reaches the proxy's response path, as the upstream's
/// status or the proxy's own 5xx. A stream that ends without one was cancelled downstream (the
/// client went away) or lost with the proxy, and counts neither way: otherwise any client
/// could eject healthy endpoints by hanging up on slow requests.
pub struct InFlight {
    picker: Arc<dyn EndpointPicker>,
    pick: Pick,
    on: SocketAddr,
    responded: bool,
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight")
            .field("pick", &self.pick)
            .field("on", &self.on)
            .field("responded", &self.responded)
            .finish()
    }
}

impl InFlight {
    /// The request of `pick` is sent to its first endpoint; `None` when it has none.
    pub fn start(picker: Arc<dyn EndpointPicker>, pick: Pick) -> Option<Self> {
        let on = *pick.endpoints.first()?;
        picker.started(&pick, on);
        Some(Self {
            picker,
            pick,
            on,
            responded: false,
        })
    }

    /// The endpoint the request is accounted to now.
    pub fn endpoint(&self) -> SocketAddr {
        self.on
    }

    /// Response headers came with `status`, and the proxy reported `served` as the endpoint
    /// that answered (`None`: not reported). With the endpoint-picker protocol the proxy
    /// tries the listed endpoints in order, so every endpoint listed before the served one
    /// failed (connect failure or 5xx, then retry). The request is accounted to the served
    /// endpoint from now on. Only the first call counts.
    pub fn respond(&mut self, status: u16, served: Option<SocketAddr>) {
        if std::mem::replace(&mut self.responded, true) {
            return;
        }
        let answered = match served {
            Some(served) => {
                if let Some(i) = self.pick.endpoints.iter().position(|e| *e == served) {
                    for &failed in &self.pick.endpoints[..i] {
                        self.picker.attempted(&self.pick, failed, Attempt::Failed);
                    }
                }
                served
            }
            None => self.on,
        };
        let attempt = if status >= 500 {
            Attempt::Failed
        } else {
            Attempt::Succeeded
        };
        self.picker.attempted(&self.pick, answered, attempt);
        if answered != self.on {
            self.picker.finished(&self.pick, self.on);
            self.picker.started(&self.pick, answered);
            self.on = answered;
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.picker.finished(&self.pick, self.on);
    }
}

/// The pools' own policies over shared per-endpoint state. Call
/// [`maintain`](Self::maintain) once in the background so metrics are scraped and state
/// follows the live table.
#[derive(Default)]
pub struct PolicyPicker {
    registry: Arc<Registry>,
    pools: RwLock<HashMap<ObjectKey, Arc<PoolState>>>,
}

/// Per-pool picking state, rebuilt when the pool's endpoints change (affinity maps and the
/// rotation carry over).
struct PoolState {
    addrs: Vec<SocketAddr>,
    states: Vec<Arc<EndpointState>>,
    next: Arc<AtomicUsize>,
    prefix: Arc<Mutex<PrefixIndex>>,
    sessions: Arc<Mutex<Sessions>>,
}

/// An endpoint that may take the request.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    /// Index in the pool's endpoints.
    index: usize,
    load: Load,
    ejected: bool,
    /// When the router last sent it a request (sequence number; 0: never).
    last_sent: u64,
}

/// How an endpoint looks to the picker now, for tests, benchmarks and debugging.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EndpointView {
    /// Requests this router has in flight to it.
    pub in_flight: u32,
    /// Its load under the given weights.
    pub load: Load,
    /// Whether it is ejected.
    pub ejected: bool,
    /// Scrapes of its model server that gave no figures.
    pub scrape_failures: u64,
}

impl PolicyPicker {
    /// A picker with no state yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps the picker in step with the live table for as long as it runs (spawn it once,
    /// for the life of the process): forgets endpoints and pools that left the table, and
    /// scrapes the metrics of every endpoint of every pool with `metrics` at its interval.
    /// Aborting it stops the scrapers.
    pub async fn maintain(self: Arc<Self>, table: SharedTable) {
        let mut generation = table.subscribe();
        let mut scrapers = Scrapers::default();
        loop {
            generation.borrow_and_update();
            if let Some(current) = table.load() {
                self.follow(&current);
                scrapers.follow(&current, &self.registry);
                tracing::debug!(
                    generation = current.generation,
                    endpoints = self.registry.len(),
                    scraped = scrapers.len(),
                    "endpoint picking follows the routing table"
                );
            }
            if generation.changed().await.is_err() {
                return;
            }
        }
    }

    /// Forgets what the picker knew about endpoints and pools that are not in `table`.
    pub fn follow(&self, table: &RoutingTable) {
        let live: HashSet<SocketAddr> = table
            .pools
            .values()
            .filter_map(|p| match &p.backend {
                PoolBackend::Endpoints(e) => Some(e.iter().copied()),
                PoolBackend::Gateway { .. } => None,
            })
            .flatten()
            .collect();
        self.registry.follow(&live);
        // A pool whose endpoints changed is rebuilt on its next pick, keeping its affinity
        // maps; a pool that left the table is forgotten with them.
        let mut pools = self.pools.write().unwrap_or_else(|e| e.into_inner());
        pools.retain(|key, _| table.pools.contains_key(key));
    }

    /// Prompt blocks and sessions the affinity maps of pool `key` hold, once it was picked
    /// from; each map is bounded by its pool's `maxBlocks` / `maxSessions`.
    pub fn affinity_sizes(&self, key: &ObjectKey) -> Option<(usize, usize)> {
        let pool = self.known_pool(key)?;
        let blocks = pool.prefix.lock().unwrap_or_else(|e| e.into_inner()).len();
        let sessions = pool
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len();
        Some((blocks, sessions))
    }

    /// How `addr` looks now, its load weighed as `picking` says.
    pub fn view(&self, addr: SocketAddr, picking: &EndpointPicking) -> Option<EndpointView> {
        let state = self.registry.get(addr)?;
        let now = self.registry.now();
        Some(EndpointView {
            in_flight: state.in_flight(),
            load: state.load(now, &picking.load),
            ejected: state.health.is_ejected(now),
            scrape_failures: state.scrape_failures(),
        })
    }

    /// Stores scraped figures for `addr` as if a scrape had just read them, valid for
    /// `valid_for_ms` (tests and benchmarks).
    pub fn set_figures(&self, addr: SocketAddr, figures: Figures, valid_for_ms: u64) {
        let state = self.registry.states(&[addr]).remove(0);
        state
            .scraped
            .store(figures, state.started(), self.registry.now(), valid_for_ms);
    }

    fn pool_state(&self, pool: &Pool, addrs: &[SocketAddr]) -> Arc<PoolState> {
        {
            let pools = self.pools.read().unwrap_or_else(|e| e.into_inner());
            if let Some(state) = pools.get(&pool.key)
                && state.addrs == addrs
            {
                return state.clone();
            }
        }
        let mut pools = self.pools.write().unwrap_or_else(|e| e.into_inner());
        if let Some(state) = pools.get(&pool.key)
            && state.addrs == addrs
        {
            return state.clone();
        }
        let old = pools.get(&pool.key);
        let state = Arc::new(PoolState {
            addrs: addrs.to_vec(),
            states: self.registry.states(addrs),
            next: old.map_or_else(Arc::default, |o| o.next.clone()),
            prefix: old.map_or_else(
                || {
                    Arc::new(Mutex::new(PrefixIndex::new(
                        pool.picking.prefix_affinity.max_blocks as usize,
                    )))
                },
                |o| o.prefix.clone(),
            ),
            sessions: old.map_or_else(
                || {
                    Arc::new(Mutex::new(Sessions::new(
                        pool.picking.session_affinity.max_sessions as usize,
                    )))
                },
                |o| o.sessions.clone(),
            ),
        });
        pools.insert(pool.key.clone(), state.clone());
        state
    }

    fn known_pool(&self, key: &ObjectKey) -> Option<Arc<PoolState>> {
        self.pools
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }
}

/// Whether `addr` is in the subset (a set for long lists, a scan for short ones).
enum Subset<'a> {
    All,
    Few(&'a [SocketAddr]),
    Many(HashSet<SocketAddr>),
}

impl<'a> Subset<'a> {
    fn new(hint: Option<&'a [SocketAddr]>) -> Self {
        match hint {
            None => Subset::All,
            Some(list) if list.len() <= 16 => Subset::Few(list),
            Some(list) => Subset::Many(list.iter().copied().collect()),
        }
    }

    fn contains(&self, addr: &SocketAddr) -> bool {
        match self {
            Subset::All => true,
            Subset::Few(list) => list.contains(addr),
            Subset::Many(set) => set.contains(addr),
        }
    }
}

impl EndpointPicker for PolicyPicker {
    fn pick(&self, pool: &Pool, request: &PickRequest<'_>) -> Result<Pick, Unavailable> {
        let PoolBackend::Endpoints(addrs) = &pool.backend else {
            return Err(Unavailable::NoEndpoint);
        };
        if addrs.is_empty() {
            return Err(Unavailable::NoEndpoint);
        }
        let state = self.pool_state(pool, addrs);
        let picking = &pool.picking;
        let now = self.registry.now();
        let subset = Subset::new(request.subset);
        let mut candidates: Vec<Candidate> = state
            .states
            .iter()
            .enumerate()
            .filter(|(i, _)| subset.contains(&addrs[*i]))
            .map(|(index, s)| Candidate {
                index,
                load: s.load(now, &picking.load),
                ejected: s.health.is_ejected(now),
                last_sent: s.last_sent(),
            })
            .collect();
        if candidates.is_empty() {
            return Err(Unavailable::OutsideSubset);
        }
        if candidates.iter().any(|c| !c.ejected) {
            candidates.retain(|c| !c.ejected);
        }
        if let Some(max_queue_depth) = picking.max_queue_depth {
            candidates.retain(|c| c.load.queue < max_queue_depth);
            if candidates.is_empty() {
                return Err(Unavailable::Saturated { max_queue_depth });
            }
        }
        let wanted = candidates.len().min(1 + usize::from(picking.fallbacks));
        let mut affinity = Affinity::default();
        let order: Vec<usize> = match picking.policy {
            PickPolicy::RoundRobin => {
                let start = state.next.fetch_add(1, Ordering::Relaxed) % addrs.len();
                let first = candidates
                    .iter()
                    .position(|c| c.index >= start)
                    .unwrap_or(0);
                ring(first, candidates.len(), wanted)
            }
            PickPolicy::Random => {
                let first = rand::rng().random_range(0..candidates.len());
                ring(first, candidates.len(), wanted)
            }
            PickPolicy::LoadAware => by_load(&candidates, None, wanted),
            PickPolicy::PrefixAffinity => {
                let mut pieces = Vec::with_capacity(request.prompt.len() + 1);
                pieces.push(request.model);
                pieces.extend_from_slice(request.prompt);
                affinity.blocks =
                    block_hashes(&pieces, picking.prefix_affinity.block_size as usize);
                let matches = if affinity.blocks.is_empty() {
                    Vec::new()
                } else {
                    let mut index = state.prefix.lock().unwrap_or_else(|e| e.into_inner());
                    index.set_capacity(picking.prefix_affinity.max_blocks as usize);
                    index.matches(&affinity.blocks)
                };
                let least = by_load(&candidates, None, 1)[0];
                let limit = candidates[least].load.score + picking.prefix_affinity.load_tolerance;
                let affine = matches.iter().find_map(|(addr, _)| {
                    candidates
                        .iter()
                        .position(|c| addrs[c.index] == *addr && c.load.score <= limit)
                });
                by_load(&candidates, Some(affine.unwrap_or(least)), wanted)
            }
            PickPolicy::SessionAffinity => {
                let header = &picking.session_affinity.header;
                let value = request.headers.and_then(|h| h.get(header));
                affinity.session = value.filter(|v| !v.is_empty()).map(session_key);
                let bound = affinity.session.and_then(|key| {
                    let mut sessions = state.sessions.lock().unwrap_or_else(|e| e.into_inner());
                    sessions.set_capacity(picking.session_affinity.max_sessions as usize);
                    sessions.endpoint(key)
                });
                let first =
                    bound.and_then(|addr| candidates.iter().position(|c| addrs[c.index] == addr));
                by_load(&candidates, first, wanted)
            }
        };
        Ok(Pick {
            pool: pool.key.clone(),
            endpoints: order.iter().map(|&i| addrs[candidates[i].index]).collect(),
            health: picking.health.clone(),
            affinity,
        })
    }

    fn started(&self, pick: &Pick, endpoint: SocketAddr) {
        if let Some(state) = self.registry.get(endpoint) {
            state.begin(self.registry.next_sequence());
        }
        let affinity = &pick.affinity;
        if affinity.blocks.is_empty() && affinity.session.is_none() {
            return;
        }
        let Some(pool) = self.known_pool(&pick.pool) else {
            return;
        };
        if !affinity.blocks.is_empty() {
            let mut index = pool.prefix.lock().unwrap_or_else(|e| e.into_inner());
            index.record(&affinity.blocks, endpoint);
        }
        if let Some(session) = affinity.session {
            let mut sessions = pool.sessions.lock().unwrap_or_else(|e| e.into_inner());
            sessions.bind(session, endpoint);
        }
    }

    fn finished(&self, _pick: &Pick, endpoint: SocketAddr) {
        if let Some(state) = self.registry.get(endpoint) {
            state.end();
        }
    }

    fn attempted(&self, pick: &Pick, endpoint: SocketAddr, attempt: Attempt) {
        let Some(state) = self.registry.get(endpoint) else {
            return;
        };
        if state
            .health
            .record(attempt, self.registry.now(), &pick.health)
        {
            tracing::warn!(
                %endpoint, pool = %pick.pool,
                failures = pick.health.consecutive_failures,
                "endpoint ejected after consecutive failures; re-admitted after its ejection time"
            );
        }
    }
}

/// `count` positions of a ring of `len` starting at `first`.
fn ring(first: usize, len: usize, count: usize) -> Vec<usize> {
    (0..count).map(|i| (first + i) % len).collect()
}

/// `count` candidates: `first` if given, else the least loaded, then the least loaded of
/// the rest. Among equal loads the one this router sent a request to least recently wins,
/// so idle endpoints take turns.
fn by_load(candidates: &[Candidate], first: Option<usize>, count: usize) -> Vec<usize> {
    let better = |a: &Candidate, b: &Candidate| {
        a.load.score < b.load.score || (a.load.score == b.load.score && a.last_sent < b.last_sent)
    };
    let mut order: Vec<usize> = Vec::with_capacity(count);
    if let Some(first) = first {
        order.push(first);
    }
    while order.len() < count {
        let mut best: Option<usize> = None;
        for (i, c) in candidates.iter().enumerate() {
            if order.contains(&i) {
                continue;
            }
            if best.is_none_or(|b| better(c, &candidates[b])) {
                best = Some(i);
            }
        }
        match best {
            Some(b) => order.push(b),
            None => break,
        }
    }
    order
}

#[cfg(test)]
mod tests;
