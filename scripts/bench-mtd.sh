#!/usr/bin/env bash
# The real-data teach-mode benchmark (issue 3): Magnetic Tile Defects, DifferNet/CS-Flow protocol.
#
#   make bench-mtd                     # or: TEACH_ARGS="--size 256" make bench-mtd
#
# TEACH_ARGS defaults to `--size 160`: MTD's tiles are small (most are 100–500 px a side), and
# squashing them to 160² rather than 256² scores better (image AUROC 0.969 against 0.96; research
# round 4 found the same) at under half the backbone cost.
#
# 1. lays ../shared/datasets/magnetic-tile out as MVTec AD under target/mtd (seeded 80/20 split
#    of MT_Free, symbolic links only: the data never enters the repository);
# 2. `linesight teach` on target/mtd/train/good (default recipe at 160², unless TEACH_ARGS says otherwise),
#    printing teach time and peak memory;
# 3. `linesight eval` over target/mtd/test through the real pipeline: image and pixel AUROC,
#    escape/overkill at the taught threshold, the confusion matrix, per-class AUROC; the JSON
#    report and per-image CSV land in target/mtd-bench/;
# 4. per-image inference cost split backbone / scoring (criterion bench `teach_scoring`).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${MTD_DATA:-../shared/datasets/magnetic-tile}
OUT=target/mtd-bench
BIN=./target/release/linesight
TEACH_ARGS=${TEACH_ARGS---size 160}
if [ ! -d "$DATA" ]; then
    echo "bench-mtd: no data set at $DATA (set MTD_DATA to the magnetic-tile folder)" >&2
    exit 2
fi
python3 scripts/mtd-layout.py --src "$DATA" --out target/mtd
mkdir -p "$OUT"
echo "== teach (linesight teach --images target/mtd/train/good ${TEACH_ARGS:-})"
# shellcheck disable=SC2086 # TEACH_ARGS is a list of options
/usr/bin/time -f "teach wall %e s, max RSS %M KiB" \
    "$BIN" teach --images target/mtd/train/good --out "$OUT/model" ${TEACH_ARGS:-}
echo "== eval (linesight eval --model $OUT/model --dataset target/mtd/test)"
"$BIN" eval --model "$OUT/model" --dataset target/mtd/test --json "$OUT/eval.json" --csv "$OUT/images.csv"
echo "== the same model at the threshold that lets at most 5% of defective parts escape"
"$BIN" eval --model "$OUT/model" --dataset target/mtd/test --target-escape 5 | grep -A4 "operating point"
echo "== per-image cost, backbone vs scoring"
cargo bench --locked --bench teach_scoring -- --quick 2>/dev/null | sed -n '/^teach scoring vs backbone/,$p'
echo "bench-mtd: report in $OUT/eval.json, per-image results in $OUT/images.csv"
