#!/usr/bin/env python3
"""Round 2 evaluation on the cached features of r2_extract.py (Lite2, 256² squash, MTD split).

Bank: greedy coreset (proj 64, seed) over train patches from the chosen train flips (optionally a
seeded per-image random subsample first). Score: 1-NN per test flip (maps already mapped back),
fused (mean / max), bilinear to 256², blur sigma 16 px, mean of the top 5%.

    OMP_NUM_THREADS=1 nice -n 19 .venv-torch/bin/python scripts/teach-research/r2_eval.py \
        --train-tf id,h,v,hv --sub 0.25 --ratio 0.01
"""
import argparse, json, math, os, sys
import numpy as np, torch, torch.nn.functional as F
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C

D = os.path.join(C.REPO, "target", "teach-research", "r2")
HERE = os.path.dirname(os.path.abspath(__file__))
CH = {"s4": 24, "s8": 48, "s16": 120}


def load(split, tf, taps, idx=None):
    """→ float32 [n*1024, C] patches (row = image-major, then y, x) and per-layer slices."""
    blocks = []
    for t in taps:
        a = np.load(os.path.join(D, f"{split}-{tf}-{t}.npy"), mmap_mode="r")
        a = torch.from_numpy(np.asarray(a, dtype=np.float32))
        if t == "s16":
            a = torch.cat([F.interpolate(a[i:i + 64], size=(32, 32), mode="bilinear", align_corners=False) for i in range(0, len(a), 64)])
        blocks.append(a.permute(0, 2, 3, 1).reshape(-1, a.shape[1]).numpy())
    return np.ascontiguousarray(np.concatenate(blocks, 1))


