#!/usr/bin/env python3
"""Round 3: bank size vs the CPU scoring budget, stride-16 query grid, held-out goods (for score
ensembles and threshold calibration). Uses the cached Lite2 features of r2_extract.py and the
Norm (L2 / std + PCA) of r2_eval.py.

One greedy coreset run to the largest requested size; the smaller banks are its prefixes (greedy
k-center is prefix-consistent, so a prefix is exactly the coreset a shorter run would return).
Coreset seconds are read at each prefix.

    OMP_NUM_THREADS=1 nice -n 19 .venv-torch/bin/python scripts/teach-research/r3_eval.py \
        --norm l2 --pca 64 --grid s8 --rows 1000,2000,4000 --pixel

--grid s8 : 32×32 patches (s16 bilinear ×2 onto the s8 grid, as before), 1024 per image.
--grid s16: 16×16 patches (s8 average-pooled 2×2 onto the s16 grid), 256 per image; bank and
            queries on that grid, PCA fitted on it.
--holdout F: hold out a seeded fraction of train goods (default_rng(0).choice) from the bank and
            score them too; per-image scores go to /tmp/r3-scores/ for r3_combine.py.
"""
import argparse, json, os, sys, time
import numpy as np, torch, torch.nn.functional as F
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common as C
from r2_eval import Norm, D

SC = "/tmp/r3-scores"


def load(split, grid, idx=None):
    """→ float32 [n*g*g, 168] (s8 then s16 channels), row = image-major then y, x."""
    blocks = []
    for t in ("s8", "s16"):
        a = np.load(os.path.join(D, f"{split}-id-{t}.npy"), mmap_mode="r")
        if idx is not None:
            a = a[idx]
        a = torch.from_numpy(np.asarray(a, dtype=np.float32))
        if grid == "s8" and t == "s16":
            a = torch.cat([F.interpolate(a[i:i + 64], size=(32, 32), mode="bilinear", align_corners=False) for i in range(0, len(a), 64)])
        if grid == "s16" and t == "s8":
            a = F.avg_pool2d(a, 2)
        blocks.append(a.permute(0, 2, 3, 1).reshape(-1, a.shape[1]).numpy())
    return np.ascontiguousarray(np.concatenate(blocks, 1))


def greedy(z, ns, seed=0):
    """C.greedy_coreset without projection (z already ≤ 64-d), with the time at each prefix size."""
    N = len(z)
    n = max(ns)
    rng = np.random.default_rng(seed)
    zz = np.einsum("ij,ij->i", z, z)
    sel = np.empty(n, dtype=np.int64)
    j = int(rng.integers(N))
    mind = np.full(N, np.inf, dtype=np.float32)
    d = np.empty(N, dtype=np.float32)
    t0, ts = C.now(), {}
    for i in range(n):
        sel[i] = j
        c = z[j]
        np.dot(z, c, out=d)
        d *= -2.0
        d += zz
        d += float(c @ c)
        np.minimum(mind, d, out=mind)
        j = int(np.argmax(mind))
        if i + 1 in ns:
            ts[i + 1] = C.now() - t0
    return sel, ts


_pix = {}


def pixel_auroc(sm, test):
    ps, py = [], []
    for i, t in enumerate(test):
        if i not in _pix:
            h0, w0 = C.load_gray(t[0]).shape
            _pix[i] = (h0, w0, C.load_mask(t[2], (h0, w0))[::2, ::2].ravel())
        h0, w0, m = _pix[i]
        mm = F.interpolate(sm[i:i + 1], size=(h0, w0), mode="bilinear", align_corners=False)[0, 0].numpy()
        ps.append(mm[::2, ::2].ravel()); py.append(m)
    return round(C.auroc(np.concatenate(ps), np.concatenate(py)), 4)


