//! semantic-router: a Kubernetes operator and Envoy `ext_proc` data plane that routes each LLM
//! request to the model, reasoning mode and GPU pool its prompt needs.
#![forbid(unsafe_code)]

pub mod api;
pub mod cache;
pub mod classify;
pub mod controller;
pub mod dataplane;
#[doc(hidden)]
pub mod fuzz;
pub mod routing;
pub mod stream;
pub mod what_if;

#[cfg(test)]
mod layers;
