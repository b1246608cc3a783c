//! Envoy ext_proc data plane: the gRPC service, OpenAI request parsing and rewriting,
//! endpoint picking, response usage, metrics, and the errors a client sees.

pub mod admin;
pub mod error;
pub mod extproc;
pub mod metrics;
pub mod mutations;
pub mod openai;
pub mod picker;
pub mod processor;
pub mod server;
pub mod signals;
pub mod usage;
pub mod usage_strip;
