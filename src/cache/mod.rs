//! The semantic cache: a prompt close enough to one already answered, in the same
//! conversation context and for the same model, is answered from memory instead of a GPU.
//!
//! A leaf module: it knows nothing of Envoy, gRPC or Kubernetes.
//! - [`store`]: the bounded store (entries and bytes, LRU, per-entry TTL) and its lookup by
//!   cosine similarity within a scope.
//! - [`answer`]: what is kept of a response (one assistant message), read from a JSON or SSE
//!   chat completion, and written back as either.

pub mod answer;
pub mod store;

pub use answer::{Answer, SseAnswer};
pub use store::{CacheLimits, Hit, Pending, Scope, SemanticCache};
