#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for a bounded time each and reports crashes.
#
#   scripts/fuzz.sh                 # every target, 60 s each
#   FUZZ_SECONDS=600 scripts/fuzz.sh queue_segment dlq_entry
#
# Knobs (environment):
#   FUZZ_SECONDS    seconds per target (default 60)
#   FUZZ_SANITIZER  cargo-fuzz sanitizer: address (default) or none (faster builds)
#   FUZZ_JOBS       parallel fuzzing processes per target (default 1)
#   FUZZ_MALLOC_MB  one allocation larger than this is a finding (default 256)
#
# Works on a stable toolchain: cargo-fuzz needs nightly-only rustc flags, which
# RUSTC_BOOTSTRAP=1 unlocks. cargo-fuzz is installed from crates.io when missing.
# Corpora grow in fuzz/corpus/<target>/ (not committed), starting from fuzz/seeds/ and
# fuzz/regressions/. A crash is left in fuzz/artifacts/<target>/: minimise it with
# `cargo fuzz tmin`, keep it in fuzz/regressions/<target>/, and fix the decoder;
# tests/fuzz_regressions.rs then replays it in every `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${FUZZ_SECONDS:-60}"
sanitizer="${FUZZ_SANITIZER:-address}"
jobs="${FUZZ_JOBS:-1}"
malloc_mb="${FUZZ_MALLOC_MB:-256}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz from crates.io" >&2
    cargo install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

build=(--sanitizer "$sanitizer" --debug-assertions)
cargo fuzz build "${build[@]}"

failed=()
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "seeds/$target" "regressions/$target"
    echo "fuzz.sh: $target for ${seconds}s" >&2
    log="$(mktemp)"
    if cargo fuzz run "${build[@]}" --jobs "$jobs" "$target" \
        "corpus/$target" "seeds/$target" "regressions/$target" -- \
        -max_total_time="$seconds" -malloc_limit_mb="$malloc_mb" -rss_limit_mb=2048 \
        -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
        runs="$(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
        echo "fuzz.sh: $target ok: $runs runs in ${seconds}s, corpus $(find "corpus/$target" -type f | wc -l) inputs" >&2
    else
        echo "fuzz.sh: $target FAILED; the end of its log:" >&2
        tail -40 "$log" >&2
        failed+=("$target")
    fi
    rm -f "$log"
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz.sh: crashes in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz.sh: ${#targets[@]} targets, ${seconds}s each, no crash" >&2
