//! Measurement and statistics: the configurations, one configuration's phases in a round
//! (warm-up, open loop at the main rate, open loop at the low rate, closed loop), and the
//! percentiles and medians read from them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::runtime::Runtime;

use crate::Settings;
use crate::backend::BackendSeen;
use crate::cpu::CpuOf;
use crate::load::{Samples, closed_loop, open_loop};

/// What a configuration puts between the load generator and the backend.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Direct,
    EnvoyAlone,
    Floor,
    Router,
    /// The same manifests run by `HOP_BASELINE_BIN`, to compare builds in one run.
    Baseline,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Direct,
        Kind::EnvoyAlone,
        Kind::Floor,
        Kind::Router,
        Kind::Baseline,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Kind::Direct => "backend direct",
            Kind::EnvoyAlone => "envoy alone",
            Kind::Floor => "envoy + floor ext_proc",
            Kind::Router => "envoy + router",
            Kind::Baseline => "envoy + router (baseline)",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// One configuration: where its requests go, what they are, whose CPU time it reports.
pub struct Config {
    pub kind: Kind,
    pub addr: SocketAddr,
    pub request: Arc<[u8]>,
    pub envoy_cpu: CpuOf,
    pub extproc_cpu: CpuOf,
    /// Whether the backend should see the model rewritten.
    pub rewrites: bool,
}

/// What one configuration's phases recorded in one round.
#[derive(Default)]
pub struct Measured {
    pub open: Samples,
    /// The open loop at the low rate.
    pub low: Samples,
    pub closed: Samples,
    pub closed_rps: f64,
    pub envoy_us: Option<f64>,
    pub extproc_us: Option<f64>,
}

/// What one configuration measured in one round, as printed.
#[derive(Clone, Copy)]
pub struct Stat {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    /// Open-loop requests that failed or were never sent.
    pub failed: usize,
    pub rps: f64,
    pub closed_p50: f64,
    pub closed_p99: f64,
    pub envoy_us: Option<f64>,
    pub extproc_us: Option<f64>,
    /// The open loop at the low rate.
    pub low_p50: f64,
    pub low_p90: f64,
    pub low_p99: f64,
    pub low_failed: usize,
}

impl Stat {
    pub fn of(m: &Measured) -> Self {
        let open = Dist::new(m.open.ns.clone());
        let closed = Dist::new(m.closed.ns.clone());
        let low = Dist::new(m.low.ns.clone());
        Self {
            p50: open.ms(0.50),
            p90: open.ms(0.90),
            p99: open.ms(0.99),
            max: open.ms(1.0),
            failed: m.open.errors + m.open.dropped,
            rps: m.closed_rps,
            closed_p50: closed.ms(0.50),
            closed_p99: closed.ms(0.99),
            envoy_us: m.envoy_us,
            extproc_us: m.extproc_us,
            low_p50: low.ms(0.50),
            low_p90: low.ms(0.90),
            low_p99: low.ms(0.99),
            low_failed: m.low.errors + m.low.dropped,
        }
    }
}

/// The median (mean of the middle two for an even count); NaN when empty.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.retain(|v| !v.is_nan());
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// One round of `config`: a warm-up (checking the backend saw the bodies it should), then the
/// open loop at the main rate, at the low rate, and the closed loop with CPU read around it.
pub fn measure(
    client: &Runtime,
    config: &Config,
    seen: &BackendSeen,
    settings: &Settings,
) -> Result<Measured, String> {
    let before = (
        seen.auto.load(Ordering::Relaxed),
        seen.rewritten.load(Ordering::Relaxed),
    );
    let (warm, _) = client.block_on(closed_loop(
        config.addr,
        config.request.clone(),
        settings.conns,
        settings.warmup,
        Duration::from_secs(30),
    ));
    if warm.ns.len() < settings.warmup {
        return Err(format!(
            "{}: warm-up: {} of {} requests failed (first: {})",
            config.kind.label(),
            warm.errors + warm.dropped,
            settings.warmup,
            warm.first_error.unwrap_or_default()
        ));
    }
    let auto = seen.auto.load(Ordering::Relaxed) - before.0;
    let rewritten = seen.rewritten.load(Ordering::Relaxed) - before.1;
    let expected = settings.warmup as u64;
    let (want_auto, want_rewritten) = if config.rewrites {
        (0, expected)
    } else {
        (expected, 0)
    };
    if (auto, rewritten) != (want_auto, want_rewritten) {
        return Err(format!(
            "{}: the backend saw {auto} bodies asking for `auto` and {rewritten} rewritten \
             during warm-up; expected {want_auto} and {want_rewritten}",
            config.kind.label()
        ));
    }

    std::thread::sleep(Duration::from_millis(200));
    let open = client.block_on(open_loop(
        config.addr,
        config.request.clone(),
        settings.rate,
        settings.secs,
        settings.open_conns,
    ));

    // The same open loop at a rate one replica more often sees, where idle wake-ups dominate.
    std::thread::sleep(Duration::from_millis(200));
    let low = client.block_on(open_loop(
        config.addr,
        config.request.clone(),
        settings.low_rate,
        settings.low_secs,
        settings.open_conns,
    ));

    std::thread::sleep(Duration::from_millis(200));
    let cpu_before = (config.envoy_cpu.read(), config.extproc_cpu.read());
    let (closed, took) = client.block_on(closed_loop(
        config.addr,
        config.request.clone(),
        settings.conns,
        settings.requests,
        Duration::from_secs(60),
    ));
    let cpu_after = (config.envoy_cpu.read(), config.extproc_cpu.read());
    let done = closed.ns.len();
    let per_request = |before: Option<u64>, after: Option<u64>| match (before, after) {
        (Some(b), Some(a)) if done > 0 => Some(a.saturating_sub(b) as f64 / 1e3 / done as f64),
        _ => None,
    };
    Ok(Measured {
        envoy_us: per_request(cpu_before.0, cpu_after.0),
        extproc_us: per_request(cpu_before.1, cpu_after.1),
        closed_rps: done as f64 / took.as_secs_f64(),
        open,
        low,
        closed,
    })
}

/// Sorted latencies in ms, with percentiles.
pub struct Dist(Vec<u64>);

impl Dist {
    pub fn new(mut ns: Vec<u64>) -> Self {
        ns.sort_unstable();
        Self(ns)
    }

    /// The `p`-quantile in ms (nearest rank); NaN when empty.
    pub fn ms(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let rank = ((p * self.0.len() as f64).ceil() as usize).clamp(1, self.0.len());
        self.0[rank - 1] as f64 / 1e6
    }
}
