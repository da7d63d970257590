#!/usr/bin/env python3
"""Lay every real data set in ../shared/datasets out for `make bench-accuracy`, one fixed protocol.

Sets: `mtd` (Magnetic Tile Defects), `elpv-mono` and `elpv-poly` (the elpv solar cells, one
product per cell type). Each goes to OUT/<set>/ in the MVTec AD layout, plus labelled defects:

    train/good/                     seeded random 80% of the good images (teach on these)
    defects-pool/                   20 seeded defective images (MTD: round-robin over the classes)
    defects-pool/masks/<stem>_mask.png   their masks, where the set has masks (MTD)
    defects-5/ defects-10/ defects-20/   nested prefixes of the pool (each with masks/ when any):
                                    what a user would give `linesight teach --defects DIR`
    test/good/                      the other 20% of the goods
    test/<class>/                   every defective image NOT in the pool
    ground_truth/<class>/<stem>_mask.png   masks of the test defects (MTD)
    split.txt                       seed, fractions, and the stems of every part

The pool is left out of test for every run, with or without defects, so the 0- and N-defect rows
of the table are measured on the same test images. Entries are symbolic links (absolute paths):
the data never enters the repository (research-use terms, no redistribution). The split is a pure
function of the seed and the sorted file names. A rerun rebuilds each set's folder. Stdlib only.
"""

import argparse
import importlib.util
import os
import random
import shutil
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = 2026
POOL = 20
PREFIXES = (5, 10, 20)
SETS = ("mtd", "elpv-mono", "elpv-poly")

# Reuse mtd-layout.py's split and link (its file name has a hyphen, so load it by path): the
# good/test split is then the same function as `make bench-mtd`'s, only the seed differs.
sys.dont_write_bytecode = True  # no scripts/__pycache__ in the working tree
_spec = importlib.util.spec_from_file_location("mtd_layout", os.path.join(REPO, "scripts", "mtd-layout.py"))
mtd_layout = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mtd_layout)
split_free, link = mtd_layout.split_free, mtd_layout.link


def mtd_sources(src):
    """goods {stem: jpg}, defects {class: {stem: jpg}}, masks {stem: png}."""
    root = os.path.join(src, "magnetic-tile")
    if not os.path.isdir(os.path.join(root, "MT_Free", "Imgs")):
        sys.exit(f"{root}: not the MTD folder (no MT_Free/Imgs)")
    goods, defects, masks = {}, {}, {}
    for cls in sorted(os.listdir(root)):
        imgs = os.path.join(root, cls, "Imgs")
        if not (cls.startswith("MT_") and os.path.isdir(imgs)):
            continue
        files = {f[:-4]: os.path.join(imgs, f) for f in os.listdir(imgs) if f.endswith(".jpg")}
        if cls == "MT_Free":
            goods = files
        else:
            defects[cls[3:].lower()] = files
            for stem in files:
                mask = os.path.join(imgs, stem + ".png")
                if os.path.exists(mask):
                    masks[stem] = mask
    return goods, defects, masks


def elpv_sources(src, kind):
    """Certain cells of one type: probability 0.0 good, 1.0 defective (class `defective`)."""
    root = os.path.join(src, "elpv")
    goods, bad = {}, {}
    with open(os.path.join(root, "labels.txt")) as f:
        for line in f:
            if not line.strip():
                continue
            rel, prob, cell_type = line.split()
            if cell_type != kind:
                continue
            path = os.path.join(root, rel)
            stem = os.path.splitext(os.path.basename(rel))[0]
            if float(prob) == 0.0:
                goods[stem] = path
            elif float(prob) == 1.0:
                bad[stem] = path
            # Uncertain cells (0.33, 0.67) are not in the shared copy; skip them if they appear.
    return goods, {"defective": bad}, {}


