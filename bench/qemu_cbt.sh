#!/usr/bin/env bash
# VM changed-block tracking vs today's file path, through `standby
# replicate`: a 4 GiB qcow2 data disk of a running VM (the test guest) and
# the same disk as a raw file, 4 MiB of writes into both, a point of each
# with a cold page cache. Prints times, the ratio, and bytes read against
# QEMU's dirty count. Not a test: nothing here asserts timings.
#
# Environment: WORKDIR (default /var/tmp; needs ~9 GiB free),
# STANDBY_BENCH_DATA_GIB (GiB of data in the 4 GiB disk, default 4),
# STANDBY_BENCH_ROUNDS (rounds of writes + points, default 3; the median
# ratio is printed), STANDBY_BENCH_DROP_CACHES=1 (also drop the whole page
# cache, as root),
# STANDBY_QEMU_ACCEL=tcg|kvm (skip the KVM probe), PROFILE (release or
# debug; default release), CARGO_TARGET_DIR.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
# Release build, as users run it (PROFILE=debug for the tests' build).
PROFILE="${PROFILE:-release}"
if [ "$PROFILE" = release ]; then
    cargo build -q --release --bin standby --example qemu_cbt_bench
else
    cargo build -q --bin standby --example qemu_cbt_bench
fi
TARGET="${CARGO_TARGET_DIR:-$REPO/target}"
exec "$TARGET/$PROFILE/examples/qemu_cbt_bench" "${WORKDIR:-/var/tmp}" "$TARGET/$PROFILE/standby"
