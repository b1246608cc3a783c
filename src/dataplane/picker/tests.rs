//! The policies, health and accounting of [`PolicyPicker`], on pools built in memory.

use std::time::Duration;

use super::*;
use crate::api::{MetricsScrape, ServingEngine};

fn addr(i: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], 8000 + i))
}

fn pool_with(n: u16, picking: EndpointPicking) -> Pool {
    Pool {
        key: ObjectKey::new("default", "p"),
        models: Default::default(),
        backend: PoolBackend::Endpoints((0..n).map(addr).collect()),
        picking,
        metrics: None,
        labels: Default::default(),
        direct_requests: true,
        allowed_route_namespaces: Vec::new(),
    }
}

fn picking(policy: PickPolicy, fallbacks: u8) -> EndpointPicking {
    EndpointPicking {
        policy,
        fallbacks,
        ..EndpointPicking::default()
    }
}

fn pool(n: u16, policy: PickPolicy, fallbacks: u8) -> Pool {
    pool_with(n, picking(policy, fallbacks))
}

fn pick(picker: &PolicyPicker, pool: &Pool) -> Vec<SocketAddr> {
    picker
        .pick(pool, &PickRequest::default())
        .expect("a pick")
        .endpoints
}

fn busy(picker: &PolicyPicker, endpoint: u16, waiting: u32) {
    picker.set_figures(
        addr(endpoint),
        Figures {
            waiting,
            running: 0,
            kv_cache: 0.0,
        },
        60_000,
    );
}

/// A picker handle for [`InFlight`].
fn shared(picker: &Arc<PolicyPicker>) -> Arc<dyn EndpointPicker> {
    picker.clone()
}

#[test]
fn round_robin_cycles_with_distinct_fallbacks() {
    let picker = PolicyPicker::default();
    let p = pool(3, PickPolicy::RoundRobin, 1);
    let firsts: Vec<u16> = (0..6).map(|_| pick(&picker, &p)[0].port()).collect();
    assert_eq!(firsts, [8000, 8001, 8002, 8000, 8001, 8002]);
    let picked = pick(&picker, &p);
    assert_eq!(picked.len(), 2);
    assert_ne!(picked[0], picked[1]);
}

#[test]
fn fallbacks_never_exceed_the_endpoints() {
    let picker = PolicyPicker::default();
    assert_eq!(pick(&picker, &pool(1, PickPolicy::Random, 8)).len(), 1);
    assert_eq!(
        picker.pick(&pool(0, PickPolicy::RoundRobin, 1), &PickRequest::default()),
        Err(Unavailable::NoEndpoint)
    );
    let gateway = Pool {
        backend: PoolBackend::Gateway {
            cluster: "c".into(),
        },
        ..pool(1, PickPolicy::LoadAware, 1)
    };
    assert_eq!(
        picker.pick(&gateway, &PickRequest::default()),
        Err(Unavailable::NoEndpoint)
    );
}

#[test]
fn load_aware_is_the_default_and_takes_the_least_loaded_with_fallbacks_by_load() {
    assert_eq!(EndpointPicking::default().policy, PickPolicy::LoadAware);
    let picker = PolicyPicker::default();
    let p = pool(4, PickPolicy::LoadAware, 2);
    pick(&picker, &p);
    busy(&picker, 0, 9);
    busy(&picker, 1, 3);
    busy(&picker, 2, 6);
    busy(&picker, 3, 1);
    for _ in 0..5 {
        assert_eq!(pick(&picker, &p), [addr(3), addr(1), addr(2)]);
    }
}

#[test]
fn load_aware_without_metrics_spreads_ties_and_counts_in_flight() {
    let picker = Arc::new(PolicyPicker::default());
    let p = pool(3, PickPolicy::LoadAware, 0);
    let firsts: std::collections::BTreeSet<SocketAddr> = (0..3)
        .map(|_| {
            let pick = picker.pick(&p, &PickRequest::default()).unwrap();
            let first = pick.endpoints[0];
            InFlight::start(shared(&picker), pick)
                .unwrap()
                .respond(200, None);
            first
        })
        .collect();
    assert_eq!(firsts.len(), 3, "idle endpoints take turns");
    // Two requests in flight on 0 and one on 1: 2 is the least loaded.
    let hold: Vec<InFlight> = [0, 0, 1]
        .iter()
        .map(|&i| {
            InFlight::start(shared(&picker), Pick::new(p.key.clone(), vec![addr(i)])).unwrap()
        })
        .collect();
    for _ in 0..4 {
        assert_eq!(pick(&picker, &p), [addr(2)]);
    }
    drop(hold);
    let view = picker.view(addr(0), &p.picking).unwrap();
    assert_eq!(view.in_flight, 0, "finished requests leave the count");
}

