#!/usr/bin/env bash
# Runs every corral test: formatting, lints, and the whole workspace's tests
# (unit, integration, end-to-end, benches in test mode).
#
# The MongoDB tests need a server: unless MONGODB_URI is already set (a real
# MongoDB 6+), this script starts nx-27017 (installed into ./.venv, kept
# between runs) on a free port and stops it at the end. nx-27017 is installed
# even when MONGODB_URI is set: the tests that kill their server mid-sync run
# a private nx-27017 of their own.
#
# The browser tests (crates/cli/tests/serve_browser.rs) drive headless
# Chromium through chromedriver: Debian's `chromium` and `chromium-driver`,
# installed here with apt-get when /usr/bin/chromium or /usr/bin/chromedriver
# is missing. Without them the browser tests fail in CI, and skip (listed at
# the end) elsewhere.
#
# The MongoDB tests never skip silently: without a server they fail. Outside
# CI, CORRAL_SKIP_MONGO=1 (exactly) lets them skip (nothing is installed or
# started then); each skipping test leaves a marker in target/test-skips, and
# this script lists them at the end. In CI (CI set, as .ci/run does) skipping
# is refused.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*" >&2; }
die() {
    printf 'test.sh: error: %s\n' "$*" >&2
    exit 1
}

in_ci=0
case "${CI:-}" in
"" | 0 | false | FALSE | False) ;;
*) in_ci=1 ;;
esac
skip_mongo="${CORRAL_SKIP_MONGO:-}"
if [[ -n "$skip_mongo" && "$in_ci" == 1 ]]; then
    die "CORRAL_SKIP_MONGO is set, but the MongoDB tests may not be skipped in CI"
fi
if [[ -n "$skip_mongo" && "$skip_mongo" != 1 ]]; then
    die "CORRAL_SKIP_MONGO=$skip_mongo: only CORRAL_SKIP_MONGO=1 skips the MongoDB tests"
fi

# Skipping tests write their markers here (see crates/store/src/nx.rs).
export CORRAL_SKIP_DIR="$PWD/target/test-skips"
rm -rf "$CORRAL_SKIP_DIR"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

# Adapters are cargo features of the binary: a build with one of them must compile.
step "cargo check: corral with only the okta adapter"
cargo check -p corral --no-default-features --features corral-adapter-okta --locked

if [[ "$skip_mongo" == 1 ]]; then
    step "CORRAL_SKIP_MONGO=1: no MongoDB test server; the MongoDB tests will skip"
else
    step "installing nx-27017 (MongoDB test stand-in) into .venv"
    bash scripts/mongo-test-server.sh install
    if [[ -z "${MONGODB_URI:-}" ]]; then
        step "starting the MongoDB test server (nx-27017)"
        uri_line="$(bash scripts/mongo-test-server.sh start)"
        export "${uri_line?}"
        trap 'bash scripts/mongo-test-server.sh stop || true' EXIT
    fi
    # The URI may carry credentials: it is never printed.
    echo "MongoDB tests: server configured" >&2
fi

if [[ ! -x /usr/bin/chromium || ! -x /usr/bin/chromedriver ]]; then
    step "installing Chromium and chromedriver (Debian packages) for the browser tests"
    sudo=()
    [[ "$(id -u)" == 0 ]] || sudo=(sudo -n)
    if command -v apt-get >/dev/null 2>&1 &&
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 &&
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            chromium chromium-driver >&2; then
        echo "browser tests: Chromium installed" >&2
    elif [[ "$in_ci" == 1 ]]; then
        die "could not install chromium and chromium-driver with apt-get: the browser tests cannot run in CI"
    else
        echo "test.sh: warning: could not install Chromium; the browser tests will skip" >&2
    fi
fi

step "cargo test"
status=0
cargo test --workspace --all-targets --locked --no-fail-fast || status=$?

if [[ -d "$CORRAL_SKIP_DIR" ]] && [[ -n "$(ls -A "$CORRAL_SKIP_DIR")" ]]; then
    {
        echo
        echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
        echo "!!! $(ls -A "$CORRAL_SKIP_DIR" | wc -l) test(s) SKIPPED; they did not run:"
        cat "$CORRAL_SKIP_DIR"/* | sed 's/^/!!!   /'
        echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    } >&2
fi
exit "$status"
