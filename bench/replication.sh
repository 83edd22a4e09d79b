#!/usr/bin/env bash
# Replication benchmark: standby vs restic vs borg (zstd,1) on the canonical
# 2 GiB disk (bench/gen_image.py) and its 1% change
# (bench/modify_image.py IMG 1), generated here. For each tool and each of RUNS repetitions:
#   (a) first full backup, (b) backup after the 1% change,
#   (c) restore of each point, checked with cmp against a copy of the source
#       taken at capture time.
# Records wall time, CPU time (user + sys), bytes added to the repository,
# peak RSS (/usr/bin/time),
# and prints medians with ratios. Not a test: nothing here asserts timings;
# but it exits 1 when any restore differs from its source.
#
# KEEP_RESULTS=1 appends to the previous results instead of starting over.
# Environment: BENCH_DIR (cache, default /tmp/standby-bench), RUNS (3),
# SIZE_MIB (2048), TOOLS ("standby restic borg"), CARGO (cargo), CARGO_TARGET_DIR.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
# The data generators live in the repository.
GEN="$REPO/bench"
BENCH_DIR="${BENCH_DIR:-/tmp/standby-bench}"
RUNS="${RUNS:-3}"
SIZE_MIB="${SIZE_MIB:-2048}"
CARGO="${CARGO:-cargo}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"

need=()
command -v restic >/dev/null || need+=(restic)
command -v borg >/dev/null || need+=(borgbackup)
[ -x /usr/bin/time ] || need+=(time)
command -v bc >/dev/null || need+=(bc)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

mkdir -p "$BENCH_DIR"
IMG="$BENCH_DIR/disk-$SIZE_MIB.img"
if [ ! -f "$IMG" ]; then
    echo "generating $IMG (once)" >&2
    python3 "$GEN/gen_image.py" "$IMG.tmp" "$SIZE_MIB"
    mv "$IMG.tmp" "$IMG"
fi

echo "building release (once)" >&2
(cd "$REPO" && $CARGO build --release --example replication_bench >&2)
SB="$CARGO_TARGET_DIR/release/examples/replication_bench"

W="$BENCH_DIR/work"
RES="$BENCH_DIR/results.tsv"
[ -n "${KEEP_RESULTS:-}" ] || : > "$RES"
export RESTIC_PASSWORD=bench BORG_PASSPHRASE=bench BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
export BORG_CACHE_DIR="$W/borg-cache"

size_of() { du -sb "$1" | cut -f1; }
mismatches=0

# timed TOOL WHAT CMD...: run CMD under /usr/bin/time; append wall and RSS.
timed() {
    local tool=$1 what=$2
    shift 2
    # Start every measured step with no writeback pending from the previous
    # one (a backup just wrote a repository's worth of dirty pages).
    sync
    /usr/bin/time -f "%e %M %U %S" -o "$W/time.out" "$@" > "$W/cmd.out" 2>&1 || {
        cat "$W/cmd.out" >&2
        echo "$tool $what failed" >&2
        exit 1
    }
    read -r wall rss user sys < "$W/time.out"
    printf '%s\t%s\twall\t%s\n%s\t%s\trss_kib\t%s\n' "$tool" "$what" "$wall" "$tool" "$what" "$rss" >> "$RES"
    # CPU seconds (user + sys) barely move when other work shares the machine.
    printf '%s\t%s\tcpu\t%s\n' "$tool" "$what" "$(echo "$user + $sys" | bc)" >> "$RES"
}

record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$RES"; }

check_same() {
    if cmp -s "$1" "$2"; then record "$3" "$4" identical 1; else
        record "$3" "$4" identical 0
        echo "MISMATCH: $3 $4 restore differs from the source" >&2
        mismatches=$((mismatches + 1))
    fi
}

backup() { # tool repo
    case $1 in
        standby) "$SB" point "$2" "$W/cur.img" "$W/sb-cache" ;;
        restic) restic -q -r "$2" backup "$W/cur.img" ;;
        borg) borg create --compression zstd,1 "$2::p$(date +%s%N)" cur.img ;;
    esac
}

restore() { # tool repo which out
    case $1 in
        standby) "$SB" restore "$2" "$3" "$4" ;;
        restic)
            rm -rf "$W/rt"
            restic -q -r "$2" restore "$3" --target "$W/rt"
            mv "$W/rt$W/cur.img" "$4"
            ;;
        borg)
            rm -rf "$W/bt" && mkdir -p "$W/bt"
            (cd "$W/bt" && borg extract "$2::$3")
            mv "$W/bt/cur.img" "$4"
            ;;
    esac
}

