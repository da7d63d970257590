#!/usr/bin/env python3
"""Round 5: what lies beyond the round-4 recipe (Lite2 160², s8+s16, L2/tap + PCA 64, greedy
coreset, 1-NN / lof3, σ 16 px, top 10%). Features from r5_extract.py.

Every score is computed twice: by a model taught on all 762 train goods (scores the test set) and
by one taught without the seeded 15% hold-out (`default_rng(0).choice(762, 114)`, as rounds 3-4),
which scores the hold-out: its mean/std are the z statistics of score ensembles (no test labels).

    OMP_NUM_THREADS=1 nice -n 19 .venv-torch/bin/python scripts/teach-research/r5_eval.py EXPERIMENT...
"""
import argparse, json, os, sys
import numpy as np
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common as C
from r3_eval import greedy
from r4_eval import knn, ops_1d

R5 = os.path.join(C.REPO, "target", "teach-research", "r5")
CACHE = "/tmp/r5-scores"


def load_taps(feat, split, taps, idx=None, grid=None):
    """Patch rows [n*g*g, C] on grid g (coarser taps upsampled bilinear), per-tap L2 normalised."""
    import torch, torch.nn.functional as F
    blocks = []
    for t in taps:
        a = np.load(os.path.join(R5, feat, f"{split}-{t}.npy"), mmap_mode="r")
        a = np.asarray(a if idx is None else a[idx], dtype=np.float32)
        g = grid = grid or a.shape[-1]
        if a.shape[-1] != g:
            a = F.interpolate(torch.from_numpy(a), size=(g, g), mode="bilinear", align_corners=False).numpy()
        r = a.transpose(0, 2, 3, 1).reshape(-1, a.shape[1])
        r = r / (np.linalg.norm(r, axis=1, keepdims=True) + 1e-6)
        blocks.append(r)
    return np.ascontiguousarray(np.concatenate(blocks, 1)), g


def pca_fit(X, dims, whiten=0.0, seed=0, floor=0.0):
    S = X[np.random.default_rng(seed).choice(len(X), min(len(X), 200000), replace=False)]
    mu = S.mean(0)
    ev, V = np.linalg.eigh(np.cov((S - mu).T.astype(np.float64)))
    ev, V = ev[::-1][:dims], V[:, ::-1][:, :dims]
    print("eigenvalue ratio last/first", ev[-1] / ev[0], flush=True)
    ev = np.maximum(ev, floor * ev[0])
    P = V / (np.maximum(ev, 1e-12) ** (whiten / 2))[None]
    return mu.astype(np.float32), P.astype(np.float32)


def post(pmap, n, g, sigma=16.0, q=0.1):
    m = pmap.reshape(n, g, g).astype(np.float64)
    A = ops_1d(g, sigma)
    full = np.einsum("ij,njk,lk->nil", A, m, A).reshape(n, -1)
    kq = int(round(q * full.shape[1]))
    return np.partition(full, -kq, axis=1)[:, -kq:].mean(1)


def patch_model(feat, taps, train_idx, query, rows, dims=64, whiten=0.0, lof=3, sigma=16.0, q=0.1, grid=None, seed=0, floor=0.0):
    X, g = load_taps(feat, "train", taps, train_idx, grid)
    mu, P = pca_fit(X, dims, whiten, int(seed), floor)
    Z = np.ascontiguousarray((X - mu) @ P)
    sel, _ = greedy(Z, {rows}, int(seed))
    B = np.ascontiguousarray(Z[sel])
    Qx, _ = load_taps(feat, query[0], taps, query[1], grid)
    Q = np.ascontiguousarray((Qx - mu) @ P)
    n = len(Q) // (g * g)
    D, I = knn(Q, B, 1)
    pm = D[:, 0]
    if lof:
        bd, _ = knn(B, B, lof + 1)
        pm = pm / (bd[I, 1:].mean(1) + 1e-6)
    return post(pm, n, g, sigma, q)


def cached(name, fn):
    os.makedirs(CACHE, exist_ok=True)
    p = os.path.join(CACHE, name + ".npz")
    if os.path.exists(p):
        d = np.load(p)
        return d["test"], d["hold"]
    t, h = fn()
    np.savez(p, test=t, hold=h)
    return t, h


def both(fn):
    """fn(train_idx, query) for the full model on test and the hold-out model on the hold-out."""
    n_train = 762
    hold = np.sort(np.random.default_rng(0).choice(n_train, 114, replace=False))
    rest = np.setdiff1d(np.arange(n_train), hold)
    return lambda: (fn(None, ("test", None)), fn(rest, ("train", hold)))


