# linesight — the two commands of the quick start are `make run` and `make test`.
# Both do all set-up first (Debian packages, the ONNX Runtime library), so they work on a fresh
# Debian/Ubuntu machine.

SHELL := /bin/bash
CARGO ?= cargo
# The ONNX Runtime shared library extracted by scripts/setup.sh; `ort` loads it at run time.
export ORT_DYLIB_PATH := $(CURDIR)/.ort/lib/libonnxruntime.so

.PHONY: setup build run test check-config screenshots bench bench-api bench-shadow bench-ui bench-fleet bench-line bench-mtd bench-accuracy bench-teach bench-peer bench-cameras soak-faults fuzz models fixtures backbone-int8 clean

setup:
	@bash scripts/setup.sh

build: setup
	$(CARGO) build --release --locked

## Run the demo station (or ARGS="--config configs/x.toml ...").
run: build
	./target/release/linesight run $(ARGS)

## Format check, lints, then the whole test suite.
test: setup
	bash scripts/python-env.sh
	$(CARGO) fmt --all --check
	$(CARGO) clippy --release --locked --all-targets -- -D warnings
	$(CARGO) test --release --locked

## Criterion benchmarks (figures in README).
bench: setup
	$(CARGO) bench --locked --bench pipeline

## Load benchmark of the HTTP API against the running pipeline (issue 4; figures in README).
bench-api: setup
	$(CARGO) bench --locked --bench api_load

## Screenshots of the web UI's pages in headless Chromium, into docs/screenshots (shown in the README).
screenshots: setup
	LINESIGHT_SCREENSHOTS=$(CURDIR)/docs/screenshots $(CARGO) test --release --locked --test web_ui -- --nocapture

## What the web UI's live view costs the line, its update rate and latency, page weights (issue 16).
bench-ui: setup
	$(CARGO) bench --locked --bench ui_cost

## What a shadow model costs the line's throughput (issue 15; figures in README).
bench-shadow: setup
	$(CARGO) bench --locked --bench shadow_cost

## Plant scale against real NATS and PostgreSQL: ingest rate and lag at 20 × 200 parts/s, catch-up
## after an outage (FLEET_OUTAGE_S, default 600), stats over 10M rows, a station's publishing cost
## (issue 17; figures in docs/FLEET.md). FLEET_BENCH=ingest,catchup,stats,cost picks parts.
bench-fleet: setup
	$(CARGO) bench --locked --bench fleet_scale

## Line-output timing over 10,000 parts against a pymodbus PLC (issue 5; figures in README).
bench-line: build
	bash scripts/python-env.sh
	bash scripts/bench-line.sh

## Teach mode on real data: teach + eval on Magnetic Tile Defects from ../shared/datasets (issue 3;
## figures in README). About 5 minutes on 2 cores.
bench-mtd: build
	bash scripts/bench-mtd.sh

## Teach-mode accuracy on every real data set in ../shared/datasets (MTD, elpv mono and poly), one
## seeded protocol, goods only and with 10 labelled defects: one markdown table, also in
## target/accuracy-bench/table.md. SETS, DEFECT_COUNTS and TEACH_ARGS select (see the script).
bench-accuracy: build
	bash scripts/bench-accuracy.sh

## Four cameras at 1280×1024 tiled into 256² tiles on the demo model: frames/s per core, batch 1
## against the dynamic batcher, CPU per stage (issue 18; target/bench-cameras/table.md).
bench-cameras: setup
	$(CARGO) bench --locked --bench cameras

## linesight against bare ONNX Runtime and the OpenCV + onnxruntime pipeline a user would write
## (issue 18): the MTD model, 1,000 MTD crops, flat out and at 70% load; target/bench-peer/table.md.
bench-peer: build
	bash scripts/bench-peer.sh

## Run-time cost of taught models, backbone vs scoring, and the coreset / k-NN kernels.
bench-teach: setup
	$(CARGO) bench --locked --bench teach_scoring
	$(CARGO) bench --locked --bench teach_kernels

## The fault suite (issue 13; figures in README): two synthetic cameras and the line output, one
## fault per phase (stalls, inference errors, NaN outputs, camera freeze/unplug, overload, SIGTERM,
## a panic in each stage with a restart), checked from the accounting, results and audit trail.
## 30 minutes by default; SOAK_MINUTES=5 for a shorter run. Not in CI (tests/fail_safe.rs is).
SOAK_MINUTES ?= 30
soak-faults: build
	python3 scripts/soak_faults.py target/release/linesight --minutes $(SOAK_MINUTES)

## Property tests with many more cases than CI runs (config loader, API query parameters,
## manifests, model output shapes, image files, PLC registers). FUZZ_CASES=N to change.
FUZZ_CASES ?= 100000
fuzz: setup
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --release --locked --test fuzz --test config --test store_api -- fuzz loading_extreme any_text manifests output_shapes image_files plc_register

## An INT8 copy of a teach backbone made by ONNX Runtime's own quantizer (QDQ, static), to compare
## with the copy teach makes itself (docs/TEACH.md, "INT8"): make backbone-int8 IMAGES=DIR
## [BACKBONE=models/backbone-lite2] writes $(BACKBONE)-int8; teach on it with --backbone.
BACKBONE ?= models/backbone-lite2
backbone-int8:
	@test -n "$(IMAGES)" || { echo "backbone-int8: set IMAGES to a folder of good images, e.g. make backbone-int8 IMAGES=good/" >&2; exit 2; }
	bash scripts/python-env.sh
	.venv/bin/python -c "import onnxruntime" 2>/dev/null || .venv/bin/pip install --quiet "onnxruntime==1.31.1"  # the version scripts/setup.sh runs
	.venv/bin/python scripts/quantize-backbone.py --backbone $(BACKBONE) --out $(BACKBONE)-int8 --images $(IMAGES)

## Regenerate the committed ONNX files (demo model, test fixtures) with their scripts.
models:
	bash scripts/python-env.sh
	.venv/bin/python models/demo/make_model.py
	.venv/bin/python tests/fixtures/make_fixtures.py

clean:
	$(CARGO) clean
