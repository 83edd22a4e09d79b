#!/usr/bin/env bash
# Times a remote-state round trip (take the lock, read, write, release) on
# file://, Azurite (az://) and moto (s3://): median and p90 of 30 rounds on a
# 100-object state, in process (no process start-up). Starts the test
# services unless they already run.
#
#   bench/remote_state.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
if [ ! -f .ci/.cache/services.env ]; then
    bash .ci/services.sh start
    trap 'bash .ci/services.sh stop' EXIT
fi
# shellcheck disable=SC1091
source .ci/.cache/services.env
printf 'load average: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
cargo test --quiet --test state_remote measure_lock_write_round_trip -- --ignored --nocapture 2>&1 |
    grep -E '^ *(file|az|s3):'
