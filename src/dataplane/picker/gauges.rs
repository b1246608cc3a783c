//! Per-endpoint figures read at scrape time: requests in flight, ejection and failed scrapes of
//! its model server, by pool and endpoint. What an operator watches when a stream hangs, a pool
//! loses capacity or picking runs blind. Per pool, the size of its affinity maps, which client
//! input fills up to their bounds.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::PolicyPicker;
use crate::routing::{PoolBackend, SharedTable};

/// Labels of one endpoint of one pool.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    /// Pool name.
    pool: String,
    /// `ip:port`.
    endpoint: String,
}

/// Labels of one pool.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    /// Pool name.
    pool: String,
}

/// Collects `semantic_router_endpoint_{in_flight,ejected,scrape_failures_total}` for every
/// endpoint of the live table's pools, and `semantic_router_pool_{prefix_blocks,sessions}` for
/// every pool picked from, from the picker's own state.
pub struct EndpointGauges {
    table: SharedTable,
    picker: Arc<PolicyPicker>,
}

impl EndpointGauges {
    /// Gauges over the endpoints of `table` as `picker` sees them.
    pub fn new(table: SharedTable, picker: Arc<PolicyPicker>) -> Self {
        Self { table, picker }
    }
}

impl std::fmt::Debug for EndpointGauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointGauges").finish_non_exhaustive()
    }
}

impl Collector for EndpointGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let in_flight = Family::<EndpointLabels, Gauge>::default();
        let ejected = Family::<EndpointLabels, Gauge>::default();
        let mut scrape_failures = Vec::new();
        let prefix_blocks = Family::<PoolLabels, Gauge>::default();
        let sessions = Family::<PoolLabels, Gauge>::default();
        if let Some(table) = self.table.load() {
            for pool in table.pools.values() {
                let PoolBackend::Endpoints(addrs) = &pool.backend else {
                    continue;
                };
                if let Some((blocks, held)) = self.picker.affinity_sizes(&pool.key) {
                    let labels = PoolLabels {
                        pool: pool.key.name.clone(),
                    };
                    let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
                    prefix_blocks.get_or_create(&labels).set(gauge(blocks));
                    sessions.get_or_create(&labels).set(gauge(held));
                }
                for addr in addrs {
                    let labels = EndpointLabels {
                        pool: pool.key.name.clone(),
                        endpoint: addr.to_string(),
                    };
                    let view = self.picker.view(*addr, &pool.picking);
                    in_flight
                        .get_or_create(&labels)
                        .set(view.map_or(0, |v| i64::from(v.in_flight)));
                    ejected
                        .get_or_create(&labels)
                        .set(i64::from(view.is_some_and(|v| v.ejected)));
                    if pool.metrics.is_some() {
                        let failures = view.map_or(0, |v| v.scrape_failures);
                        scrape_failures.push((labels, failures));
                    }
                }
            }
        }
        for (name, help, family) in [
            (
                "semantic_router_endpoint_in_flight",
                "Requests this router has in flight to an endpoint, by pool and endpoint",
                &in_flight,
            ),
            (
                "semantic_router_endpoint_ejected",
                "1 while passive health checking keeps an endpoint out of picking",
                &ejected,
            ),
        ] {
            family.encode(encoder.encode_descriptor(name, help, None, family.metric_type())?)?;
        }
        for (name, help, family) in [
            (
                "semantic_router_pool_prefix_blocks",
                "Prompt blocks the pool's prefix-affinity map holds (at most its maxBlocks)",
                &prefix_blocks,
            ),
            (
                "semantic_router_pool_sessions",
                "Sessions the pool's session-affinity map holds (at most its maxSessions)",
                &sessions,
            ),
        ] {
            family.encode(encoder.encode_descriptor(name, help, None, family.metric_type())?)?;
        }
        let counter = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "semantic_router_endpoint_scrape_failures",
            "Scrapes of an endpoint's model-server metrics that gave no load figures (unreachable, \
             too slow, not 200, or not the engine's metrics); picking then ages its figures out and \
             counts requests in flight only",
            None,
            counter.metric_type(),
        )?;
        for (labels, failures) in &scrape_failures {
            ConstCounter::new(*failures).encode(family.encode_family(labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::picker::{EndpointPicker, InFlight, Pick, PickRequest};
    use crate::routing::fixtures::{compile_all, pool, two_pools};

    #[test]
    fn gauges_follow_requests_in_flight_per_pool_and_endpoint() {
        let table = SharedTable::default();
        table.publish(compile_all(two_pools(), vec![]).table);
        let picker = Arc::new(PolicyPicker::default());
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(EndpointGauges::new(table.clone(), picker.clone())));
        let scrape = || {
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
            text
        };
        let current = table.load().unwrap();
        let large = current
            .pools
            .values()
            .find(|p| p.key.name == "large")
            .unwrap();
        let PoolBackend::Endpoints(addrs) = &large.backend else {
            panic!("static pool");
        };
        let shared: Arc<dyn EndpointPicker> = picker.clone();
        // The picker learns a pool's endpoints on its first pick.
        shared
            .pick(large, &PickRequest::default())
            .expect("the pool has endpoints");
        let flight = InFlight::start(shared, Pick::new(large.key.clone(), vec![addrs[0]]));
        let line = format!(
            "semantic_router_endpoint_in_flight{{pool=\"large\",endpoint=\"{}\"}} 1",
            addrs[0]
        );
        let text = scrape();
        assert!(text.contains(&line), "{text}");
        assert!(
            text.contains(&format!(
                "semantic_router_endpoint_ejected{{pool=\"large\",endpoint=\"{}\"}} 0",
                addrs[0]
            )),
            "{text}"
        );
        drop(flight);
        assert!(scrape().contains(&line.replace("} 1", "} 0")));
    }

    /// A model server whose `/metrics` answers 200 with text that holds no engine figures.
    async fn garbage_metrics() -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = [0u8; 1024];
                let _ = socket.read(&mut request).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n\x00\xffgarbage{}")
                    .await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn scrapes_that_give_no_figures_are_counted_per_endpoint() {
        let addr = garbage_metrics().await;
        let spec = format!(
            "models: [{{name: small}}]\nendpoints: {{static: {{addresses: [\"{addr}\"]}}}}\n\
             metrics: {{engine: vllm, intervalSeconds: 1}}"
        );
        let table = SharedTable::default();
        table.publish(compile_all(vec![pool("garbage", &spec)], vec![]).table);
        let picker = Arc::new(PolicyPicker::default());
        let maintained = tokio::spawn(picker.clone().maintain(table.clone()));
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(EndpointGauges::new(table.clone(), picker.clone())));
        let line = format!(
            "semantic_router_endpoint_scrape_failures_total{{pool=\"garbage\",endpoint=\"{addr}\"}} "
        );
        let failures = || {
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
            text.lines()
                .find_map(|l| l.strip_prefix(&line))
                .and_then(|v| v.parse::<u64>().ok())
        };
        assert_eq!(failures(), Some(0), "listed before the first scrape");
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while failures() < Some(2) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no failed scrape counted"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        maintained.abort();
    }
}
