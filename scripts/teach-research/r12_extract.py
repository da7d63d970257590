#!/usr/bin/env python3
"""Round 12 (issue 14): finer taps for thin cracks, on training parts only.

As r8_extract.py (standardised contrast, squash to a square, the committed Lite2 graph), but
caching the stride-8 tap on its own 32×32 grid (3×3 average, no 2×2 pooling: key
`lite2n-<size>s8f`) and the stride-4 tensor after MBConv block 3 (24 channels, 3×3 average, key
`lite2n-<size>s4`), which the committed backbone does not output: it is added as a graph output
here (needs the `onnx` package).

    target/r8-venv/bin/python scripts/teach-research/r12_extract.py --sets elpv-poly --size 256
"""
import argparse
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from r8_extract import REPO, avg3, images  # noqa: E402

S4 = "/blocks.3/Add_output_0"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", nargs="+", default=["mtd", "elpv-mono", "elpv-poly"])
    ap.add_argument("--size", type=int, default=256)
    a = ap.parse_args()
    m = onnx.load(os.path.join(REPO, "models", "backbone-lite2", "model.onnx"))
    m.graph.output.append(onnx.helper.make_tensor_value_info(S4, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(m.SerializeToString(), opts)
    for name in a.sets:
        root = os.path.join(REPO, "target", "accuracy", name)
        outs = {k: os.path.join(REPO, "target", "teach-research", "r8", name, f"lite2n-{a.size}{k}") for k in ("s8f", "s4")}
        if all(os.path.exists(os.path.join(o, "names.json")) for o in outs.values()):
            continue
        names = {}
        for part, folder in (("good", "train/good"), ("pool", "defects-pool")):
            files = images(os.path.join(root, folder))
            names[part] = files
            f8, f4 = [], []
            for f in files:
                img = Image.open(os.path.join(root, folder, f)).convert("L").resize((a.size, a.size), Image.BILINEAR)
                x = np.asarray(img, np.float32) / 255.0
                x = (x - x.mean()) / (x.std() + 1e-3) * 0.2 + 0.5
                x = np.repeat(x[None, None], 3, axis=1)
                s8, s4 = sess.run(["feat_s8", S4], {"input": x})
                f8.append(avg3(s8[0]).astype(np.float16))
                f4.append(avg3(s4[0]).astype(np.float16))
            for k, feats in (("s8f", f8), ("s4", f4)):
                os.makedirs(outs[k], exist_ok=True)
                np.save(os.path.join(outs[k], f"{part}.npy"), np.stack(feats))
        for k, c in (("s8f", f8[0].shape[0]), ("s4", f4[0].shape[0])):
            json.dump({"names": names, "c8": int(c)}, open(os.path.join(outs[k], "names.json"), "w"))
        print("done", name, flush=True)


if __name__ == "__main__":
    main()
