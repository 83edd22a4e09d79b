#!/usr/bin/env bash
# The long form of the fault suite (issue 7; docs/RELIABILITY.md quotes its
# figures). The same tests CI runs in a bounded form, with long-form counts:
#
#   replicate killed with SIGKILL    STANDBY_REPLICATE_KILLS   (default 100)
#   apply killed with SIGKILL        STANDBY_LONG=1            (20 rounds)
#   vault corruption trials          STANDBY_CORRUPTION_TRIALS (default 1000)
#   network faults (Azurite, moto)   STANDBY_NETWORK_ROUNDS    (default 12)
#   failback killed with SIGKILL     STANDBY_LONG=1            (10 rounds)
#   full file systems                (as in CI)
#
# Starts the test services unless they already run. Prints each test's
# summary line; STANDBY_SEED=N replays a failing run.
#
#   bench/faults.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
if [ ! -f .ci/.cache/services.env ]; then
    bash .ci/services.sh start
    trap 'bash .ci/services.sh stop' EXIT
fi
# shellcheck disable=SC1091
source .ci/.cache/services.env
export STANDBY_REPLICATE_KILLS="${STANDBY_REPLICATE_KILLS:-100}"
export STANDBY_CORRUPTION_TRIALS="${STANDBY_CORRUPTION_TRIALS:-1000}"
export STANDBY_NETWORK_ROUNDS="${STANDBY_NETWORK_ROUNDS:-12}"
export STANDBY_LONG=1
printf 'load average: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
started=$(date +%s)
for t in faults_crash faults_corruption faults_network faults_storage "apply_cli kill_9" "failback_cli failback_killed" "recovery_cli a_failover_killed"; do
    set -- $t
    echo "== $*"
    t0=$(date +%s)
    cargo test --release --quiet --test "$1" ${2:+"$2"} -- --nocapture --test-threads 1 2>&1 |
        grep -E 'STANDBY_SEED|kills|trials|rounds|faults|test result|panicked|FAILED|rerun' || true
    echo "   ($(($(date +%s) - t0)) s)"
done
echo "total $(($(date +%s) - started)) s"
