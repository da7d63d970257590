#!/usr/bin/env python3
"""Round 8 (issue 14, item 4): patch features of every shared set's *training* parts, for
validation-only experiments (no test image is read).

For each set laid out by scripts/accuracy-layout.py (target/accuracy/<set>/: train/good and the
labelled pool defects-pool/), each backbone variant and each square input size: grayscale →
squash (PIL bilinear, antialiased when shrinking) → 3 channels → the committed backbone graph in
onnxruntime → s8 3×3 average then 2×2 average onto the stride-16 grid, s16 3×3 average, exactly
as the Rust feature graph (src/teach/onnx.rs, grid 16). Cached as float16 in
target/teach-research/r8/<set>/<variant>-<size>/{good,pool}.npy ([n, C8 + C16, g, g], taps
concatenated, raw: normalisation is the evaluator's job) with names.json. Deterministic.

    python3 -m venv target/r8-venv && target/r8-venv/bin/pip install onnxruntime==1.31.1 numpy pillow
    target/r8-venv/bin/python scripts/teach-research/r8_extract.py --sets elpv-mono --variants lite2 --sizes 160 256
    target/r8-venv/bin/python scripts/teach-research/r8_extract.py --standardise ...   # variant "lite2n"
(no torch: the backbone graphs are the committed ones.)
"""
import argparse
import json
import os

import numpy as np
import onnxruntime as ort
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def images(folder):
    return sorted(f for f in os.listdir(folder) if f.lower().endswith(EXTS))


def avg3(x):
    """3×3 average, stride 1, pad 1, count_include_pad = 0, over [C, h, w]."""
    c, h, w = x.shape
    p = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    ones = np.pad(np.ones((h, w), np.float32), 1)
    s = sum(p[:, i:i + h, j:j + w] for i in range(3) for j in range(3))
    n = sum(ones[i:i + h, j:j + w] for i in range(3) for j in range(3))
    return s / n


def pool2(x):
    c, h, w = x.shape
    return x.reshape(c, h // 2, 2, w // 2, 2).mean((2, 4))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", nargs="+", default=["mtd", "elpv-mono", "elpv-poly"])
    ap.add_argument("--variants", nargs="+", default=["lite2"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[160, 256])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--standardise", action="store_true",
                    help="per-image contrast standardisation before the backbone: (x - mean) / std · 0.2 + 0.5 (variant name gets an n)")
    a = ap.parse_args()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = a.threads
    for variant in a.variants:
        sess = ort.InferenceSession(os.path.join(REPO, "models", f"backbone-{variant}", "model.onnx"), opts)
        for name in a.sets:
            root = os.path.join(REPO, "target", "accuracy", name)
            for size in a.sizes:
                tag = variant + ("n" if a.standardise else "")
                out = os.path.join(REPO, "target", "teach-research", "r8", name, f"{tag}-{size}")
                if os.path.exists(os.path.join(out, "names.json")):
                    continue
                os.makedirs(out, exist_ok=True)
                names = {}
                for part, folder in (("good", "train/good"), ("pool", "defects-pool")):
                    files = images(os.path.join(root, folder))
                    names[part] = files
                    feats = []
                    for f in files:
                        img = Image.open(os.path.join(root, folder, f)).convert("L").resize((size, size), Image.BILINEAR)
                        x = np.asarray(img, np.float32) / 255.0
                        if a.standardise:
                            x = (x - x.mean()) / (x.std() + 1e-3) * 0.2 + 0.5
                        x = np.repeat(x[None, None], 3, axis=1)
                        s8, s16 = sess.run(["feat_s8", "feat_s16"], {"input": x})
                        feats.append(np.concatenate([pool2(avg3(s8[0])), avg3(s16[0])], 0).astype(np.float16))
                    np.save(os.path.join(out, f"{part}.npy"), np.stack(feats))
                json.dump({"names": names, "c8": int(s8.shape[1])}, open(os.path.join(out, "names.json"), "w"))
                print("done", name, variant, size, flush=True)


if __name__ == "__main__":
    main()
