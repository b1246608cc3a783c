//! The control side: sources of resources (a manifest directory, or the Kubernetes API) that
//! compile into the live routing table, and the status written back to the resources.

pub mod endpoints;
pub mod file_source;
pub mod kube_args;
pub mod kube_source;
pub mod leader;
pub mod manifests;
mod publish;
pub mod status;

pub use publish::compile_and_publish;
