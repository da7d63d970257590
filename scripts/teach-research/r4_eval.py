#!/usr/bin/env python3
"""Round 4: score aggregation, k-NN, reweighting and input size on the stride-16 grid.

Features from r4_extract.py (target/teach-research/r4/<feat>/). Per tap L2 norm → concat → PCA
(fit on 200k seeded train patches) → greedy coreset (prefixes = smaller banks) → k-NN distances of
every test patch (k up to --kmax kept, sorted) → per-patch score variants:
  k<K>      mean of the K nearest distances (k1 = PatchCore 1-NN)
  lof<B>    1-NN distance / mean distance of that bank row to its B nearest other bank rows
            (a per-row constant the teach step can store; run time = Gather + Div)
→ map g×g → bilinear ×(256/g) to 256² → Gaussian blur σ px (reflect) → image score = max or mean of
the top q of the 256² map. Upsample + blur are separable linear ops, applied here as two 1-D
matrices (checked against common.smooth). PatchCore's reweighting ("rw<B>"): image score ×
(1 − exp(s*) / Σ_{m ∈ N_B(m*)} exp(‖q* − m‖)), q* = the patch with the largest 1-NN distance s*,
m* its nearest bank row, N_B(m*) the B nearest bank rows of m* (incl. itself; stored at teach).

--holdout F: also teach a second bank without a seeded hold-out of the train goods and score the
hold-out with it (z-score statistics for ensembles, r4_combine.py), as round 3 did.

    OMP_NUM_THREADS=1 nice -n 19 .venv-torch/bin/python scripts/teach-research/r4_eval.py --feat lite2-256 --rows 8000
"""
import argparse, json, os, sys
import numpy as np, torch, torch.nn.functional as F
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common as C
from r3_eval import greedy

R4 = os.path.join(C.REPO, "target", "teach-research", "r4")
SC = "/tmp/r4-scores"
SIGMAS = (0.0, 4.0, 8.0, 16.0, 24.0)
QS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2)  # 0 = max


def load(feat, split, idx=None, taps=("s8", "s16")):
    blocks, sl, o = [], [], 0
    for t in taps:
        a = np.load(os.path.join(R4, feat, f"{split}-{t}.npy"), mmap_mode="r")
        if idx is not None:
            a = a[idx]
        a = np.asarray(a, dtype=np.float32)
        blocks.append(a.transpose(0, 2, 3, 1).reshape(-1, a.shape[1]))
        sl.append(slice(o, o + a.shape[1])); o += a.shape[1]
    return np.ascontiguousarray(np.concatenate(blocks, 1)), sl, a.shape[-1]


class Norm:
    def __init__(self, X, sl, pca, seed, kind="l2", whiten=False):
        self.sl, self.kind = sl, kind
        S = X[np.random.default_rng(seed).choice(len(X), min(len(X), 200000), replace=False)]
        if kind == "std":
            self.mu, self.sd = S.mean(0), S.std(0) + 1e-6
        Z = self.pre(S)
        self.pm = Z.mean(0)
        ev, V = np.linalg.eigh(np.cov((Z - self.pm).T.astype(np.float64)))
        self.P = V[:, ::-1][:, :pca].astype(np.float32) if pca else None
        if whiten and pca:
            self.P = self.P / np.sqrt(ev[::-1][:pca]).astype(np.float32)[None]

    def pre(self, X):
        X = X.copy()
        if self.kind == "std":
            return (X - self.mu) / self.sd
        for s in self.sl:
            X[:, s] /= np.linalg.norm(X[:, s], axis=1, keepdims=True) + 1e-6
        return X

    def __call__(self, X):
        X = self.pre(X)
        if self.P is not None:
            X = (X - self.pm) @ self.P
        return np.ascontiguousarray(X, dtype=np.float32)


def knn(Q, B, kmax, chunk=2048):
    """→ (sorted distances [n, kmax], index of the nearest bank row [n])."""
    Bsq = np.einsum("ij,ij->i", B, B)
    D, I = [], []
    for i in range(0, len(Q), chunk):
        a = Q[i:i + chunk]
        d2 = a @ B.T
        d2 *= -2.0
        d2 += Bsq[None]
        d2 += np.einsum("ij,ij->i", a, a)[:, None]
        if kmax == 1:
            j = d2.argmin(1); d = d2[np.arange(len(a)), j][:, None]
        else:
            p = np.argpartition(d2, kmax - 1, axis=1)[:, :kmax]
            d = np.take_along_axis(d2, p, 1)
            o = np.argsort(d, 1); d = np.take_along_axis(d, o, 1); j = np.take_along_axis(p, o, 1)[:, 0]
        D.append(np.sqrt(np.maximum(d, 0))); I.append(j)
    return np.concatenate(D), np.concatenate(I)


