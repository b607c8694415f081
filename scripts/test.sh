#!/usr/bin/env bash
# Builds everything and runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace "$@"
