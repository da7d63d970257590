#!/usr/bin/env bash
# Memory soak: run a station flat out for DURATION seconds (default 600) and sample its resident
# memory every 10 s, to show RSS stays flat. Prints a table and the peak (VmHWM).
#   scripts/soak.sh [DURATION_S] [CONFIG]
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-600}
config=${2:-configs/flat-out.toml}
bin=target/release/linesight
[ -x "$bin" ] || cargo build --release --locked
"$bin" run --config "$config" --summary /tmp/linesight-soak-summary.json 2>/tmp/linesight-soak.log &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true' EXIT
start=$(date +%s)
printf '%8s %10s %10s\n' elapsed_s rss_mib peak_mib
while :; do
  now=$(date +%s); elapsed=$((now - start))
  awk -v t="$elapsed" '/VmRSS/ {r=$2} /VmHWM/ {h=$2} END {printf "%8d %10.1f %10.1f\n", t, r/1024, h/1024}' /proc/$pid/status
  [ "$elapsed" -ge "$duration" ] && break
  sleep 10
done
kill -TERM $pid; wait $pid; trap - EXIT
echo "accounting: $(cat /tmp/linesight-soak-summary.json)"
