#!/bin/sh
# Resume the database after the point is taken: removes the freeze marker.
set -eu
rm -f "${STANDBY_STATE_DIR:-.standby}/db-frozen"
