//! Which router binary the benchmarks run (shared with `benches/cache_hop.rs`).

use std::path::{Path, PathBuf};

/// `$HOP_ROUTER_BIN`, or the release build: `<target dir>/release/semantic-router`.
pub fn router_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("HOP_ROUTER_BIN") {
        return PathBuf::from(bin);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("release").join("semantic-router")
}
