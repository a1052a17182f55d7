#!/usr/bin/env bash
# A throwaway MongoDB wire-protocol server for the corral-store tests.
#
# No real MongoDB can be installed on the development and CI machines, so the
# tests talk to nx-27017 (PyPI: a MongoDB wire-protocol server backed by
# SQLite). Point MONGODB_URI at a real MongoDB 6+ to run the same tests there.
#
#   scripts/mongo-test-server.sh start    # prints MONGODB_URI=mongodb://127.0.0.1:PORT on stdout
#   scripts/mongo-test-server.sh stop
#   scripts/mongo-test-server.sh status   # exit 0 while running
#   scripts/mongo-test-server.sh uri      # prints the URI of the running server
#   scripts/mongo-test-server.sh install  # only create the virtualenv and install nx-27017
#
# Typical use:
#   export "$(bash scripts/mongo-test-server.sh start)"
#   cargo test -p corral-store --test mongo_conformance
#   bash scripts/mongo-test-server.sh stop
#
# Only the MONGODB_URI line goes to stdout; progress and errors go to stderr.
# `start` reuses a server that is already running (same state directory).
#
# Environment:
#   CORRAL_VENV                 virtualenv to use (default: <repo>/.venv)
#   NX_27017_VERSION            nx-27017 version to install (default: 0.8.1)
#   CORRAL_MONGO_STATE          where the pid, port and logs live (default: <repo>/target/mongo-test-server);
#                               the data goes to a fresh temp dir, removed by `stop`
#   CORRAL_MONGO_START_TIMEOUT  seconds to wait for the server to answer (default: 60)
#   PYTHON                      interpreter used to create the virtualenv (default: python3)
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(git -C "$script_dir" rev-parse --show-toplevel 2>/dev/null || (cd "$script_dir/.." && pwd))"
venv="${CORRAL_VENV:-$repo_root/.venv}"
nx_version="${NX_27017_VERSION:-0.8.1}"
state_dir="${CORRAL_MONGO_STATE:-$repo_root/target/mongo-test-server}"
start_timeout="${CORRAL_MONGO_START_TIMEOUT:-60}"
python="${PYTHON:-python3}"

