#!/usr/bin/env python3
"""One markdown table from the runs of `make bench-accuracy` (scripts/bench-accuracy.sh).

Reads every ROOT/<set>/<run>/ (run = `goods`, or `defects<N>` taught with N labelled defects):
eval.json (`linesight eval --json`), images.csv (`--csv`), model/model.toml, teach.time (wall
seconds from /usr/bin/time) and teach.args; prints the table and writes it to ROOT/table.md.

Escape and overkill are the pipeline's own verdicts at the model's threshold (eval.json
`pipeline`). The "@ ≤1%" columns are how far the score ranking is from the plant's usual target of
1% escape at 1% overkill: from the per-image scores, the escape at the lowest threshold that
rejects at most 1% of the test goods, and the overkill at the highest threshold that lets at most
1% of the test defects through (eval's --target-escape rule; a frame without a score counts as
rejected, as eval counts it). Stdlib only (tomllib: Python 3.11).
"""

import argparse
import csv
import json
import math
import os
import re
import sys
import tomllib

SET_ORDER = ("mtd", "elpv-mono", "elpv-poly")
# Per-image scoring time, if eval's report has one (first key found wins; unit from the suffix).
# Without one, the column falls back to elapsed_s / images: the whole pipeline, marked †.
SCORING_KEYS = ("scoring_ms_per_image", "scoring_ms", "ms_per_image", "scoring_s_per_image")
DASH = "—"


def pct(v):
    return DASH if v is None else f"{100 * v:.1f}%"


def num(v, digits=3):
    return DASH if v is None else f"{v:.{digits}f}"


def read_scores(path):
    """(good scores, defective scores); a missing score (inference failed) is +inf: rejected."""
    good, bad = [], []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row["verdict"] == "UNREADABLE":
                continue  # never inspected: eval leaves it out of the rates too
            s = float(row["score"]) if row["score"] else math.inf
            (bad if row["label"] == "defective" else good).append(s)
    return good, bad


def rate_at(scores, t, rejected):
    """Share of scores rejected (score ≥ t) or passed, as asked."""
    n = sum(1 for s in scores if (s >= t) == rejected)
    return n / len(scores) if scores else None


def escape_at_overkill(good, bad, target=0.01):
    """Escape at the lowest threshold that rejects at most `target` of the goods."""
    if not good or not bad:
        return None
    g = sorted(good, reverse=True)
    allowed = math.floor(target * len(g) + 1e-9)
    if allowed >= len(g):
        return 0.0
    # Rejecting only scores strictly above the (allowed+1)-th highest good keeps ≤ allowed goods out.
    t = math.nextafter(g[allowed], math.inf)
    return rate_at(bad, t, rejected=False)


def overkill_at_escape(good, bad, target=0.01):
    """Overkill at the highest threshold that lets at most `target` of the defects pass."""
    if not good or not bad:
        return None
    b = sorted(bad)
    allowed = math.floor(target * len(b) + 1e-9)
    if allowed >= len(b):
        return 0.0
    # Scores below b[allowed] are at most `allowed` defects (ties with it are rejected), as eval.
    return rate_at(good, b[allowed], rejected=True)


def time_per_image(report):
    for key in SCORING_KEYS:
        v = report.get(key)
        if isinstance(v, (int, float)):
            return (v * 1000 if key.endswith("_s") or "_s_" in key else v), ""
    if report.get("images"):
        return 1000 * report["elapsed_s"] / report["images"], "†"
    return None, ""


def read_run(path):
    report = json.load(open(os.path.join(path, "eval.json")))
    row = {"report": report}
    toml_path = os.path.join(path, "model", "model.toml")
    if not os.path.exists(toml_path):
        toml_path = os.path.join(path, "model.toml")  # a run taught straight into its folder
    teach = {}
    if os.path.exists(toml_path):
        with open(toml_path, "rb") as f:
            teach = tomllib.load(f).get("teach", {})
    op = teach.get("operating_point", {})
    search = teach.get("recipe", {})
    row["recipe"] = search.get("chosen", DASH)
    if search.get("post_chosen"):  # how the map is read, when labelled defects chose it
        row["recipe"] += ", " + search["post_chosen"]
    head = teach.get("head")
    # The learned distance correction: used, tried and left out, or not tried (goods only).
    row["head"] = DASH if not head else ("used" if head.get("used") else "not used")
    row["estimated"] = {k: v for k, v in op.items() if k.startswith("estimated_")} if isinstance(op, dict) else {}
    try:
        # /usr/bin/time -o writes "Command exited with non-zero status" first on failure.
        row["teach_s"] = float(open(os.path.join(path, "teach.time")).read().split()[-1])
    except (OSError, ValueError, IndexError):
        row["teach_s"] = teach.get("seconds_total")
    args_path = os.path.join(path, "teach.args")
    row["args"] = open(args_path).read().strip() if os.path.exists(args_path) else ""
    csv_path = os.path.join(path, "images.csv")
    good, bad = read_scores(csv_path) if os.path.exists(csv_path) else ([], [])
    row["esc_at_1"], row["ok_at_1"] = escape_at_overkill(good, bad), overkill_at_escape(good, bad)
    row["n"] = (len(good), len(bad))
    return row


