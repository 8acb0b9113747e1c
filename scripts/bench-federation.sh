#!/usr/bin/env bash
# Runs one federation benchmark the way docs/benchmarks.md ("Federation
# between two sites") was measured:
#
#   bash scripts/bench-federation.sh messages|catchup|join|todevice|keysquery OUTDIR [haven loadtest-federation flags...]
#
# It builds the binary (unless BENCH_BIN names one) and runs
# `haven loadtest-federation --scenario S --dir OUTDIR/sites --json`, which
# starts two SQLite sites (loopback, mutual TLS with a CA made for the run)
# from that binary and stops them at the end. OUTDIR gets report.txt,
# report.json, and under sites/ the sites' logs and, with --profile, their
# CPU profiles (open with `go tool pprof BINARY OUTDIR/sites/cpu-*.pprof`).
#
# Examples:
#   bash scripts/bench-federation.sh messages /tmp/f1 --layout split,local --rate 100 --duration 60s
#   bash scripts/bench-federation.sh catchup /tmp/f2 --catchup-messages 10000
#   bash scripts/bench-federation.sh join /tmp/f3 --join-members 1000
#   bash scripts/bench-federation.sh todevice /tmp/f4 --todevice-devices 100 --todevice-rate 5 --duration 30s
#   bash scripts/bench-federation.sh keysquery /tmp/f5 --keys-users 100 --keys-rounds 200
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
  sed -n '2,19p' "$0" >&2
  exit 2
fi
scenario=$1 out=$2
shift 2
case $scenario in messages|catchup|join|todevice|keysquery) ;; *) echo "bench-federation.sh: scenario must be messages, catchup, join, todevice or keysquery" >&2; exit 2 ;; esac
mkdir -p "$out"
out=$(cd "$out" && pwd)
export PATH=$PATH:/usr/local/go/bin
bin=${BENCH_BIN:-$out/haven}
if [ -z "${BENCH_BIN:-}" ]; then
  go build -o "$bin" ./cmd/haven
fi
ulimit -n "$(ulimit -Hn)"
rm -rf "$out/sites"
set +e
"$bin" loadtest-federation --scenario "$scenario" --bin "$bin" --dir "$out/sites" --json "$@" >"$out/report.json" 2>"$out/report.txt"
code=$?
set -e
cat "$out/report.txt"
for log in "$out"/sites/*/site-*.log; do
  [ -f "$log" ] || continue
  if grep -qiE 'level=(error|warn)|panic' "$log"; then
    echo "bench-federation.sh: $log (warnings and errors, last 10 lines):" >&2
    grep -iE 'level=(error|warn)|panic' "$log" | tail -n 10 >&2
  fi
done
exit $code
