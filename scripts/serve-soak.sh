#!/usr/bin/env bash
# Soak check for `corral serve` (issue 13): 300 connections (100 each on
# simulated CrowdStrike, Okta and Microsoft Graph tenants) on 1-minute
# schedules for 10 minutes. Reports RSS at 2 and at 10 minutes, scheduled
# runs due vs started vs skipped (the previous run still going), runs the
# store holds, and overlaps of runs of one connection (0 required).
#
#   bash scripts/serve-soak.sh                    # 10 minutes, release build
#   SOAK_MINUTES=3 CORRAL_PROFILE=debug bash scripts/serve-soak.sh
#
# Environment:
#   SOAK_MINUTES      how long corral serve runs (default 10; RSS is read at 2 and at the end)
#   SOAK_CONNECTIONS  connections (default 300, a multiple of 3)
#   SOAK_SIZE         records per simulated tenant (default 200)
#   CORRAL_PROFILE    release (default) or debug: which build of corral and corral-sim to use
#   SOAK_DIR          working directory (default: a fresh temporary one, removed at the end)
#
# Not a test: it takes minutes and its figures depend on the machine. It
# exits 1 when a run overlapped another of its connection, when a due tick
# was lost, or when RSS at the end is more than 1.1 times RSS at 2 minutes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

minutes="${SOAK_MINUTES:-10}"
connections="${SOAK_CONNECTIONS:-300}"
size="${SOAK_SIZE:-200}"
profile="${CORRAL_PROFILE:-release}"
log() { printf 'serve-soak: %s\n' "$*" >&2; }

if [[ "$profile" == release ]]; then
    cargo build --release -p corral -p corral-sim >&2
else
    cargo build -p corral -p corral-sim >&2
fi
bin="$PWD/target/$profile"

work="${SOAK_DIR:-$(mktemp -d)}"
mkdir -p "$work"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [[ -n "${SOAK_DIR:-}" ]] || rm -rf "$work"
}
trap cleanup EXIT

# One simulator per vendor, each on its own port.
declare -A url
for vendor in crowdstrike okta msgraph; do
    "$bin/corral-sim" serve --vendor "$vendor" --port 0 --seed 13 --size "$size" --latency-ms 10 --threads 1 \
        >"$work/sim-$vendor.out" 2>"$work/sim-$vendor.err" &
    pids+=($!)
    for _ in $(seq 100); do
        if grep -q "serving at" "$work/sim-$vendor.out" 2>/dev/null; then break; fi
        sleep 0.1
    done
    url[$vendor]="$(sed -n 's/.*serving at \(http[^ ]*\).*/\1/p' "$work/sim-$vendor.out" | head -1)"
    [[ -n "${url[$vendor]}" ]] || { log "the $vendor simulator did not start"; exit 1; }
done

# 300 connections on 1-minute schedules.
{
    printf '[serve]\nschedule = { every = "1m" }\n\n[engine]\nmax_connections = 32\n\n'
    for ((i = 0; i < connections; i++)); do
        case $((i % 3)) in
        0) printf '[[connection]]\nname = "crowdstrike-%03d"\nadapter = "crowdstrike"\n[connection.config]\nbase_url = "%s"\nclient_id = "corral-sim-client"\nclient_secret = "${SIM_SECRET}"\n\n' "$i" "${url[crowdstrike]}" ;;
        1) printf '[[connection]]\nname = "okta-%03d"\nadapter = "okta"\n[connection.config]\nbase_url = "%s"\ntoken = "${SIM_TOKEN}"\npage_size = 100\n\n' "$i" "${url[okta]}" ;;
        2) printf '[[connection]]\nname = "msgraph-%03d"\nadapter = "msgraph"\n[connection.config]\ntenant_id = "corral-sim-tenant"\nclient_id = "corral-sim-client"\nclient_secret = "${SIM_SECRET}"\nlogin_base_url = "%s"\ngraph_base_url = "%s"\npage_size = 100\n\n' "$i" "${url[msgraph]}" "${url[msgraph]}" ;;
        esac
    done
} >"$work/corral.toml"

