#!/usr/bin/env python3
"""PatchCore reference on frozen EfficientNet-Lite features, MTD protocol (one config per run).

    scripts/backbone-env.sh && python3 scripts/mtd-layout.py
    OMP_NUM_THREADS=1 nice -n 15 .venv-torch/bin/python scripts/teach-research/patchcore_ref.py \
        --prep squash --size 256 --tag baseline

Teach: every train image → backbone taps → local average (agg x agg) → resample to the finest tap
grid → concat → patches; greedy coreset (ratio of all patches) on a seeded random projection.
Test: patches → k-NN Euclidean distance to the bank → map on the feature grid → (test-time
augmented copies mapped back and averaged) → bilinear upsample to the original image → Gaussian
blur (sigma given in feature cells) → image score = max (or mean of the top q fraction).
Appends one JSON line per run to results.jsonl beside this file.
"""

import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def get_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join(C.REPO, "target", "mtd"))
    ap.add_argument("--variant", default="lite0", choices=["lite0", "lite1", "lite2"])
    ap.add_argument("--norm", default="imagenet", choices=["imagenet", "tf"])
    ap.add_argument("--taps", default="feat_s8,feat_s16")
    ap.add_argument("--agg", type=int, default=3)
    ap.add_argument("--layer-norm", action="store_true")
    ap.add_argument("--prep", default="squash", choices=["squash", "pad", "native", "short", "long"])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--coreset", type=float, default=0.01, help="fraction of patches kept (1 = all)")
    ap.add_argument("--proj", type=int, default=128, help="random projection dim for the coreset")
    ap.add_argument("--k", type=int, default=1)
    ap.add_argument("--sigma", type=float, default=0.5, help="blur sigma in feature-grid cells")
    ap.add_argument("--score", default="max", help="max | topQ (mean of the top Q fraction, e.g. top0.01)")
    ap.add_argument("--tta", default="none", choices=["none", "flip", "flip2", "rot4", "d4"])
    ap.add_argument("--train-aug", default="none", choices=["none", "flip", "flip2", "rot4", "d4"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit-train", type=int, default=0, help="debug: use only the first N train images")
    ap.add_argument("--tag", default="")
    ap.add_argument("--no-pixel", action="store_true")
    return ap.parse_args(argv)


def image_patches(fe, img, args, k=0, flip=False, timer=None):
    """(patch features [h*w, C] of the image region, grid (h, w), input shape, region)."""
    x = C.fwd_t(torch.from_numpy(img), k, flip).numpy()
    t, (y0, x0, hh, ww) = C.prep(np.ascontiguousarray(x), args.prep, args.size)
    t0 = C.now()
    taps = fe.backbone(t)
    t1 = C.now()
    f = fe.aggregate(taps)[0]  # [C, h, w]
    s = fe.base
    # region of the image on the feature grid (pad mode); whole grid otherwise
    gy0, gx0 = y0 // s, x0 // s
    gy1, gx1 = -(-(y0 + hh) // s), -(-(x0 + ww) // s)
    f = f[:, gy0:gy1, gx0:gx1]
    t2 = C.now()
    if timer:
        timer.add("backbone", t1 - t0)
        timer.add("score", t2 - t1)
    h, w = f.shape[-2:]
    return np.ascontiguousarray(f.reshape(f.shape[0], -1).T.numpy()), (h, w), t.shape[-2:]


def score_map(dist, grid, k, flip, out_hw):
    m = torch.from_numpy(dist).view(1, 1, *grid)
    m = C.inv_t(m, k, flip)
    return F.interpolate(m, size=out_hw, mode="bilinear", align_corners=False)


def image_score(m, how):
    if how == "max":
        return float(m.max())
    q = float(how[3:])
    v = m.flatten()
    n = max(1, int(round(q * v.numel())))
    return float(v.topk(n).values.mean())


def run(args):
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    train, test = C.list_dataset(args.data)
    if args.limit_train:
        train = train[: args.limit_train]
    fe = C.Features(args.variant, args.taps.split(","), args.agg, args.norm, args.layer_norm)

    # ---- teach
    t_start = C.now()
    tm = C.Timer()
    parts = []
    for p in train:
        img = C.load_gray(p)
        for k, fl in C.tta_list(args.train_aug):
            pt, _, _ = image_patches(fe, img, args, k, fl, tm)
            parts.append(pt)
    bank = np.concatenate(parts)
    n_all = bank.shape[0]
    t_feat = C.now() - t_start
    n_keep = max(1, int(round(args.coreset * n_all)))
    t0 = C.now()
    sel = C.greedy_coreset(bank, n_keep, args.proj, args.seed)
    bank = np.ascontiguousarray(bank[sel])
    t_core = C.now() - t0
    teach_s = C.now() - t_start
    bank_sq = (bank * bank).sum(1)
    print(f"teach: {len(train)} images, {n_all} patches x {bank.shape[1]} -> bank {n_keep}; "
          f"features {t_feat:.1f}s, coreset {t_core:.1f}s, total {teach_s:.1f}s", flush=True)

    # ---- test
    tm = C.Timer()
    scores, labels, defects = [], [], []
    pix_s, pix_y = [], []
    for i, (p, y, mpath, d) in enumerate(test):
        img = C.load_gray(p)
        h0, w0 = img.shape
        acc = None
        tts = C.tta_list(args.tta)
        for k, fl in tts:
            pt, grid, in_hw = image_patches(fe, img, args, k, fl, tm)
            t0 = C.now()
            dist = C.knn_dist(pt, bank, bank_sq, args.k)
            m = score_map(dist, grid, k, fl, (h0, w0))
            acc = m if acc is None else acc + m
            tm.add("score", C.now() - t0)
        t0 = C.now()
        acc = acc / len(tts)
        # sigma in feature cells -> original pixels
        scale = h0 / float(in_hw[0] if args.prep != "pad" else grid[0] * fe.base)
        sig = args.sigma * fe.base * max(h0 / in_hw[0], w0 / in_hw[1]) if args.prep != "pad" else args.sigma * fe.base * max(h0, w0) / args.size
        del scale
        sm = C.smooth(acc, sig)[0, 0]
        s = image_score(sm, args.score)
        tm.add("score", C.now() - t0)
        scores.append(s)
        labels.append(y)
        defects.append(d)
        if not args.no_pixel:
            mask = C.load_mask(mpath, (h0, w0))
            pix_s.append(sm.numpy()[::2, ::2].ravel())
            pix_y.append(mask[::2, ::2].ravel())
    n = len(test)
    res = dict(vars(args))
    res.update(
        image_auroc=C.auroc(scores, labels),
        pixel_auroc=None if args.no_pixel else C.auroc(np.concatenate(pix_s), np.concatenate(pix_y)),
        teach_s=round(teach_s, 1),
        teach_features_s=round(t_feat, 1),
        coreset_s=round(t_core, 1),
        patches=n_all,
        bank=n_keep,
        dim=int(bank.shape[1]),
        backbone_ms=round(1000 * tm.t["backbone"] / n, 2),
        score_ms=round(1000 * tm.t["score"] / n, 2),
    )
    labels_a = np.array(labels)
    scores_a = np.array(scores)
    per = {}
    for d in sorted(set(defects) - {"good"}):
        sel = np.array([dd in ("good", d) for dd in defects])
        per[d] = round(C.auroc(scores_a[sel], labels_a[sel]), 4)
    res["per_defect"] = per
    print(json.dumps({k: res[k] for k in ("tag", "image_auroc", "pixel_auroc", "teach_s", "backbone_ms", "score_ms", "bank", "dim", "per_defect")}), flush=True)
    with open(os.path.join(HERE, "results.jsonl"), "a") as f:
        f.write(json.dumps(res) + "\n")
    return res, scores, labels


if __name__ == "__main__":
    run(get_args())
