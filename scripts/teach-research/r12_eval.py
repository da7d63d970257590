#!/usr/bin/env python3
"""Round 12 (issue 14): an image-level judge beside the patch score, and k nearest rows.

Round 8's cache and protocol (r8_eval.py: training goods in K folds, each scored by a model taught
on the other folds, against the 20 pool defects; no test image is read). Options on top of r8's:
  glob=b    fuse the patch score with an image-level Gaussian: each image's whitened patch
            features averaged over the grid (and their spread, `gstd=1`), a Gaussian of the taught
            goods' vectors (covariance shrunk by `shrink`), Mahalanobis distance; the image score
            is z(patch) + b·z(global), z from the taught goods' own scores.
  knn=k     the patch distance is the mean over its k nearest bank rows (default 1).
  only=glob the global score alone.
  blur=px   the map's blur σ in input pixels (default 16, r8's).
  wt=w      the member's weight in an ensemble's z-average (default 1).
  poolx=n   the coreset's seeded pool: n rows per bank row (default 16, r8's; 4 for the fine
            grids, whose greedy pass is otherwise too slow in NumPy).
Members of r12_extract's finer taps: `lite2n-256s8f` (stride 8, grid 32), `lite2n-256s4` (stride 4,
grid 64); `a+b` z-averages members as in r8.

    target/r8-venv/bin/python scripts/teach-research/r12_eval.py --set elpv-poly lite2n-256:glob=1
Results are appended to scripts/teach-research/r12.jsonl.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import r8_eval  # noqa: E402

EXTRA = {"glob": 0.0, "gstd": 0.0, "shrink": 0.1, "knn": 1, "only": "", "blur": 16.0, "poolx": 16, "wt": 1.0}


def parse(text):
    head, *opts = text.split(":")
    base = [kv for kv in opts if kv.split("=")[0] not in EXTRA]
    # r12_extract's keys carry the tap after the size (lite2n-256s4): the size is the digits.
    variant, size = head.rsplit("-", 1)
    digits = "".join(ch for ch in size if ch.isdigit())
    o = r8_eval.parse_member(":".join([f"{variant}-{digits}"] + base))
    o["key"] = head
    for kv in opts:
        k, v = kv.split("=")
        if k in EXTRA:
            o[k] = v if k == "only" else (int(v) if k == "knn" else float(v))
    for k, v in EXTRA.items():
        o.setdefault(k, v)
    return o


class Member(r8_eval.Member):
    def __init__(self, name, text, seed):
        self.o = parse(text)
        self.good, self.pool, self.c8 = r8_eval.load(name, self.o["key"])
        self.g = self.good.shape[2]
        self.seed = seed
        # The map's blur is 16 input pixels whatever the grid (r8's σ of one stride-16 cell).
        stride = self.o["size"] / self.g
        m = r8_eval.upsample_matrix(self.g, self.o["size"]) @ r8_eval.reflect_blur_matrix(self.g, self.o["blur"] / stride)
        self.post = m.astype(np.float32)

    def vectors(self, f):
        z = self.project(self.feats(f), len(f)).reshape(len(f), self.g * self.g, -1)
        v = [z.mean(1)]
        if self.o["gstd"]:
            v.append(z.std(1))
        return np.concatenate(v, 1)

    def teach(self, idx):
        keep = r8_eval.greedy
        if int(self.o["poolx"]) != 16:
            factor = int(self.o["poolx"]) / 16
            # r8's teach draws a pool of 16 rows per bank row: hand the greedy pass a seeded
            # share of it.
            def greedy(x, k, rng):
                sub = rng.choice(len(x), min(len(x), int(len(x) * factor) + k), replace=False)
                return sub[keep(x[sub], k, rng)]
            r8_eval.greedy = greedy
        try:
            super().teach(idx)
        finally:
            r8_eval.greedy = keep
        if self.o["glob"] or self.o["only"] == "glob":
            v = self.vectors(self.good[idx])
            self.gmean = v.mean(0)
            cov = np.cov((v - self.gmean).T)
            s = self.o["shrink"]
            cov = (1 - s) * cov + s * np.trace(cov) / len(cov) * np.eye(len(cov))
            self.gprec = np.linalg.inv(cov)
            self.gtaught = self.global_score(self.good[idx])
            self.ptaught = None

    def global_score(self, f):
        d = self.vectors(f) - self.gmean
        return np.sqrt(np.einsum("ni,ij,nj->n", d, self.gprec, d))

    def patch_score(self, f):
        k = self.o["knn"]
        if k == 1:
            return r8_eval.Member.score(self, f)
        z = self.project(self.feats(f), len(f))
        out = np.empty(len(z), np.float32)
        for s in range(0, len(z), 4096):
            q = z[s:s + 4096]
            d = (q * q).sum(1)[:, None] - 2.0 * q @ self.bank.T + self.bsq[None]
            part = np.partition(d, k, axis=1)[:, :k]
            idx = np.argpartition(d, k, axis=1)[:, :k]
            out[s:s + 4096] = (np.sqrt(np.maximum(part, 0)) / (self.r[idx] + 1e-6)).mean(1)
        s = out.reshape(len(f), self.g, self.g)
        maps = np.einsum("ag,ngh,bh->nab", self.post, s, self.post, optimize=True)
        flat = maps.reshape(len(f), -1)
        kk = max(1, int(round(self.o["top"] * flat.shape[1])))
        return np.sort(flat, 1)[:, -kk:].mean(1)

    def score(self, f):
        if self.o["only"] == "glob":
            return self.global_score(f)
        p = self.patch_score(f)
        if not self.o["glob"]:
            return p
        # z from the taught goods' own scores (in-sample, as teach's hold-out is not modelled here:
        # the global Gaussian's in-sample distances are smaller than held-out ones).
        if self.ptaught is None:
            self.ptaught = self.patch_score(self.good[self.taught_idx])
        g = self.global_score(f)
        zp = (p - self.ptaught.mean()) / (self.ptaught.std() + 1e-9)
        zg = (g - self.gtaught.mean()) / (self.gtaught.std() + 1e-9)
        return zp + self.o["glob"] * zg


def main():
    r8_eval.main(Member, "r12.jsonl")


if __name__ == "__main__":
    main()
