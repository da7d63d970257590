#!/usr/bin/env python3
"""Round 6: what improves image AUROC on top of the round-5 whitened recipe (Lite2 160², s8+s16
per-tap L2, PCA 64 whitened, greedy coreset 8,192 rows, 1-NN / lof3, map → 256² bilinear, σ 16 px,
top 10%), within the run-time budget of query patches × bank rows × dims ≤ 2,048 MACs per input
pixel (100 × 8192 × 64 at 160²). Features from r5_extract.py (target/teach-research/r5/<feat>).

The expensive part (PCA, coreset, 1-NN of every query patch, the bank's own 10-NN distances) is
computed once per (feat, taps, rows, dims, whiten, seed) and cached in /tmp/r6-raw; lof k, σ and
the top fraction q are then cheap post-processing. As in round 5, every score exists twice: the
model taught on all 762 train goods scores the test set, the one taught without the seeded 15%
hold-out (`default_rng(0).choice(762, 114)`) scores the hold-out (z statistics, thresholds).

    OMP_NUM_THREADS=1 nice -n 19 .venv-torch/bin/python scripts/teach-research/r6_eval.py GROUP...
groups: pp dims sizes ens thr seeds, or r:key=value,... (one raw model, default post-processing)
"""
import argparse, json, os, sys, time
import numpy as np
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common as C
from r3_eval import greedy
from r4_eval import knn, ops_1d
from r5_eval import load_taps, pca_fit, R5

RAW = "/tmp/r6-raw"
OUT = os.path.join(HERE, "r6.jsonl")
BUDGET = 100 * 8192 * 64 / 160 ** 2  # MACs per input pixel
KB = 9  # bank k-NN kept (lof up to 9)


def raw_model(feat, taps, train_idx, query, rows, dims, whiten, seed, floor=0.0):
    X, g = load_taps(feat, "train", taps, train_idx)
    mu, P = pca_fit(X, dims, whiten, int(seed), floor)
    Z = np.ascontiguousarray((X - mu) @ P)
    del X
    sel, _ = greedy(Z, {rows}, int(seed))
    B = np.ascontiguousarray(Z[sel])
    del Z
    Qx, _ = load_taps(feat, query[0], taps, query[1])
    Q = np.ascontiguousarray((Qx - mu) @ P)
    D, I = knn(Q, B, 1)
    bd, _ = knn(B, B, KB + 1)
    return dict(pm=D[:, 0].astype(np.float32), I=I.astype(np.int32), bd=bd[:, 1:].astype(np.float32), g=g)


def raw(feat, rows=8192, dims=64, whiten=1.0, seed=0, taps=("s8", "s16"), floor=0.0):
    name = f"{feat}-{'+'.join(taps)}-r{rows}-d{dims}-w{whiten:g}-s{seed}" + (f"-f{floor:g}" if floor else "")
    os.makedirs(RAW, exist_ok=True)
    p = os.path.join(RAW, name + ".npz")
    if os.path.exists(p):
        d = np.load(p)
        return {k: d[k] for k in d.files}
    t0 = time.time()
    n_train = 762
    hold = np.sort(np.random.default_rng(0).choice(n_train, 114, replace=False))
    rest = np.setdiff1d(np.arange(n_train), hold)
    t = raw_model(feat, taps, None, ("test", None), rows, dims, whiten, seed, floor)
    h = raw_model(feat, taps, rest, ("train", hold), rows, dims, whiten, seed, floor)
    out = {**{k + "_t": v for k, v in t.items() if k != "g"}, **{k + "_h": v for k, v in h.items() if k != "g"}, "g": t["g"]}
    np.savez(p, **out)
    print(f"  raw {name}: {time.time() - t0:.0f}s", flush=True)
    return out


_ops = {}


def post(R, lof=3, sigma=16.0, qs=(0.1,)):
    """→ {q: (test scores, hold-out scores)}."""
    g = int(R["g"])
    res = {}
    for sfx in ("t", "h"):
        pm, I, bd = R["pm_" + sfx].astype(np.float64), R["I_" + sfx], R["bd_" + sfx]
        if lof:
            pm = pm / (bd[I, :lof].mean(1) + 1e-6)
        n = len(pm) // (g * g)
        m = pm.reshape(n, g, g)
        if (g, sigma) not in _ops:
            _ops[(g, sigma)] = ops_1d(g, sigma)
        A = _ops[(g, sigma)]
        HW = A.shape[0] ** 2
        kqs = {q: max(1, int(round(q * HW))) for q in qs}
        km = max(kqs.values())
        outs = {q: [] for q in qs}
        for c in range(0, n, 128):  # chunks: the full maps are n × 65536 float64
            full = np.einsum("ij,njk,lk->nil", A, m[c:c + 128], A).reshape(len(m[c:c + 128]), -1)
            top = -np.sort(-np.partition(full, -km, axis=1)[:, -km:], axis=1)  # descending
            for q, kq in kqs.items():
                outs[q].append(top[:, :kq].mean(1))
        for q in qs:
            res.setdefault(q, [None, None])[0 if sfx == "t" else 1] = np.concatenate(outs[q])
    return {q: tuple(v) for q, v in res.items()}


