#!/usr/bin/env bash
# Run standby's fuzz targets, each for SECONDS (default 20), at low priority.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# Targets: config_loader sealed_object manifest_parser index_parser (all by
# default). Seeds: the example and invalid configurations for the loader,
# fuzz/seeds/TARGET for the others; the growing corpus stays in
# fuzz/corpus/TARGET (git-ignored). The toolchain is stable, so cargo-fuzz
# runs with RUSTC_BOOTSTRAP=1. A crash leaves its input in
# fuzz/artifacts/TARGET and makes this script exit non-zero; replay it with
# `RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET fuzz/artifacts/TARGET/crash-...`.
# Build output goes to $FUZZ_TARGET_DIR (default fuzz/target).
set -euo pipefail
cd "$(dirname "$0")"
command -v cargo >/dev/null || export PATH="$HOME/.cargo/bin:$PATH"
secs=${1:-20}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(config_loader sealed_object manifest_parser index_parser)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
target_dir=${FUZZ_TARGET_DIR:-$PWD/target}
export RUSTC_BOOTSTRAP=1

for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" log
    if [ "$t" = config_loader ]; then
        for f in ../plans/*/*.hcl ../testdata/invalid/*/*.hcl ../testdata/plans/*/config/*.hcl; do
            cp "$f" "corpus/$t/seed-$(echo "$f" | tr '/.' '__')"
        done
    elif [ -d "seeds/$t" ]; then
        cp seeds/"$t"/* "corpus/$t/"
    fi
done

nice -n 19 cargo fuzz build --target-dir "$target_dir"

status=0
for t in "${targets[@]}"; do
    started=$SECONDS
    if nice -n 19 cargo fuzz run --target-dir "$target_dir" "$t" "corpus/$t" -- \
        -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 -timeout=20 \
        >"log/$t.log" 2>&1; then
        result=ok
    else
        result=CRASH
        status=1
    fi
    runs=$(grep -oE 'Done [0-9]+ runs' "log/$t.log" | grep -oE '[0-9]+' | tail -1 || true)
    echo "fuzz: $t: ${runs:-?} runs in $((SECONDS - started)) s: $result (log: fuzz/log/$t.log)"
done
exit $status
