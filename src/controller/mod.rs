//! The control side: sources of resources (a manifest directory now, the Kubernetes API later)
//! that compile into the live routing table.

pub mod file_source;
pub mod manifests;
mod publish;

pub use publish::compile_and_publish;
