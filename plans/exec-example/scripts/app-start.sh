#!/bin/sh
# The app's "boot": a service that runs until it is stopped, beating a
# heartbeat next to its system disk.
echo "app: booting from $STANDBY_DISK_SYSTEM ($STANDBY_MODE run $STANDBY_RUN_ID)"
while :; do
    date +%s > "$STANDBY_DISK_SYSTEM.heartbeat"
    sleep 1
done