log() { echo "mongo-test-server: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# The pid of the running server, or nothing.
running_pid() {
    local pid
    [[ -f "$state_dir/pid" ]] || return 1
    pid="$(cat "$state_dir/pid" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

install() {
    if [[ ! -x "$venv/bin/python" ]]; then
        command -v "$python" >/dev/null 2>&1 || die "$python not found: install Python 3.10+ (with venv) first"
        log "creating virtualenv $venv"
        "$python" -m venv "$venv" >&2 ||
            die "could not create the virtualenv $venv (on Debian/Ubuntu: apt-get install python3-venv)"
    fi
    local have
    have="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("nx-27017"))' 2>/dev/null || true)"
    if [[ "$have" != "$nx_version" ]]; then
        log "installing nx-27017==$nx_version into $venv"
        PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/python" -m pip install --quiet --no-input "nx-27017==$nx_version" >&2 ||
            die "pip install nx-27017==$nx_version failed"
    fi
    [[ -x "$venv/bin/nx-27017" ]] || die "nx-27017 is installed but $venv/bin/nx-27017 is missing"
}

free_port() {
    "$venv/bin/python" - <<'EOF'
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

# Wait until the server answers a MongoDB `ping` (not just a TCP accept).
# $2: the launched process; $3: the pid file nx-27017 writes itself (setsid may
# fork, so the launched pid is not always the server's).
wait_ready() {
    local port="$1" pid="$2" pidfile="${3:-}"
    "$venv/bin/python" - "$port" "$pid" "$start_timeout" "$pidfile" <<'EOF'
import os, sys, time
import pymongo
from pymongo.errors import PyMongoError

port, pid, timeout, pidfile = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]

def alive(p):
    try:
        os.kill(p, 0)
        return True
    except OSError:
        return False

def server_alive():
    if alive(pid):
        return True
    try:
        with open(pidfile) as f:
            return alive(int(f.read().strip()))
    except (OSError, ValueError):
        return False

deadline = time.monotonic() + timeout
last = "no answer yet"
grace = time.monotonic() + 5.0  # a forking setsid exits before the server writes its pid file
while time.monotonic() < deadline:
    if not server_alive() and time.monotonic() > grace:
        print(f"nx-27017 (pid {pid}) exited before accepting connections", file=sys.stderr)
        sys.exit(2)
    try:
        client = pymongo.MongoClient(f"mongodb://127.0.0.1:{port}", serverSelectionTimeoutMS=500, connectTimeoutMS=500)
        client.admin.command("ping")
        client.close()
        sys.exit(0)
    except PyMongoError as e:
        last = str(e).splitlines()[0]
    time.sleep(0.2)
print(f"nx-27017 did not answer on 127.0.0.1:{port} within {timeout:.0f}s: {last}", file=sys.stderr)
sys.exit(1)
EOF
}

start() {
    local pid port data
    if pid="$(running_pid)"; then
        port="$(cat "$state_dir/port")"
        if wait_ready "$port" "$pid" 2>/dev/null; then
            log "reusing nx-27017 (pid $pid) on port $port"
            echo "MONGODB_URI=mongodb://127.0.0.1:$port"
            return 0
        fi
        log "server pid $pid does not answer; restarting it"
        stop
    fi
    install
    mkdir -p "$state_dir"
    data="$(mktemp -d "${TMPDIR:-/tmp}/corral-nx27017.XXXXXX")"
    echo "$data" >"$state_dir/datadir"
    port="$(free_port)"
    log "starting nx-27017 on 127.0.0.1:$port (data in $data)"
    # --data-dir: one SQLite file per logical database, so dropDatabase of one
    # test database does not wipe the others (the single-file mode would).
    # setsid + no stdin: the server outlives this script and never waits on a terminal.
    local detach=()
    command -v setsid >/dev/null 2>&1 && detach=(setsid)
    "${detach[@]}" "$venv/bin/nx-27017" \
        --host 127.0.0.1 --port "$port" \
        --data-dir "$data" \
        --pid-file "$state_dir/nx-27017.pid" \
        --log-file "$state_dir/nx-27017.log" \
        </dev/null >"$state_dir/stdout.log" 2>&1 &
    pid=$!
    echo "$pid" >"$state_dir/pid"
    echo "$port" >"$state_dir/port"
    if ! wait_ready "$port" "$pid" "$state_dir/nx-27017.pid"; then
        log "last lines of $state_dir/stdout.log:"
        tail -n 20 "$state_dir/stdout.log" >&2 || true
        stop
        die "nx-27017 failed to start"
    fi
    # The server's own pid (the same as $! unless setsid had to fork).
    local own
    own="$(cat "$state_dir/nx-27017.pid" 2>/dev/null || true)"
    if [[ "$own" =~ ^[0-9]+$ ]] && kill -0 "$own" 2>/dev/null; then
        pid="$own"
        echo "$pid" >"$state_dir/pid"
    fi
    log "nx-27017 ready (pid $pid)"
    echo "MONGODB_URI=mongodb://127.0.0.1:$port"
}

stop() {
    local pid
    if pid="$(running_pid)"; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "pid $pid ignored SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        log "stopped nx-27017 (pid $pid)"
    else
        log "no nx-27017 running (state: $state_dir)"
    fi
    local data
    data="$(cat "$state_dir/datadir" 2>/dev/null || true)"
    if [[ -n "$data" && "$data" == */corral-nx27017.* ]]; then
        rm -rf "$data"
    fi
    rm -f "$state_dir/pid" "$state_dir/port" "$state_dir/datadir" "$state_dir/nx-27017.pid"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status)
    if pid="$(running_pid)"; then
        log "running (pid $pid, port $(cat "$state_dir/port"))"
    else
        log "not running"
        exit 1
    fi
    ;;
uri)
    running_pid >/dev/null || die "not running: run '$0 start'"
    echo "MONGODB_URI=mongodb://127.0.0.1:$(cat "$state_dir/port")"
    ;;
install) install ;;
*)
    echo "usage: $0 start|stop|status|uri|install" >&2
    exit 2
    ;;
esac
