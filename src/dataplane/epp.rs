//! The Gateway API Inference Extension's endpoint-picker protocol, as far as the router speaks
//! it: the destination it names (header and `envoy.lb` metadata), the subset hint the proxy
//! may send, and the endpoint the proxy reports as served.

use std::net::SocketAddr;

use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};

/// Header that carries the destination (`ip:port[,ip:port…]`).
pub const DESTINATION_HEADER: &str = "x-gateway-destination-endpoint";
/// Dynamic-metadata namespace of the destination and of the served endpoint.
pub const DESTINATION_NAMESPACE: &str = "envoy.lb";
/// Metadata namespace of the subset hint.
pub const SUBSET_NAMESPACE: &str = "envoy.lb.subset_hint";
/// Key of the subset hint (a list of `ip:port`) in [`SUBSET_NAMESPACE`].
pub const SUBSET_KEY: &str = "x-gateway-destination-endpoint-subset";
/// Key (in [`DESTINATION_NAMESPACE`]) and response header of the endpoint the proxy reports
/// as served.
pub const SERVED_KEY: &str = "x-gateway-destination-endpoint-served";

/// Dynamic metadata `envoy.lb: {x-gateway-destination-endpoint: list}`.
pub fn destination_metadata(endpoints: &str) -> Struct {
    let inner = Struct {
        fields: [(
            DESTINATION_HEADER.to_owned(),
            Value {
                kind: Some(Kind::StringValue(endpoints.to_owned())),
            },
        )]
        .into(),
    };
    Struct {
        fields: [(
            DESTINATION_NAMESPACE.to_owned(),
            Value {
                kind: Some(Kind::StructValue(inner)),
            },
        )]
        .into(),
    }
}

/// The subset hint in the request's metadata: `Some(list)` when the proxy sent one (entries
/// that are not `ip:port` are left out, so a hint naming nothing usable is empty).
pub fn subset_hint(metadata: &Metadata) -> Option<Vec<SocketAddr>> {
    let value = metadata
        .filter_metadata
        .get(SUBSET_NAMESPACE)?
        .fields
        .get(SUBSET_KEY)?;
    let mut out = Vec::new();
    collect_addrs(value, &mut out);
    Some(out)
}

fn collect_addrs(value: &Value, out: &mut Vec<SocketAddr>) {
    match &value.kind {
        Some(Kind::StringValue(s)) => out.extend(
            s.split(',')
                .filter_map(|a| a.trim().parse::<SocketAddr>().ok()),
        ),
        Some(Kind::ListValue(list)) => {
            for v in &list.values {
                collect_addrs(v, out);
            }
        }
        _ => {}
    }
}

/// The endpoint the proxy reports as served, in `envoy.lb` metadata.
pub fn served(metadata: &Metadata) -> Option<SocketAddr> {
    let value = metadata
        .filter_metadata
        .get(DESTINATION_NAMESPACE)?
        .fields
        .get(SERVED_KEY)?;
    match &value.kind {
        Some(Kind::StringValue(s)) => first_addr(s),
        _ => None,
    }
}

/// The first `ip:port` of a comma-separated list.
pub fn first_addr(list: &str) -> Option<SocketAddr> {
    list.split(',').next()?.trim().parse().ok()
}
