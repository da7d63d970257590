#!/usr/bin/env python3
"""Round 4: z-score ensembles of saved r4_eval.py scores (npz in /tmp/r4-scores/).
Each member's scores are standardised with the mean/std of its held-out goods scored by the bank
taught without them (r4_eval.py --holdout), then averaged (z-mean) or maxed (z-max).

    python3 r4_combine.py --tag X lite2-256-l2-pca64-8000:k1-s16-q0.05 lite2-384-l2-pca64-3550:k1-s16-q0.05
"""
import argparse, json, os, sys
import numpy as np
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common as C

SC = "/tmp/r4-scores"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("members", nargs="+", help="npz-name:post-key[:macs_M]")
    ap.add_argument("--tag", default="")
    ap.add_argument("--write", action="store_true")
    a = ap.parse_args()
    zs, macs, labels, defects = [], 0.0, None, None
    for m in a.members:
        parts = m.split(":")
        name, key = parts[0], parts[1]
        macs += float(parts[2]) if len(parts) > 2 else 0.0
        z = np.load(os.path.join(SC, name + ".npz"))
        labels, defects = z["labels"], list(z["defects"])
        t, h = z["test|" + key], z["hold|" + key]
        zs.append((t - h.mean()) / (h.std() + 1e-12))
        print(f"  {m}: alone {C.auroc(t, labels):.4f}")
    Z = np.stack(zs)
    for rule, s in (("z-mean", Z.mean(0)), ("z-max", Z.max(0))):
        per = {dd: round(C.auroc(s[[x in ("good", dd) for x in defects]], labels[[x in ("good", dd) for x in defects]]), 4)
               for dd in sorted(set(defects) - {"good"})}
        r = dict(tag=a.tag, ensemble=a.members, rule=rule, image_auroc=round(C.auroc(s, labels), 4), per_defect=per, macs_M=round(macs, 1))
        print(json.dumps(r))
        if a.write:
            with open(os.path.join(HERE, "r4.jsonl"), "a") as f:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
