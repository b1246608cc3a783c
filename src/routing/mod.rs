//! Routing: the compiled table, the compiler that builds it and the engine that reads it.
//!
//! Nothing here knows about Kubernetes watches or gRPC; the controller feeds resources in, the
//! data plane asks for verdicts.

mod compile;
mod diagnostics;
mod engine;
mod keywords;
mod table;

pub use compile::{Compiled, DEFAULT_NAMESPACE, ModelCapabilities, Resources, compile, object_key};
pub use diagnostics::{ConditionType, Diagnostic, Kind, ObjectKey, Reason, Severity};
pub use engine::{
    Headers, ModelFindings, ModelSignals, NoModels, SignalValue, SignalValues, Verdict, holds,
};
pub use keywords::{KeywordSet, contains_word};
pub use table::{
    Condition, DEFAULT_DECISION, DIRECT, Decision, ExamplePrompts, Labels, Model, Pool,
    PoolBackend, Route, RoutingTable, SharedTable, Signal, SignalId, SignalKind, Target,
    reasoning_label,
};

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod tests;
