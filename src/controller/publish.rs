//! Compiling resources and publishing the table: the step every source ends in.

use crate::routing::{Compiled, Resources, Severity, SharedTable, compile};

/// Compiles `resources`, publishes the table and logs what the compiler found. Errors in one
/// resource leave only that resource's part out; the rest of the table is published.
pub fn compile_and_publish(shared: &SharedTable, resources: &Resources) -> Compiled {
    let mut compiled = compile(resources);
    for d in &compiled.diagnostics {
        match d.severity {
            Severity::Error => tracing::warn!(
                kind = %d.kind, object = %d.object, condition = d.condition.as_str(),
                reason = %d.reason, "{}", d.message
            ),
            Severity::Warning => tracing::info!(
                kind = %d.kind, object = %d.object, condition = d.condition.as_str(),
                reason = %d.reason, "{}", d.message
            ),
        }
    }
    let table = std::mem::take(&mut compiled.table);
    let generation = shared.publish(table);
    if let Some(live) = shared.load() {
        tracing::info!(
            generation,
            pools = live.pools.len(),
            routes = live.routes.len(),
            "published routing table\n{live}"
        );
    }
    compiled
}
