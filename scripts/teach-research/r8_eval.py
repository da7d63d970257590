#!/usr/bin/env python3
"""Round 8 (issue 14, item 4): stronger features, judged on validation parts only.

Reads the features r8_extract.py cached (training goods and the 20 labelled pool defects of each
set; never a test image). Validation: the training goods are cut into K seeded folds; each fold is
scored by a model taught on the other folds, against the pool defects scored by that same model;
the figure is the mean over folds of the image AUROC (fold goods vs pool defects), and the
escape at the fold goods' 99th percentile (1% overkill). The model is the Rust default
(src/teach): per-tap L2 → PCA 64 fitted on ≤ 200k seeded patches, whitened (floor 1e-3 λ₀) →
greedy k-center coreset (a seeded pool of 16 rows per bank row, bank = min(25% of the patches,
ROWS)) → 1-NN distance ÷ (the nearest row's mean distance to its 3 nearest other rows) → map
blurred on the grid (σ 16 px) → bilinear (half-pixel) to the input → mean of the top 5%.

A config is `member[+member…]`, each member `variant-size[:option…]`; several members are an
ensemble, each member z-scored by the fold goods' mean and std and the z-scores averaged. Options:
  pos=λ        append λ·(row, col)/g to the whitened features (position-aware neighbours)
  w8=a         scale the s8 tap by a after its L2 (feature reweighting; 1 = default)
  top=q        image score = mean of the top q of the map (default 0.05)
  rows=N       bank rows (default 8192)
  dims=D       PCA dims (default 64)
  white=p      whitening power (default 1)

    target/r8-venv/bin/python scripts/teach-research/r8_eval.py --set elpv-mono lite2-256 lite2-160+lite2-256
Results are appended to scripts/teach-research/r8.jsonl.
"""
import argparse
import json
import os
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.path.join(REPO, "target", "teach-research", "r8")


def load(name, key):
    d = os.path.join(CACHE, name, key)
    meta = json.load(open(os.path.join(d, "names.json")))
    return np.load(os.path.join(d, "good.npy")).astype(np.float32), np.load(os.path.join(d, "pool.npy")).astype(np.float32), meta["c8"]


def parse_member(text):
    head, *opts = text.split(":")
    variant, size = head.rsplit("-", 1)
    o = {"key": head, "size": int(size), "pos": 0.0, "w8": 1.0, "top": 0.05, "rows": 8192, "dims": 64, "white": 1.0}
    for kv in opts:
        k, v = kv.split("=")
        o[k] = float(v) if k not in ("rows", "dims") else int(v)
    return o


def patches(f, c8, o):
    """[n, C, g, g] → [n·g·g, C'] with per-tap L2 and the member's reweighting / position."""
    n, c, g, _ = f.shape
    x = f.transpose(0, 2, 3, 1).reshape(n * g * g, c)
    a, b = x[:, :c8], x[:, c8:]
    a = a / (np.linalg.norm(a, axis=1, keepdims=True) + 1e-6) * o["w8"]
    b = b / (np.linalg.norm(b, axis=1, keepdims=True) + 1e-6)
    return np.concatenate([a, b], 1)


def position(n, g, lam):
    r, c = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
    p = np.stack([r, c], -1).reshape(g * g, 2).astype(np.float32) / g * lam
    return np.tile(p, (n, 1))


def greedy(x, k, rng):
    sq = (x * x).sum(1)
    mind = np.full(len(x), np.inf, np.float32)
    sel = np.empty(k, np.int64)
    i = int(rng.integers(len(x)))
    for j in range(k):
        sel[j] = i
        d = sq + sq[i] - 2.0 * (x @ x[i])
        np.minimum(mind, d, out=mind)
        i = int(np.argmax(mind))
    return sel


def nn(q, bank, bsq):
    out_d = np.empty(len(q), np.float32)
    out_i = np.empty(len(q), np.int64)
    for s in range(0, len(q), 4096):
        qq = q[s:s + 4096]
        d = (qq * qq).sum(1)[:, None] - 2.0 * qq @ bank.T + bsq[None]
        i = d.argmin(1)
        out_i[s:s + 4096] = i
        out_d[s:s + 4096] = np.sqrt(np.maximum(d[np.arange(len(qq)), i], 0))
    return out_d, out_i


