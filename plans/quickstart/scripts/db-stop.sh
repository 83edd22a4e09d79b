#!/bin/sh
# Shut the database down cleanly (planned failover): the writer finishes its
# transaction and exits. Succeeds when no writer runs.
set -eu
ctl=run/db-writer
[ -e "$ctl/writer.pid" ] || exit 0
pid=$(cat "$ctl/writer.pid")
touch "$ctl/stop"
while kill -0 "$pid" 2>/dev/null; do sleep 0.02; done
