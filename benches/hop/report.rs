//! The report: each round's rows, then the medians over the rounds and the verdicts against
//! PERFORMANCE.md's targets.

use std::path::Path;
use std::time::Instant;

use crate::Settings;
use crate::measure::{Kind, Measured, Stat, median};
use crate::workload::{CHAT_PATH, PROMPT};

/// The targets, as ratios to the do-nothing floor in the same run (PERFORMANCE.md, tightened
/// by issue #13).
mod target {
    /// Added p50 over Envoy alone at the main rate, at most.
    pub const ADDED_P50: f64 = 1.2;
    /// Added p99 over Envoy alone at the main rate, at most.
    pub const ADDED_P99: f64 = 1.5;
    /// Closed-loop throughput, at least.
    pub const THROUGHPUT: f64 = 0.9;
    /// ext_proc CPU per request in the closed loop, at most.
    pub const CPU: f64 = 1.15;
    /// Added p50 over the backend direct at the low rate, at most.
    pub const LOW_ADDED_P50: f64 = 1.3;
}

fn fmt_opt(v: Option<f64>, width: usize) -> String {
    match v {
        Some(v) => format!("{v:>width$.1}"),
        None => format!("{:>width$}", "-"),
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// A round's title, and the names of the columns `print_measured` fills.
pub fn print_round_header(round: usize, settings: &Settings) {
    println!();
    println!("round {} (load average {})", round + 1, loadavg());
    println!(
        "  {:<26} {:-^43} | {:-^25} | {:-^27} | {:-^26}",
        "",
        format!(" open loop at {} req/s ", settings.rate),
        format!(" at {} req/s ", settings.low_rate),
        " closed loop ",
        " CPU "
    );
    println!(
        "  {:<26} {:>8} {:>8} {:>8} {:>8} {:>7} | {:>8} {:>8} {:>7} | {:>9} {:>8} {:>8} | {:>12} {:>13}",
        "configuration",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "errors",
        "p50 ms",
        "p99 ms",
        "errors",
        "req/s",
        "p50 ms",
        "p99 ms",
        "envoy us/req",
        "ext_proc us/r"
    );
}

/// One configuration's row in a round, and its failures if any.
pub fn print_measured(kind: Kind, stat: &Stat, m: &Measured) {
    println!(
        "  {:<26} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>7} | {:>8.3} {:>8.3} {:>7} | {:>9.0} {:>8.3} {:>8.3} | {} {}",
        kind.label(),
        stat.p50,
        stat.p90,
        stat.p99,
        stat.max,
        stat.failed,
        stat.low_p50,
        stat.low_p99,
        stat.low_failed,
        stat.rps,
        stat.closed_p50,
        stat.closed_p99,
        fmt_opt(stat.envoy_us, 12),
        fmt_opt(stat.extproc_us, 13),
    );
    for (phase, s) in [
        ("open loop", &m.open),
        ("low-rate open loop", &m.low),
        ("closed loop", &m.closed),
    ] {
        if s.errors + s.dropped > 0 {
            println!(
                "    ! {phase}: {} failed, {} not sent in time (first failure: {})",
                s.errors,
                s.dropped,
                s.first_error.as_deref().unwrap_or("-")
            );
        }
    }
}

/// `router_added / floor_added` and whether it meets `limit`, in words.
pub fn latency_verdict(router_added: f64, floor_added: f64, limit: f64) -> String {
    if floor_added.is_nan() || floor_added <= 0.0 {
        return "not measurable: the floor added nothing at this percentile (noise)".into();
    }
    let ratio = router_added / floor_added;
    format!(
        "{ratio:.2}x (target <= {limit:.2}x): {}",
        met(ratio <= limit)
    )
}

fn met(within: bool) -> &'static str {
    if within {
        "within target"
    } else {
        "MISSES target"
    }
}

/// What the run measures and on what, before the first round.
pub fn preamble(
    settings: &Settings,
    envoy_version: &str,
    router_bin: &Path,
    baseline_bin: Option<&Path>,
    body_len: usize,
) {
    println!(
        "hop: the router's data-plane hop through real Envoy (prints numbers, asserts nothing)"
    );
    println!(
        "  machine: {} CPUs, load average {} at start",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );
    println!(
        "  envoy {envoy_version} (--concurrency 1, FULL_DUPLEX_STREAMED template), router {}",
        router_bin.display()
    );
    if let Some(bin) = baseline_bin {
        println!("  baseline router {}", bin.display());
    }
    println!(
        "  request: POST {CHAT_PATH}, {} B body, {}-word prompt, model \"auto\"; backend in-process (axum, 1 thread)",
        body_len,
        PROMPT.split_whitespace().count()
    );
    println!(
        "  open loop: {} req/s for {} s over {} connections, latency from the intended send time",
        settings.rate, settings.secs, settings.open_conns
    );
    println!(
        "  low-rate open loop: {} req/s for {} s over the same connections, timed the same way",
        settings.low_rate, settings.low_secs
    );
    println!(
        "  closed loop: {} connections, {} requests; CPU per request from /proc schedstat",
        settings.conns, settings.requests
    );
    println!(
        "  {} rounds, every other one in reverse order",
        settings.rounds
    );
}

/// One configuration's medians over the rounds: one noisy round (a neighbour's compile) moves
/// them least.
#[derive(Clone, Copy)]
struct Medians {
    p50: f64,
    p90: f64,
    p99: f64,
    low_p50: f64,
    low_p90: f64,
    low_p99: f64,
    rps: f64,
    envoy_us: Option<f64>,
    extproc_us: Option<f64>,
}

impl Medians {
    fn of(rounds: &[Stat]) -> Self {
        let med = |f: fn(&Stat) -> f64| median(rounds.iter().map(f).collect());
        let med_opt = |f: fn(&Stat) -> Option<f64>| {
            let values: Vec<f64> = rounds.iter().filter_map(f).collect();
            (!values.is_empty()).then(|| median(values))
        };
        Self {
            p50: med(|s| s.p50),
            p90: med(|s| s.p90),
            p99: med(|s| s.p99),
            low_p50: med(|s| s.low_p50),
            low_p90: med(|s| s.low_p90),
            low_p99: med(|s| s.low_p99),
            rps: med(|s| s.rps),
            envoy_us: med_opt(|s| s.envoy_us),
            extproc_us: med_opt(|s| s.extproc_us),
        }
    }

    /// Added (p50, p99) over `base` at the main rate.
    fn added(&self, base: &Medians) -> (f64, f64) {
        (self.p50 - base.p50, self.p99 - base.p99)
    }

    /// Added (p50, p99) over `base` at the low rate.
    fn low_added(&self, base: &Medians) -> (f64, f64) {
        (self.low_p50 - base.low_p50, self.low_p99 - base.low_p99)
    }
}

/// The medians over the rounds, the targets' verdicts and how busy the machine was.
pub fn summary(stats: &[Vec<Stat>], settings: &Settings, started: Instant) {
    let present: Vec<Kind> = Kind::ALL
        .into_iter()
        .filter(|kind| !stats[kind.index()].is_empty())
        .collect();
    let of = |kind: Kind| Medians::of(&stats[kind.index()]);
    let (direct, alone, floor, router) = (
        of(Kind::Direct),
        of(Kind::EnvoyAlone),
        of(Kind::Floor),
        of(Kind::Router),
    );
    let baseline = present
        .contains(&Kind::Baseline)
        .then(|| of(Kind::Baseline));
    // "p50/p99" added over `base`, or "-" where `base` is this configuration or one after it.
    let show = |added: (f64, f64), shown: bool| {
        if shown {
            format!("{:.3}/{:.3}", added.0, added.1)
        } else {
            "-".into()
        }
    };
    let over_direct = |kind: Kind| kind != Kind::Direct;
    let over_envoy = |kind: Kind| !matches!(kind, Kind::Direct | Kind::EnvoyAlone);

    println!();
    println!(
        "medians of the {} rounds, open loop at {} req/s and closed loop",
        settings.rounds, settings.rate
    );
    println!(
        "  {:<26} {:>8} {:>8} {:>8} | {:>17} {:>17} | {:>9} | {:>12} {:>13}",
        "configuration",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "+p50/+p99 direct",
        "+p50/+p99 envoy",
        "req/s",
        "envoy us/req",
        "ext_proc us/r"
    );
    for &kind in &present {
        let m = of(kind);
        println!(
            "  {:<26} {:>8.3} {:>8.3} {:>8.3} | {:>17} {:>17} | {:>9.0} | {} {}",
            kind.label(),
            m.p50,
            m.p90,
            m.p99,
            show(m.added(&direct), over_direct(kind)),
            show(m.added(&alone), over_envoy(kind)),
            m.rps,
            fmt_opt(m.envoy_us, 12),
            fmt_opt(m.extproc_us, 13),
        );
        let failed: usize = stats[kind.index()].iter().map(|s| s.failed).sum();
        if failed > 0 {
            println!("    ! {failed} open-loop requests failed or were not sent");
        }
    }

    println!();
    println!(
        "medians at {} req/s (open loop, {} s a round)",
        settings.low_rate, settings.low_secs
    );
    println!(
        "  {:<26} {:>8} {:>8} {:>8} | {:>17} {:>17}",
        "configuration", "p50 ms", "p90 ms", "p99 ms", "+p50/+p99 direct", "+p50/+p99 envoy"
    );
    for &kind in &present {
        let m = of(kind);
        println!(
            "  {:<26} {:>8.3} {:>8.3} {:>8.3} | {:>17} {:>17}",
            kind.label(),
            m.low_p50,
            m.low_p90,
            m.low_p99,
            show(m.low_added(&direct), over_direct(kind)),
            show(m.low_added(&alone), over_envoy(kind)),
        );
        let failed: usize = stats[kind.index()].iter().map(|s| s.low_failed).sum();
        if failed > 0 {
            println!("    ! {failed} low-rate requests failed or were not sent");
        }
    }

    // Each round's own ratios, to show how far the noise moves them.
    let at = |kind: Kind, round: usize| &stats[kind.index()][round];
    let per_round = |f: &dyn Fn(usize) -> f64| {
        (0..settings.rounds)
            .map(|round| format!("{:.2}", f(round)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let added_p50 = |kind: Kind, base: Kind, r: usize| at(kind, r).p50 - at(base, r).p50;
    let added_p99 = |kind: Kind, base: Kind, r: usize| at(kind, r).p99 - at(base, r).p99;
    let low_added_p50 =
        |kind: Kind, base: Kind, r: usize| at(kind, r).low_p50 - at(base, r).low_p50;

    println!();
    println!(
        "targets (PERFORMANCE.md and issue #13: router with rules only vs the do-nothing ext_proc floor, same run; medians)"
    );
    let routers: Vec<(Kind, &Medians)> = std::iter::once((Kind::Router, &router))
        .chain(baseline.as_ref().map(|b| (Kind::Baseline, b)))
        .collect();
    for &(kind, m) in &routers {
        print_verdicts(kind, m, &floor, &alone, &direct, settings);
        println!(
            "    per round, /floor: added p50 {}; added p99 {}; throughput {}; added p50 at {} req/s {}",
            per_round(&|r| added_p50(kind, Kind::EnvoyAlone, r)
                / added_p50(Kind::Floor, Kind::EnvoyAlone, r)),
            per_round(&|r| added_p99(kind, Kind::EnvoyAlone, r)
                / added_p99(Kind::Floor, Kind::EnvoyAlone, r)),
            per_round(&|r| at(kind, r).rps / at(Kind::Floor, r).rps),
            settings.low_rate,
            per_round(&|r| low_added_p50(kind, Kind::Direct, r)
                / low_added_p50(Kind::Floor, Kind::Direct, r)),
        );
    }

    if let Some(baseline) = &baseline {
        println!();
        println!(
            "router vs baseline (the same manifests run by HOP_BASELINE_BIN, same rounds; medians: below 1.00x the router adds less, above 1.00x it serves more)"
        );
        // `digits` decimals, in `unit`.
        let ratio = |name: &str, unit: &str, digits: usize, router: f64, baseline: f64| {
            println!(
                "  {name}: router {router:.digits$}{unit}, baseline {baseline:.digits$}{unit} -> {:.2}x",
                router / baseline
            );
        };
        let (r50, r99) = router.added(&alone);
        let (b50, b99) = baseline.added(&alone);
        ratio("added p50 over envoy alone", " ms", 3, r50, b50);
        ratio("added p99 over envoy alone", " ms", 3, r99, b99);
        let (r50, r99) = router.low_added(&direct);
        let (b50, b99) = baseline.low_added(&direct);
        let low = settings.low_rate;
        ratio(
            &format!("added p50 at {low} req/s over direct"),
            " ms",
            3,
            r50,
            b50,
        );
        ratio(
            &format!("added p99 at {low} req/s over direct"),
            " ms",
            3,
            r99,
            b99,
        );
        ratio(
            "closed-loop throughput",
            " req/s",
            0,
            router.rps,
            baseline.rps,
        );
        if let (Some(r), Some(b)) = (router.extproc_us, baseline.extproc_us) {
            ratio("ext_proc CPU per request", " us", 1, r, b);
        }
        println!(
            "  per round, router/baseline: added p50 {}; added p99 {}; added p50 at {low} req/s {}; throughput {}",
            per_round(&|r| added_p50(Kind::Router, Kind::EnvoyAlone, r)
                / added_p50(Kind::Baseline, Kind::EnvoyAlone, r)),
            per_round(&|r| added_p99(Kind::Router, Kind::EnvoyAlone, r)
                / added_p99(Kind::Baseline, Kind::EnvoyAlone, r)),
            per_round(&|r| low_added_p50(Kind::Router, Kind::Direct, r)
                / low_added_p50(Kind::Baseline, Kind::Direct, r)),
            per_round(&|r| at(Kind::Router, r).rps / at(Kind::Baseline, r).rps),
        );
    }

    println!();
    println!(
        "  the router sustains {:.0} req/s over {} connections on this machine \
         (envoy alone {:.0}, backend direct {:.0})",
        router.rps, settings.conns, alone.rps, direct.rps
    );
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let end_load = loadavg();
    println!(
        "  took {:.0} s; load average {end_load} at the end",
        started.elapsed().as_secs_f64()
    );
    let busy = end_load
        .split_whitespace()
        .next()
        .and_then(|l| l.parse::<f64>().ok())
        .is_some_and(|l| l > cpus as f64 + 1.0);
    if busy {
        println!(
            "  note: the load average is above the {cpus} CPUs: other work shared the machine, \
             so tails (p99) are noisy; compare ratios, and rerun when it is quiet"
        );
    }
}

/// One router configuration's verdicts against the floor.
fn print_verdicts(
    kind: Kind,
    m: &Medians,
    floor: &Medians,
    alone: &Medians,
    direct: &Medians,
    settings: &Settings,
) {
    let (p50, p99) = m.added(alone);
    let (floor_p50, floor_p99) = floor.added(alone);
    let share = m.rps / floor.rps;
    println!("  {}", kind.label());
    println!(
        "    added p50 over envoy alone: {p50:.3} ms, floor {floor_p50:.3} ms -> {}",
        latency_verdict(p50, floor_p50, target::ADDED_P50)
    );
    println!(
        "    added p99 over envoy alone: {p99:.3} ms, floor {floor_p99:.3} ms -> {}",
        latency_verdict(p99, floor_p99, target::ADDED_P99)
    );
    println!(
        "    closed-loop throughput: {:.0} req/s, floor {:.0} req/s -> {:.0}% (target >= {:.0}%): {}",
        m.rps,
        floor.rps,
        share * 100.0,
        target::THROUGHPUT * 100.0,
        met(share >= target::THROUGHPUT)
    );
    if let (Some(cpu), Some(floor_cpu)) = (m.extproc_us, floor.extproc_us) {
        let ratio = cpu / floor_cpu;
        println!(
            "    ext_proc CPU per request: {cpu:.1} us, floor {floor_cpu:.1} us -> {ratio:.2}x (target <= {:.2}x): {}",
            target::CPU,
            met(ratio <= target::CPU)
        );
    }
    let (low_p50, low_p99) = m.low_added(direct);
    let (floor_low_p50, floor_low_p99) = floor.low_added(direct);
    println!(
        "    at {} req/s, added p50 over backend direct: {low_p50:.3} ms, floor {floor_low_p50:.3} ms -> {}",
        settings.low_rate,
        latency_verdict(low_p50, floor_low_p50, target::LOW_ADDED_P50)
    );
    println!(
        "    at {} req/s, added p99 over backend direct: {low_p99:.3} ms, floor {floor_low_p99:.3} ms ({:.2}x; no target)",
        settings.low_rate,
        low_p99 / floor_low_p99
    );
}