def image_scores(d, n, g, sigma=16.0, q=0.05):
    m = torch.from_numpy(d.reshape(n, 1, g, g))
    up = F.interpolate(m, size=(256, 256), mode="bilinear", align_corners=False)
    sm = C.smooth(up, sigma)
    s = sm.flatten(1).topk(int(round(q * 65536)), dim=1).values.mean(1).numpy()
    return s, sm


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--norm", default="l2")
    ap.add_argument("--pca", type=int, default=64)
    ap.add_argument("--grid", default="s8")
    ap.add_argument("--rows", default="1000,2000,4000")
    ap.add_argument("--holdout", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--holdout-seed", type=int, default=0)
    ap.add_argument("--pixel", action="store_true")
    ap.add_argument("--tag", default="")
    ap.add_argument("--post-sweep", action="store_true", help="also sweep blur sigma (px) × top-q (image AUROC only)")
    a = ap.parse_args()
    ns = sorted(int(x) for x in a.rows.split(","))
    meta = json.load(open(os.path.join(D, "meta.json")))
    test = meta["test"]
    bbms = json.load(open(os.path.join(D, "backbone_ms.json")))
    n_train = len(meta["train"])
    g = 32 if a.grid == "s8" else 16
    hold = None
    bank_idx = np.arange(n_train)
    if a.holdout > 0:
        hold = np.sort(np.random.default_rng(a.holdout_seed).choice(n_train, int(round(a.holdout * n_train)), replace=False))
        bank_idx = np.setdiff1d(np.arange(n_train), hold)

    X = load("train", a.grid, bank_idx if hold is not None else None)
    t0 = C.now()
    nz = Norm(a.norm, ["s8", "s16"], X, a.pca, a.seed)
    X = nz.full(X)
    t_norm = C.now() - t0
    sel, ts = greedy(X, set(ns), a.seed)
    print(f"train patches {X.shape}, norm/pca {t_norm:.1f}s, coreset times {ts}, load {os.getloadavg()}", flush=True)
    Bfull = np.ascontiguousarray(X[sel]); del X
    Q = nz.full(load("test", a.grid))
    QH = nz.full(load("train", a.grid, hold)) if hold is not None else None
    labels = np.array([t[1] for t in test]); defects = [t[3] for t in test]
    os.makedirs(SC, exist_ok=True)
    for n in ns:
        B = Bfull[:n]; Bsq = np.einsum("ij,ij->i", B, B)
        t0 = C.now()
        d = C.knn_dist(Q, B, Bsq)
        knn_ms = 1000 * (C.now() - t0) / len(test)
        s, sm = image_scores(d, len(test), g)
        per = {dd: round(C.auroc(s[[x in ("good", dd) for x in defects]], labels[[x in ("good", dd) for x in defects]]), 4) for dd in sorted(set(defects) - {"good"})}
        r = dict(tag=a.tag, norm=a.norm, pca=a.pca, grid=a.grid, holdout=a.holdout, holdout_seed=a.holdout_seed, bank=int(n), dim=int(B.shape[1]),
                 train_images=int(len(bank_idx)), image_auroc=round(C.auroc(s, labels), 4), per_defect=per,
                 macs_M=round(g * g * n * B.shape[1] / 1e6, 1),
                 teach_s=round(bbms["train"] * len(bank_idx) / 1000 + t_norm + ts[n], 1), coreset_s=round(ts[n], 1),
                 knn_ms=round(knn_ms, 1), load=round(os.getloadavg()[0], 2), seed=a.seed)
        if a.pixel:
            r["pixel_auroc"] = pixel_auroc(sm, test)
        if a.post_sweep:
            r["post_sweep"] = {}
            for sig in (0.0, 8.0, 16.0, 24.0, 32.0):
                m = torch.from_numpy(d.reshape(len(test), 1, g, g))
                sm2 = C.smooth(F.interpolate(m, size=(256, 256), mode="bilinear", align_corners=False), sig).flatten(1)
                for q in (0.0, 0.01, 0.02, 0.05, 0.1, 0.2):
                    s2 = (sm2.max(1).values if q == 0 else sm2.topk(int(round(q * 65536)), dim=1).values.mean(1)).numpy()
                    r["post_sweep"][f"sigma{sig:g}-top{q:g}"] = round(C.auroc(s2, labels), 4)
        out = dict(test=s, labels=labels, defects=np.array(defects))
        if hold is not None:
            dh = C.knn_dist(QH, B, Bsq)
            sh, _ = image_scores(dh, len(hold), g)
            out["hold"] = sh
            out["hold_idx"] = hold
        np.savez(os.path.join(SC, f"{a.norm}-pca{a.pca}-{a.grid}-ho{a.holdout}-{n}" + (f"-seed{a.seed}" if a.seed else "") + (f"-hs{a.holdout_seed}" if a.holdout_seed else "") + ".npz"), **out)
        print(json.dumps(r), flush=True)
        with open(os.path.join(HERE, "r3.jsonl"), "a") as f:
            f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
