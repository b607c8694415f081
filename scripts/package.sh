#!/usr/bin/env bash
# Packages agent-shipper as an Elastic Agent component, for both generations of agent:
#   dist/agent-shipper-<version>-<os>-<arch>.tar.gz
#     agent-shipper, agent-shipper.spec.yml                 agents 8.6–8.15 (a `shippers:` entry)
#     agent-shipper-input, agent-shipper-input.spec.yml     agents 8.16 and 9.x (an `inputs:` entry)
#   dist/agent-shipper-<version>-<os>-<arch>.tar.gz.sha512
# The agent runs the binary named like the spec file minus `.spec.yml`, so the release
# binary is in the tarball under both names (a hard link: one copy in the archive).
# <version> is the package version in Cargo.toml; <os>-<arch> is named as the agent's own
# packages are (linux-x86_64, linux-arm64). Copy the pair for your agent into its
# components directory (docs/elastic-agent.md, "Install").
# AGENT_SHIPPER_BIN=<path> packages that binary instead of building one (the test uses a
# debug build); DIST_DIR=<dir> writes somewhere other than dist/.
set -euo pipefail
cd "$(dirname "$0")/.."

version="$(sed -n '/^\[package\]/,/^\[/{s/^version *= *"\([^"]*\)".*/\1/p}' Cargo.toml | head -n1)"
if [[ -z "$version" ]]; then
  echo "package.sh: no version in Cargo.toml's [package]" >&2
  exit 1
fi
os="$(uname -s | tr '[:upper:]' '[:lower:]')"
case "$(uname -m)" in
  x86_64 | amd64) arch=x86_64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *) echo "package.sh: unsupported architecture $(uname -m)" >&2; exit 1 ;;
esac

binary="${AGENT_SHIPPER_BIN:-}"
if [[ -z "$binary" ]]; then
  cargo build --quiet --release --locked --bin agent-shipper
  binary="${CARGO_TARGET_DIR:-target}/release/agent-shipper"
fi
if [[ ! -x "$binary" ]]; then
  echo "package.sh: $binary is not an executable" >&2
  exit 1
fi

name="agent-shipper-${version}-${os}-${arch}"
dist="${DIST_DIR:-dist}"
mkdir -p "$dist"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
mkdir "$stage/$name"
# The agent runs `<components dir>/<spec name minus .spec.yml>`: the names must match. It
# refuses a binary that group or others may write, or that its owner may not execute.
install -m 0755 "$binary" "$stage/$name/agent-shipper"
ln "$stage/$name/agent-shipper" "$stage/$name/agent-shipper-input"
install -m 0644 agent-shipper.spec.yml "$stage/$name/agent-shipper.spec.yml"
install -m 0644 agent-shipper-input.spec.yml "$stage/$name/agent-shipper-input.spec.yml"
tar -C "$stage" --owner=0 --group=0 -czf "$dist/$name.tar.gz" "$name"
(cd "$dist" && sha512sum "$name.tar.gz" > "$name.tar.gz.sha512")
echo "$dist/$name.tar.gz"
