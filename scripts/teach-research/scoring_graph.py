#!/usr/bin/env python3
"""The PatchCore scoring step as an ONNX graph (so it runs on the backbone's execution provider).

    .venv-torch/bin/python scripts/teach-research/scoring_graph.py --out /tmp/scoring.onnx --check

Graph inputs
  feat_s8   float32 [N, 40, h, w]        backbone output (stride 8)
  feat_s16  float32 [N, 112, h/2, w/2]   backbone output (stride 16)
  bank      float32 [M, 152]             memory bank (coreset), rows = patch features
  bank_sq   float32 [M]                  |bank row|^2 (precomputed at teach time)
Graph outputs
  patch_dist    float32 [N, 1, h, w]     nearest-neighbour distance per patch (feature grid)
  anomaly_map   float32 [N, 1, 8h, 8w]   bilinear upsample to the network input, Gaussian blur
  score         float32 [N]              max of anomaly_map (image score)

Ops: AveragePool(3x3, pads 1, count_include_pad 0) → Resize(linear, half_pixel, scales 2) →
Concat → Reshape/Transpose → MatMul(bank^T) → Mul(-2) + Add(|q|^2) + Add(|b|^2) → ReduceMin →
Max(0) → Sqrt → Resize(linear, scales 8) → Pad(reflect) → Conv(1xK) → Conv(Kx1) → ReduceMax.
The bank is an input here so that one committed graph serves every taught model; a runtime can
equally bake it in as an initializer. Also --maha writes the Gaussian (Mahalanobis) variant:
inputs mu [C] and whiten [C, C] instead of bank/bank_sq.
"""

import argparse
import math
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def gaussian(sigma):
    r = int(math.ceil(4 * sigma))
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).astype(np.float32), r


