//! End-to-end tests against real parts (API server, kubectl, Envoy, Redis). Install them first with
//! `make tools` (hack/install-tools.sh).

mod bounds;
mod buffered;
mod cascade;
mod chart;
mod controller;
mod crds;
mod dataplane;
mod faults;
mod gateway;
mod hostile;
mod leader;
mod picking;
mod semantic;
mod shared_cache;
mod support;
mod swaps;
