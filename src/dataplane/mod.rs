//! Envoy ext_proc data plane: the gRPC service, OpenAI request parsing and rewriting,
//! endpoint picking, the response tap (usage, cache fill, in-flight accounting), metrics,
//! and the one place a refusal becomes what the client sees.

pub mod admin;
pub mod epp;
pub mod error;
mod examples;
pub mod extproc;
pub mod headers;
pub mod metrics;
pub mod model_args;
pub mod mutations;
pub mod openai;
pub mod picker;
pub mod processor;
pub mod respond;
pub mod response_tap;
pub mod server;
pub mod signals;
pub mod usage;
pub mod usage_strip;
