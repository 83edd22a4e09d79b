#!/usr/bin/env bash
# Times `standby validate` and `standby plan` on a generated fleet of 10,000
# machines and 10,000 protections (bench/gen_fleet.py): against an empty
# state, and against a state that matches all but 1% of it. Five runs each;
# prints the median wall time, CPU time (user + system) and peak RSS.
# Bar: each under 2 s wall on 2 cores. Wall time includes waiting for the
# CPU, so compare it with CPU time when the machine is busy (see `uptime`).
#
#   bench/plan.sh [MACHINES]
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-10000}"
runs=5
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

if [ ! -x /usr/bin/time ]; then
  echo "installing GNU time for wall and peak-memory figures" >&2
  (apt-get update -qq && apt-get install -y -qq time) >/dev/null
fi

cargo build --release --quiet
bin="$CARGO_TARGET_DIR/release/standby"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

python3 bench/gen_fleet.py "$work/empty" --machines "$n"
python3 bench/gen_fleet.py "$work/matching" --machines "$n" --state-match 99
printf 'load average: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
printf 'configuration: %s bytes of HCL, %d machines, %d protections\n' \
  "$(cat "$work/empty"/*.hcl | wc -c)" "$n" "$n"

# measure NAME DIR ARGS...: run 5 times, print the medians.
measure() {
  local name="$1" dir="$2"
  shift 2
  local walls=() rss=() cpus=() code
  for _ in $(seq "$runs"); do
    code=0
    /usr/bin/time -v -o "$work/time.txt" "$bin" -C "$dir" "$@" >"$work/out.txt" 2>"$work/err.txt" || code=$?
    # plan --detailed-exitcode exits 2 when something changes.
    if [ "$code" != 0 ] && [ "$code" != 2 ]; then
      echo "$name failed (exit $code):" >&2
      cat "$work/err.txt" >&2
      exit 1
    fi
    walls+=("$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,t,":"); s=0; for(i=1;i<=n;i++) s=s*60+t[i]; print s}' "$work/time.txt")")
    cpus+=("$(awk -F': ' '/User time/ {u=$2} /System time/ {s=$2} END {print u + s}' "$work/time.txt")")
    rss+=("$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time.txt")")
  done
  local wall mem cpu
  wall="$(printf '%s\n' "${walls[@]}" | sort -g | sed -n "$(((runs + 1) / 2))p")"
  cpu="$(printf '%s\n' "${cpus[@]}" | sort -g | sed -n "$(((runs + 1) / 2))p")"
  mem="$(printf '%s\n' "${rss[@]}" | sort -g | sed -n "$(((runs + 1) / 2))p")"
  printf '%-28s median wall %5.2f s   cpu %5.2f s   peak RSS %6.1f MiB   (%s)\n' \
    "$name" "$wall" "$cpu" "$(awk -v k="$mem" 'BEGIN {print k / 1024}')" \
    "$(grep -m1 -E '^(Plan:|No changes|"changes")' "$work/out.txt" || tail -n 1 "$work/out.txt")"
}

measure "validate" "$work/empty" validate
measure "plan, empty state" "$work/empty" plan --detailed-exitcode
measure "plan, 99% matching state" "$work/matching" plan --detailed-exitcode
measure "plan --json, 99% matching" "$work/matching" plan --json --detailed-exitcode
