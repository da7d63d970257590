#!/usr/bin/env python3
"""Round 11 (issue 14, item 1): the map smoothing and the image-score rule, on validation parts.

Round 8's cache and protocol (r8_eval.py: training goods in K folds, each scored by a model
taught on the other folds, against the 20 pool defects; no test image read). The patch scores
of each fold are computed once; every post-processing is then applied to the same scores:
blur σ (input pixels, on the patch grid, reflect edges; 0 = none) → bilinear to the input →
image score = mean of the top q of the map (q = 0: the maximum).

    target/r8-venv/bin/python scripts/teach-research/r11_post.py --set elpv-mono
Results are appended to scripts/teach-research/r11.jsonl.
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import r8_eval as r8  # noqa: E402

BLURS = [0, 4, 8, 16, 32]
TOPS = [0.0, 0.01, 0.05, 0.2, 1.0]


def patch_scores(m, f):
    z = m.project(m.feats(f), len(f))
    d, i = r8.nn(z, m.bank, m.bsq)
    return (d / (m.r[i] + 1e-6)).reshape(len(f), m.g, m.g)


def image_scores(s, g, size, blur, top):
    b = r8.reflect_blur_matrix(g, blur / (size / g)) if blur else np.eye(g)
    post = (r8.upsample_matrix(g, size) @ b).astype(np.float32)
    flat = np.einsum("ag,ngh,bh->nab", post, s, post).reshape(len(s), -1)
    if top == 0:
        return flat.max(1)
    k = max(1, int(round(top * flat.shape[1])))
    return np.partition(flat, -k, axis=1)[:, -k:].mean(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", required=True)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--member", default="lite2n-256")
    a = ap.parse_args()
    m = r8.Member(a.set, a.member, a.seed)
    n = len(m.good)
    order = np.random.default_rng(1000 + a.seed).permutation(n)
    folds = np.array_split(order, a.folds)
    res = {}
    for k in range(a.folds):
        held = folds[k]
        m.teach(np.concatenate([folds[j] for j in range(a.folds) if j != k]))
        sg, sp = patch_scores(m, m.good[held]), patch_scores(m, m.pool)
        for blur in BLURS:
            for top in TOPS:
                g = image_scores(sg, m.g, m.o["size"], blur, top)
                p = image_scores(sp, m.g, m.o["size"], blur, top)
                esc = float((p <= np.quantile(g, 0.99)).mean())
                res.setdefault((blur, top), []).append((r8.auroc(g, p), esc))
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "r11.jsonl")
    for (blur, top), v in res.items():
        row = {"set": a.set, "member": a.member, "blur_px": blur, "top": top, "folds": a.folds, "seed": a.seed,
               "auroc": float(np.mean([x[0] for x in v])), "auroc_folds": [round(float(x[0]), 4) for x in v],
               "escape_at_1pct": float(np.mean([x[1] for x in v]))}
        print(json.dumps(row), flush=True)
        with open(out, "a") as fh:
            fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