META = {}


def labels_of(feat):
    if feat not in META:
        meta = json.load(open(os.path.join(R5, feat, "meta.json")))
        META[feat] = (np.array([t[1] for t in meta["test"]]), [t[3] for t in meta["test"]])
    return META[feat]


def macs_per_px(feat, rows, dims):
    size = int(feat.split("-")[1])
    return (size // 16) ** 2 * rows * dims / size ** 2


def report(tag, s, feat="lite2-160", extra=None):
    labels, defects = labels_of(feat)
    per = {dd: round(C.auroc(s[[x in ("good", dd) for x in defects]], labels[[x in ("good", dd) for x in defects]]), 4)
           for dd in sorted(set(defects) - {"good"})}
    au = C.auroc(s, labels)
    print(f"{tag:64s} {au:.4f}  " + " / ".join(f"{v:.3f}" for v in per.values()), flush=True)
    r = dict(tag=tag, image_auroc=round(au, 4), per_defect=per, **(extra or {}))
    with open(OUT, "a") as f:
        f.write(json.dumps(r) + "\n")
    return au


def z(pair):
    t, h = pair
    return (t - h.mean()) / (h.std() + 1e-9), (h - h.mean()) / (h.std() + 1e-9)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("group", nargs="+")
    a = ap.parse_args()
    F0 = "lite2-160"
    for grp in a.group:
        if grp == "pp":  # σ × q × lof × whiten power
            for w in (1.0, 0.75):
                R = raw(F0, whiten=w)
                for lof in (0, 1, 3, 5, 9):
                    for sig in (8.0, 16.0, 24.0):
                        res = post(R, lof, sig, (0.02, 0.05, 0.1, 0.2))
                        for q, (t, h) in res.items():
                            report(f"pp w{w:g} lof{lof} s{sig:g} q{q:g}", t, F0,
                                   dict(feat=F0, rows=8192, dims=64, whiten=w, lof=lof, sigma=sig, q=q, mpp=BUDGET))
        elif grp == "dims":  # budget-constant rows = 8192·64/dims
            for d in (48, 64, 80, 96, 128):
                rows = int(round(8192 * 64 / d))
                for w in (1.0, 0.75):
                    R = raw(F0, rows=rows, dims=d, whiten=w)
                    for lof in (0, 3, 9):
                        t, h = post(R, lof)[0.1]
                        report(f"dims{d} rows{rows} w{w:g} lof{lof}", t, F0,
                               dict(feat=F0, rows=rows, dims=d, whiten=w, lof=lof, mpp=macs_per_px(F0, rows, d)))
        elif grp.startswith("sizes"):  # r:  sizes or sizes=128+192
            sizes = [int(s) for s in grp.split("=")[1].split("+")] if "=" in grp else (128, 160, 192, 224, 256)
            for sz in sizes:
                f = f"lite2-{sz}"
                if not os.path.exists(os.path.join(R5, f, "test-s16.npy")):
                    print("missing", f); continue
                for w in (1.0, 0.75):
                    R = raw(f, whiten=w)
                    for lof in (0, 3, 9):
                        for sig in (8.0, 16.0, 24.0):
                            t, h = post(R, lof, sig)[0.1]
                            report(f"size{sz} w{w:g} lof{lof} s{sig:g} q0.1", t, f,
                                   dict(feat=f, rows=8192, dims=64, whiten=w, lof=lof, sigma=sig, q=0.1, mpp=macs_per_px(f, 8192, 64)))
        elif grp == "ens" or grp.startswith("ens="):  # ens or ens=160+224 : z-mean / z-max of two (or more) sizes
            sizes = [int(s) for s in grp.split("=")[1].split("+")] if "=" in grp else (160, 224)
            for w in (1.0, 0.75):
                for lof in (0, 3):
                    Zs = []
                    for sz in sizes:
                        Zs.append(z(post(raw(f"lite2-{sz}", whiten=w), lof)[0.1]))
                    T = np.stack([t for t, _ in Zs])
                    cost = sum(macs_per_px(f"lite2-{sz}", 8192, 64) * sz ** 2 for sz in sizes) / (BUDGET * 160 ** 2)
                    nm = "⊕".join(map(str, sizes))
                    ex = dict(sizes=sizes, whiten=w, lof=lof, cost_x160=round(cost, 2))
                    report(f"ens {nm} w{w:g} lof{lof} z-mean", T.mean(0), F0, ex)
                    report(f"ens {nm} w{w:g} lof{lof} z-max", T.max(0), F0, ex)
        elif grp.startswith("ensr="):  # ensr=160:4096+224:2048,w,lof[,seed]: z-mean / z-max, rows per member
            p = grp.split("=")[1].split(",")
            mem = [tuple(int(x) for x in m.split(":")) for m in p[0].split("+")]
            w, lof = float(p[1]), int(p[2]); sd = int(p[3]) if len(p) > 3 else 0
            Zs = [z(post(raw(f"lite2-{sz}", rows=r, whiten=w, seed=sd), lof)[0.1]) for sz, r in mem]
            T = np.stack([t for t, _ in Zs])
            cost = sum((sz // 16) ** 2 * r * 64 for sz, r in mem) / (100 * 8192 * 64)
            ex = dict(members=mem, whiten=w, lof=lof, seed=sd, cost_x160=round(cost, 2))
            report(f"ensr {p[0]} w{w:g} lof{lof} seed{sd} z-mean", T.mean(0), F0, ex)
            report(f"ensr {p[0]} w{w:g} lof{lof} seed{sd} z-max", T.max(0), F0, ex)
        elif grp.startswith("thr"):  # thr or thr=w,lof,sigma,q
            w, lof, sig, q = (1.0, 3, 16.0, 0.1)
            if "=" in grp:
                p = grp.split("=")[1].split(",")
                w, lof, sig, q = float(p[0]), int(p[1]), float(p[2]), float(p[3])
            t, h = post(raw(F0, whiten=w), lof, sig, (q,))[q]
            labels, defects = labels_of(F0)
            good, bad = t[labels == 0], t[labels == 1]
            rules = {"mean+2sd": h.mean() + 2 * h.std(), "mean+3sd": h.mean() + 3 * h.std(),
                     "p95": np.percentile(h, 95), "p99": np.percentile(h, 99), "max": h.max()}
            print(f"thr w{w:g} lof{lof} s{sig:g} q{q:g}: hold-out mean {h.mean():.4f} sd {h.std():.4f}; "
                  f"test good mean {good.mean():.4f} sd {good.std():.4f}", flush=True)
            for k, th in rules.items():
                ok = float((good > th).mean()); esc = float((bad <= th).mean())
                per = {dd: round(float((t[[x == dd for x in defects]] <= th).mean()), 3) for dd in sorted(set(defects) - {"good"})}
                print(f"  {k:9s} thr {th:.4f}  overkill {ok:.3f} ({int((good > th).sum())}/{len(good)})  "
                      f"escape {esc:.3f} ({int((bad <= th).sum())}/{len(bad)})  per-class escape {per}", flush=True)
                with open(OUT, "a") as f:
                    f.write(json.dumps(dict(tag=f"thr w{w:g} lof{lof} s{sig:g} q{q:g} {k}", threshold=round(float(th), 5),
                                            overkill=round(ok, 4), escape=round(esc, 4), escape_per_defect=per)) + "\n")
        elif grp.startswith("seeds"):  # seeds=w,lof,sigma,q[,feat]
            w, lof, sig, q, f = 1.0, 3, 16.0, 0.1, F0
            if "=" in grp:
                p = grp.split("=")[1].split(",")
                w, lof, sig, q = float(p[0]), int(p[1]), float(p[2]), float(p[3])
                if len(p) > 4:
                    f = p[4]
            aus = []
            for s in (0, 1, 2):
                t, h = post(raw(f, whiten=w, seed=s), lof, sig, (q,))[q]
                aus.append(report(f"seed{s} {f} w{w:g} lof{lof} s{sig:g} q{q:g}", t, f, dict(feat=f, seed=s, whiten=w, lof=lof, sigma=sig, q=q)))
            print(f"  seeds mean {np.mean(aus):.4f} sd {np.std(aus):.4f} min {min(aus):.4f}", flush=True)
        elif grp.startswith("r:"):
            kw = {}
            for kv in grp[2:].split(","):
                k, v = kv.split("=")
                kw[k] = tuple(v.split("+")) if k == "taps" else v if k == "feat" else (int(v) if k in ("rows", "dims", "lof", "seed") else float(v))
            f = kw.pop("feat", F0)
            lof = kw.pop("lof", 3); sig = kw.pop("sigma", 16.0); q = kw.pop("q", 0.1)
            t, h = post(raw(f, **kw), lof, sig, (q,))[q]
            report(f"{f} {grp}", t, f, dict(feat=f, lof=lof, sigma=sig, q=q, **kw,
                                            mpp=macs_per_px(f, kw.get("rows", 8192), kw.get("dims", 64))))
        else:
            sys.exit("unknown " + grp)


if __name__ == "__main__":
    main()