# /usr/bin/time runs programs, not shell functions: export them to a child bash.
export -f backup restore
export SB W

for run in $(seq 1 "$RUNS"); do
    for tool in ${TOOLS:-standby restic borg}; do
        echo "run $run: $tool" >&2
        rm -rf "$W" && mkdir -p "$W"
        cp "$IMG" "$W/cur.img"
        cp "$IMG" "$W/ref1.img"
        cat "$W/cur.img" > /dev/null
        repo="$W/repo-$tool"
        case $tool in
            standby) mkdir -p "$repo" ;;
            restic) restic -q -r "$repo" init > /dev/null ;;
            borg) borg init -e repokey "$repo" > /dev/null 2>&1 ;;
        esac
        base=$(size_of "$repo")
        cd "$W"
        timed "$tool" full bash -c 'backup "$@"' _ "$tool" "$repo"
        after1=$(size_of "$repo")
        record "$tool" full bytes_added $((after1 - base))
        if [ "$tool" = standby ]; then p1=$(awk '/^point/{print $2}' "$W/cmd.out"); fi
        if [ "$tool" = restic ]; then p1=$(restic -q -r "$repo" snapshots --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])'); fi
        if [ "$tool" = borg ]; then p1=$(borg list --short "$repo" | tail -1); fi

        python3 "$GEN/modify_image.py" "$W/cur.img" 1 > /dev/null
        cp "$W/cur.img" "$W/ref2.img"
        cat "$W/cur.img" > /dev/null
        timed "$tool" delta bash -c 'backup "$@"' _ "$tool" "$repo"
        after2=$(size_of "$repo")
        record "$tool" delta bytes_added $((after2 - after1))
        if [ "$tool" = standby ]; then p2=$(awk '/^point/{print $2}' "$W/cmd.out"); fi
        if [ "$tool" = restic ]; then p2=latest; fi
        if [ "$tool" = borg ]; then p2=$(borg list --short "$repo" | tail -1); fi
        rm -f "$W/cur.img"

        timed "$tool" restore_full bash -c 'restore "$@"' _ "$tool" "$repo" "$p1" "$W/out1.img"
        check_same "$W/ref1.img" "$W/out1.img" "$tool" restore_full
        rm -f "$W/out1.img"
        timed "$tool" restore_delta bash -c 'restore "$@"' _ "$tool" "$repo" "$p2" "$W/out2.img"
        check_same "$W/ref2.img" "$W/out2.img" "$tool" restore_delta
        cd /
        rm -rf "$W"
    done
done

python3 - "$BENCH_DIR/results.tsv" "$RUNS" <<'PY'
import sys, statistics, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    tool, what, metric, value = line.rstrip("\n").split("\t")
    rows[(tool, what, metric)].append(float(value))
med = lambda k: statistics.median(rows[k]) if rows.get(k) else float("nan")
tools = ["standby", "restic", "borg"]
def fmt(metric, v):
    if metric in ("wall", "cpu"): return f"{v:.2f} s"
    if metric == "bytes_added": return f"{v/1e6:.1f} MB"
    if metric == "rss_kib": return f"{v/1024:.0f} MiB"
    return f"{v:g}"
print(f"\nmedians of {sys.argv[2]} run(s); ratio = peer / standby (higher is better for standby)\n")
print(f"| {'step':<14} | {'metric':<11} | " + " | ".join(f"{t:>10}" for t in tools) + " | x restic | x borg |")
print("|" + "---|" * (5 + len(tools) - 1))
for what in ["full", "delta", "restore_full", "restore_delta"]:
    for metric in ["wall", "cpu", "bytes_added", "rss_kib"]:
        if (tools[0], what, metric) not in rows: continue
        vals = [med((t, what, metric)) for t in tools]
        r = [f"{v/vals[0]:.1f}x" if vals[0] else "-" for v in vals[1:]]
        print(f"| {what:<14} | {metric:<11} | " + " | ".join(f"{fmt(metric, v):>10}" for v in vals) + f" | {r[0]:>8} | {r[1]:>6} |")
ok = all(v == 1.0 for (t, w, m), vs in rows.items() if m == "identical" for v in vs)
print("\nevery restore identical to its source (cmp):", "yes" if ok else "NO")
PY
if [ "$mismatches" -gt 0 ]; then
    echo "FAILED: $mismatches restore(s) differed from their source" >&2
    exit 1
fi
