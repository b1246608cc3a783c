//! The semantic cache: a prompt close enough to one already answered, in the same
//! conversation context and for the same model, is answered from memory instead of a GPU.
//!
//! A leaf module: it knows nothing of Envoy, gRPC or Kubernetes.
//! - [`store`]: the bounded store (entries and bytes, LRU, per-entry TTL) and its lookup by
//!   cosine similarity within a scope; `index` finds a scope's nearest embeddings without
//!   scoring each one.
//! - [`guard`]: the false-hit guard, a per-prompt [`Fingerprint`] a candidate must agree with
//!   (numbers, negation, content words) on top of similarity.
//! - [`redis`]: the same lookup over Redis vector search, shared by every replica; misses
//!   within a deadline when Redis is slow or down.
//! - [`backend`]: [`CacheBackend`], the one interface over both; [`args`]: `run`'s flags that
//!   choose and configure it.
//! - [`answer`]: what is kept of a response (one assistant message), read from a JSON or SSE
//!   chat completion, and written back as either.

pub mod answer;
pub mod args;
pub mod backend;
pub mod guard;
mod index;
pub mod redis;
mod shelves;
pub mod store;

pub use self::redis::{RedisCache, RedisCacheError, RedisConfig};
pub use answer::{Answer, SseAnswer};
pub use args::CacheArgs;
pub use backend::CacheBackend;
pub use guard::Fingerprint;
pub use index::dot;
pub use store::{CacheLimits, Hit, Pending, Scope, SemanticCache};
