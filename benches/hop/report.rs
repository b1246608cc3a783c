//! The report: each round's rows, then the medians over the rounds and the verdicts against
//! PERFORMANCE.md's targets.

use std::path::Path;
use std::time::Instant;

use crate::Settings;
use crate::measure::{Kind, Measured, Stat, median};
use crate::workload::{CHAT_PATH, PROMPT};

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
        "  {:<24} {:-^43} | {:-^25} | {:-^27} | {:-^26}",
        "",
        format!(" open loop at {} req/s ", settings.rate),
        format!(" at {} req/s ", settings.low_rate),
        " closed loop ",
        " CPU "
    );
    println!(
        "  {:<24} {:>8} {:>8} {:>8} {:>8} {:>7} | {:>8} {:>8} {:>7} | {:>9} {:>8} {:>8} | {:>12} {:>13}",
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
        "  {:<24} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>7} | {:>8.3} {:>8.3} {:>7} | {:>9.0} {:>8.3} {:>8.3} | {} {}",
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
    let met = if ratio <= limit {
        "within target"
    } else {
        "MISSES target"
    };
    format!("{ratio:.2}x (target <= {limit:.2}x): {met}")
}

/// What the run measures and on what, before the first round.
pub fn preamble(settings: &Settings, envoy_version: &str, router_bin: &Path, body_len: usize) {
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

/// The medians over the rounds, the targets' verdicts and how busy the machine was.
pub fn summary(stats: &[Vec<Stat>], settings: &Settings, started: Instant) {
    // Medians over the rounds: one noisy round (a neighbour's compile) moves them least.
    let med = |kind: Kind, f: fn(&Stat) -> f64| median(stats[kind.index()].iter().map(f).collect());
    let med_opt = |kind: Kind, f: fn(&Stat) -> Option<f64>| {
        let values: Vec<f64> = stats[kind.index()].iter().filter_map(f).collect();
        (!values.is_empty()).then(|| median(values))
    };
    println!();
    println!("medians of the {} rounds", settings.rounds);
    println!(
        "  {:<24} {:>8} {:>8} {:>8} | {:>17} {:>17} | {:>9} | {:>12} {:>13}",
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
    let added = |kind: Kind, base: Kind| {
        (
            med(kind, |s| s.p50) - med(base, |s| s.p50),
            med(kind, |s| s.p99) - med(base, |s| s.p99),
        )
    };
    for kind in Kind::ALL {
        let show = |base: Kind| {
            let (p50, p99) = added(kind, base);
            format!("{p50:.3}/{p99:.3}")
        };
        println!(
            "  {:<24} {:>8.3} {:>8.3} {:>8.3} | {:>17} {:>17} | {:>9.0} | {} {}",
            kind.label(),
            med(kind, |s| s.p50),
            med(kind, |s| s.p90),
            med(kind, |s| s.p99),
            if kind == Kind::Direct {
                "-".into()
            } else {
                show(Kind::Direct)
            },
            if matches!(kind, Kind::Direct | Kind::EnvoyAlone) {
                "-".into()
            } else {
                show(Kind::EnvoyAlone)
            },
            med(kind, |s| s.rps),
            fmt_opt(med_opt(kind, |s| s.envoy_us), 12),
            fmt_opt(med_opt(kind, |s| s.extproc_us), 13),
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
        "  {:<24} {:>8} {:>8} {:>8} | {:>17} {:>17}",
        "configuration", "p50 ms", "p90 ms", "p99 ms", "+p50/+p99 direct", "+p50/+p99 envoy"
    );
    let low_added = |kind: Kind, base: Kind| {
        (
            med(kind, |s| s.low_p50) - med(base, |s| s.low_p50),
            med(kind, |s| s.low_p99) - med(base, |s| s.low_p99),
        )
    };
    for kind in Kind::ALL {
        let show = |base: Kind| {
            let (p50, p99) = low_added(kind, base);
            format!("{p50:.3}/{p99:.3}")
        };
        println!(
            "  {:<24} {:>8.3} {:>8.3} {:>8.3} | {:>17} {:>17}",
            kind.label(),
            med(kind, |s| s.low_p50),
            med(kind, |s| s.low_p90),
            med(kind, |s| s.low_p99),
            if kind == Kind::Direct {
                "-".into()
            } else {
                show(Kind::Direct)
            },
            if matches!(kind, Kind::Direct | Kind::EnvoyAlone) {
                "-".into()
            } else {
                show(Kind::EnvoyAlone)
            },
        );
        let failed: usize = stats[kind.index()].iter().map(|s| s.low_failed).sum();
        if failed > 0 {
            println!("    ! {failed} low-rate requests failed or were not sent");
        }
    }

    // Each round's own ratios, to show how far the noise moves them.
    let per_round = |f: &dyn Fn(&Stat, &Stat, &Stat, &Stat) -> f64| {
        (0..settings.rounds)
            .map(|r| {
                let (direct, alone, floor, router) = (
                    &stats[Kind::Direct.index()][r],
                    &stats[Kind::EnvoyAlone.index()][r],
                    &stats[Kind::Floor.index()][r],
                    &stats[Kind::Router.index()][r],
                );
                format!("{:.2}", f(direct, alone, floor, router))
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let (router_p50, router_p99) = added(Kind::Router, Kind::EnvoyAlone);
    let (floor_p50, floor_p99) = added(Kind::Floor, Kind::EnvoyAlone);
    let (router_rps, floor_rps) = (med(Kind::Router, |s| s.rps), med(Kind::Floor, |s| s.rps));
    let share = router_rps / floor_rps;
    println!();
    println!(
        "targets (PERFORMANCE.md: router with rules only vs the do-nothing ext_proc floor, same run; medians)"
    );
    println!(
        "  added p50 over envoy alone: router {router_p50:.3} ms, floor {floor_p50:.3} ms -> {}",
        latency_verdict(router_p50, floor_p50, 1.5)
    );
    println!(
        "  added p99 over envoy alone: router {router_p99:.3} ms, floor {floor_p99:.3} ms -> {}",
        latency_verdict(router_p99, floor_p99, 1.5)
    );
    println!(
        "  closed-loop throughput: router {router_rps:.0} req/s, floor {floor_rps:.0} req/s -> {:.0}% (target >= 80%): {}",
        share * 100.0,
        if share >= 0.8 {
            "within target"
        } else {
            "MISSES target"
        }
    );
    println!(
        "  per round, router/floor: added p50 {}; added p99 {}; throughput {}",
        per_round(&|_, a, f, r| (r.p50 - a.p50) / (f.p50 - a.p50)),
        per_round(&|_, a, f, r| (r.p99 - a.p99) / (f.p99 - a.p99)),
        per_round(&|_, _, f, r| r.rps / f.rps),
    );
    let (router_low_p50, router_low_p99) = low_added(Kind::Router, Kind::Direct);
    let (floor_low_p50, floor_low_p99) = low_added(Kind::Floor, Kind::Direct);
    println!(
        "  at {} req/s, added p50 over backend direct: router {router_low_p50:.3} ms, floor {floor_low_p50:.3} ms -> {}",
        settings.low_rate,
        latency_verdict(router_low_p50, floor_low_p50, 1.3)
    );
    println!(
        "  at {} req/s, added p99 over backend direct: router {router_low_p99:.3} ms, floor {floor_low_p99:.3} ms ({:.2}x; no target)",
        settings.low_rate,
        router_low_p99 / floor_low_p99
    );
    println!(
        "  per round, router/floor at {} req/s: added p50 {}",
        settings.low_rate,
        per_round(&|d, _, f, r| (r.low_p50 - d.low_p50) / (f.low_p50 - d.low_p50)),
    );
    println!(
        "  the router sustains {router_rps:.0} req/s over {} connections on this machine \
         (envoy alone {:.0}, backend direct {:.0})",
        settings.conns,
        med(Kind::EnvoyAlone, |s| s.rps),
        med(Kind::Direct, |s| s.rps)
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
