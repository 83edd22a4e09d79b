#!/bin/sh
# Shut the database down cleanly (planned failover): the writer finishes its
# transaction and exits. Succeeds when no writer runs.
set -eu
ctl=run/db-writer
[ -e "$ctl/writer.pid" ] || exit 0
pid=$(cat "$ctl/writer.pid")
touch "$ctl/stop"
# The writer removes its pid file as it exits; a writer killed outright
# cannot, so also stop waiting once its process is gone (or a zombie).
running() {
    [ -e "$ctl/writer.pid" ] && [ -e "/proc/$pid" ] &&
        ! grep -q '^[0-9]* (.*) Z' "/proc/$pid/stat" 2>/dev/null
}
while running; do sleep 0.02; done
