"""Shared pieces of the teach-mode reference (PatchCore on frozen EfficientNet-Lite features).

Everything runs on one CPU thread (torch.set_num_threads(1)), deterministically for fixed seeds.
The data is read from the MVTec-AD layout made by scripts/mtd-layout.py (default target/mtd).
"""

import glob
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "models", "backbone-lite0"))
from make_backbone import build_extractor, export  # noqa: E402

torch.set_num_threads(1)
CACHE = os.environ.get("TEACH_RESEARCH_CACHE", "/tmp/teach-research")
# Debian's torch 1.13 is built with BLAS_INFO=generic (reference BLAS): its convolutions and
# matrix products are 5-15x slower than onnxruntime / OpenBLAS on one thread. So the backbone runs
# in onnxruntime (the exported graph, as in the Rust runtime) and the matrix products in NumPy.


# ----------------------------------------------------------------------------------------- data
def list_dataset(root):
    """(train_paths, test list of (path, label, mask_path or None, defect))."""
    train = sorted(glob.glob(os.path.join(root, "train", "good", "*.jpg")))
    test = []
    for d in sorted(os.listdir(os.path.join(root, "test"))):
        for p in sorted(glob.glob(os.path.join(root, "test", d, "*.jpg"))):
            stem = os.path.splitext(os.path.basename(p))[0]
            m = os.path.join(root, "ground_truth", d, stem + "_mask.png")
            test.append((p, 0 if d == "good" else 1, m if os.path.exists(m) else None, d))
    if not train or not test:
        sys.exit(f"{root}: run scripts/mtd-layout.py first")
    return train, test


def load_gray(path):
    """float32 [h, w] in [0, 1]."""
    return np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0


def load_mask(path, shape):
    if path is None:
        return np.zeros(shape, dtype=bool)
    return np.asarray(Image.open(path).convert("L")) >= 128


# ------------------------------------------------------------------------------ input handling
def r16(v):
    return max(16, int(round(v / 16.0)) * 16)


def prep(img, mode, size):
    """Image [h, w] → (tensor [1, 3, H, W] with H, W multiples of 16, (y0, x0, hh, ww) the image's
    region inside it (for pad; the whole tensor otherwise))."""
    h, w = img.shape
    t = torch.from_numpy(img)[None, None]
    if mode == "squash":
        H, W = size, size
    elif mode == "native":  # keep size (scaled by size/100 if size != 100), round to 16
        H, W = r16(h * size / 100.0), r16(w * size / 100.0)
    elif mode == "short":  # shorter side -> size
        s = size / min(h, w)
        H, W = r16(h * s), r16(w * s)
    elif mode == "long":  # longer side -> size
        s = size / max(h, w)
        H, W = r16(h * s), r16(w * s)
    elif mode == "pad":  # longer side -> size, pad to size x size with the image mean (letterbox)
        s = size / max(h, w)
        hh, ww = max(8, int(round(h * s))), max(8, int(round(w * s)))
        r = F.interpolate(t, size=(hh, ww), mode="bilinear", align_corners=False, antialias=s < 1)
        out = torch.full((1, 1, size, size), float(img.mean()))
        y0, x0 = (size - hh) // 2, (size - ww) // 2
        out[:, :, y0 : y0 + hh, x0 : x0 + ww] = r
        return out.expand(1, 3, size, size).contiguous(), (y0, x0, hh, ww)
    else:
        raise ValueError(mode)
    r = F.interpolate(t, size=(H, W), mode="bilinear", align_corners=False, antialias=(H < h or W < w))
    return r.expand(1, 3, H, W).contiguous(), (0, 0, H, W)


# ---------------------------------------------------------------------------- test-time augment
def tta_list(name):
    """Lists of (k rot90, flip) pairs; maps are mapped back before averaging."""
    if name == "none":
        return [(0, False)]
    if name == "flip":
        return [(0, False), (0, True)]
    if name == "rot4":
        return [(k, False) for k in range(4)]
    if name == "d4":
        return [(k, f) for f in (False, True) for k in range(4)]
    if name == "flip2":  # identity, horizontal, vertical flip
        return [(0, False), (0, True), (2, True)]
    raise ValueError(name)


def fwd_t(x, k, flip):
    if flip:
        x = torch.flip(x, dims=[-1])
    return torch.rot90(x, k, dims=[-2, -1]) if k else x


def inv_t(x, k, flip):
    if k:
        x = torch.rot90(x, -k, dims=[-2, -1])
    return torch.flip(x, dims=[-1]) if flip else x