def draw_pool(defects, seed, n):
    """Seeded pool of n (class, stem), in draw order: each class shuffled with one RNG, then taken
    round-robin by class name, so any prefix spreads over the classes as evenly as it can."""
    rng = random.Random(seed)
    queues = {}
    for cls in sorted(defects):
        order = sorted(defects[cls])
        rng.shuffle(order)
        queues[cls] = order
    pool = []
    while len(pool) < n and any(queues.values()):
        for cls in sorted(queues):
            if queues[cls] and len(pool) < n:
                pool.append((cls, queues[cls].pop(0)))
    return pool


def lay_out(name, goods, defects, masks, out, seed, fraction):
    if os.path.exists(out):
        # Only links live here, so rebuilding is safe; refuse a folder this script did not make.
        if os.listdir(out) and not os.path.exists(os.path.join(out, "split.txt")):
            sys.exit(f"{out} exists and is not a layout made by this script; not touching it")
        shutil.rmtree(out)
    counts = {}
    lines = [f"set {name}", f"seed {seed}", f"train_fraction {fraction}", f"pool {POOL}",
             f"prefixes {' '.join(f'defects-{k}' for k in PREFIXES)}"]

    def put(part, stem, src, mask=None, mask_dir=None):
        d = os.path.join(out, part)
        os.makedirs(d, exist_ok=True)
        link(src, os.path.join(d, os.path.basename(src)))
        if mask:
            os.makedirs(mask_dir, exist_ok=True)
            link(mask, os.path.join(mask_dir, stem + "_mask.png"))
        counts[part] = counts.get(part, 0) + 1

    train, test = split_free(list(goods), seed, fraction)
    for part, sel in (("train/good", train), ("test/good", test)):
        for s in sel:
            put(part, s, goods[s])
        lines += [f"{part} {s}" for s in sel]

    pool = draw_pool(defects, seed, POOL)
    for rank, (cls, s) in enumerate(pool):
        # The pool's order is its draw order, so defects-N is the first N lines below.
        lines.append(f"defects-pool {rank + 1} {cls} {s}")
        for part in ["defects-pool"] + [f"defects-{k}" for k in PREFIXES if rank < k]:
            put(part, s, defects[cls][s], masks.get(s), os.path.join(out, part, "masks"))
    in_pool = {s for _, s in pool}
    for cls in sorted(defects):
        rest = sorted(s for s in defects[cls] if s not in in_pool)
        for s in rest:
            put(f"test/{cls}", s, defects[cls][s], masks.get(s), os.path.join(out, "ground_truth", cls))
        lines += [f"test/{cls} {s}" for s in rest]
    with open(os.path.join(out, "split.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")

    n_test_bad = sum(v for k, v in counts.items() if k.startswith("test/") and k != "test/good")
    n_masks = sum(1 for cls in defects for s in defects[cls] if s not in in_pool and s in masks)
    print(f"{name}: {out} (seed {seed})")
    for k in counts:  # insertion order: train, test/good, pool, prefixes, defect classes
        print(f"  {k:<18} {counts[k]:>4}")
    print(f"  teach on {counts.get('train/good', 0)} good; test on {counts.get('test/good', 0)} good"
          f" + {n_test_bad} defective ({n_masks} with masks); {len(pool)} labelled defects held apart")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", default=os.path.join(REPO, "..", "shared", "datasets"))
    ap.add_argument("--out", default=os.path.join(REPO, "target", "accuracy"))
    ap.add_argument("--sets", default=" ".join(SETS), help="space- or comma-separated subset of: " + " ".join(SETS))
    args = ap.parse_args()
    src = os.path.abspath(args.src)
    chosen = args.sets.replace(",", " ").split()
    for name in chosen:
        if name not in SETS:
            sys.exit(f"unknown set {name!r} (known: {' '.join(SETS)})")
        goods, defects, masks = mtd_sources(src) if name == "mtd" else elpv_sources(src, name.split("-")[1])
        if not goods or not any(defects.values()):
            sys.exit(f"{name}: no good or no defective images found under {src}")
        lay_out(name, goods, defects, masks, os.path.join(os.path.abspath(args.out), name), SEED, 0.8)


if __name__ == "__main__":
    main()
