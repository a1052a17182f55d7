#!/usr/bin/env bash
# Runs every corral test: formatting, lints, and the whole workspace's tests
# (unit, integration, end-to-end, benches in test mode).
#
# The MongoDB tests need a server: unless MONGODB_URI is already set (a real
# MongoDB 6+), this script installs nx-27017 into ./.venv (kept between runs),
# starts it on a free port, and stops it at the end. If no server can be had,
# the MongoDB tests fail; they never skip silently.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

if [[ -z "${MONGODB_URI:-}" ]]; then
    step "starting the MongoDB test server (nx-27017)"
    uri_line="$(bash scripts/mongo-test-server.sh start)"
    export "${uri_line?}"
    trap 'bash scripts/mongo-test-server.sh stop || true' EXIT
fi
# The URI may carry credentials: it is never printed.
echo "MongoDB tests: server configured" >&2

step "cargo test"
cargo test --workspace --all-targets --locked --no-fail-fast
