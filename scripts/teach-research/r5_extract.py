#!/usr/bin/env python3
"""Round 5: extract Lite2 s8/s16/s32 features (square squash to --size, id only) for MTD train and
test, cached as float16 under target/teach-research/r5/<variant>-<size>/:
  <split>-s8.npy   3×3 avg, then 2×2 avg onto the stride-16 grid (as round 4)
  <split>-s16.npy  3×3 avg
  <split>-s32.npy  raw stride-32 map (size/32 square)
  <split>-gap.npy  global average of the raw s8 | s16 | s32 maps (one vector per image)
Deterministic.

    OMP_NUM_THREADS=1 nice -n 19 .venv-torch/bin/python scripts/teach-research/r5_extract.py --size 160
"""
import argparse, json, os, sys
import numpy as np, torch, torch.nn.functional as F
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="lite2")
    ap.add_argument("--size", type=int, default=160)
    a = ap.parse_args()
    out = os.path.join(C.REPO, "target", "teach-research", "r5", f"{a.variant}-{a.size}")
    os.makedirs(out, exist_ok=True)
    train, test = C.list_dataset(os.path.join(C.REPO, "target", "mtd"))
    fe = C.Features(a.variant, ("feat_s8", "feat_s16", "feat_s32"), 3, "imagenet")
    json.dump({"train": train, "test": [list(t) for t in test]}, open(os.path.join(out, "meta.json"), "w"))
    g = a.size // 16
    for split, paths in (("train", train), ("test", [t[0] for t in test])):
        n = len(paths)
        arrs = {}
        for i, p in enumerate(paths):
            x, _ = C.prep(C.load_gray(p), "squash", a.size)
            f8, f16, f32 = fe.backbone(x)
            gap = torch.cat([f.mean((2, 3)) for f in (f8, f16, f32)], 1)[0]
            f8 = F.avg_pool2d(F.avg_pool2d(f8, 3, stride=1, padding=1, count_include_pad=False), 2)
            f16 = F.avg_pool2d(f16, 3, stride=1, padding=1, count_include_pad=False)
            vals = {"s8": f8[0], "s16": f16[0], "s32": f32[0], "gap": gap}
            if not arrs:
                for k, v in vals.items():
                    arrs[k] = np.lib.format.open_memmap(os.path.join(out, f"{split}-{k}.npy"), "w+", np.float16, (n,) + tuple(v.shape))
            for k, v in vals.items():
                arrs[k][i] = v.numpy()
            if i % 200 == 0:
                print(split, i, n, flush=True)
        for v in arrs.values():
            v.flush()
    print("done", out, flush=True)


if __name__ == "__main__":
    main()
