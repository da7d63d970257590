#!/usr/bin/env python3
"""Round 10 (issue 14, item 2): what a few labelled defects can add to the score, on validation
parts only.

Reads r8_extract.py's cache (training goods and the 20 labelled pool defects of a set; no test
image). Protocol: the training goods in 3 seeded folds × the pool defects in 2 seeded halves of
10. For each goods fold, a model is taught as r8_eval.py's default member on 85% of the other folds;
the other 15% are the hold-out goods a real teach also has (negatives for any fit). Each half of
the pool is then used as the "10 labelled defects" and the other half, with the fold's goods, is
the validation set. Figures: mean image AUROC and escape at 1% overkill over the 6 pairs.

Scores compared (patch score s = d / r, the default distance over its row's local scale):
  base          the default: map from s, mean of the top 5%
  kr=a          s · (2·p)^a with p = dg² / (dg² + dd²): dg the raw distance to the goods bank, dd to
                a defect bank (the T most anomalous patches of each labelled defect) — patches
                nearer the defects than the goods are raised, unusual but good-like ones lowered
  fuse=b        image level: z(base) + b·z(max over patches of p) (z by the hold-out goods)
  T=n           patches per labelled defect in the defect bank (default 8)

    target/r8-venv/bin/python scripts/teach-research/r10_eval.py --set elpv-mono base kr=1 kr=2 fuse=1
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from r8_eval import Member, auroc, nn  # noqa: E402


def parse(text):
    o = {"kr": 0.0, "fuse": 0.0, "T": 8}
    for kv in text.split(","):
        if kv == "base":
            continue
        k, v = kv.split("=")
        o[k] = float(v) if k != "T" else int(v)
    return o


class Scored:
    """Per-image patch quantities under one taught member."""

    def __init__(self, m, f):
        z = m.project(m.feats(f), len(f))
        d, i = nn(z, m.bank, m.bsq)
        self.n, self.g = len(f), m.g
        self.z, self.dg = z, d
        self.s = d / (m.r[i] + 1e-6)


def image_scores(m, sc, s):
    maps = np.einsum("ag,ngh,bh->nab", m.post, s.reshape(sc.n, m.g, m.g), m.post)
    flat = maps.reshape(sc.n, -1)
    k = max(1, int(round(0.05 * flat.shape[1])))
    return np.sort(flat, 1)[:, -k:].mean(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", required=True)
    ap.add_argument("--member", default="lite2n-256")
    ap.add_argument("configs", nargs="+")
    a = ap.parse_args()
    m = Member(a.set, a.member, 0)
    n = len(m.good)
    folds = np.array_split(np.random.default_rng(1000).permutation(n), 3)
    halves = np.array_split(np.random.default_rng(2000).permutation(len(m.pool)), 2)
    res = {c: ([], []) for c in a.configs}
    t0 = time.time()
    for k in range(3):
        rest = np.concatenate([folds[j] for j in range(3) if j != k])
        rest = rest[np.random.default_rng(3000 + k).permutation(len(rest))]
        nh = int(round(0.15 * len(rest)))
        hold, taught = rest[:nh], rest[nh:]
        m.teach(taught)
        val_g, hold_g, pool = Scored(m, m.good[folds[k]]), Scored(m, m.good[hold]), Scored(m, m.pool)
        for h in range(2):
            lab, val = halves[h], halves[1 - h]
            for c in a.configs:
                o = parse(c)
                # defect bank: the T highest-s patches of each labelled defect
                ps = pool.s.reshape(pool.n, -1)
                pz = pool.z.reshape(pool.n, m.g * m.g, -1)
                top = np.argsort(-ps[lab], 1)[:, : o["T"]]
                dbank = np.concatenate([pz[lab[j], top[j]] for j in range(len(lab))])
                dsq = (dbank * dbank).sum(1)

                def score(sc, rows=None):
                    s, z, dg = sc.s, sc.z, sc.dg
                    if rows is not None:
                        sel = (rows[:, None] * (m.g * m.g) + np.arange(m.g * m.g)[None]).reshape(-1)
                        s, z, dg = s[sel], z[sel], dg[sel]
                    dd, _ = nn(z, dbank, dsq)
                    p = dg ** 2 / (dg ** 2 + dd ** 2 + 1e-12)
                    ns = len(s) // (m.g * m.g)
                    sub = type("S", (), {"n": ns})
                    base = image_scores(m, sub, s * (2 * p) ** o["kr"] if o["kr"] else s)
                    return base, p.reshape(ns, -1).max(1)

                hb, hp = score(hold_g)
                gb, gp = score(val_g)
                db, dp = score(pool, val)
                if o["fuse"]:
                    zb = lambda v: (v - hb.mean()) / (hb.std() + 1e-9)  # noqa: E731
                    zp = lambda v: (v - hp.mean()) / (hp.std() + 1e-9)  # noqa: E731
                    gb, db = zb(gb) + o["fuse"] * zp(gp), zb(db) + o["fuse"] * zp(dp)
                res[c][0].append(auroc(gb, db))
                res[c][1].append(float((db <= np.quantile(gb, 0.99)).mean()))
    for c in a.configs:
        row = {"set": a.set, "member": a.member, "config": c, "auroc": round(float(np.mean(res[c][0])), 4),
               "auroc_pairs": [round(float(v), 3) for v in res[c][0]],
               "escape_at_1pct": round(float(np.mean(res[c][1])), 3), "secs": round(time.time() - t0, 1)}
        print(json.dumps(row), flush=True)
        with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "r10.jsonl"), "a") as fh:
            fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
