#!/usr/bin/env bash
# Power-loss model test of the disk queue (issue 14), for longer than `cargo test` runs it:
# random seeds of appends from several generations, reads, out-of-order acks, seals,
# checkpoints, failing writes, damaged files, power losses (only synced bytes survive, or a
# torn prefix of the rest) and reopens, checked against the queue's promises
# (src/queue/disk/crash_model.rs). Prints its first seed; a failure prints the broken
# invariant, the steps before it and the seed to replay. Exit status non-zero on failure.
#   scripts/crash-model.sh            # 60 seconds
#   scripts/crash-model.sh 600        # 10 minutes
#   scripts/crash-model.sh --seed N   # replay one seed
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=60
seed=
while [ $# -gt 0 ]; do
    case "$1" in
        --seed) seed="${2:?--seed needs a number}"; shift 2 ;;
        --seed=*) seed="${1#--seed=}"; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *[!0-9]*|'') echo "usage: $0 [SECONDS] [--seed N]" >&2; exit 2 ;;
        *) seconds="$1"; shift ;;
    esac
done
# The test binary is built (and run) by cargo; the model runs only with --ignored.
export CRASH_MODEL_SECONDS="$seconds"
if [ -n "$seed" ]; then
    export CRASH_MODEL_SEED="$seed"
fi
exec cargo test --quiet -p agent-shipper --lib -- \
    --ignored --exact queue::disk::crash_model::power_loss_model_for_a_while --nocapture
