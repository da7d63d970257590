#!/usr/bin/env python3
"""Round 4: print r4.jsonl rows for chosen post-processing keys (markdown-ish)."""
import json, os, sys
HERE = os.path.dirname(os.path.abspath(__file__))
keys = sys.argv[1].split(",") if len(sys.argv) > 1 else ["k1-s16-q0.05", "lof3-s16-q0.05", "lof3-s16-q0.1"]
for l in open(os.path.join(HERE, "r4.jsonl")):
    r = json.loads(l)
    if "post" in r and r["post"] in keys:
        p = r["per_defect"]
        print(f"{r['tag']:8s} {r['feat']:10s} {r['bank']:6d}x{r['dim']} {r['macs_M']:7.1f}M {r['post']:16s} {r['image_auroc']:.4f}  "
              + " / ".join(f"{p[k]:.3f}" for k in sorted(p)))
    elif "ensemble" in r:
        p = r["per_defect"]
        print(f"ENS {r['rule']} {r['macs_M']}M {r['image_auroc']:.4f} " + " / ".join(f"{p[k]:.3f}" for k in sorted(p)) + "  " + " + ".join(r["ensemble"]))
