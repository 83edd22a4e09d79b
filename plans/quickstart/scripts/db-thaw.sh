#!/bin/sh
# Resume the database after the point is taken: let the writer go on and
# remove the freeze marker.
set -eu
rm -f run/db-writer/pause "${STANDBY_STATE_DIR:-.standby}/db-frozen"
