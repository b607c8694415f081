#!/usr/bin/env bash
# The seed scenario end to end: mock-agent spawns agent-shipper and a mock Elasticsearch;
# integrations A and B publish; revision 2 removes B and rotates the API key. The log shows
# B STOPPING with its backlog, drain progress, STOPPED, "revision 2 acknowledged", the old
# key invalidated, and the final delivery check ("lost 0").
# Extra arguments go to mock-agent, e.g. --ack-immediately (the real agent's behaviour).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --release --bin agent-shipper && cargo build --quiet --release -p integration --bin mock-agent
exec ./target/release/mock-agent --scenario integration/scenarios/policy-change.yml "$@"
