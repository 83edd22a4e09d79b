#!/bin/sh
# Quiesce the database before an app-consistent point: ask the writer
# (scripts/db-writer.sh) to pause between transactions and wait until it
# says it has. The row count at the freeze is appended to
# run/db-writer/freezes, one line per point. Without a running writer there
# is nothing to pause.
set -eu
ctl=run/db-writer
mkdir -p "${STANDBY_STATE_DIR:-.standby}" "$ctl"
date -u +%Y-%m-%dT%H:%M:%SZ > "${STANDBY_STATE_DIR:-.standby}/db-frozen"
pid=$(cat "$ctl/writer.pid" 2>/dev/null || true)
# A writer that is gone (or a zombie nobody reaped) cannot answer.
if [ -n "$pid" ] && [ -e "/proc/$pid" ] && ! grep -q '^[0-9]* (.*) Z' "/proc/$pid/stat" 2>/dev/null; then
    token="$$-$(date +%s%N)"
    echo "$token" > "$ctl/pause.tmp" && mv "$ctl/pause.tmp" "$ctl/pause"
    # standby's quiesce timeout bounds this wait.
    while :; do
        read -r seen rows 2>/dev/null < "$ctl/paused" || true
        [ "${seen:-}" = "$token" ] && break
        sleep 0.02
    done
    echo "$rows" >> "$ctl/freezes"
fi
