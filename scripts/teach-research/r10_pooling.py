#!/usr/bin/env python3
"""Round 10 (issue 14): does max pooling onto the grid keep thin cracks that averaging loses?

Like r8_extract.py (standardised contrast, Lite2 256², training goods and the pool defects only),
with the stride-8 tap brought to the stride-16 grid by a 2×2 *max* instead of the average:
  m1: 3×3 average, then 2×2 max          (cached as lite2nm1-256)
  m2: 2×2 max without the 3×3 average     (cached as lite2nm2-256)
  m3: m1, and the stride-16 tap's 3×3 neighbourhood by max instead of average (lite2nm3-256)
Then: target/r8-venv/bin/python scripts/teach-research/r8_eval.py --set elpv-mono lite2nm1-256 ...
"""
import json
import os
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from r8_extract import REPO, avg3, images  # noqa: E402


def max2(x):
    c, h, w = x.shape
    return x.reshape(c, h // 2, 2, w // 2, 2).max((2, 4))


def max3(x):
    c, h, w = x.shape
    p = np.pad(x, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    return np.max([p[:, i:i + h, j:j + w] for i in range(3) for j in range(3)], 0)


VARIANTS = {
    "m1": lambda s8, s16: np.concatenate([max2(avg3(s8)), avg3(s16)], 0),
    "m2": lambda s8, s16: np.concatenate([max2(s8), avg3(s16)], 0),
    "m3": lambda s8, s16: np.concatenate([max2(avg3(s8)), max3(s16)], 0),
}


def main():
    sets, size = sys.argv[1:], 256
    sess = ort.InferenceSession(os.path.join(REPO, "models", "backbone-lite2", "model.onnx"))
    for name in sets:
        root = os.path.join(REPO, "target", "accuracy", name)
        outs = {v: os.path.join(REPO, "target", "teach-research", "r8", name, f"lite2n{v}-{size}") for v in VARIANTS}
        names, feats = {}, {v: {} for v in VARIANTS}
        for part, folder in (("good", "train/good"), ("pool", "defects-pool")):
            files = images(os.path.join(root, folder))
            names[part] = files
            rows = {v: [] for v in VARIANTS}
            for f in files:
                x = np.asarray(Image.open(os.path.join(root, folder, f)).convert("L").resize((size, size), Image.BILINEAR), np.float32) / 255.0
                x = (x - x.mean()) / (x.std() + 1e-3) * 0.2 + 0.5
                s8, s16 = sess.run(["feat_s8", "feat_s16"], {"input": np.repeat(x[None, None], 3, axis=1)})
                for v, fn in VARIANTS.items():
                    rows[v].append(fn(s8[0], s16[0]).astype(np.float16))
            for v in VARIANTS:
                feats[v][part] = np.stack(rows[v])
        for v, out in outs.items():
            os.makedirs(out, exist_ok=True)
            for part, arr in feats[v].items():
                np.save(os.path.join(out, f"{part}.npy"), arr)
            json.dump({"names": names, "c8": int(s8.shape[1])}, open(os.path.join(out, "names.json"), "w"))
        print("done", name, flush=True)


if __name__ == "__main__":
    main()
