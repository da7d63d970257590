#!/usr/bin/env python3
"""Many scorers on one feature configuration, features computed once (MTD protocol).

For one feature config (variant, input handling, size, taps, aggregation) this extracts the train
patches and the test patches under all 8 dihedral transforms once, then evaluates:
  scorers   knn:<ratio>:<k>  greedy-coreset memory bank (prefixes of one greedy run), k-NN mean dist
            gauss            one Gaussian on all train patches, Mahalanobis distance (shrunk cov)
  TTA       none | flip | rot4 | d4   (maps mapped back to the original orientation and averaged)
  post      blur sigma (feature cells) x image score (max | topQ mean)
Appends JSON lines to sweep.jsonl; prints one line per combination.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 nice -n 15 .venv-torch/bin/python \
        scripts/teach-research/sweep.py --prep squash --size 256
"""

import argparse
import itertools
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
D4 = C.tta_list("d4")
TTA_SETS = {"none": [0], "flip": [0, 4], "rot4": [0, 1, 2, 3], "d4": list(range(8))}


def patches(fe, img, prep, size, k, fl, tm):
    x = np.ascontiguousarray(C.fwd_t(torch.from_numpy(img), k, fl).numpy())
    t, (y0, x0, hh, ww) = C.prep(x, prep, size)
    t0 = C.now()
    taps = fe.backbone(t)
    t1 = C.now()
    f = fe.aggregate(taps)[0]
    s = fe.base
    f = f[:, y0 // s : -(-(y0 + hh) // s), x0 // s : -(-(x0 + ww) // s)]
    tm.add("backbone", t1 - t0)
    tm.add("aggregate", C.now() - t1)
    return np.ascontiguousarray(f.reshape(f.shape[0], -1).T.numpy()), tuple(f.shape[-2:]), (hh, ww)


class Gauss:
    def __init__(self, X, shrink=0.01):
        X = X.astype(np.float64)
        self.mu = X.mean(0)
        Xc = X - self.mu
        cov = Xc.T @ Xc / (len(X) - 1)
        cov += shrink * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0])
        # whitening W with W^T W = cov^-1: the runtime graph is Sub, MatMul, ReduceSumSquare, Sqrt
        L = np.linalg.cholesky(np.linalg.inv(cov))
        self.W = L.astype(np.float32)
        self.mu = self.mu.astype(np.float32)

    def __call__(self, q):
        z = (q - self.mu) @ self.W
        return np.sqrt(np.einsum("ij,ij->i", z, z))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(C.REPO, "target", "mtd"))
    ap.add_argument("--variant", default="lite0")
    ap.add_argument("--norm", default="imagenet")
    ap.add_argument("--taps", default="feat_s8,feat_s16")
    ap.add_argument("--agg", type=int, default=3)
    ap.add_argument("--prep", default="squash")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--ratios", default="0.001,0.0025,0.005")
    ap.add_argument("--ks", default="1,3")
    ap.add_argument("--proj", type=int, default=64)
    ap.add_argument("--gauss", action="store_true", default=True)
    ap.add_argument("--tta", default="none,flip,d4")
    ap.add_argument("--sigmas", default="0.5,1,2")
    ap.add_argument("--scores", default="max,top0.01,top0.05")
    ap.add_argument("--pixel", default="", help="comma list of scorer|tta|sigma to get pixel AUROC for ('best' = best image AUROC)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    train, test = C.list_dataset(args.data)
    fe = C.Features(args.variant, args.taps.split(","), args.agg, args.norm)
    cfg = f"{args.variant}/{args.norm}/{args.taps}/agg{args.agg}/{args.prep}{args.size}"
    print("config", cfg, flush=True)

    tm = C.Timer()
    t0 = C.now()
    X = np.concatenate([patches(fe, C.load_gray(p), args.prep, args.size, 0, False, tm)[0] for p in train])
    t_feat = C.now() - t0
    n_train_img = len(train)
    print(f"train patches {X.shape}, features {t_feat:.1f}s ({1000 * tm.t['backbone'] / n_train_img:.1f} ms/img backbone)", flush=True)

    ratios = [float(r) for r in args.ratios.split(",")]
    ks = [int(k) for k in args.ks.split(",")]
    nmax = int(round(max(ratios) * len(X)))
    t0 = C.now()
    sel = C.greedy_coreset(X, nmax, args.proj, args.seed)
    t_core = C.now() - t0
    print(f"coreset {nmax} in {t_core:.1f}s (proj {args.proj})", flush=True)
    # one distance matrix against the largest bank; smaller banks are its column prefixes
    Bmax = np.ascontiguousarray(X[sel])
    Bsq = np.einsum("ij,ij->i", Bmax, Bmax)
    sizes = [int(round(r * len(X))) for r in ratios]

    def knn_all(q):
        d2 = q @ Bmax.T
        d2 *= -2.0
        d2 += Bsq[None]
        d2 += np.einsum("ij,ij->i", q, q)[:, None]
        out = {}
        for r, n in zip(ratios, sizes):
            sub = d2[:, :n]
            for k in ks:
                if k == 1:
                    out[f"knn:{r}:{k}"] = np.sqrt(np.maximum(sub.min(1), 0))
                else:
                    out[f"knn:{r}:{k}"] = np.sqrt(np.maximum(np.partition(sub, k - 1, axis=1)[:, :k], 0)).mean(1)
        return out

    scorers = {f"knn:{r}:{k}": (None, n) for r, n in zip(ratios, sizes) for k in ks}
    if args.gauss:
        t0 = C.now()
        g = Gauss(X)
        print(f"gauss fit {C.now() - t0:.1f}s", flush=True)
        scorers["gauss"] = (g, 0)
    del X

    # test: grid maps per image, transform, scorer
    need = sorted(set(itertools.chain.from_iterable(TTA_SETS[t] for t in args.tta.split(","))))
    maps = {s: [[None] * 8 for _ in test] for s in scorers}
    shapes = []
    st = C.Timer()
    tm = C.Timer()
    for i, (p, y, mp, d) in enumerate(test):
        img = C.load_gray(p)
        for ti in need:
            k, fl = D4[ti]
            q, grid, hw = patches(fe, img, args.prep, args.size, k, fl, tm if ti == 0 else C.Timer())
            if ti == 0:
                shapes.append((img.shape, hw, grid))
            t0 = C.now()
            outs = knn_all(q)
            if ti == 0:
                # timing of the largest bank stands for all knn scorers (upper bound)
                for sn in outs:
                    st.add(sn, (C.now() - t0) / len(outs))
            if "gauss" in scorers:
                t0 = C.now()
                outs["gauss"] = scorers["gauss"][0](q)
                if ti == 0:
                    st.add("gauss", C.now() - t0)
            for sn, m in outs.items():
                m = C.inv_t(torch.from_numpy(np.ascontiguousarray(m.reshape(grid)))[None, None], k, fl)
                maps[sn][i][ti] = m
    n = len(test)
    bb_ms = 1000 * tm.t["backbone"] / n
    agg_ms = 1000 * tm.t["aggregate"] / n
    print(f"test backbone {bb_ms:.2f} ms/img, aggregate {agg_ms:.2f} ms/img", flush=True)

    labels = np.array([y for _, y, _, _ in test])
    defects = [d for _, _, _, d in test]
    results = []
    sigmas = [float(s) for s in args.sigmas.split(",")]
    score_kinds = args.scores.split(",")
    for sn in scorers:
        for tta in args.tta.split(","):
            idx = TTA_SETS[tta]
            for sig in sigmas:
                post_t = 0.0
                sc = {k: [] for k in score_kinds}
                for i in range(n):
                    ms = maps[sn][i]
                    g = ms[idx[0]]
                    # rotated copies can differ by a cell after rounding: resample to the base grid
                    acc = sum(F.interpolate(ms[j], size=g.shape[-2:], mode="bilinear", align_corners=False) if ms[j].shape != g.shape else ms[j] for j in idx) / len(idx)
                    t0 = C.now()
                    (h0, w0), (hh, ww), grid = shapes[i]
                    up = F.interpolate(acc, size=(hh, ww), mode="bilinear", align_corners=False)
                    sm = C.smooth(up, sig * fe.base)[0, 0]
                    post_t += C.now() - t0
                    v = sm.flatten()
                    for kind in score_kinds:
                        if kind == "max":
                            sc[kind].append(float(v.max()))
                        else:
                            q = float(kind[3:])
                            sc[kind].append(float(v.topk(max(1, int(round(q * v.numel())))).values.mean()))
                for kind in score_kinds:
                    s = np.array(sc[kind])
                    per = {dd: round(C.auroc(s[[x in ("good", dd) for x in defects]], labels[[x in ("good", dd) for x in defects]]), 4) for dd in sorted(set(defects) - {"good"})}
                    r = dict(config=cfg, tag=args.tag, scorer=sn, bank=scorers[sn][1], tta=tta, sigma=sig, score=kind,
                             image_auroc=round(C.auroc(s, labels), 4), per_defect=per,
                             backbone_ms=round(bb_ms * len(idx), 2),
                             score_ms=round((1000 * st.t[sn] / n + agg_ms) * len(idx) + 1000 * post_t / n, 2),
                             teach_s=round(t_feat + (t_core if sn.startswith("knn") else 0), 1))
                    results.append(r)
                    print(f"{sn:<16} tta={tta:<5} sigma={sig:<4} {kind:<9} AUROC {r['image_auroc']:.4f}  bb {r['backbone_ms']:6.2f} ms  score {r['score_ms']:6.2f} ms  {per}", flush=True)

    with open(os.path.join(HERE, "sweep.jsonl"), "a") as f:
        for r in results:
            f.write(json.dumps(r) + "\n")
    best = max(results, key=lambda r: r["image_auroc"])
    print("BEST", json.dumps(best), flush=True)

    # pixel AUROC for requested combos
    for want in [w for w in args.pixel.split(",") if w]:
        if want == "best":
            sn, tta, sig = best["scorer"], best["tta"], best["sigma"]
        else:
            sn, tta, sig = want.split("|")
            sig = float(sig)
        idx = TTA_SETS[tta]
        ps, py = [], []
        for i, (p, y, mp, d) in enumerate(test):
            ms = maps[sn][i]
            g = ms[idx[0]]
            acc = sum(F.interpolate(ms[j], size=g.shape[-2:], mode="bilinear", align_corners=False) if ms[j].shape != g.shape else ms[j] for j in idx) / len(idx)
            (h0, w0), (hh, ww), grid = shapes[i]
            sm = C.smooth(F.interpolate(acc, size=(hh, ww), mode="bilinear", align_corners=False), sig * fe.base)
            sm = F.interpolate(sm, size=(h0, w0), mode="bilinear", align_corners=False)[0, 0].numpy()
            mask = C.load_mask(mp, (h0, w0))
            ps.append(sm[::2, ::2].ravel())
            py.append(mask[::2, ::2].ravel())
        pa = C.auroc(np.concatenate(ps), np.concatenate(py))
        print(f"PIXEL {sn} tta={tta} sigma={sig}: pixel AUROC {pa:.4f}", flush=True)
        with open(os.path.join(HERE, "sweep.jsonl"), "a") as f:
            f.write(json.dumps(dict(config=cfg, tag=args.tag, scorer=sn, tta=tta, sigma=sig, pixel_auroc=round(pa, 4))) + "\n")


if __name__ == "__main__":
    main()
