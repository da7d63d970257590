#!/usr/bin/env python3
"""INT8 (QDQ, static) copy of a teach backbone, calibrated on good images, by ONNX Runtime's quantizer.

Teach quantizes the backbone itself (src/teach/int8.rs, the same scheme with 8-bit weights on
VNNI CPUs); this copy is the reference to compare it with: `linesight teach --backbone OUT` teaches
on it as it is.

    python3 -m venv target/r8-venv && target/r8-venv/bin/pip install onnxruntime==1.31.1 onnx==1.19.1 numpy pillow
    target/r8-venv/bin/python scripts/quantize-backbone.py --backbone models/backbone-lite2 \\
        --out target/backbone-lite2-int8 --images DIR [DIR ...] --count 200 --size 256

The input's normalisation, the stem convolution and the first depthwise convolution stay in float
(`float_prefix`): with three input channels (or one, when teach folds gray parts onto one channel,
src/teach/onnx/gray.rs) the stem has too few channels for the integer kernels and ran slower in
INT8 than in float, the first depthwise one as well, and teach can fold gray input into a float
stem only. Weights int8 per channel, activations uint8 (`reduce_range`: 7-bit weights, so CPUs without
VNNI-class instructions cannot saturate their 16-bit intermediate sums), ranges from the
calibration images (squashed to --size, grayscale repeated to 3 channels, [0, 1], and with
`--contrast standardised`, the default, shifted and scaled to mean 0.5 and sd 0.2 as teach's
standardised recipe feeds the backbone; `raw` for models taught with raw contrast). The output
folder gets model.onnx and a backbone.toml copied from the float backbone with its name, sha256,
size and a [quantization] table. `--time` prints frames/s of both graphs.
"""
import argparse
import hashlib
import json
import os
import random
import re
import shutil
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from PIL import Image

EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


# teach's standardised input (src/teach/onnx.rs: STANDARD_MEAN, STANDARD_STD, STANDARD_STD_FLOOR).
STANDARD_MEAN, STANDARD_STD, STANDARD_STD_FLOOR = 0.5, 0.2, 1e-3


def load(path, size, contrast):
    x = np.asarray(Image.open(path).convert("L").resize((size, size), Image.BILINEAR), np.float32) / 255.0
    if contrast == "standardised":
        x = (x - x.mean()) * (STANDARD_STD / (x.std() + STANDARD_STD_FLOOR)) + STANDARD_MEAN
    return np.repeat(x[None, None], 3, axis=1).astype(np.float32)


class Reader(CalibrationDataReader):
    def __init__(self, files, size, name, contrast):
        self.files, self.size, self.name, self.contrast, self.i = files, size, name, contrast, 0

    def get_next(self):
        if self.i >= len(self.files):
            return None
        self.i += 1
        return {self.name: load(self.files[self.i - 1], self.size, self.contrast)}


def float_prefix(path):
    """Node names kept in float: the normalisation (Sub, Mul) before the stem, the stem and the first
    depthwise convolution (the second Conv, when it is depthwise)."""
    graph = onnx.load(path).graph
    convs = [n for n in graph.node if n.op_type == "Conv"]
    names = [n.name for n in graph.node[: list(graph.node).index(convs[0])] if n.op_type in ("Sub", "Mul")]
    names.append(convs[0].name)
    group = next((a.i for a in convs[1].attribute if a.name == "group"), 1) if len(convs) > 1 else 1
    if group > 1:
        names.append(convs[1].name)
    return names


def fps(path, size, threads, n=60):
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    s = ort.InferenceSession(path, o)
    x = np.random.default_rng(0).random((1, 3, size, size), np.float32)
    name = s.get_inputs()[0].name
    for _ in range(5):
        s.run(None, {name: x})
    t = time.perf_counter()
    for _ in range(n):
        s.run(None, {name: x})
    return n / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--images", nargs="+", required=True)
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--method", choices=["minmax", "percentile", "entropy"], default="percentile")
    ap.add_argument("--contrast", choices=["standardised", "raw"], default="standardised")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time", action="store_true")
    a = ap.parse_args()
    files = sorted(os.path.join(d, f) for d in a.images for f in os.listdir(d) if f.lower().endswith(EXTS))
    if not files:
        raise SystemExit(f"no images in {a.images}")
    random.Random(a.seed).shuffle(files)
    files = files[: a.count]
    src = os.path.join(a.backbone, "model.onnx")
    os.makedirs(a.out, exist_ok=True)
    dst = os.path.join(a.out, "model.onnx")
    name = ort.InferenceSession(src).get_inputs()[0].name
    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[a.method]
    with tempfile.TemporaryDirectory() as tmp:
        pre = os.path.join(tmp, "pre.onnx")
        quant_pre_process(src, pre, skip_symbolic_shape=True)
        kept_float = float_prefix(pre)
        quantize_static(pre, dst, Reader(files, a.size, name, a.contrast), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        reduce_range=True, calibrate_method=method, nodes_to_exclude=kept_float,
                        extra_options={"CalibPercentile": 99.999} if a.method == "percentile" else {})
    data = open(dst, "rb").read()
    sha = hashlib.sha256(data).hexdigest()
    toml = open(os.path.join(a.backbone, "backbone.toml")).read()
    toml = re.sub(r'^name = "(.*)"', lambda m: f'name = "{m.group(1)}-int8"', toml, count=1, flags=re.M)
    toml = re.sub(r'^sha256 = ".*"', f'sha256 = "{sha}"', toml, count=1, flags=re.M)
    toml = re.sub(r'^bytes = \d+', f"bytes = {len(data)}", toml, count=1, flags=re.M)
    toml += (f'\n[quantization]\nformat = "QDQ static"\nweights = "int8 per channel, reduce_range"\n'
             f'activations = "uint8"\ncalibration = "{a.method}"\ncalibration_images = {len(files)}\n'
             f'calibration_size = {a.size}\ncalibration_contrast = "{a.contrast}"\nfloat_sha256 = "{hashlib.sha256(open(src, "rb").read()).hexdigest()}"\n'
             f'float_prefix = {json.dumps(kept_float)}\n'
             f'made_by = "scripts/quantize-backbone.py"\n')
    open(os.path.join(a.out, "backbone.toml"), "w").write(toml)
    print(f"wrote {dst} ({len(data)} bytes, sha256 {sha}) from {len(files)} calibration images")
    if a.time:
        for threads in (1, 2):
            f, q = fps(src, a.size, threads), fps(dst, a.size, threads)
            print(f"{a.size}², {threads} thread(s): fp32 {f:.1f} frames/s, int8 {q:.1f} frames/s ({q / f:.2f}×)")


if __name__ == "__main__":
    main()
