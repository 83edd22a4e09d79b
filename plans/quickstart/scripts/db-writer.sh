#!/bin/sh
# The sample database's application: takes one order at a time until told
# to stop. It obeys the quiesce hooks: when run/db-writer/pause appears
# (holding a token), it finishes its current transaction, answers in
# run/db-writer/paused with "TOKEN ROWS" and takes no order until the pause
# is lifted. Every committed row count also goes to run/db-writer/committed,
# so tests can tell which rows must survive a failover.
#
#   sh scripts/db-writer.sh DATABASE [CONTROL_DIR]     (stop: touch CONTROL_DIR/stop)
set -eu
db="$1"
ctl="${2:-run/db-writer}"
mkdir -p "$ctl"
rm -f "$ctl/stop" "$ctl/paused" "$ctl/pause"
echo $$ > "$ctl/writer.pid"
trap 'rm -f "$ctl/writer.pid"' EXIT
publish() { # atomically, so a reader never sees half a line
    echo "$2" > "$ctl/$1.tmp" && mv "$ctl/$1.tmp" "$ctl/$1"
}
n=0
while [ ! -e "$ctl/stop" ]; do
    token=$(cat "$ctl/pause" 2>/dev/null || true)
    if [ -n "$token" ]; then
        publish paused "$token $(sqlite3 "$db" 'SELECT count(*) FROM orders')"
        while [ "$(cat "$ctl/pause" 2>/dev/null || true)" = "$token" ] && [ ! -e "$ctl/stop" ]; do
            sleep 0.02
        done
        continue
    fi
    n=$((n + 1))
    count=$(sqlite3 "$db" "INSERT INTO orders (customer, total_cents) VALUES ('writer-$$-$n', $n); SELECT count(*) FROM orders;")
    publish committed "$count"
    sleep 0.01
done
