#!/usr/bin/env bash
# Open-and-list benchmark (issue 16, item 5): a synthetic file:// vault of
# 100,000 points (100 machines x 1,000) and 10 million blobs, written
# directly in the vault's format by bench/open_fill.rs; then `standby
# points` (open the vault, list every point) is timed, with its peak
# memory, by /usr/bin/time -v. Three runs, each printed; the bar is 2 s.
#
#   bench/open.sh [MACHINES POINTS_PER_MACHINE BLOBS]
#
# Needs about 1.5 GB under $TMPDIR (removed at the end). Release build.
set -euo pipefail
cd "$(dirname "$0")/.."
machines=${1:-100}
per=${2:-1000}
blobs=${3:-10000000}
cargo build --release --quiet --bin standby --example open_fill
bin=$PWD/target/release
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/cfg/keys"
cat > "$work/cfg/main.hcl" <<EOF
vault "main" {
  url      = "file://$work/vault"
  key_file = "keys/vault.key"
}
EOF
(cd "$work/cfg" && "$bin/standby" vault init >/dev/null)
"$bin/examples/open_fill" "file://$work/vault" "$work/cfg/keys/vault.key" "$machines" "$per" "$blobs"
printf 'vault: %s in %s objects\n' "$(du -sh "$work/vault" | cut -f1)" "$(find "$work/vault" -type f | wc -l)"
for run in 1 2 3; do
    (cd "$work/cfg" && STANDBY_REQUESTS=1 /usr/bin/time -v "$bin/standby" points --json \
        > "$work/points.json" 2> "$work/time.txt")
    listed=$(grep -o '"id"' "$work/points.json" | wc -l)
    wall=$(grep 'Elapsed (wall clock)' "$work/time.txt" | awk '{print $NF}')
    rss=$(grep 'Maximum resident set size' "$work/time.txt" | awk '{print $NF}')
    requests=$(grep '^requests: ' "$work/time.txt" | cut -d' ' -f2-)
    echo "run $run: $listed points listed in $wall (m:ss), peak RSS $((rss / 1024)) MiB; requests $requests"
done
