#!/bin/sh
# "Boot" the recovered web machine: nothing runs; report the disk in use.
set -eu
echo "web started from $STANDBY_DISK_SYSTEM"
