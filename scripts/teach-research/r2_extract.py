#!/usr/bin/env python3
"""Round 2: extract Lite2 s4/s8/s16 features (256² squash, 3×3 avg) for train and test under
4 flips (id, h, v, hv = rot180), mapped back to the original orientation, cached as float16
under target/teach-research/r2/. Deterministic (no randomness).

    OMP_NUM_THREADS=1 nice -n 19 .venv-torch/bin/python scripts/teach-research/r2_extract.py
"""
import os, sys, json
import numpy as np, torch, torch.nn.functional as F
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C

OUT = os.path.join(C.REPO, "target", "teach-research", "r2")
TFS = {"id": [], "h": [-1], "v": [-2], "hv": [-2, -1]}


def main():
    os.makedirs(OUT, exist_ok=True)
    train, test = C.list_dataset(os.path.join(C.REPO, "target", "mtd"))
    fe = C.Features("lite2", ("feat_s4", "feat_s8", "feat_s16"), 3, "imagenet")
    meta = {"train": train, "test": [list(t) for t in test]}
    json.dump(meta, open(os.path.join(OUT, "meta.json"), "w"))
    bb = {}
    for split, paths in (("train", train), ("test", [t[0] for t in test])):
        n = len(paths)
        arr = {tf: dict(s4=np.lib.format.open_memmap(os.path.join(OUT, f"{split}-{tf}-s4.npy"), "w+", np.float16, (n, 24, 32, 32)),
                        s8=np.lib.format.open_memmap(os.path.join(OUT, f"{split}-{tf}-s8.npy"), "w+", np.float16, (n, 48, 32, 32)),
                        s16=np.lib.format.open_memmap(os.path.join(OUT, f"{split}-{tf}-s16.npy"), "w+", np.float16, (n, 120, 16, 16)))
               for tf in TFS}
        t_bb = 0.0
        for i, p in enumerate(paths):
            x, _ = C.prep(C.load_gray(p), "squash", 256)
            for tf, dims in TFS.items():
                xt = torch.flip(x, dims) if dims else x
                t0 = C.now()
                f4, f8, f16 = fe.backbone(xt)
                if tf == "id":
                    t_bb += C.now() - t0
                outs = []
                for f in (f4, f8, f16):
                    f = F.avg_pool2d(f, 3, stride=1, padding=1, count_include_pad=False)
                    if dims:
                        f = torch.flip(f, dims)
                    outs.append(f)
                arr[tf]["s4"][i] = F.avg_pool2d(outs[0], 2)[0].numpy()
                arr[tf]["s8"][i] = outs[1][0].numpy()
                arr[tf]["s16"][i] = outs[2][0].numpy()
            if i % 100 == 0:
                print(split, i, n, flush=True)
        for tf in TFS:
            for a in arr[tf].values():
                a.flush()
        bb[split] = 1000 * t_bb / n
    json.dump(bb, open(os.path.join(OUT, "backbone_ms.json"), "w"))
    print("backbone ms/img (s4+s8+s16, id)", bb)


if __name__ == "__main__":
    main()
