#!/usr/bin/env bash
# The long form of the fault suite (issue 7; docs/RELIABILITY.md quotes its
# figures). The same tests CI runs in a bounded form, with long-form counts:
#
#   replicate killed with SIGKILL    STANDBY_REPLICATE_KILLS   (default 100)
#   prune killed while writing       STANDBY_PRUNE_KILLS       (default 10)
#   apply killed with SIGKILL        STANDBY_LONG=1            (20 rounds)
#   vault corruption trials          STANDBY_CORRUPTION_TRIALS (default 1000)
#   network faults (Azurite, moto)   STANDBY_NETWORK_ROUNDS    (default 12)
#   failback killed with SIGKILL     STANDBY_LONG=1            (10 rounds)
#   full file systems                (as in CI)
#   power cuts under a FUSE layer    STANDBY_POWER_ROUNDS      (default 20)
#   commands past their timeout, restore writer panics (as in CI)
#
# Exits 1 when any test fails (its last lines are shown).
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
export STANDBY_PRUNE_KILLS="${STANDBY_PRUNE_KILLS:-10}"
export STANDBY_CORRUPTION_TRIALS="${STANDBY_CORRUPTION_TRIALS:-1000}"
export STANDBY_NETWORK_ROUNDS="${STANDBY_NETWORK_ROUNDS:-12}"
export STANDBY_POWER_ROUNDS="${STANDBY_POWER_ROUNDS:-20}"
export STANDBY_LONG=1
printf 'load average: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
started=$(date +%s)
failed=()
log=$(mktemp)
for t in faults_crash vault_gc faults_corruption faults_network faults_storage faults_power faults_commands faults_restore "apply_cli kill_9" "failback_cli failback_killed" "recovery_cli a_failover_killed"; do
    set -- $t
    echo "== $*"
    t0=$(date +%s)
    rc=0
    cargo test --release --quiet --test "$1" ${2:+"$2"} -- --nocapture --test-threads 1 > "$log" 2>&1 || rc=$?
    # The summary lines (no match is not an error; the exit code is).
    grep -E 'STANDBY_SEED|kills|kill\(s\)|acknowledged|trials|rounds|faults|power|test result|panicked|FAILED|rerun' "$log" || true
    # A filter that matches no test (a renamed test) runs nothing: a failure.
    if [ "$rc" -eq 0 ] && ! grep -qE 'test result: ok\. [1-9]' "$log"; then
        echo "   no test matched"
        rc=1
    fi
    if [ "$rc" -ne 0 ]; then
        failed+=("$*")
        echo "   FAILED (exit $rc); last lines:"
        tail -n 30 "$log" | sed 's/^/   | /'
    fi
    echo "   ($(($(date +%s) - t0)) s)"
done
rm -f "$log"
echo "total $(($(date +%s) - started)) s"
if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "all passed"
