#!/usr/bin/env python3
"""Lay the Magnetic Tile Defects data set (MTD) out in the MVTec AD folder layout.

    OUT/train/good/<stem>.jpg                  the seeded random 80% of MT_Free (teach on these)
    OUT/test/good/<stem>.jpg                   the other 20% of MT_Free
    OUT/test/<defect>/<stem>.jpg               every defective image (blowhole, break, crack, fray, uneven)
    OUT/ground_truth/<defect>/<stem>_mask.png  its mask (0 background, 255 defect; threshold at 128)
    OUT/split.txt                              seed, fraction and the stems of each part

This is the anomaly-detection protocol of DifferNet (WACV 2021) and CS-Flow (WACV 2022): learn from
good parts only, test on the held-out good parts plus all defects. Then

    linesight teach --images OUT/train/good --out MODEL_DIR
    linesight eval  --model MODEL_DIR --dataset OUT/test

Entries are symbolic links to the source files (absolute paths), so nothing is copied; the data
must stay outside the repository (its terms allow research use, not redistribution). The split is
a pure function of the seed and the sorted file names: the same seed gives the same split on every
machine. Standard library only.
"""

import argparse
import os
import random
import shutil
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_SEED = 20240601


def split_free(stems, seed, fraction):
    """Deterministic split of the sorted good stems: (train, test)."""
    stems = sorted(stems)
    rng = random.Random(seed)
    order = stems[:]
    rng.shuffle(order)
    n_train = int(round(fraction * len(order)))
    return sorted(order[:n_train]), sorted(order[n_train:])


def link(src, dst):
    os.symlink(os.path.abspath(src), dst)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", default=os.path.join(REPO, "..", "shared", "datasets", "magnetic-tile"))
    ap.add_argument("--out", default=os.path.join(REPO, "target", "mtd"))
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--train-fraction", type=float, default=0.8)
    args = ap.parse_args()

    src = os.path.abspath(args.src)
    if not os.path.isdir(os.path.join(src, "MT_Free", "Imgs")):
        sys.exit(f"{src}: not the MTD folder (no MT_Free/Imgs)")
    if not 0.0 < args.train_fraction < 1.0:
        sys.exit("--train-fraction must be in (0, 1)")

    classes = sorted(d for d in os.listdir(src) if d.startswith("MT_") and os.path.isdir(os.path.join(src, d, "Imgs")))
    out = os.path.abspath(args.out)
    if os.path.exists(out):
        # A rerun rebuilds the layout from scratch (it holds only links); refuse anything else.
        if not os.path.exists(os.path.join(out, "split.txt")) and os.listdir(out):
            sys.exit(f"{out} exists and is not an MTD layout made by this script; not touching it")
        shutil.rmtree(out)
    counts = {}
    lines = [f"seed {args.seed}", f"train_fraction {args.train_fraction}", f"source {src}"]
    for cls in classes:
        imgs = os.path.join(src, cls, "Imgs")
        stems = sorted(f[:-4] for f in os.listdir(imgs) if f.endswith(".jpg"))
        if cls == "MT_Free":
            train, test = split_free(stems, args.seed, args.train_fraction)
            for part, sel in (("train", train), ("test", test)):
                d = os.path.join(out, part, "good")
                os.makedirs(d, exist_ok=True)
                for s in sel:
                    link(os.path.join(imgs, s + ".jpg"), os.path.join(d, s + ".jpg"))
                counts[f"{part}/good"] = len(sel)
                lines += [f"{part}/good {s}" for s in sel]
        else:
            defect = cls[3:].lower()
            d = os.path.join(out, "test", defect)
            g = os.path.join(out, "ground_truth", defect)
            os.makedirs(d, exist_ok=True)
            os.makedirs(g, exist_ok=True)
            for s in stems:
                link(os.path.join(imgs, s + ".jpg"), os.path.join(d, s + ".jpg"))
                mask = os.path.join(imgs, s + ".png")
                if os.path.exists(mask):
                    link(mask, os.path.join(g, s + "_mask.png"))
            counts[f"test/{defect}"] = len(stems)
            lines += [f"test/{defect} {s}" for s in stems]
    with open(os.path.join(out, "split.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")

    print(f"MTD in MVTec AD layout at {out} (seed {args.seed}, train fraction {args.train_fraction})")
    for k in sorted(counts):
        print(f"  {k:<16} {counts[k]:>4}")
    n_def = sum(v for k, v in counts.items() if k.startswith("test/") and k != "test/good")
    print(f"  teach on {counts['train/good']} good; test on {counts['test/good']} good + {n_def} defective")


if __name__ == "__main__":
    main()