export SIM_SECRET=corral-sim-secret SIM_TOKEN=corral-sim-token
(cd "$work" && exec "$bin/corral" serve --listen 127.0.0.1:0 >"$work/serve.out" 2>"$work/serve.err") &
serve_pid=$!
pids+=("$serve_pid")
for _ in $(seq 200); do
    if grep -q "listening on" "$work/serve.out" 2>/dev/null; then break; fi
    sleep 0.1
done
addr="$(sed -n 's/.*listening on http:\/\/\([^ ]*\).*/\1/p' "$work/serve.out" | head -1)"
[[ -n "$addr" ]] || { log "corral serve did not start"; cat "$work/serve.err" >&2; exit 1; }
# The corral process itself (the subshell exec'd into it).
log "corral serve (pid $serve_pid) on $addr, $connections connections every minute, for $minutes minutes"

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$serve_pid/status"; }
started=$(date +%s)
samples="$work/rss.tsv"
: >"$samples"
rss2=""
while (($(date +%s) - started < minutes * 60)); do
    sleep 10
    elapsed=$(($(date +%s) - started))
    rss="$(rss_kb)"
    printf '%s\t%s\n' "$elapsed" "$rss" >>"$samples"
    if [[ -z "$rss2" ]] && ((elapsed >= 120)); then
        rss2="$rss"
        log "RSS at ${elapsed}s: $((rss / 1024)) MiB"
    fi
done
rss_end="$(rss_kb)"
status_json="$(python3 -c "import urllib.request,sys; print(urllib.request.urlopen('http://$addr/api/status').read().decode())")"
kill -TERM "$serve_pid"
wait "$serve_pid" || true

python3 - "$work/corral.db" "$status_json" "$samples" "${rss2:-0}" "$rss_end" "$minutes" "$connections" <<'EOF'
import json, sqlite3, sys
from collections import defaultdict
db, status, samples, rss2, rss_end, minutes, conns = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
t = status["totals"]
rows = sqlite3.connect(db).execute("SELECT connection, status, summary FROM runs").fetchall()
spans = defaultdict(list)
by_status = defaultdict(int)
for conn, st, summary in rows:
    s = json.loads(summary)
    spans[conn].append((s["started_at"], s["ended_at"]))
    by_status[st] += 1
overlaps = 0
for conn, v in spans.items():
    v.sort()
    overlaps += sum(1 for a, b in zip(v, v[1:]) if a[1] > b[0])
per_conn = sorted(len(v) for v in spans.values())
print(f"connections: {conns}, minutes: {minutes}")
print(f"RSS at 2 min: {rss2 // 1024} MiB, at the end: {rss_end // 1024} MiB, ratio {rss_end / max(rss2, 1):.3f}")
print(f"scheduled runs due: {t['ticks_due']}, started: {t['scheduled_runs_started']}, skipped (previous run still going): {t['ticks_skipped']}, finished: {t['runs_finished']}")
print(f"runs in the store: {len(rows)} by status {dict(by_status)}; per connection min {per_conn[0] if per_conn else 0}, max {per_conn[-1] if per_conn else 0}; connections that ran: {len(spans)}")
print(f"overlapping runs of one connection: {overlaps}")
pts = [tuple(map(int, l.split())) for l in open(samples) if l.strip()]
def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else 0
early = median([r for t, r in pts if 60 <= t <= 120])
late = median([r for t, r in pts if t >= pts[-1][0] - 60]) if pts else 0
print(f"RSS one-minute medians: minute 2 {early // 1024} MiB, last minute {late // 1024} MiB, ratio {late / max(early, 1):.3f}")
print("RSS samples (s, KiB):", " ".join(f"{t}:{r}" for t, r in pts))
bad = []
if overlaps: bad.append("runs overlapped")
if t["ticks_due"] != t["scheduled_runs_started"] + t["ticks_skipped"]: bad.append("a due tick neither ran nor was counted as skipped")
if len(rows) < t["runs_finished"]: bad.append("finished runs missing from the store")
if rss2 and rss_end > 1.1 * rss2: bad.append("RSS grew by more than 10%")
if bad:
    print("FAILED: " + "; ".join(bad)); sys.exit(1)
print("OK")
EOF
