#!/usr/bin/env bash
# The load bench in one command: records/s into SQLite and MongoDB across
# batch sizes (benches/load.rs).
#
#   bash scripts/bench-load.sh                           # 100,000 assets
#   CORRAL_BENCH_ASSETS=20000 bash scripts/bench-load.sh # quicker
#
# With MONGODB_URI set, MongoDB is that server (a real MongoDB 6+). Otherwise
# nx-27017 (the test stand-in, SQLite-backed: its figures are not MongoDB's)
# is installed into ./.venv and started for the run, then stopped (a server
# already running from scripts/mongo-test-server.sh is reused and left running).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ -z "${MONGODB_URI:-}" ]]; then
    bash scripts/mongo-test-server.sh install
    if ! bash scripts/mongo-test-server.sh status 2>/dev/null; then
        trap 'bash scripts/mongo-test-server.sh stop || true' EXIT
    fi
    uri_line="$(bash scripts/mongo-test-server.sh start)"
    export "${uri_line?}"
fi
# The URI may carry credentials: it is never printed.
cargo bench -p corral-workspace --bench load "$@"
