#!/usr/bin/env bash
# Soak with faults (issue 8): two inputs publish at a steady rate through agent-shipper under
# mock-agent while mock-es injects 429s, 503s, item failures, latency and connection resets,
# the agent rotates the output API key every few seconds (and invalidates the old key once
# the revision is acknowledged), removes and re-adds an input, and SIGKILLs the shipper at
# random (seeded; the seed is printed). At the end every event the shipper confirmed
# persisted must be indexed or in the dead letter queue: the last line prints the counts and
# the script fails if any was lost, or if more events were indexed twice than loadgen sent twice.
#   scripts/soak.sh                      # 3 minutes
#   SOAK_DURATION=30s scripts/soak.sh    # or --duration 30s; other options go to `soak`
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}/release"
cargo build --quiet --release --bin agent-shipper
cargo build --quiet --release -p integration --bin soak
exec "$target/soak" --duration "${SOAK_DURATION:-180s}" "$@"
