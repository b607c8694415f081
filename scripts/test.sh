#!/usr/bin/env bash
# Builds everything and runs every test of the workspace, then prints one summary line
# ("N passed, N failed") that adds up every test binary's result: cargo's own last line is
# the doc-test run's, which says nothing about the whole.
set -euo pipefail
cd "$(dirname "$0")/.."
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace "$@" 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
