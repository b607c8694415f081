//! Test harness for agent-shipper: a mock Elastic Agent, a load generator, scenario files
//! and helpers the end-to-end tests share.

pub mod agent;
pub mod agent9;
pub mod certs;
pub mod component;
pub mod loadgen;
pub mod mock_es;
pub mod progress;
pub mod proxy;
pub mod scenario;
pub mod soak;
pub mod timeline;

use std::path::PathBuf;

/// The `agent-shipper` binary built beside this crate's binaries or test executables:
/// `$AGENT_SHIPPER_BIN` if set, else `target/<profile>/agent-shipper`.
pub fn shipper_binary() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("AGENT_SHIPPER_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test> or target/<profile>/<bin>
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join("agent-shipper");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    anyhow::bail!(
        "agent-shipper binary not found next to {}; build it first with `cargo build --bin agent-shipper` (cargo test --workspace does this)",
        exe.display()
    )
}