#[test]
fn requests_sent_since_the_scrape_count_until_the_next() {
    let picker = Arc::new(PolicyPicker::default());
    let p = pool(2, PickPolicy::LoadAware, 0);
    pick(&picker, &p);
    busy(&picker, 0, 2);
    busy(&picker, 1, 2);
    let a = InFlight::start(shared(&picker), Pick::new(p.key.clone(), vec![addr(0)])).unwrap();
    let _b = InFlight::start(shared(&picker), Pick::new(p.key.clone(), vec![addr(0)])).unwrap();
    assert_eq!(picker.view(addr(0), &p.picking).unwrap().load.queue, 4);
    assert_eq!(pick(&picker, &p), [addr(1)]);
    drop(a);
    assert_eq!(
        picker.view(addr(0), &p.picking).unwrap().load.queue,
        3,
        "only those still in flight"
    );
}

fn prompt_request<'a>(prompt: &'a [&'a str]) -> PickRequest<'a> {
    PickRequest {
        model: "m",
        prompt,
        ..PickRequest::default()
    }
}

#[test]
fn prefix_affinity_keeps_a_prefix_on_its_endpoint_until_it_is_overloaded() {
    let picker = Arc::new(PolicyPicker::default());
    let mut settings = picking(PickPolicy::PrefixAffinity, 1);
    settings.prefix_affinity.block_size = 32;
    settings.prefix_affinity.load_tolerance = 3.0;
    let p = pool_with(4, settings);
    let system = "You are a meticulous assistant. ".repeat(8);
    let send = |question: &str| -> SocketAddr {
        let prompt = ["system", system.as_str(), "user", question];
        let pick = picker.pick(&p, &prompt_request(&prompt)).unwrap();
        assert!(!pick.affinity.blocks.is_empty());
        let served = pick.endpoints[0];
        drop(InFlight::start(shared(&picker), pick));
        served
    };
    let first = send("what is 2 + 2?");
    for q in ["and 3 + 3?", "and 4 + 4?", "and 5 + 5?"] {
        assert_eq!(send(q), first, "a shared prefix stays on its endpoint");
    }
    // Within the tolerance the prefix still wins over a less loaded endpoint.
    let i = first.port() - 8000;
    busy(&picker, i, 2);
    assert_eq!(send("and 6 + 6?"), first);
    // Past it, the least-loaded endpoint takes the request, and the prefix moves with it.
    busy(&picker, i, 20);
    let moved = send("and 7 + 7?");
    assert_ne!(moved, first);
    assert_eq!(send("and 8 + 8?"), moved);
    // A prompt shorter than one block has no affinity: plain load-aware.
    let short = ["user", "hi"];
    let pick = picker.pick(&p, &prompt_request(&short)).unwrap();
    assert!(pick.affinity.blocks.is_empty());
}

#[test]
fn different_prefixes_spread_over_endpoints() {
    let picker = Arc::new(PolicyPicker::default());
    let mut settings = picking(PickPolicy::PrefixAffinity, 0);
    settings.prefix_affinity.block_size = 16;
    let p = pool_with(3, settings);
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..3 {
        let text = format!("{i}: a conversation with a long enough opening");
        let prompt = ["user", text.as_str()];
        let pick = picker.pick(&p, &prompt_request(&prompt)).unwrap();
        seen.insert(pick.endpoints[0]);
        drop(InFlight::start(shared(&picker), pick));
    }
    assert_eq!(seen.len(), 3);
}

#[test]
fn session_affinity_sticks_to_a_healthy_endpoint_and_moves_when_it_is_ejected() {
    let picker = Arc::new(PolicyPicker::default());
    let mut settings = picking(PickPolicy::SessionAffinity, 1);
    settings.session_affinity.header = "X-Conversation".into();
    settings.health.consecutive_failures = 1;
    let p = pool_with(3, settings);
    let headers = RequestHeaders::from_pairs([("x-conversation", "c-1")]);
    let request = PickRequest {
        headers: Some(&headers),
        ..PickRequest::default()
    };
    let send = || -> SocketAddr {
        let pick = picker.pick(&p, &request).unwrap();
        assert!(pick.affinity.session.is_some());
        let on = pick.endpoints[0];
        let mut flight = InFlight::start(shared(&picker), pick).unwrap();
        flight.respond(200, None);
        on
    };
    let home = send();
    // Other traffic on the session's endpoint does not move the session.
    let _other = InFlight::start(shared(&picker), Pick::new(p.key.clone(), vec![home])).unwrap();
    for _ in 0..5 {
        assert_eq!(send(), home);
    }
    // Its endpoint fails once (ejected with consecutiveFailures 1): the session moves and stays.
    let mut failing = InFlight::start(
        shared(&picker),
        Pick {
            health: p.picking.health.clone(),
            ..Pick::new(p.key.clone(), vec![home])
        },
    )
    .unwrap();
    failing.respond(503, None);
    assert!(picker.view(home, &p.picking).unwrap().ejected);
    let new_home = send();
    assert_ne!(new_home, home);
    for _ in 0..3 {
        assert_eq!(send(), new_home);
    }
    // Without the header: load-aware.
    assert!(
        picker
            .pick(&p, &PickRequest::default())
            .unwrap()
            .affinity
            .session
            .is_none()
    );
}

#[test]
fn endpoints_before_the_served_one_failed_and_the_request_moves_to_it() {
    let picker = Arc::new(PolicyPicker::default());
    let mut settings = picking(PickPolicy::LoadAware, 2);
    settings.health.consecutive_failures = 2;
    let p = pool_with(3, settings);
    pick(&picker, &p);
    let pick_of = |served: u16| {
        let mut flight = InFlight::start(
            shared(&picker),
            Pick {
                health: p.picking.health.clone(),
                ..Pick::new(p.key.clone(), vec![addr(0), addr(1), addr(2)])
            },
        )
        .unwrap();
        flight.respond(200, Some(addr(served)));
        assert_eq!(flight.endpoint(), addr(served));
        assert_eq!(picker.view(addr(served), &p.picking).unwrap().in_flight, 1);
        assert_eq!(picker.view(addr(0), &p.picking).unwrap().in_flight, 0);
    };
    pick_of(1);
    assert!(!picker.view(addr(0), &p.picking).unwrap().ejected);
    pick_of(2);
    let view = |i| picker.view(addr(i), &p.picking).unwrap();
    assert!(view(0).ejected, "two connect failures in a row");
    assert!(!view(1).ejected, "one failure, then its success reset it");
    assert!(!view(2).ejected);
    for _ in 0..6 {
        assert_ne!(
            pick(&picker, &p)[0],
            addr(0),
            "an ejected endpoint is skipped"
        );
        assert!(!pick(&picker, &p).contains(&addr(0)), "also as a fallback");
    }
}

#[test]
fn server_errors_are_failures_and_streams_without_a_response_count_not_at_all() {
    let picker = Arc::new(PolicyPicker::default());
    let mut settings = picking(PickPolicy::RoundRobin, 0);
    settings.health.consecutive_failures = 3;
    let p = pool_with(2, settings);
    pick(&picker, &p);
    let start = || {
        InFlight::start(
            shared(&picker),
            Pick {
                health: p.picking.health.clone(),
                ..Pick::new(p.key.clone(), vec![addr(0)])
            },
        )
        .unwrap()
    };
    let view = || picker.view(addr(0), &p.picking).unwrap();
    start().respond(502, None);
    start().respond(404, None);
    assert!(!view().ejected, "a 4xx is a success");
    start().respond(500, None);
    start().respond(503, None);
    // Cancelled by the client (no response): neither a failure nor a success.
    for _ in 0..10 {
        drop(start());
    }
    assert!(!view().ejected, "cancelled streams never eject");
    assert_eq!(view().in_flight, 0, "but they end their accounting");
    start().respond(504, None);
    assert!(
        view().ejected,
        "three 5xx in a row, cancellations between them"
    );
}

#[test]
fn when_every_endpoint_is_ejected_the_pick_goes_on_among_all() {
    let picker = Arc::new(PolicyPicker::default());
    let mut settings = picking(PickPolicy::LoadAware, 1);
    settings.health.consecutive_failures = 1;
    let p = pool_with(2, settings);
    pick(&picker, &p);
    for i in 0..2 {
        let mut f = InFlight::start(
            shared(&picker),
            Pick {
                health: p.picking.health.clone(),
                ..Pick::new(p.key.clone(), vec![addr(i)])
            },
        )
        .unwrap();
        f.respond(503, None);
    }
    assert!(picker.view(addr(0), &p.picking).unwrap().ejected);
    assert!(picker.view(addr(1), &p.picking).unwrap().ejected);
    assert_eq!(pick(&picker, &p).len(), 2);
}

#[test]
fn the_subset_hint_bounds_the_pick() {
    let picker = PolicyPicker::default();
    for policy in [
        PickPolicy::RoundRobin,
        PickPolicy::Random,
        PickPolicy::LoadAware,
        PickPolicy::PrefixAffinity,
        PickPolicy::SessionAffinity,
    ] {
        let p = pool(4, policy, 3);
        let subset = [addr(1), addr(3), SocketAddr::from(([10, 9, 9, 9], 80))];
        let request = PickRequest {
            subset: Some(&subset),
            ..PickRequest::default()
        };
        for _ in 0..8 {
            let picked = picker.pick(&p, &request).unwrap().endpoints;
            assert_eq!(picked.len(), 2, "{policy:?}");
            assert!(picked.iter().all(|e| subset.contains(e)), "{policy:?}");
        }
        let outside = [SocketAddr::from(([10, 9, 9, 9], 80))];
        let request = PickRequest {
            subset: Some(&outside),
            ..PickRequest::default()
        };
        assert_eq!(picker.pick(&p, &request), Err(Unavailable::OutsideSubset));
        let request = PickRequest {
            subset: Some(&[]),
            ..PickRequest::default()
        };
        assert_eq!(picker.pick(&p, &request), Err(Unavailable::OutsideSubset));
    }
    // A long subset list (looked up through a set) works the same.
    let p = pool(40, PickPolicy::LoadAware, 0);
    let subset: Vec<SocketAddr> = (20..40).map(addr).collect();
    let request = PickRequest {
        subset: Some(&subset),
        ..PickRequest::default()
    };
    for _ in 0..40 {
        assert!(subset.contains(&picker.pick(&p, &request).unwrap().endpoints[0]));
    }
}

#[test]
fn saturated_endpoints_get_nothing_and_a_saturated_pool_says_so() {
    let picker = PolicyPicker::default();
    for policy in [PickPolicy::RoundRobin, PickPolicy::LoadAware] {
        let mut settings = picking(policy, 1);
        settings.max_queue_depth = Some(5);
        let p = pool_with(3, settings);
        pick(&picker, &p);
        busy(&picker, 0, 5);
        busy(&picker, 1, 9);
        busy(&picker, 2, 4);
        for _ in 0..4 {
            assert_eq!(pick(&picker, &p), [addr(2)], "{policy:?}");
        }
        busy(&picker, 2, 5);
        assert_eq!(
            picker.pick(&p, &PickRequest::default()),
            Err(Unavailable::Saturated { max_queue_depth: 5 })
        );
        for i in 0..3 {
            busy(&picker, i, 0);
        }
    }
}

#[test]
fn following_the_table_forgets_what_left_it() {
    let picker = Arc::new(PolicyPicker::default());
    let p = pool(3, PickPolicy::LoadAware, 0);
    pick(&picker, &p);
    let _f = InFlight::start(shared(&picker), Pick::new(p.key.clone(), vec![addr(2)])).unwrap();
    let smaller = Arc::new(pool(2, PickPolicy::LoadAware, 0));
    let table = RoutingTable {
        pools: [(smaller.key.clone(), smaller.clone())].into(),
        ..RoutingTable::default()
    };
    picker.follow(&table);
    assert!(picker.view(addr(2), &p.picking).is_none());
    assert!(picker.view(addr(1), &p.picking).is_some());
    assert_eq!(pick(&picker, &smaller).len(), 1);
    picker.follow(&RoutingTable::default());
    assert!(picker.pools.read().unwrap().is_empty());
}

/// A `/metrics` server answering with `waiting` queued requests, until dropped.
async fn metrics_server(waiting: u32) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf).await;
            let body = format!(
                "vllm:num_requests_waiting{{model_name=\"m\"}} {waiting}\nvllm:num_requests_running{{model_name=\"m\"}} 1\nvllm:kv_cache_usage_perc{{model_name=\"m\"}} 0.5\n"
            );
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(answer.as_bytes()).await;
        }
    });
    (addr, task)
}

