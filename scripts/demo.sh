#!/usr/bin/env bash
# The walking-skeleton demo: mock-agent spawns agent-shipper, two inputs publish through
# it, policy revision 2 removes input B; the log shows B STOPPING, then STOPPED, then the
# agent's "revision 2 acknowledged" line.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --bin agent-shipper && cargo build --quiet -p integration --bin mock-agent
exec ./target/debug/mock-agent --scenario integration/scenarios/demo.yml "$@"
