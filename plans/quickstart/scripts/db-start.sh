#!/bin/sh
# "Boot" the recovered database: the sample machine is its disks, so
# starting it means checking the database opens.
set -eu
sqlite3 "$STANDBY_DISK_DATA" 'SELECT 1' > /dev/null
