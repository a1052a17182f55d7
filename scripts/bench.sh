#!/usr/bin/env bash
# Issue 14's figures in one command: S1 (one CrowdStrike connection against
# its simulator, into SQLite on disk) at 100,000 and 1,000,000 hosts, which is
# also S2 (flat memory: peak RSS at both sizes), and S5 (a saturated normalize
# pool: runtime lag). Prints each bench's own report, then one table.
#
#   bash scripts/bench.sh                       # S1 100k (3 rounds), 1M (1 round), S5
#   CORRAL_BENCH_RUNS=1 bash scripts/bench.sh   # one round of S1 at 100k too
#   SIZES="100000" bash scripts/bench.sh        # skip the million
#
# Everything runs on this machine in release mode; the bound is measured in
# the same run (fetch and parse only, no normalize and no store), so ratios
# compare like with like on a busy machine.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SIZES="${SIZES:-100000 1000000}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

cargo bench -q -p corral-workspace --bench s1_crowdstrike --no-run
cargo bench -q -p corral-workspace --bench s5_cpu_heavy --no-run

for n in $SIZES; do
    runs="${CORRAL_BENCH_RUNS:-$([[ $n -ge 1000000 ]] && echo 1 || echo 3)}"
    echo "== S1 at $n hosts ($runs round(s))"
    CORRAL_BENCH_DEVICES="$n" CORRAL_BENCH_RUNS="$runs" \
        cargo bench -q -p corral-workspace --bench s1_crowdstrike 2>&1 | tee "$out/s1-$n.txt" | grep -v '^\s*$'
done
echo "== S5"
cargo bench -q -p corral-workspace --bench s5_cpu_heavy 2>&1 | tee "$out/s5.txt" | grep -v '^\s*$'

# One table from the reports' "median" sections.
field() { # file, label, awk field-extracting program
    grep -m1 -- "$2" "$1" | awk "$3" || true
}
echo
echo "| scenario | bound /s | corral /s | ratio | corral CPU s | bound CPU s | peak RSS | writes/asset | lag p99 / max |"
echo "|---|---|---|---|---|---|---|---|---|"
for n in $SIZES; do
    f="$out/s1-$n.txt"
    bound=$(field "$f" "fetch+parse only" '{print $4}')
    bcpu=$(field "$f" "fetch+parse only" '{print $6}')
    corral=$(field "$f" "  corral  " '{print $3}')
    ratio=$(field "$f" "  corral  " '{print $(NF-3)}')
    cpu=$(field "$f" "cpu seconds" '{print $4}')
    rss=$(field "$f" "peak RSS  " '{print $4" "$5}')
    writes=$(field "$f" "store writes" '{print $4" "$5}')
    lag=$(field "$f" "runtime lag" '{print $5" / "$8}')
    echo "| S1 $n | $bound | $corral | $ratio | $cpu | $bcpu | $rss | $writes | $lag ms |"
done
p99max=$(field "$out/s5.txt" "runtime lag p99 / max" '{print $7" / "$9}')
idle=$(field "$out/s5.txt" "idle lag p99 / max" '{print $7" / "$9}')
echo "| S5 | | | | | | | | $p99max ms (idle runtime: $idle ms) |"
