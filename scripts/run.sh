#!/usr/bin/env bash
# Sets up .venv, migrates the database and runs pbx-control. With no arguments it runs
# `pbx-control demo` (the controller against recorded FreeSWITCH calls, no PBX needed);
# otherwise the arguments are a pbx-control command, e.g. `serve freeswitch`.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
if [ "$#" -eq 0 ]; then
    exec .venv/bin/pbx-control demo
fi
.venv/bin/pbx-control db upgrade
exec .venv/bin/pbx-control "$@"