# ------------------------------------------------------------------------------------ features
class Features:
    def __init__(self, variant="lite0", taps=("feat_s8", "feat_s16"), agg=3, norm="imagenet", layer_norm=False):
        strides = {"feat_s4": 4, "feat_s8": 8, "feat_s16": 16, "feat_s32": 32}
        import onnxruntime as ort

        self.ex = build_extractor(variant, {t: strides[t] for t in taps}, norm)
        os.makedirs(CACHE, exist_ok=True)
        path = os.path.join(CACHE, f"{variant}-{norm}-{'-'.join(taps)}.onnx")
        if not os.path.exists(path):
            export(self.ex, path)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        self.taps = list(taps)
        self.agg = agg
        self.layer_norm = layer_norm
        self.base = min(strides[t] for t in taps)  # the map's stride

    def backbone(self, x):
        return [torch.from_numpy(a) for a in self.sess.run(self.taps, {"input": x.numpy()})]

    def aggregate(self, feats):
        """Taps → [N, C, h, w] at the finest tap's grid: local average (agg x agg), resample, concat."""
        ref = feats[0].shape[-2:]
        outs = []
        for f in feats:
            if self.agg > 1:
                f = F.avg_pool2d(f, self.agg, stride=1, padding=self.agg // 2, count_include_pad=False)
            if f.shape[-2:] != ref:
                f = F.interpolate(f, size=ref, mode="bilinear", align_corners=False)
            if self.layer_norm:  # equalise the layers' scales (divide by sqrt of channel count)
                f = f / math.sqrt(f.shape[1])
            outs.append(f)
        return torch.cat(outs, 1)


# -------------------------------------------------------------------------------- memory bank
def greedy_coreset(x, n, proj_dim=128, seed=0):
    """PatchCore's greedy k-center selection of n rows of x [N, C] (float32 array), on a seeded
    random projection to proj_dim dimensions (0: none). First row: seeded random. Returns indices."""
    x = np.asarray(x, dtype=np.float32)
    N, Cd = x.shape
    if n >= N:
        return np.arange(N)
    rng = np.random.default_rng(seed)
    if proj_dim and proj_dim < Cd:
        P = (rng.standard_normal((Cd, proj_dim)) / math.sqrt(proj_dim)).astype(np.float32)
        z = x @ P
    else:
        z = x
    z = np.ascontiguousarray(z)
    zz = np.einsum("ij,ij->i", z, z)
    sel = np.empty(n, dtype=np.int64)
    j = int(rng.integers(N))
    mind = np.full(N, np.inf, dtype=np.float32)
    d = np.empty(N, dtype=np.float32)
    for i in range(n):
        sel[i] = j
        c = z[j]
        np.dot(z, c, out=d)
        d *= -2.0
        d += zz
        d += float(c @ c)
        np.minimum(mind, d, out=mind)
        j = int(np.argmax(mind))
    return sel


def knn_dist(q, bank, bank_sq, k=1, chunk=4096):
    """Euclidean distance of each row of q [M, C] to its k nearest rows of bank (mean of the k).
    Written as the ONNX graph would: |q|^2 - 2 q.B^T + |B|^2 → ReduceMin (TopK for k > 1) → Sqrt."""
    q = np.asarray(q, dtype=np.float32)
    out = []
    for i in range(0, q.shape[0], chunk):
        a = q[i : i + chunk]
        d2 = a @ bank.T
        d2 *= -2.0
        d2 += bank_sq[None]
        d2 += np.einsum("ij,ij->i", a, a)[:, None]
        if k == 1:
            d = d2.min(1)
        else:
            d = np.partition(d2, k - 1, axis=1)[:, :k]
            d = np.sqrt(np.maximum(d, 0)).mean(1)
            out.append(d)
            continue
        out.append(np.sqrt(np.maximum(d, 0)))
    return np.concatenate(out)


# ----------------------------------------------------------------------------------- smoothing
def gaussian_kernel(sigma):
    r = int(math.ceil(4 * sigma))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def smooth(m, sigma):
    """Separable Gaussian blur of m [1, 1, H, W] (reflect padding)."""
    if sigma <= 0:
        return m
    k = gaussian_kernel(sigma)
    r = (k.numel() - 1) // 2
    H, W = m.shape[-2:]
    if r >= H or r >= W:
        m = F.pad(m, (r, r, r, r), mode="replicate")
    else:
        m = F.pad(m, (r, r, r, r), mode="reflect")
    m = F.conv2d(m, k.view(1, 1, 1, -1))
    m = F.conv2d(m, k.view(1, 1, -1, 1))
    return m


# -------------------------------------------------------------------------------------- metrics
def auroc(scores, labels):
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties). None if one class."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(bool).ravel()
    npos, nneg = int(y.sum()), int((~y).sum())
    if npos == 0 or nneg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ss = s[order]
    ranks = np.empty(len(s), dtype=np.float64)
    # average ranks over tie groups
    diff = np.concatenate(([True], ss[1:] != ss[:-1], [True]))
    idx = np.flatnonzero(diff)
    starts = idx[:-1]
    ends = idx[1:]
    avg = (starts + ends + 1) / 2.0  # 1-based average rank of each group
    grp = np.repeat(np.arange(len(starts)), ends - starts)
    ranks[order] = avg[grp]
    return float((ranks[y].sum() - npos * (npos + 1) / 2.0) / (npos * nneg))


class Timer:
    def __init__(self):
        self.t = {}

    def add(self, k, dt):
        self.t[k] = self.t.get(k, 0.0) + dt


def now():
    return time.perf_counter()