class Norm:
    def __init__(self, kind, taps, X, pca, seed):
        self.kind, self.taps = kind, taps
        off = np.cumsum([0] + [CH[t] for t in taps])
        self.sl = [slice(off[i], off[i + 1]) for i in range(len(taps))]
        rng = np.random.default_rng(seed)
        S = X[rng.choice(len(X), min(len(X), 200000), replace=False)]
        if kind == "std":
            self.mu, self.sd = S.mean(0), S.std(0) + 1e-6
        elif kind == "layer":  # scale each layer so its mean patch norm is 1
            self.w = np.ones(X.shape[1], np.float32)
            for s in self.sl:
                self.w[s] = 1.0 / np.linalg.norm(S[:, s], axis=1).mean()
        self.P = None
        if pca:
            Z = self(S)
            self.pm = Z.mean(0)
            cov = np.cov((Z - self.pm).T.astype(np.float64))
            ev, V = np.linalg.eigh(cov)
            V = V[:, ::-1][:, :pca]
            self.P = V.astype(np.float32)
            self.expl = float(ev[::-1][:pca].sum() / ev.sum())

    def __call__(self, X):
        if self.kind == "std":
            X = (X - self.mu) / self.sd
        elif self.kind == "l2":
            X = X.copy()
            for s in self.sl:
                X[:, s] /= np.linalg.norm(X[:, s], axis=1, keepdims=True) + 1e-6
        elif self.kind == "layer":
            X = X * self.w
        return X

    def full(self, X):
        X = self(X)
        if self.P is not None:
            X = (X - self.pm) @ self.P
        return np.ascontiguousarray(X, dtype=np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--taps", default="s8,s16")
    ap.add_argument("--train-tf", default="id")
    ap.add_argument("--test-tf", default="id,h,v,hv")
    ap.add_argument("--norm", default="none")
    ap.add_argument("--pca", type=int, default=0)
    ap.add_argument("--ratio", type=float, default=0.01, help="bank rows as a fraction of 780,288 (one flip's patches)")
    ap.add_argument("--sub", type=float, default=1.0, help="per image-flip patch subsample before the coreset")
    ap.add_argument("--proj", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pixel", action="store_true")
    ap.add_argument("--tag", default="")
    a = ap.parse_args()
    taps = a.taps.split(",")
    meta = json.load(open(os.path.join(D, "meta.json")))
    test = meta["test"]
    bbms = json.load(open(os.path.join(D, "backbone_ms.json")))
    n_train = len(meta["train"])
    rng = np.random.default_rng(a.seed)

    t0 = C.now()
    Xs = []
    for tf in a.train_tf.split(","):
        X = load("train", tf, taps)
        if a.sub < 1:
            per = int(round(1024 * a.sub))
            keep = np.concatenate([i * 1024 + np.sort(rng.choice(1024, per, replace=False)) for i in range(n_train)])
            X = X[keep]
        Xs.append(X)
    X = np.concatenate(Xs); del Xs
    t_load = C.now() - t0
    t0 = C.now()
    nz = Norm(a.norm, taps, X, a.pca, a.seed)
    X = nz.full(X)
    t_norm = C.now() - t0
    n = int(round(a.ratio * n_train * 1024))
    t0 = C.now()
    sel = C.greedy_coreset(X, n, a.proj, a.seed)
    t_core = C.now() - t0
    B = np.ascontiguousarray(X[sel]); Bsq = np.einsum("ij,ij->i", B, B)
    del X
    print(f"bank {B.shape} from {sum(1 for _ in a.train_tf.split(','))} flips, coreset {t_core:.0f}s, norm/pca {t_norm:.0f}s", flush=True)

    tfs = a.test_tf.split(",")
    maps = {}
    t_knn = 0.0
    for tf in tfs:
        Q = nz.full(load("test", tf, taps))
        t0 = C.now()
        d = C.knn_dist(Q, B, Bsq)
        if tf == "id":
            t_knn = C.now() - t0
        maps[tf] = torch.from_numpy(d.reshape(len(test), 1, 32, 32))
    ms_knn = 1000 * t_knn / len(test)
    labels = np.array([t[1] for t in test]); defects = [t[3] for t in test]
    fuses = {"id": ["id"]}
    if len(tfs) > 1:
        fuses.update({f"mean({'+'.join(tfs)})": tfs, f"max({'+'.join(tfs)})": tfs})
        if "h" in tfs:
            fuses["mean(id+h)"] = ["id", "h"]
    ker = C.gaussian_kernel(16.0)
    res = []
    for fname, fl in fuses.items():
        st = torch.stack([maps[t] for t in fl])
        m = st.max(0).values if fname.startswith("max") else st.mean(0)
        up = F.interpolate(m, size=(256, 256), mode="bilinear", align_corners=False)
        sm = C.smooth(up, 16.0)
        v = sm.flatten(1)
        s = v.topk(int(round(0.05 * 65536)), dim=1).values.mean(1).numpy()
        per = {dd: round(C.auroc(s[[x in ("good", dd) for x in defects]], labels[[x in ("good", dd) for x in defects]]), 4) for dd in sorted(set(defects) - {"good"})}
        r = dict(tag=a.tag, taps=a.taps, train_tf=a.train_tf, sub=a.sub, norm=a.norm, pca=a.pca, ratio=a.ratio, bank=int(B.shape[0]), dim=int(B.shape[1]),
                 fuse=fname, image_auroc=round(C.auroc(s, labels), 4), per_defect=per,
                 teach_s=round(bbms["train"] * n_train * len(a.train_tf.split(",")) / 1000 + t_norm + t_core, 1), coreset_s=round(t_core, 1),
                 knn_ms_per_flip=round(ms_knn, 1), backbone_ms_per_flip=round(bbms["test"], 1), seed=a.seed)
        if a.pixel:
            ps, py = [], []
            for i, t in enumerate(test):
                h0, w0 = C.load_gray(t[0]).shape
                mm = F.interpolate(sm[i:i + 1], size=(h0, w0), mode="bilinear", align_corners=False)[0, 0].numpy()
                ps.append(mm[::2, ::2].ravel()); py.append(C.load_mask(t[2], (h0, w0))[::2, ::2].ravel())
            r["pixel_auroc"] = round(C.auroc(np.concatenate(ps), np.concatenate(py)), 4)
        res.append(r)
        print(json.dumps(r), flush=True)
    with open(os.path.join(HERE, "r2.jsonl"), "a") as f:
        for r in res:
            f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
