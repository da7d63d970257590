#!/usr/bin/env python3
"""What a user would write instead of linesight, for `make bench-peer` (issue 18): OpenCV +
onnxruntime + threads and queues, doing the per-frame work linesight does for an anomaly model —
decode, squash to the model input, infer, the anomaly map back to frame coordinates, threshold,
regions (connected components with their boxes and areas), a verdict per frame.

    peer_pipeline.py --model DIR --frames DIR [--fps F] [--threads 2] [--json OUT]

--fps 0: flat out (frames/s); --fps F: frames offered at F per second; capture → verdict latency
p50/p99 from the moment a decoded frame is in hand (as linesight stamps a folder source's frames). Also `--bare`: onnxruntime alone on a
preallocated input, the same model and threads (the physical limit; `--sessions N`: N sessions side
by side, each on its own thread, as linesight's workers run); with `--versus DIR` too, the
two models' bare runs take turns (30 rounds of 20 runs each) and the median of the per-round
ratios is reported, which a shared machine's drifting speed cannot tilt towards either.
"""
import argparse
import json
import os
import queue
import threading
import time
import tomllib

import cv2
import numpy as np
import onnxruntime as ort

STOP = object()


def session(model, threads):
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(os.path.join(model, "model.onnx"), o, providers=["CPUExecutionProvider"])


def bare(model, threads, sessions=1, seconds=10.0):
    """Frames/s of `sessions` sessions of `threads` intra-op threads each, every one run flat out
    by its own Python thread on one preallocated input (onnxruntime releases the GIL in run)."""
    m = tomllib.load(open(os.path.join(model, "model.toml"), "rb"))["input"]
    x = np.full((1, m.get("channels", 3), m["height"], m["width"]), 0.5, np.float32)
    runners = [session(model, threads) for _ in range(sessions)]
    name = runners[0].get_inputs()[0].name
    for s in runners:
        for _ in range(10):
            s.run(None, {name: x})
    counts = [0] * sessions
    t0 = time.perf_counter()

    def loop(k):
        while time.perf_counter() - t0 < seconds:
            runners[k].run(None, {name: x})
            counts[k] += 1

    workers = [threading.Thread(target=loop, args=(k,)) for k in range(sessions)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    label = "bare onnxruntime" if sessions == 1 else f"bare onnxruntime, {sessions} sessions"
    return {"pipeline": label, "threads": threads, "sessions": sessions,
            "fps": sum(counts) / (time.perf_counter() - t0)}


def versus(model, other, threads, rounds=30, runs=20):
    sessions = [session(m, threads) for m in (model, other)]
    # Each model's own input (a gray model may read one channel where the other reads three).
    inputs = []
    for m in (model, other):
        i = tomllib.load(open(os.path.join(m, "model.toml"), "rb"))["input"]
        inputs.append(np.full((1, i.get("channels", 3), i["height"], i["width"]), 0.5, np.float32))
    names = [s.get_inputs()[0].name for s in sessions]
    for s, name, x in zip(sessions, names, inputs):
        for _ in range(10):
            s.run(None, {name: x})
    ms = [[], []]
    for _ in range(rounds):
        for k, (s, name, x) in enumerate(zip(sessions, names, inputs)):
            t0 = time.perf_counter()
            for _ in range(runs):
                s.run(None, {name: x})
            ms[k].append((time.perf_counter() - t0) / runs * 1000)
    ratios = np.array(ms[0]) / np.array(ms[1])
    return {"pipeline": "bare onnxruntime, model vs versus", "model": model, "versus": other,
            "model_ms_median": float(np.median(ms[0])), "versus_ms_median": float(np.median(ms[1])),
            "speedup_median": float(np.median(ratios)),
            "speedup_quartiles": [float(np.percentile(ratios, 25)), float(np.percentile(ratios, 75))]}


def run(model, frames_dir, fps, threads, limit):
    manifest = tomllib.load(open(os.path.join(model, "model.toml"), "rb"))
    inp, task = manifest["input"], manifest["task"]
    h, w, c = inp["height"], inp["width"], inp.get("channels", 3)
    threshold = float(task["threshold"])
    s = session(model, threads)
    name = s.get_inputs()[0].name
    names = sorted(os.listdir(frames_dir))
    files = [os.path.join(frames_dir, names[i % len(names)]) for i in range(limit)]
    decoded, ready = queue.Queue(maxsize=8), queue.Queue(maxsize=8)
    latencies, verdicts = [], {"OK": 0, "NG": 0}

    def reader():
        start = time.perf_counter()
        for i, path in enumerate(files):
            if fps > 0:
                due = start + i / fps
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            img = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
            # Captured = the decoded frame is in hand, as linesight stamps a folder source's frames.
            decoded.put((time.perf_counter(), img))
        decoded.put(STOP)

    def preprocess():
        while (item := decoded.get()) is not STOP:
            offered, img = item
            x = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
            ready.put((offered, img.shape, np.ascontiguousarray(np.broadcast_to(x, (1, c, h, w)))))
        ready.put(STOP)

    threads_ = [threading.Thread(target=reader), threading.Thread(target=preprocess)]
    for t in threads_:
        t.start()
    t0 = time.perf_counter()
    while (item := ready.get()) is not STOP:
        offered, (fh, fw), x = item
        score, amap = s.run(["pred_score", "anomaly_map"], {name: x})
        # The map in frame coordinates, thresholded, and its regions with boxes and areas.
        frame_map = cv2.resize(amap.reshape(h, w), (fw, fh), interpolation=cv2.INTER_LINEAR)
        mask = (frame_map >= threshold).astype(np.uint8)
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        regions = [tuple(int(v) for v in stats[i]) for i in range(1, n)]
        verdict = "NG" if float(score.reshape(-1)[0]) >= threshold or regions else "OK"
        verdicts[verdict] += 1
        latencies.append(time.perf_counter() - offered)
    wall = time.perf_counter() - t0
    for t in threads_:
        t.join()
    lat = np.sort(np.array(latencies)) * 1000
    return {"pipeline": "python (opencv + onnxruntime, 3 threads, 2 queues)", "frames": len(latencies),
            "fps": len(latencies) / wall, "offered_fps": fps, "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)), "verdicts": verdicts}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--frames", required=True)
    ap.add_argument("--fps", type=float, default=0.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--bare", action="store_true")
    ap.add_argument("--sessions", type=int, default=1, help="with --bare: sessions run side by side")
    ap.add_argument("--versus", help="with --bare: a second model timed in turns with --model")
    ap.add_argument("--json")
    a = ap.parse_args()
    if a.bare and a.versus:
        out = versus(a.model, a.versus, a.threads)
    elif a.bare:
        out = bare(a.model, a.threads, a.sessions)
    else:
        out = run(a.model, a.frames, a.fps, a.threads, a.limit)
    text = json.dumps(out)
    print(text)
    if a.json:
        open(a.json, "w").write(text + "\n")


if __name__ == "__main__":
    main()