def gauss(sigma):
    r = int(np.ceil(4 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    return k / k.sum()


def reflect_blur_matrix(g, sigma):
    k = gauss(sigma)
    r = len(k) // 2
    m = np.zeros((g, g))
    for i in range(g):
        for t, w in zip(range(i - r, i + r + 1), k):
            j = t
            while j < 0 or j >= g:  # reflect (no edge repeat), as ONNX Pad reflect
                j = -j if j < 0 else 2 * (g - 1) - j
            m[i, j] += w
    return m


def upsample_matrix(g, size):
    m = np.zeros((size, g))
    s = g / size
    for i in range(size):
        x = min(max((i + 0.5) * s - 0.5, 0), g - 1)
        lo = int(np.floor(x))
        hi = min(lo + 1, g - 1)
        m[i, lo] += 1 - (x - lo)
        m[i, hi] += x - lo
    return m


class Member:
    def __init__(self, name, text, seed):
        self.o = parse_member(text)
        self.good, self.pool, self.c8 = load(name, self.o["key"])
        self.g = self.good.shape[2]
        self.seed = seed
        m = upsample_matrix(self.g, self.o["size"]) @ reflect_blur_matrix(self.g, 16 / 16)
        self.post = m.astype(np.float32)

    def feats(self, f):
        x = patches(f, self.c8, self.o)
        return x

    def teach(self, idx):
        o, rng = self.o, np.random.default_rng(self.seed)
        x = self.feats(self.good[idx])
        sample = x[rng.choice(len(x), min(len(x), 200_000), replace=False)]
        self.mean = sample.mean(0)
        cov = np.cov((sample - self.mean).T)
        lam, vec = np.linalg.eigh(cov)
        lam, vec = lam[::-1][: o["dims"]], vec[:, ::-1][:, : o["dims"]]
        lam = np.maximum(lam, 1e-3 * lam[0])
        self.proj = (vec / lam[None] ** (o["white"] / 2)).astype(np.float32)
        z = self.project(x, len(idx))
        rows = min(o["rows"], int(0.25 * len(z)))
        pool = rng.choice(len(z), min(len(z), 16 * rows), replace=False)
        sel = pool[greedy(z[pool], rows, rng)]
        self.bank = z[sel]
        self.bsq = (self.bank * self.bank).sum(1)
        d = self.bsq[:, None] + self.bsq[None] - 2 * self.bank @ self.bank.T
        np.fill_diagonal(d, np.inf)
        self.r = np.sqrt(np.maximum(np.partition(d, 3, axis=1)[:, :3], 0)).mean(1)

    def project(self, x, n):
        z = (x - self.mean) @ self.proj
        if self.o["pos"]:
            z = np.concatenate([z, position(n, self.g, self.o["pos"])], 1)
        return z.astype(np.float32)

    def score(self, f):
        z = self.project(self.feats(f), len(f))
        d, i = nn(z, self.bank, self.bsq)
        s = (d / (self.r[i] + 1e-6)).reshape(len(f), self.g, self.g)
        maps = np.einsum("ag,ngh,bh->nab", self.post, s, self.post, optimize=True)
        flat = maps.reshape(len(f), -1)
        k = max(1, int(round(self.o["top"] * flat.shape[1])))
        return np.sort(flat, 1)[:, -k:].mean(1)


def auroc(neg, pos):
    allv = np.concatenate([neg, pos])
    ranks = allv.argsort().argsort().astype(np.float64) + 1
    return (ranks[len(neg):].sum() - len(pos) * (len(pos) + 1) / 2) / (len(neg) * len(pos))


def main(member=None, results="r8.jsonl"):
    """Validate each config on the command line; `member` and `results` let later rounds
    (r12_eval.py) reuse the protocol with their own member class and results file."""
    member = member or Member
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", required=True)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("configs", nargs="+")
    a = ap.parse_args()
    for config in a.configs:
        t0 = time.time()
        members = [member(a.set, m, a.seed) for m in config.split("+")]
        n = len(members[0].good)
        order = np.random.default_rng(1000 + a.seed).permutation(n)
        folds = np.array_split(order, a.folds)
        aucs, escapes = [], []
        for k in range(a.folds):
            held = folds[k]
            taught = np.concatenate([folds[j] for j in range(a.folds) if j != k])
            zg, zp = 0, 0
            for m in members:
                m.taught_idx = taught
                m.teach(taught)
                g, p = m.score(m.good[held]), m.score(m.pool)
                mu, sd = g.mean(), g.std() + 1e-9
                w = m.o.get("wt", 1.0)  # a member's weight in the ensemble (r12's option)
                zg, zp = zg + w * (g - mu) / sd, zp + w * (p - mu) / sd
            aucs.append(auroc(zg, zp))
            escapes.append(float((zp <= np.quantile(zg, 0.99)).mean()))
        row = {"set": a.set, "config": config, "folds": a.folds, "seed": a.seed, "auroc": float(np.mean(aucs)),
               "auroc_folds": [round(float(v), 4) for v in aucs], "escape_at_1pct": float(np.mean(escapes)),
               "secs": round(time.time() - t0, 1)}
        print(json.dumps(row), flush=True)
        with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), results), "a") as fh:
            fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
