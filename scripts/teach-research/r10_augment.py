#!/usr/bin/env python3
"""Round 10 (issue 14): do rotated and mirrored copies of the goods in the bank help products
whose parts come in several orientations (elpv cells: busbars horizontal or vertical)?

Extracts the training goods' features under the 7 non-identity symmetries of the square (as
r8_extract.py: standardised contrast, Lite2, 256², cached beside it as good_sym.npy), then runs
r8_eval.py's 3-fold validation with the bank (and PCA) taught on the fold's goods plus their
copies under the chosen symmetries. No test image is read.

    target/r8-venv/bin/python scripts/teach-research/r10_augment.py --set elpv-mono --syms 0 2 4 7
"""
import argparse
import json
import os
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from r8_eval import Member, auroc  # noqa: E402
from r8_extract import avg3, pool2, REPO  # noqa: E402


def sym(x, k):
    """k in 1..7: rotations by 90°·(k % 4), mirrored when k ≥ 4."""
    if k >= 4:
        x = x[:, ::-1]
    return np.rot90(x, k % 4)


def extract(name, key, size=256):
    out = os.path.join(REPO, "target", "teach-research", "r8", name, key, "good_sym.npy")
    if os.path.exists(out):
        return np.load(out).astype(np.float32)
    meta = json.load(open(os.path.join(os.path.dirname(out), "names.json")))
    sess = ort.InferenceSession(os.path.join(REPO, "models", "backbone-lite2", "model.onnx"))
    feats = []
    for f in meta["names"]["good"]:
        img = Image.open(os.path.join(REPO, "target", "accuracy", name, "train/good", f)).convert("L").resize((size, size), Image.BILINEAR)
        x = np.asarray(img, np.float32) / 255.0
        x = (x - x.mean()) / (x.std() + 1e-3) * 0.2 + 0.5
        row = []
        for k in range(1, 8):
            y = np.ascontiguousarray(sym(x, k))
            s8, s16 = sess.run(["feat_s8", "feat_s16"], {"input": np.repeat(y[None, None], 3, axis=1)})
            row.append(np.concatenate([pool2(avg3(s8[0])), avg3(s16[0])], 0).astype(np.float16))
        feats.append(np.stack(row))
    arr = np.stack(feats)  # [n, 7, C, g, g]
    np.save(out, arr)
    return arr.astype(np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", required=True)
    ap.add_argument("--syms", nargs="+", type=int, default=[])
    a = ap.parse_args()
    m = Member(a.set, "lite2n-256", 0)
    symf = extract(a.set, "lite2n-256")
    orig = m.good
    n = len(orig)
    folds = np.array_split(np.random.default_rng(1000).permutation(n), 3)
    aucs, esc = [], []
    for k in range(3):
        taught = np.concatenate([folds[j] for j in range(3) if j != k])
        m.good = np.concatenate([orig[taught]] + [symf[taught, s - 1] for s in a.syms])
        m.teach(np.arange(len(m.good)))
        g, p = m.score(orig[folds[k]]), m.score(m.pool)
        aucs.append(auroc(g, p))
        esc.append(float((p <= np.quantile(g, 0.99)).mean()))
    row = {"set": a.set, "syms": a.syms, "auroc": round(float(np.mean(aucs)), 4), "auroc_folds": [round(float(v), 4) for v in aucs],
           "escape_at_1pct": round(float(np.mean(esc)), 3)}
    print(json.dumps(row), flush=True)
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "r10.jsonl"), "a") as fh:
        fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
