#!/bin/sh
# Entry point of the pbx-control image: the arguments are a pbx-control command line.
# Before a long-running "serve ..." command the database schema is upgraded, so a fresh
# PostgreSQL works on the first start. PBX_CONTROL_DB_UPGRADE=0 skips it (compose.yaml runs
# the upgrade once in its own service, so that two servers never race to migrate).
set -eu

if [ "${1:-}" = "serve" ] && [ "${PBX_CONTROL_DB_UPGRADE:-1}" != "0" ]; then
    pbx-control db upgrade
fi

exec pbx-control "$@"
