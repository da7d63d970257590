#!/usr/bin/env python3
"""Round 4: extract backbone s8/s16 features (square squash to --size, 3×3 avg per tap, id only)
for MTD train and test, on the stride-16 grid (s8 average-pooled 2×2), cached as float16 under
target/teach-research/r4/<variant>-<size>/. Deterministic.

    OMP_NUM_THREADS=1 nice -n 19 .venv-torch/bin/python scripts/teach-research/r4_extract.py --variant lite2 --size 320
"""
import argparse, json, os, sys
import numpy as np, torch, torch.nn.functional as F
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="lite2")
    ap.add_argument("--size", type=int, default=256)
    a = ap.parse_args()
    out = os.path.join(C.REPO, "target", "teach-research", "r4", f"{a.variant}-{a.size}")
    os.makedirs(out, exist_ok=True)
    train, test = C.list_dataset(os.path.join(C.REPO, "target", "mtd"))
    fe = C.Features(a.variant, ("feat_s8", "feat_s16"), 3, "imagenet")
    json.dump({"train": train, "test": [list(t) for t in test]}, open(os.path.join(out, "meta.json"), "w"))
    g = a.size // 16
    bb = {}
    for split, paths in (("train", train), ("test", [t[0] for t in test])):
        n = len(paths)
        arr8 = arr16 = None
        t_bb = 0.0
        for i, p in enumerate(paths):
            x, _ = C.prep(C.load_gray(p), "squash", a.size)
            t0 = C.now()
            f8, f16 = fe.backbone(x)
            t_bb += C.now() - t0
            f8 = F.avg_pool2d(F.avg_pool2d(f8, 3, stride=1, padding=1, count_include_pad=False), 2)
            f16 = F.avg_pool2d(f16, 3, stride=1, padding=1, count_include_pad=False)
            if arr8 is None:
                arr8 = np.lib.format.open_memmap(os.path.join(out, f"{split}-s8.npy"), "w+", np.float16, (n, f8.shape[1], g, g))
                arr16 = np.lib.format.open_memmap(os.path.join(out, f"{split}-s16.npy"), "w+", np.float16, (n, f16.shape[1], g, g))
            arr8[i] = f8[0].numpy()
            arr16[i] = f16[0].numpy()
            if i % 200 == 0:
                print(split, i, n, flush=True)
        arr8.flush(); arr16.flush()
        bb[split] = 1000 * t_bb / n
    json.dump(bb, open(os.path.join(out, "backbone_ms.json"), "w"))
    print(a.variant, a.size, "backbone ms/img", bb, flush=True)


if __name__ == "__main__":
    main()
