#!/usr/bin/env bash
# The test command: installs everything, makes sure PostgreSQL is up, lints, runs the suite
# on SQLite and PostgreSQL. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
    echo "PostgreSQL is not up: starting it"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
    for _ in $(seq 1 30); do
        pg_isready -h 127.0.0.1 -p 5432 -q && break
        sleep 1
    done
fi

.venv/bin/ruff check pbx_control tests scripts
.venv/bin/python -m pytest -q "$@"
