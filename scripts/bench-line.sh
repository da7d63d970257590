#!/usr/bin/env bash
# Line-output timing over many parts (issue 5): a synthetic camera at RATE parts/s for PARTS parts,
# rejects and results sent over Modbus TCP to a real pymodbus server acting as the PLC
# (tests/peers/plc_sim.py, which records every write at arrival), then scripts/line_report.py
# joins the PLC's log with the station's audit trail.
#
#   scripts/bench-line.sh [PARTS=10000] [RATE=100]
set -euo pipefail
cd "$(dirname "$0")/.."
PARTS=${1:-10000}
RATE=${2:-100}
OUT=${OUT:-target/bench-line}
rm -rf "$OUT" && mkdir -p "$OUT"
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$PWD/.ort/lib/libonnxruntime.so}"

# A real PLC is dedicated hardware: the simulator gets real-time priority when it can have it,
# so that what is measured is the station, not the simulator waiting for a core.
RT=(); if chrt -f 5 true 2>/dev/null; then RT=(chrt -f 5); fi
"${RT[@]}" .venv/bin/python tests/peers/plc_sim.py --port 0 --log "$OUT/plc.jsonl" --auto-ack > "$OUT/plc.out" 2> "$OUT/plc.err" &
PLC=$!
trap 'kill $PLC 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q '^PORT ' "$OUT/plc.out" 2>/dev/null && break; sleep 0.1; done
PORT=$(awk '/^PORT /{print $2}' "$OUT/plc.out")
[ -n "$PORT" ] || { echo "PLC simulator did not start:"; cat "$OUT/plc.err"; exit 1; }

cat > "$OUT/station.toml" <<TOML
[station]
name = "bench-line"
[[camera]]
id = "cam"
fps = $RATE
[camera.source]
kind = "synthetic"
surface = "brushed_metal"
width = 480
height = 480
defect_probability = 0.3
seed = 5
[model]
package = "$PWD/models/demo"
[pipeline]
tile_overlap_px = 32
[[rule]]
class = "defect"
min_score = 0.5
min_area_px = 12
max_count = 0
[api]
enabled = false
[line]
delay_ms = 200
margin_ms = 10
pulse_ms = 5
fire_window_ms = 2.5
events = "$PWD/$OUT/events.jsonl"
[line.modbus]
address = "127.0.0.1:$PORT"
timeout_ms = 50
poll_ms = 5
TOML

echo "station: $PARTS parts at $RATE parts/s, PLC simulator on 127.0.0.1:$PORT"
./target/release/linesight run --config "$OUT/station.toml" --max-frames "$PARTS" --admin-listen off 2> "$OUT/station.err"
tail -2 "$OUT/station.err"
.venv/bin/python scripts/line_report.py "$OUT/events.jsonl" "$OUT/plc.jsonl" --json "$OUT/report.json"
