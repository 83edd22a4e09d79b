#!/usr/bin/env bash
# Scale benchmark (issue 17): what points cost on Azure Blob (Azurite) and
# S3 (moto) as the vault grows. Not a test: nothing here asserts timings;
# it prints time, object-store requests and bytes of each step:
#
#   1. `apply` of N protections' first points (N machines, one 1 MiB disk
#      each: half random, half zeros);
#   2. one round of N small deltas (`replicate`, 4 KiB changed per disk);
#   3. one protection's delta, then `points` and `status` of it, with the
#      vault at about 1,000 and then 10,000 points (built fast by
#      bench/scale_fill.rs: copies of a point of another protection, each
#      with its own index object, then that machine's catalog rebuilt);
#   4. `vault compact` of the index objects so made, then the delta again.
#
# Requests come from the store layer's counters (STANDBY_REQUESTS=1).
# Environment: N (300), BACKENDS ("az s3"), FILL ("1000 10000": vault sizes
# to reach), BIN (the standby binary; default target/release/standby, built
# when missing), BENCH_DIR (/tmp/standby-scale).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
N="${N:-300}"
BACKENDS="${BACKENDS:-az s3}"
FILL="${FILL:-1000 10000}"
BENCH_DIR="${BENCH_DIR:-/tmp/standby-scale}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
BIN="${BIN:-$CARGO_TARGET_DIR/release/standby}"
FILL_BIN="$(dirname "$BIN")/examples/scale_fill"
if [ ! -x "$BIN" ] || [ ! -x "$FILL_BIN" ]; then
    (cd "$REPO" && cargo build --release --bin standby --example scale_fill)
fi
# Azurite and moto as the tests use them (started when not yet).
[ -f "$REPO/.ci/.cache/services.env" ] || bash "$REPO/.ci/services.sh" start
# shellcheck disable=SC1091
source "$REPO/.ci/.cache/services.env"

rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR"

# A fleet of N machines into the vault at URL, under DIR.
make_fleet() {
    local dir=$1 url=$2
    mkdir -p "$dir/keys"
    cat >"$dir/main.hcl" <<EOF
vault "main" {
  url      = "$url"
  key_file = "keys/vault.key"
}
site "onprem" {
  provider = "local"
  root     = "sites/onprem"
}
site "dr" {
  provider = "local"
  root     = "sites/dr"
}
policy "p" {
  rpo_threshold          = "15m"
  crash_consistent_every = "5m"
  app_consistent_every   = "1h"
  retention              = "365d"
}
EOF
    python3 - "$dir" "$N" <<'EOF'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
with open(os.path.join(d, "fleet.hcl"), "w") as f:
    for i in range(n):
        f.write(f'machine "m{i}" {{\n  site = site.onprem\n  disk "system" {{ path = "m{i}/system.img" }}\n}}\n')
        f.write(f'protection "m{i}" {{\n  machine = machine.m{i}\n  target  = site.dr\n  vault   = vault.main\n  policy  = policy.p\n}}\n')
        p = os.path.join(d, "sites/onprem", f"m{i}")
        os.makedirs(p, exist_ok=True)
        with open(os.path.join(p, "system.img"), "wb") as img:
            img.write(os.urandom(512 << 10))
            img.write(bytes(512 << 10))
EOF
}

# Rewrite one 4 KiB block of every disk (or of machine $2 only).
change() {
    python3 - "$1" "${2:-}" "$N" <<'EOF'
import os, random, sys
d, only, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
for i in ([int(only)] if only else range(n)):
    with open(os.path.join(d, "sites/onprem", f"m{i}", "system.img"), "r+b") as f:
        f.seek(random.randrange(256) * 4096)
        f.write(os.urandom(4096))
EOF
}

# run LABEL ARGS...: one standby command, its time and requests as a row.
run() {
    local label=$1
    shift
    local t0 t1 req
    t0=$(date +%s.%N)
    STANDBY_REQUESTS=1 "$BIN" -C "$dir" "$@" >"$BENCH_DIR/out" 2>"$BENCH_DIR/err" || {
        cat "$BENCH_DIR/err" >&2
        exit 1
    }
    t1=$(date +%s.%N)
    req=$(sed -n 's/^requests: //p' "$BENCH_DIR/err" | tail -1)
    python3 - "$backend" "$label" "$t0" "$t1" "$req" <<'EOF' | tee -a "$BENCH_DIR/results.txt"
import json, sys
b, label, t0, t1, req = sys.argv[1:]
r = json.loads(req)
n = sum(r[k] for k in ("get", "put", "list", "delete", "head"))
print(f"{b:<3} {label:<44} {float(t1)-float(t0):8.2f} s {n:7d} req  "
      f"(get {r['get']}, put {r['put']}, list {r['list']}, delete {r['delete']}, head {r['head']})  "
      f"in {r['bytes_in']/1e6:8.2f} MB  out {r['bytes_out']/1e6:8.2f} MB")
EOF
}

points_in_vault() {
    STANDBY_REQUESTS=0 "$BIN" -C "$dir" points --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'
}

echo "standby scale benchmark: $N protections, $(nproc) cores, $(date -u +%FT%TZ)" | tee "$BENCH_DIR/results.txt"
for backend in $BACKENDS; do
    case $backend in
    az) base=$STANDBY_TEST_AZ_URL ;;
    s3) base=$STANDBY_TEST_S3_URL ;;
    *) echo "unknown backend $backend" >&2; exit 1 ;;
    esac
    dir="$BENCH_DIR/$backend"
    url="$base/scale-$(date +%s)-$RANDOM"
    make_fleet "$dir" "$url"
    "$BIN" -C "$dir" vault init >/dev/null
    run "apply: $N first points" apply -auto-approve
    change "$dir"
    run "replicate: round of $N deltas (4 KiB each)" replicate
    for target in $FILL; do
        have=$(points_in_vault)
        if [ "$have" -lt "$target" ]; then
            STANDBY_REQUESTS=0 "$FILL_BIN" "$url" "$dir/keys/vault.key" machine.m1 $((target - have)) |
                sed "s/^/$backend fill: /" | tee -a "$BENCH_DIR/results.txt"
        fi
        have=$(points_in_vault)
        change "$dir" 0
        run "replicate m0, 4 KiB, vault of $have points" replicate protection.m0
        run "points protection.m0 ($have in vault)" points protection.m0 --json
        run "points protection.m1 ($have in vault)" points protection.m1 --json
        run "status ($N protections)" status --json
    done
    run "vault compact" vault compact
    change "$dir" 0
    run "replicate m0 after compaction" replicate protection.m0
done
echo "results: $BENCH_DIR/results.txt"