#[tokio::test]
async fn maintain_scrapes_the_pools_of_the_live_table() {
    let (busy_addr, busy_server) = metrics_server(7).await;
    let (idle_addr, idle_server) = metrics_server(0).await;
    let table = SharedTable::default();
    let make = |with_metrics: bool| {
        let pool = Pool {
            backend: PoolBackend::Endpoints(vec![busy_addr, idle_addr]),
            metrics: with_metrics.then(|| MetricsScrape {
                engine: ServingEngine::Vllm,
                path: "/metrics".into(),
                interval_seconds: 1,
            }),
            ..pool(0, PickPolicy::LoadAware, 0)
        };
        let pool = Arc::new(pool);
        RoutingTable {
            pools: [(pool.key.clone(), pool.clone())].into(),
            ..RoutingTable::default()
        }
    };
    table.publish(make(true));
    let picker = Arc::new(PolicyPicker::default());
    let task = tokio::spawn(picker.clone().maintain(table.clone()));
    let settings = EndpointPicking::default();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let queue = picker.view(busy_addr, &settings).map(|v| v.load.queue);
        if queue == Some(7) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not scraped: {queue:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let current = table.load().unwrap();
    let pool = current.pools.values().next().unwrap();
    for _ in 0..4 {
        assert_eq!(pick(&picker, pool), [idle_addr]);
    }
    // The pool loses its metrics: scraping stops and the figures age out (three intervals).
    table.publish(make(false));
    tokio::time::sleep(Duration::from_millis(100)).await;
    busy_server.abort();
    idle_server.abort();
    task.abort();
}
