#!/usr/bin/env python3
"""Round 14 (issue 14): the bank's patch score normalised by what the goods score at each place.

On fixtured parts some places (cell edges, busbars, the corners of a tile) score higher than
others on every good part, and an image's top-5% score then reads the places that are always
high; round 13's Gaussians per place modelled the features there and lost on unfixtured parts.
This member keeps the bank and only rescales its patch scores per place: the taught goods are
split (seeded) into the bank's share and a calibration share (`cal`, as teach's 15% hold-out);
the calibration goods' patch scores give each grid place a typical value (pooled over the places
within `nb` of it), and a patch's score becomes
  ratio: s / m_place          (`pn=ratio`, m the place's median, or its `pq` quantile; `pa=α`: s / (m_place / m̃)^α,
                              m̃ the median place's, part of the way)
  z:     (s − m_place) / q    (`pn=z`, q the place's median absolute deviation ·1.4826)
then r8's map (blur 16 px, top 5%). `pn=none` is r8's score with the bank taught on the bank
share only (the fair baseline at the same bank size).

Round 8's cache and protocol (training goods in K folds, each scored by a model taught on the
other folds, against the 20 pool defects; no test image is read).

    target/r8-venv/bin/python scripts/teach-research/r14_eval.py --set elpv-mono lite2n-256:pn=ratio
Results are appended to scripts/teach-research/r14.jsonl.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import r8_eval  # noqa: E402
import r12_eval  # noqa: E402

r12_eval.EXTRA.update({"cal": 0.15, "nb": 1, "pa": 1.0, "pq": 0.5})


class Member(r12_eval.Member):
    def __init__(self, name, text, seed):
        head, *opts = text.split(":")
        pn = next((kv.split("=")[1] for kv in opts if kv.startswith("pn=")), "off")
        super().__init__(name, ":".join([head] + [kv for kv in opts if not kv.startswith("pn=")]), seed)
        self.o["pn"] = pn

    def teach(self, idx):
        if self.o["pn"] == "off":
            return super().teach(idx)
        rng = np.random.default_rng(self.seed + 7)
        perm = rng.permutation(idx)
        n_cal = max(2, int(round(self.o["cal"] * len(idx))))
        cal, bank = perm[:n_cal], perm[n_cal:]
        super().teach(bank)
        if self.o["pn"] == "none":
            return
        s = self.grid_scores(self.good[cal])  # [n, g, g]
        g, r = self.g, int(self.o["nb"])
        self.med = np.empty((g, g), np.float32)
        self.mad = np.empty((g, g), np.float32)
        for i in range(g):
            for j in range(g):
                v = s[:, max(0, i - r):i + r + 1, max(0, j - r):j + r + 1].ravel()
                m = np.median(v)
                # pq ≠ 0.5: the place's typical score is that quantile instead of the median.
                self.med[i, j] = m if self.o["pq"] == 0.5 else np.quantile(v, self.o["pq"])
                self.mad[i, j] = 1.4826 * np.median(np.abs(v - m)) + 1e-6
        # How much the places differ: the spread of their medians against one place's own spread.
        self.structure = float(np.std(np.log(self.med)) / np.median(self.mad / self.med))
        print(f"place structure {self.structure:.3f}  (median ratio range {self.med.min() / np.median(self.med):.2f}–"
              f"{self.med.max() / np.median(self.med):.2f})", file=sys.stderr)

    def grid_scores(self, f):
        z = self.project(self.feats(f), len(f))
        d, i = r8_eval.nn(z, self.bank, self.bsq)
        return (d / (self.r[i] + 1e-6)).reshape(len(f), self.g, self.g)

    def score(self, f):
        if self.o["pn"] in ("off", "none"):
            return super().score(f)
        s = self.grid_scores(f)
        # pa < 1: only part of the way to each place's own median (its power pa), the rest global.
        scale = (self.med / np.median(self.med)) ** self.o["pa"]
        s = s / scale[None] if self.o["pn"] == "ratio" else (s - self.med[None]) / self.mad[None]
        maps = np.einsum("ag,ngh,bh->nab", self.post, s.astype(np.float32), self.post, optimize=True)
        flat = maps.reshape(len(f), -1)
        k = max(1, int(round(self.o["top"] * flat.shape[1])))
        return np.sort(flat, 1)[:, -k:].mean(1)


def main():
    r8_eval.main(Member, "r14.jsonl")


if __name__ == "__main__":
    main()