def global_model(feat, parts, train_idx, query, kind="knn1", dims=0, shrink=0.1):
    """Image-level score from globally pooled features (per-tap L2). kind knnK or maha."""
    sl = {"s8": slice(0, 48), "s16": slice(48, 168), "s32": slice(168, 520)}
    def vec(split, idx):
        a = np.asarray(np.load(os.path.join(R5, feat, f"{split}-gap.npy")), dtype=np.float32)
        a = a if idx is None else a[idx]
        bl = [a[:, sl[p]] / (np.linalg.norm(a[:, sl[p]], axis=1, keepdims=True) + 1e-6) for p in parts]
        return np.concatenate(bl, 1)
    T = vec("train", train_idx)
    Qv = vec(query[0], query[1])
    mu = T.mean(0)
    if kind == "maha":
        Cv = np.cov((T - mu).T)
        Cv = (1 - shrink) * Cv + shrink * np.trace(Cv) / len(Cv) * np.eye(len(Cv))
        Ci = np.linalg.inv(Cv)
        d = Qv - mu
        return np.sqrt(np.einsum("ij,jk,ik->i", d, Ci, d))
    k = int(kind[3:])
    D, _ = knn(np.ascontiguousarray(Qv), np.ascontiguousarray(T), k)
    return D.mean(1)


def report(tag, s, labels, defects, extra=None):
    per = {dd: round(C.auroc(s[[x in ("good", dd) for x in defects]], labels[[x in ("good", dd) for x in defects]]), 4)
           for dd in sorted(set(defects) - {"good"})}
    au = C.auroc(s, labels)
    print(f"{tag:60s} {au:.4f}  " + " / ".join(f"{v:.3f}" for v in per.values()), flush=True)
    r = dict(tag=tag, image_auroc=round(au, 4), per_defect=per, **(extra or {}))
    with open(os.path.join(HERE, "r5.jsonl"), "a") as f:
        f.write(json.dumps(r) + "\n")
    return au


def z(pair):
    t, h = pair
    return (t - h.mean()) / (h.std() + 1e-9)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("exp", nargs="+")
    ap.add_argument("--feat", default="lite2-160")
    a = ap.parse_args()
    meta = json.load(open(os.path.join(R5, a.feat, "meta.json")))
    test = meta["test"]
    labels = np.array([t[1] for t in test]); defects = [t[3] for t in test]
    f = a.feat
    P = {}
    def patch(name, **kw):
        if name not in P:
            taps = kw.pop("taps", ("s8", "s16"))
            P[name] = cached(f"{f}-{name}", both(lambda ti, qq: patch_model(f, taps, ti, qq, **kw)))
        return P[name]
    def glob_(name, **kw):
        if name not in P:
            P[name] = cached(f"{f}-{name}", both(lambda ti, qq: global_model(f, train_idx=ti, query=qq, **kw)))
        return P[name]
    for e in a.exp:
        if e == "base":
            for rows in (8192, 10240, 20480):
                report(f"{f} base s8+s16 {rows} lof3", patch(f"base{rows}", rows=rows)[0], labels, defects)
        elif e == "whiten":
            for w in (0.25, 0.5, 1.0):
                report(f"{f} whiten^{w} 8192 lof3", patch(f"wh{w}", rows=8192, whiten=w)[0], labels, defects)
        elif e == "s32":
            report(f"{f} s8+s16+s32 8192 lof3", patch("s32", rows=8192, taps=("s8", "s16", "s32"))[0], labels, defects)
        elif e == "s32only":
            report(f"{f} s32 grid5 4096 lof3", patch("s32o", rows=4096, taps=("s32",))[0], labels, defects)
        elif e == "global":
            base = patch("base8192", rows=8192)
            for parts in (("s16",), ("s32",), ("s16", "s32"), ("s8", "s16", "s32")):
                for kind in ("knn1", "knn3", "maha"):
                    nm = f"g-{'+'.join(parts)}-{kind}"
                    g = glob_(nm, parts=parts, kind=kind)
                    au = report(f"{f} global {'+'.join(parts)} {kind}", g[0], labels, defects)
                    for wgt in (0.5, 1.0):
                        report(f"   ⊕ base8192 z-mean w{wgt}", z(base) + wgt * z(g), labels, defects)
        elif e.startswith("p:"):  # generic patch model, e.g. p:rows=8192,whiten=1,dims=96,lof=0
            kw = {}
            for kv in e[2:].split(","):
                k, v = kv.split("=")
                kw[k] = tuple(v.split("+")) if k == "taps" else (int(v) if k in ("rows", "dims", "lof", "grid", "seed") else float(v))
            report(f"{f} {e}", patch(e.replace(":", "_").replace(",", "_"), **kw)[0], labels, defects, dict(feat=f, **{k: v for k, v in kw.items()}))
        elif e == "ens":
            base = patch("base8192", rows=8192)
            for other in a.exp:
                pass
        else:
            sys.exit("unknown " + e)


if __name__ == "__main__":
    main()