def ops_1d(g, sigma, H=256):
    """1-D matrix [H, g]: bilinear (half-pixel) upsample g → H, then the Gaussian blur of common.smooth."""
    U = F.interpolate(torch.eye(g)[:, None, :], size=H, mode="linear", align_corners=False)[:, 0, :].T  # [H, g]
    if sigma <= 0:
        return U.numpy().astype(np.float64)
    k = C.gaussian_kernel(sigma); r = (k.numel() - 1) // 2
    E = torch.eye(H)[:, None, :]
    E = F.pad(E, (r, r), mode="reflect" if r < H else "replicate")
    G = F.conv1d(E, k.view(1, 1, -1))[:, 0, :].T  # [H, H]: column j = response to e_j
    return (G @ U).numpy().astype(np.float64)


def check_ops(g):
    m = torch.rand(2, 1, g, g)
    ref = C.smooth(F.interpolate(m, size=(256, 256), mode="bilinear", align_corners=False), 16.0)[:, 0].numpy()
    A = ops_1d(g, 16.0)
    got = np.einsum("ij,njk,lk->nil", A, m[:, 0].numpy().astype(np.float64), A)
    assert np.abs(got - ref).max() < 1e-4, np.abs(got - ref).max()


def image_scores(pmap, n, g):
    """pmap [n*g*g] → {f"s{σ}-q{q}": scores [n]}."""
    m = pmap.reshape(n, g, g).astype(np.float64)
    out = {}
    for sig in SIGMAS:
        A = ops_1d(g, sig)
        full = np.einsum("ij,njk,lk->nil", A, m, A).reshape(n, -1)
        for q in QS:
            if q == 0:
                s = full.max(1)
            else:
                kq = int(round(q * full.shape[1]))
                s = np.partition(full, -kq, axis=1)[:, -kq:].mean(1)
            out[f"s{sig:g}-q{q:g}"] = s
    return out


def variants(Dk, I, B, bank_nn_d, n, g, ks, lofs, rws):
    """All score variants for one query set. bank_nn_d [M, b] sorted distances bank row → bank rows."""
    res = {}
    for k in ks:
        pm = Dk[:, :k].mean(1)
        for key, s in image_scores(pm, n, g).items():
            res[f"k{k}-{key}"] = s
    for b in lofs:
        pm = Dk[:, 0] / (bank_nn_d[I, 1:b + 1].mean(1) + 1e-6)
        for key, s in image_scores(pm, n, g).items():
            res[f"lof{b}-{key}"] = s
    return res


def reweight(Q, Dk, I, B, bank_nn_i, n, g, b):
    """PatchCore weight per image (1 − softmax-like term of the most anomalous patch)."""
    d1 = Dk[:, 0].reshape(n, g * g)
    j = d1.argmax(1)
    w = np.empty(n)
    for i in range(n):
        qi = Q[i * g * g + j[i]]
        ms = I[i * g * g + j[i]]
        nb = bank_nn_i[ms, :b]  # includes ms itself (distance 0 to itself sorted first)
        dd = np.linalg.norm(B[nb] - qi[None], axis=1)
        w[i] = 1.0 - np.exp(d1[i, j[i]]) / np.exp(dd).sum()
    return w


