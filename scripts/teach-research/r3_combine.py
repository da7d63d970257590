#!/usr/bin/env python3
"""Round 3: score-level ensembles and threshold calibration from the per-image scores that
r3_eval.py --holdout 0.15 wrote to /tmp/r3-scores/ (test scores + scores of the held-out goods).

    .venv-torch/bin/python scripts/teach-research/r3_combine.py ensemble A.npz B.npz --tag ...
    .venv-torch/bin/python scripts/teach-research/r3_combine.py calib A.npz [B.npz ...] --tag ...

ensemble: each variant's scores → (s − mean_hold) / std_hold, then the mean (and the max) of the
z-scores. calib: thresholds from the held-out goods (max, mean + 3·std, 99th percentile) → test
overkill (goods rejected) and escape (defectives passed); with several files, the z-mean ensemble.
"""
import argparse, json, os, sys
import numpy as np
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common as C

SC = "/tmp/r3-scores"


def per_class(s, labels, defects):
    return {dd: round(C.auroc(s[(defects == "good") | (defects == dd)], labels[(defects == "good") | (defects == dd)]), 4)
            for dd in sorted(set(defects) - {"good"})}


def z(f):
    return (f["test"] - f["hold"].mean()) / f["hold"].std(), (f["hold"] - f["hold"].mean()) / f["hold"].std()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["ensemble", "calib"])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--tag", default="")
    ap.add_argument("--macs", type=float, default=0.0, help="scoring MACs (M) of the combination, for the record")
    ap.add_argument("--test-from", default="", help="calib: take the test scores from these files instead (e.g. the full-bank run; comma-separated, same order)")
    a = ap.parse_args()
    fs = [np.load(p if os.path.isabs(p) else os.path.join(SC, p)) for p in a.files]
    labels, defects = fs[0]["labels"], fs[0]["defects"]
    out = []
    tf = [np.load(p if os.path.isabs(p) else os.path.join(SC, p))["test"] for p in a.test_from.split(",")] if a.test_from else [f["test"] for f in fs]
    if a.mode == "ensemble":
        # z by the held-out goods' mean/std of the hold-out bank; test scores optionally from the full-bank run
        zs = [((t - f["hold"].mean()) / f["hold"].std(), None) for t, f in zip(tf, fs)]
        for name, s in (("single:" + (a.test_from.split(",")[i] if a.test_from else a.files[i]), t) for i, t in enumerate(tf)):
            out.append(dict(name=name, image_auroc=round(C.auroc(s, labels), 4), per_defect=per_class(s, labels, defects)))
        for name, op in (("zmean", np.mean), ("zmax", np.max)):
            s = op(np.stack([t for t, _ in zs]), 0)
            out.append(dict(name=name, image_auroc=round(C.auroc(s, labels), 4), per_defect=per_class(s, labels, defects)))
    else:
        if len(fs) == 1:
            st, sh = tf[0], fs[0]["hold"]
        else:
            st = np.mean([(t - f["hold"].mean()) / f["hold"].std() for t, f in zip(tf, fs)], 0)
            sh = np.mean([h for _, h in (z(f) for f in fs)], 0)
        good = labels == 0
        ths = {"max": sh.max(), "mean+3std": sh.mean() + 3 * sh.std(), "p99": np.percentile(sh, 99),
               "mean+2std": sh.mean() + 2 * sh.std(), "p95": np.percentile(sh, 95), "p90": np.percentile(sh, 90)}
        for name, th in ths.items():
            rej = st > th
            esc = {dd: round(float((~rej[defects == dd]).mean()), 4) for dd in sorted(set(defects) - {"good"})}
            out.append(dict(rule=name, threshold=round(float(th), 5), overkill=round(float(rej[good].mean()), 4),
                            overkill_n=int(rej[good].sum()), escape=round(float((~rej[~good]).mean()), 4),
                            escape_n=int((~rej[~good]).sum()), escape_per_defect=esc,
                            hold_rejected=int((sh > th).sum()), n_hold=int(len(sh))))
        # the best achievable on the test set, for reference: threshold at the max test-good score (0 overkill)
        th = st[good].max()
        out.append(dict(rule="oracle: 0 test overkill", threshold=round(float(th), 5), overkill=0.0, escape=round(float((st[~good] <= th).mean()), 4)))
        for q in (0.01, 0.02, 0.05, 0.10):  # ROC points: threshold at the (1-q) quantile of the test goods
            th = np.quantile(st[good], 1 - q)
            out.append(dict(rule=f"oracle: test overkill {q:.2f}", threshold=round(float(th), 5), overkill=round(float((st[good] > th).mean()), 4),
                            escape=round(float((st[~good] <= th).mean()), 4)))
        out.append(dict(rule="image_auroc", value=round(C.auroc(st, labels), 4)))
    rec = dict(tag=a.tag, mode=a.mode, files=a.files, test_from=a.test_from, macs_M=a.macs, results=out)
    print(json.dumps(rec, indent=1))
    with open(os.path.join(HERE, "r3.jsonl"), "a") as f:
        f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
