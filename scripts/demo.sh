#!/usr/bin/env bash
# The seed scenario end to end: mock-agent spawns agent-shipper as the real agent does (command
# line from agent-shipper.spec.yml, -E path.data=<home>/run/shipper-default, the agent's Producer
# socket and a certificate pair per input) and a mock Elasticsearch;
# integrations A and B publish; revision 2 removes B and rotates the API key. The log shows
# B STOPPING with its backlog, drain progress, STOPPED, "revision 2 acknowledged", the old
# key invalidated, and the final delivery check ("lost 0").
# The shipper logs its metrics line every second (queue depth for the timeline).
# Afterwards the shipper's own log is turned into a unit timeline (text and SVG) under
# target/demo/ (or $DEMO_OUT).
# Extra arguments go to mock-agent, e.g. --ack-immediately (the real agent's behaviour).
# `--agent 9` first plays today's agent instead (mock-agent --agent 9, see below).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}/release"
out="${DEMO_OUT:-target/demo}"
cargo build --quiet --release --bin agent-shipper
cargo build --quiet --release -p integration --bin mock-agent --bin timeline
mkdir -p "$out"
if [ "${1:-}" = "--agent" ] && [ "${2:-}" = "9" ]; then
  # Today's agent (8.16+, 9.x): agent-shipper as an input component, policies from
  # integration/scenarios/agent9.yml (a revision bump, then use_output moved); each policy's
  # input gets events, and the run ends with the delivery check ("lost 0").
  shift 2
  "$target/mock-agent" --agent 9 --policy integration/scenarios/agent9.yml "$@" 2>&1 |
    tee "$out/agent9.log"
  exit "${PIPESTATUS[0]}"
fi
rm -f "$out/shipper.log"
"$target/mock-agent" --scenario integration/scenarios/policy-change.yml \
  --shipper-log "$out/shipper.log" --shipper-arg=-E --shipper-arg=logging.metrics.period=1s "$@"
"$target/timeline" "$out/shipper.log" --text "$out/timeline.txt" --svg "$out/timeline.svg"
cat "$out/timeline.txt"
echo
echo "shipper log:   $out/shipper.log"
echo "timeline text: $out/timeline.txt"
echo "timeline SVG:  $out/timeline.svg"