def teach(feat, idx, a, sl_hint=None):
    X, sl, g = load(feat, "train", idx)
    t0 = C.now()
    nz = Norm(X, sl, a.pca, a.seed, a.norm, a.whiten)
    Z = nz(X); del X
    t_norm = C.now() - t0
    sel, ts = greedy(Z, set(a.rows_l), a.seed)
    return nz, np.ascontiguousarray(Z[sel]), ts, t_norm, g, len(Z)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--feat", default="lite2-256")
    ap.add_argument("--norm", default="l2")
    ap.add_argument("--pca", type=int, default=64)
    ap.add_argument("--whiten", action="store_true")
    ap.add_argument("--rows", default="8000")
    ap.add_argument("--ks", default="1")
    ap.add_argument("--lofs", default="")
    ap.add_argument("--rws", default="", help="reweighting neighbourhood sizes B, e.g. 3,9")
    ap.add_argument("--holdout", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default="")
    ap.add_argument("--sigmas", default="0,4,8,16,24")
    ap.add_argument("--qs", default="0,0.01,0.02,0.05,0.1,0.2")
    a = ap.parse_args()
    global SIGMAS, QS
    SIGMAS = tuple(float(x) for x in a.sigmas.split(","))
    QS = tuple(float(x) for x in a.qs.split(","))
    a.rows_l = sorted(int(x) for x in a.rows.split(","))
    ks = [int(x) for x in a.ks.split(",")]
    lofs = [int(x) for x in a.lofs.split(",") if x]
    rws = [int(x) for x in a.rws.split(",") if x]
    kmax = max(ks)
    fdir = os.path.join(R4, a.feat)
    meta = json.load(open(os.path.join(fdir, "meta.json")))
    bbms = json.load(open(os.path.join(fdir, "backbone_ms.json")))
    test = meta["test"]; n_train = len(meta["train"])
    labels = np.array([t[1] for t in test]); defects = [t[3] for t in test]
    os.makedirs(SC, exist_ok=True)

    banks = {"full": np.arange(n_train)}
    hold = None
    if a.holdout > 0:
        hold = np.sort(np.random.default_rng(0).choice(n_train, int(round(a.holdout * n_train)), replace=False))
        banks["ho"] = np.setdiff1d(np.arange(n_train), hold)
    saved = {n: {} for n in a.rows_l}
    for bname, idx in banks.items():
        nz, Bfull, ts, t_norm, g, npatch = teach(a.feat, idx if bname == "ho" else None, a)
        check_ops(g)
        Q, _, _ = load(a.feat, "test" if bname == "full" else "train", None if bname == "full" else hold)
        Q = nz(Q)
        nq = len(test) if bname == "full" else len(hold)
        print(f"[{bname}] train patches {npatch}, grid {g}, norm/pca {t_norm:.1f}s, coreset {ts}, load {os.getloadavg()[0]:.2f}", flush=True)
        for n in a.rows_l:
            B = Bfull[:n]
            need_nn = bool(lofs or rws)
            if need_nn:
                bd, _ = knn(B, B, max(lofs + rws) + 1)
                # indices of the B nearest bank rows of each bank row (incl. itself)
                Bsq = np.einsum("ij,ij->i", B, B)
                nn_i = np.argsort(-2 * B @ B.T + Bsq[None] + Bsq[:, None], axis=1)[:, :max(rws + [1])]
            t0 = C.now()
            Dk, I = knn(Q, B, kmax)
            knn_s = C.now() - t0
            res = variants(Dk, I, B, bd if need_nn else None, nq, g, ks, lofs, [])
            for b in rws:
                w = reweight(Q, Dk, I, B, nn_i, nq, g, b)
                for key in [k for k in res if k.startswith("k1-")]:
                    res[f"rw{b}-" + key[3:]] = res[key] * w
            saved[n][bname] = res
            if bname == "full":
                best = None
                for key, s in res.items():
                    au = C.auroc(s, labels)
                    if best is None or au > best[1]:
                        best = (key, au)
                base = C.auroc(res["k1-s16-q0.05"], labels) if "k1-s16-q0.05" in res else None
                print(f"  rows {n}: baseline k1-s16-q0.05 {base}, best {best}, knn {knn_s:.1f}s", flush=True)
    for n in a.rows_l:
        res = saved[n]["full"]
        dim = a.pca or 168
        for key, s in res.items():
            per = {dd: round(C.auroc(s[[x in ("good", dd) for x in defects]], labels[[x in ("good", dd) for x in defects]]), 4)
                   for dd in sorted(set(defects) - {"good"})}
            r = dict(tag=a.tag, feat=a.feat, norm=a.norm, pca=a.pca, whiten=a.whiten, grid=g, bank=n, dim=dim, post=key,
                     image_auroc=round(C.auroc(s, labels), 4), per_defect=per, macs_M=round(g * g * n * dim / 1e6, 1),
                     backbone_ms=round(bbms["train"], 2), seed=a.seed)
            with open(os.path.join(HERE, "r4.jsonl"), "a") as f:
                f.write(json.dumps(r) + "\n")
        out = {"labels": labels, "defects": np.array(defects)}
        for key, s in res.items():
            out["test|" + key] = s
        if "ho" in saved[n]:
            for key, s in saved[n]["ho"].items():
                out["hold|" + key] = s
        name = f"{a.feat}-{a.norm}-pca{a.pca}{'w' if a.whiten else ''}-{n}" + (f"-seed{a.seed}" if a.seed else "")
        np.savez(os.path.join(SC, name + ".npz"), **out)


if __name__ == "__main__":
    main()