def build(sigma_px=4.0, c8=40, c16=112, upsample=8, maha=False, k_nn=1):
    C = c8 + c16
    nodes, inits = [], []

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def node(op, ins, outs, **kw):
        nodes.append(helper.make_node(op, ins, outs, **kw))
        return outs[0]

    a8 = node("AveragePool", ["feat_s8"], ["a8"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=0)
    a16 = node("AveragePool", ["feat_s16"], ["a16"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=0)
    u16 = node("Resize", ["a16", "", const("scales2", np.array([1, 1, 2, 2], np.float32))], ["u16"],
               mode="linear", coordinate_transformation_mode="half_pixel")
    f = node("Concat", [a8, u16], ["f"], axis=1)  # [N, C, h, w]
    shp = node("Shape", [f], ["shp"])
    n_ = node("Slice", [shp, const("i0", np.array([0], np.int64)), const("i1", np.array([1], np.int64))], ["n_"])
    hw = node("Slice", [shp, const("i2", np.array([2], np.int64)), const("i4", np.array([4], np.int64))], ["hw"])
    flat_shape = node("Concat", [n_, const("cC", np.array([C], np.int64)), const("m1", np.array([-1], np.int64))], ["flat_shape"], axis=0)
    q = node("Reshape", [f, flat_shape], ["qf"])
    q = node("Transpose", [q], ["q"], perm=[0, 2, 1])  # [N, hw, C]
    if maha:
        z = node("Sub", [q, "mu"], ["zc"])
        z = node("MatMul", [z, "whiten"], ["z"])
        d2 = node("ReduceSumSquare", [z], ["d2"], axes=[2], keepdims=0)  # opset 17: axes attribute
        d = node("Sqrt", [d2], ["d"])
    else:
        bt = node("Transpose", ["bank"], ["bt"], perm=[1, 0])
        qb = node("MatMul", [q, bt], ["qb"])  # [N, hw, M]
        qq = node("ReduceSumSquare", [q], ["qq"], axes=[2], keepdims=1)  # [N, hw, 1]
        d2 = node("Mul", [qb, const("m2", np.array(-2.0, np.float32))], ["qb2"])
        d2 = node("Add", [d2, qq], ["d2a"])
        d2 = node("Add", [d2, "bank_sq"], ["d2b"])
        if k_nn == 1:
            dmin = node("ReduceMin", [d2], ["dmin"], axes=[2], keepdims=0)
            dmin = node("Max", [dmin, const("zero", np.array(0.0, np.float32))], ["dpos"])
            d = node("Sqrt", [dmin], ["d"])
        else:
            nodes.append(helper.make_node("TopK", [d2, const("kk", np.array([k_nn], np.int64))], ["tkv", "tki"], axis=2, largest=0))
            t = node("Max", ["tkv", const("zero", np.array(0.0, np.float32))], ["tkc"])
            t = node("Sqrt", [t], ["tks"])
            d = node("ReduceMean", [t], ["d"], axes=[2], keepdims=0)
    map_shape = node("Concat", [n_, const("one", np.array([1], np.int64)), hw], ["map_shape"], axis=0)
    pd = node("Reshape", [d, map_shape], ["patch_dist"])
    up = node("Resize", [pd, "", const("scalesU", np.array([1, 1, upsample, upsample], np.float32))], ["up"],
              mode="linear", coordinate_transformation_mode="half_pixel")
    k, r = gaussian(sigma_px)
    p = node("Pad", [up, const("padsG", np.array([0, 0, r, r, 0, 0, r, r], np.int64))], ["padded"], mode="reflect")
    b = node("Conv", [p, const("gx", k.reshape(1, 1, 1, -1))], ["bx"])
    b = node("Conv", [b, const("gy", k.reshape(1, 1, -1, 1))], ["anomaly_map"])
    node("ReduceMax", ["anomaly_map"], ["score"], axes=[1, 2, 3], keepdims=0)

    dyn = lambda *names: [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in names]
    ins = dyn(("feat_s8", ["N", c8, "h", "w"]), ("feat_s16", ["N", c16, "h2", "w2"]))
    if maha:
        ins += dyn(("mu", [C]), ("whiten", [C, C]))
    else:
        ins += dyn(("bank", ["M", C]), ("bank_sq", ["M"]))
    outs = dyn(("patch_dist", ["N", 1, "h", "w"]), ("anomaly_map", ["N", 1, "H", "W"]), ("score", ["N"]))
    g = helper.make_graph(nodes, "patchcore_scoring", ins, outs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="linesight-teach-research")
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/teach-research/scoring.onnx")
    ap.add_argument("--sigma-px", type=float, default=4.0)
    ap.add_argument("--maha", action="store_true")
    ap.add_argument("--k", type=int, default=1)
    ap.add_argument("--check", action="store_true", help="compare with the NumPy/torch reference and time it")
    args = ap.parse_args()
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    m = build(args.sigma_px, maha=args.maha, k_nn=args.k)
    onnx.save(m, args.out)
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")
    if not args.check:
        return
    import time

    import onnxruntime as ort
    import torch
    import torch.nn.functional as F

    import common as Cm

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(args.out, so, providers=["CPUExecutionProvider"])
    bb = ort.InferenceSession(os.path.join(Cm.REPO, "models", "backbone-lite0", "model.onnx"), so, providers=["CPUExecutionProvider"])
    fe = Cm.Features("lite0", ["feat_s8", "feat_s16"], 3)
    rng = np.random.default_rng(0)
    for (H, W) in [(256, 256), (320, 320), (192, 400)]:
        x = rng.random((1, 3, H, W), dtype=np.float32)
        f8, f16 = bb.run(["feat_s8", "feat_s16"], {"input": x})
        for M in [780, 1950, 3900, 7800]:
            if args.maha:
                feeds = {"mu": rng.standard_normal(152).astype(np.float32), "whiten": (rng.standard_normal((152, 152)) * 0.1).astype(np.float32)}
            else:
                bank = (rng.standard_normal((M, 152)) * 2).astype(np.float32)
                feeds = {"bank": bank, "bank_sq": np.einsum("ij,ij->i", bank, bank)}
            feeds.update(feat_s8=f8, feat_s16=f16)
            out = sess.run(None, feeds)
            # reference
            q = fe.aggregate([torch.from_numpy(f8), torch.from_numpy(f16)])[0]
            grid = q.shape[-2:]
            q = np.ascontiguousarray(q.reshape(q.shape[0], -1).T.numpy())
            if args.maha:
                z = (q - feeds["mu"]) @ feeds["whiten"]
                ref = np.sqrt((z * z).sum(1))
            else:
                ref = Cm.knn_dist(q, bank, feeds["bank_sq"], args.k)
            m_ref = torch.from_numpy(ref.reshape(1, 1, *grid))
            up = F.interpolate(m_ref, size=(H, W), mode="bilinear", align_corners=False)
            sm = Cm.smooth(up, args.sigma_px)
            dd = np.abs(out[0] - m_ref.numpy()).max()
            dm = np.abs(out[1] - sm.numpy()).max()
            ds = abs(float(out[2][0]) - float(sm.max()))
            for _ in range(2):
                sess.run(None, feeds)
            t0 = time.perf_counter()
            for _ in range(10):
                sess.run(None, feeds)
            t_s = (time.perf_counter() - t0) * 100
            t0 = time.perf_counter()
            for _ in range(10):
                bb.run(None, {"input": x})
            t_b = (time.perf_counter() - t0) * 100
            print(f"{H}x{W} bank {M:5d}: max|diff| dist {dd:.1e} map {dm:.1e} score {ds:.1e} | backbone {t_b:.2f} ms, scoring graph {t_s:.2f} ms (1 thread)", flush=True)
            if args.maha:
                break


if __name__ == "__main__":
    main()
