#!/usr/bin/env python3
"""Line-output timing report: joins the station's audit trail (`[line] events`) with what the
PLC simulator (tests/peers/plc_sim.py) recorded at arrival, both in CLOCK_MONOTONIC ns.

  verdict → PLC:     first status-block write presenting a part's result id, less its decision time
  fire − deadline:   each reject-coil ON write at the PLC, less the deadline of the part it fired for
                     (each ON belongs to the latest fired part before it that has no ON yet)
  also: the line thread's own fire time − deadline (audit), fail-safe and miss counts.

Usage: line_report.py EVENTS.jsonl PLC_LOG.jsonl [--status-register 0] [--reject-coil 0] [--json OUT]
"""

import argparse
import bisect
import json
import sys


def pct(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def summary(name, values_us):
    return {
        "what": name,
        "n": len(values_us),
        "p50_us": round(pct(values_us, 50), 1),
        "p99_us": round(pct(values_us, 99), 1),
        "max_us": round(max(values_us), 1) if values_us else None,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("events")
    ap.add_argument("plc_log")
    ap.add_argument("--status-register", type=int, default=0)
    ap.add_argument("--reject-coil", type=int, default=0)
    ap.add_argument("--json")
    a = ap.parse_args()

    audit = [json.loads(l) for l in open(a.events) if l.strip()]
    plc = [json.loads(l) for l in open(a.plc_log) if l.strip()]
    fates = {}
    for r in audit:
        fates[r["fate"]] = fates.get(r["fate"], 0) + 1
    terminal = [r for r in audit if r["fate"] in ("fired", "passed", "missed")]
    fired = sorted((r for r in audit if r["fate"] == "fired"), key=lambda r: r["deadline_ns"])
    decided = {r["result_id"] % 65535 or 65535: r["decided_ns"] for r in terminal}

    writes = [w for w in plc if w.get("kind") == "write"]
    coil_on = [w["t_ns"] for w in writes if w["fc"] in (5, 15) and w["address"] == a.reject_coil and w["values"] and w["values"][0]]
    presented = {}
    for w in writes:
        if w["fc"] == 16 and w["address"] == a.status_register and len(w["values"]) >= 4:
            status, rid = w["values"][0], w["values"][3]
            if status & 0b10 and rid and rid not in presented:
                presented[rid] = w["t_ns"]

    verdict_to_plc = [(presented[rid] - t) / 1e3 for rid, t in decided.items() if rid in presented]
    thread_fire = [(r["fired_ns"] - r["deadline_ns"]) / 1e3 for r in fired]
    # Each reject-coil ON write is matched to the latest fired reject before it that has no write
    # yet: the adapter writes rejects in fire order as soon as they are fired, so a write lost on
    # the way leaves its own reject unmatched instead of shifting every later pairing by one.
    by_fire = sorted(fired, key=lambda r: r["fired_ns"])
    fire_times = [r["fired_ns"] for r in by_fire]
    taken = set()
    plc_fire = []
    for on in sorted(coil_on):
        j = bisect.bisect_right(fire_times, on) - 1
        while j >= 0 and j in taken:
            j -= 1
        if j >= 0 and on - fire_times[j] < 1_000_000_000:
            taken.add(j)
            plc_fire.append((on - by_fire[j]["deadline_ns"]) / 1e3)
    unmatched = len(fired) - len(taken)
    report = {
        "parts": len(terminal),
        "fates": fates,
        "failsafe_parts": sum(1 for r in terminal if r.get("failsafe")),
        "reject_on_writes_at_plc": len(coil_on),
        "fired_without_plc_write": unmatched,
        "fired": len(fired),
        "figures": [
            summary("verdict -> result presented at the PLC", verdict_to_plc),
            summary("reject coil ON at the PLC - deadline", plc_fire),
            summary("line thread fire time - deadline", thread_fire),
        ],
    }
    print(f"parts acted on: {report['parts']}  fates: {fates}  fail-safe: {report['failsafe_parts']}")
    print(f"rejects fired: {len(fired)}  reject-coil ON writes seen by the PLC: {len(coil_on)}  fired without a PLC write: {unmatched}")
    for f in report["figures"]:
        print(f"  {f['what']:<42} n={f['n']:<6} p50 {f['p50_us']:>9.1f} µs  p99 {f['p99_us']:>9.1f} µs  max {f['max_us']} µs")
    if a.json:
        with open(a.json, "w") as out:
            json.dump(report, out, indent=2)
    return 0 if len(coil_on) == len(fired) else 1


if __name__ == "__main__":
    sys.exit(main())
