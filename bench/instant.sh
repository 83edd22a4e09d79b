#!/usr/bin/env bash
# Instant recovery vs a full restore, through the real binary on the test
# guest (TCG): RTO (start of `failover test` to the last check passing) of
# plans/qemu's two VMs with the database VM's data disk at 1 GiB and at
# 8 GiB (1/8 of each random data, or STANDBY_BENCH_DATA_EIGHTHS/8), `--instant` beside a full-restore test
# failover of the same point. Prints a table and the ratios (goal: instant
# within 1.2x between the sizes; the full restore grows). Not a test:
# nothing here asserts timings.
#
# Environment: WORKDIR (default /var/tmp; needs ~5 GiB free for the 8 GiB case),
# STANDBY_BENCH_SIZES_GIB (default 1,8), STANDBY_BENCH_DATA_EIGHTHS (random
# data per disk in eighths, 1-8, default 1), STANDBY_BENCH_KEEP=1 (keep the
# directories), STANDBY_BENCH_FULL=0 (instant runs only), STANDBY_BENCH_REPEAT
# (instant runs per size, default 3), STANDBY_QEMU_ACCEL=tcg|kvm, PROFILE (debug or release;
# default debug: the tests' build, no extra compile), CARGO_TARGET_DIR.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
PROFILE="${PROFILE:-debug}"
if [ "$PROFILE" = release ]; then
    cargo build -q --release --bin standby --example instant_bench
else
    cargo build -q --bin standby --example instant_bench
fi
TARGET="${CARGO_TARGET_DIR:-$REPO/target}"
exec "$TARGET/$PROFILE/examples/instant_bench" "${WORKDIR:-/var/tmp}" "$TARGET/$PROFILE/standby"
