#!/bin/sh
# Quiesce the database before an app-consistent point. The sample machine
# has no running database, so this only leaves a marker that tests can see.
set -eu
mkdir -p "${STANDBY_STATE_DIR:-.standby}"
date -u +%Y-%m-%dT%H:%M:%SZ > "${STANDBY_STATE_DIR:-.standby}/db-frozen"
