#!/usr/bin/env python3
"""Round 13 (issue 14): a Gaussian of the goods at each place on the patch grid (PaDiM-style).

Fixtured parts (elpv's cells, most parts on a line) put the same feature at the same place in
every image; the nearest-neighbour bank ignores where a patch is. This member models each grid
position by a Gaussian of the taught goods' whitened patch features there, pooled over the
(2r+1)² positions around it (`nb=r`, for parts that shift by a cell or so), covariance shrunk
toward its mean eigenvalue (`shrink`); a patch's score is its Mahalanobis distance. Everything
after that (blur 16 px, bilinear to the input, mean of the top 5%) is r8's.

Round 8's cache and protocol (training goods in K folds, each scored by a model taught on the
other folds, against the 20 pool defects; no test image is read). Options on top of r12's:
  padim=1   score by the per-position Gaussian instead of the bank
  nb=r      neighbourhood radius on the grid (default 1)
  shrink=s  covariance shrinkage (default 0.1)
`a+b` z-averages members as in r8 (e.g. the default ⊕ the Gaussian).

    target/r8-venv/bin/python scripts/teach-research/r13_eval.py --set elpv-poly lite2n-256:padim=1
Results are appended to scripts/teach-research/r13.jsonl.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import r8_eval  # noqa: E402
import r12_eval  # noqa: E402

r12_eval.EXTRA.update({"padim": 0.0, "nb": 1})


class Member(r12_eval.Member):
    def teach(self, idx):
        if not self.o["padim"]:
            return super().teach(idx)
        o, rng = self.o, np.random.default_rng(self.seed)
        # The whitening as r8 fits it (per-tap L2, PCA on a seeded sample); no bank.
        x = self.feats(self.good[idx])
        sample = x[rng.choice(len(x), min(len(x), 200_000), replace=False)]
        self.mean = sample.mean(0)
        lam, vec = np.linalg.eigh(np.cov((sample - self.mean).T))
        lam, vec = lam[::-1][: o["dims"]], vec[:, ::-1][:, : o["dims"]]
        lam = np.maximum(lam, 1e-3 * lam[0])
        self.proj = (vec / lam[None] ** 0.5).astype(np.float32)
        g, r = self.g, int(o["nb"])
        z = self.project(x, len(idx)).reshape(len(idx), g, g, -1)
        d = z.shape[-1]
        self.mu = np.empty((g, g, d), np.float32)
        self.prec = np.empty((g, g, d, d), np.float32)
        s = o["shrink"]
        for i in range(g):
            for j in range(g):
                v = z[:, max(0, i - r):i + r + 1, max(0, j - r):j + r + 1].reshape(-1, d)
                mu = v.mean(0)
                cov = np.cov((v - mu).T)
                cov = (1 - s) * cov + s * np.trace(cov) / d * np.eye(d)
                self.mu[i, j] = mu
                self.prec[i, j] = np.linalg.inv(cov)

    def score(self, f):
        if not self.o["padim"]:
            return super().score(f)
        g = self.g
        z = self.project(self.feats(f), len(f)).reshape(len(f), g, g, -1) - self.mu[None]
        s = np.sqrt(np.maximum(np.einsum("nijd,ijde,nije->nij", z, self.prec, z, optimize=True), 0))
        maps = np.einsum("ag,ngh,bh->nab", self.post, s.astype(np.float32), self.post, optimize=True)
        flat = maps.reshape(len(f), -1)
        k = max(1, int(round(self.o["top"] * flat.shape[1])))
        return np.sort(flat, 1)[:, -k:].mean(1)


def main():
    r8_eval.main(Member, "r13.jsonl")


if __name__ == "__main__":
    main()
