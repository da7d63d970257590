#!/usr/bin/env bash
# Teach-mode accuracy over every real data set in ../shared/datasets, one fixed seeded protocol.
#
#   make bench-accuracy                                  # all sets, goods only and 10 defects
#   SETS=mtd DEFECT_COUNTS="0 5 20" make bench-accuracy  # a subset; TEACH_ARGS="--size 160" too
#
# 1. scripts/accuracy-layout.py lays out mtd, elpv-mono and elpv-poly under target/accuracy/<set>
#    (seed 2026, symbolic links only: the data never enters the repository), with a pool of 20
#    labelled defects kept out of every test set, so all runs of a set see the same test images;
# 2. per set and per N in DEFECT_COUNTS: `linesight teach` on train/good with the default recipe
#    (plus TEACH_ARGS), and with `--defects defects-N` when N > 0, timed (wall seconds);
# 3. `linesight eval` on the set's test/ through the real pipeline (JSON report and per-image CSV);
# 4. scripts/accuracy_table.py prints the markdown table, also in target/accuracy-bench/table.md.
#
# Each run lives in target/accuracy-bench/<set>/<run>/ (run = goods or defects<N>): model/,
# teach.log (teach's stdout), teach.time, teach.args (TEACH_ARGS), eval.json, images.csv,
# eval.txt. The model sits in a subfolder because teach replaces its --out folder, which would
# take the log with it. Runs of sets not in SETS are kept, so the table shows every set run.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${ACCURACY_DATA:-../shared/datasets}
LAYOUT=target/accuracy
OUT=${ACCURACY_OUT:-target/accuracy-bench}
BIN=${LINESIGHT:-./target/release/linesight}
SETS=${SETS:-mtd elpv-mono elpv-poly}
DEFECT_COUNTS=${DEFECT_COUNTS:-0 10}
TEACH_ARGS=${TEACH_ARGS:-}
if [ ! -d "$DATA" ]; then
    echo "bench-accuracy: no data sets at $DATA (set ACCURACY_DATA to the datasets folder)" >&2
    exit 2
fi
python3 scripts/accuracy-layout.py --src "$DATA" --out "$LAYOUT" --sets "$SETS"

for set in $SETS; do
    for n in $DEFECT_COUNTS; do
        if [ "$n" = 0 ]; then
            run=goods
            defects=()
        else
            run=defects$n
            if [ ! -d "$LAYOUT/$set/defects-$n" ]; then
                echo "bench-accuracy: no $LAYOUT/$set/defects-$n (the layout has defects-5, -10, -20)" >&2
                exit 2
            fi
            defects=(--defects "$LAYOUT/$set/defects-$n")
        fi
        dir=$OUT/$set/$run
        # A stale eval.json from an earlier run must not end up in the table.
        rm -rf "$dir"
        mkdir -p "$dir"
        # The recipe beyond the defaults, so the table can tell runs of different recipes apart.
        echo "${TEACH_ARGS}" >"$dir/teach.args"
        echo "== $set/$run: teach ${defects[*]} ${TEACH_ARGS}"
        # Fail the whole benchmark if teach fails (e.g. a binary without --defects): a table with
        # a silently missing row would read as a result. Its stderr stays on the terminal.
        # shellcheck disable=SC2086 # TEACH_ARGS is a list of options
        if ! /usr/bin/time -f "%e" -o "$dir/teach.time" \
            "$BIN" teach --images "$LAYOUT/$set/train/good" --out "$dir/model" "${defects[@]}" ${TEACH_ARGS} \
            >"$dir/teach.log"; then
            echo "bench-accuracy: teach failed for $set/$run (log: $dir/teach.log)" >&2
            exit 1
        fi
        echo "   taught in $(tail -n 1 "$dir/teach.time") s"
        echo "== $set/$run: eval on $LAYOUT/$set/test"
        "$BIN" eval --model "$dir/model" --dataset "$LAYOUT/$set/test" \
            --json "$dir/eval.json" --csv "$dir/images.csv" | tee "$dir/eval.txt"
    done
done
python3 scripts/accuracy_table.py --root "$OUT"