def collect(root):
    rows = []
    sets = sorted(os.listdir(root), key=lambda s: (SET_ORDER.index(s) if s in SET_ORDER else 99, s))
    for name in sets:
        if not os.path.isdir(os.path.join(root, name)):
            continue
        for run in os.listdir(os.path.join(root, name)):
            m = re.fullmatch(r"goods|defects(\d+)", run)
            path = os.path.join(root, name, run)
            if not m or not os.path.exists(os.path.join(path, "eval.json")):
                print(f"skipping {path}: not a finished run (no eval.json)", file=sys.stderr)
                continue
            row = read_run(path)
            row["set"], row["defects"] = name, int(m.group(1) or 0)
            rows.append(row)
    rows.sort(key=lambda r: (sets.index(r["set"]), r["defects"]))
    return rows


def table(rows):
    est_keys = sorted({k for r in rows for k in r["estimated"]})
    show_args = any(r["args"] for r in rows)
    head = ["set", "defects", "recipe", "head", "image AUROC", "pixel AUROC", "escape", "overkill",
            "escape @ ≤1% overkill", "overkill @ ≤1% escape", "teach s", "ms / image"]
    # teach's own estimates ([teach.operating_point] estimated_*), as "est. escape synthetic" etc.
    head += ["est. " + k[len("estimated_"):].replace("_", " ") for k in est_keys]
    head += ["teach args"] if show_args else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    fallback = False
    for r in rows:
        rep = r["report"]
        pipe = rep.get("pipeline", {})
        t, mark = time_per_image(rep)
        fallback |= mark == "†"
        cells = [r["set"], str(r["defects"]), r["recipe"], r["head"], num(rep.get("image_auroc")),
                 num(rep.get("pixel_auroc")),
                 pct(pipe.get("escape_rate")), pct(pipe.get("overkill_rate")),
                 pct(r["esc_at_1"]), pct(r["ok_at_1"]),
                 num(r["teach_s"], 1), (num(t, 1) + mark) if t is not None else DASH]
        for k in est_keys:
            v = r["estimated"].get(k)
            # Escape/overkill estimates are rates in [0, 1]: shown as percentages; others as they are.
            rate = isinstance(v, (int, float)) and re.search("escape|overkill", k) and 0 <= v <= 1
            cells.append(pct(v) if rate else DASH if v is None else str(v))
        if show_args:
            cells.append(f"`{r['args']}`" if r["args"] else "defaults")
        lines.append("| " + " | ".join(cells) + " |")
    sizes = {}
    for r in rows:
        sizes.setdefault(r["set"], r["n"])  # every run of a set has the same test set
    notes = ["", "escape / overkill: the pipeline's verdicts at the model's own threshold. The @ ≤1% "
             "columns: from the per-image scores, at the threshold meeting that bound on the test set ("
             + "; ".join(f"{k}: {g} good, {b} defective" for k, (g, b) in sizes.items()) + ")."]
    if fallback:
        notes.append("† no per-image scoring time in eval.json: eval's elapsed_s / images, the whole "
                     "pipeline (decode, backbone, scoring, model load) on this machine.")
    return "\n".join(lines + notes) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--root", default=os.path.join(repo, "target", "accuracy-bench"))
    ap.add_argument("--out", help="where to write the table (default ROOT/table.md)")
    args = ap.parse_args()
    rows = collect(args.root)
    if not rows:
        sys.exit(f"no finished runs under {args.root}")
    text = table(rows)
    print(text, end="")
    with open(args.out or os.path.join(args.root, "table.md"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
