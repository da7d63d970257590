#!/usr/bin/env python3
"""Markdown summary of sweep.jsonl: best post-processing per (config, scorer, TTA)."""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
rows = [json.loads(l) for l in open(os.path.join(HERE, "sweep.jsonl")) if l.strip()]
pix = {(r["config"], r["scorer"], r["tta"], r["sigma"]): r["pixel_auroc"] for r in rows if "pixel_auroc" in r}
best = {}
for r in rows:
    if "image_auroc" not in r:
        continue
    key = (r["config"], r["scorer"], r["tta"])
    if key not in best or r["image_auroc"] > best[key]["image_auroc"]:
        best[key] = r
filt = sys.argv[1] if len(sys.argv) > 1 else ""
print("| config | scorer (bank) | TTA | best post | image AUROC | pixel AUROC | blowhole / break / crack / fray / uneven | teach s | backbone ms | scoring ms |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for key, r in sorted(best.items(), key=lambda kv: (kv[0][0], -kv[1]["image_auroc"])):
    if filt not in key[0]:
        continue
    p = pix.get((r["config"], r["scorer"], r["tta"], r["sigma"]))
    pd = " / ".join(f"{v:.3f}" for v in r["per_defect"].values())
    print(f"| {r['config']} | {r['scorer']} ({r['bank']}) | {r['tta']} | σ={r['sigma']} cells, {r['score']} | {r['image_auroc']:.4f} | {'' if p is None else f'{p:.4f}'} | {pd} | {r['teach_s']} | {r['backbone_ms']} | {r['score_ms']} |")
