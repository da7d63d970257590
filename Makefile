# linesight — the two commands of the quick start are `make run` and `make test`.
# Both do all set-up first (Debian packages, the ONNX Runtime library), so they work on a fresh
# Debian/Ubuntu machine.

SHELL := /bin/bash
CARGO ?= cargo
# The ONNX Runtime shared library extracted by scripts/setup.sh; `ort` loads it at run time.
export ORT_DYLIB_PATH := $(CURDIR)/.ort/lib/libonnxruntime.so

.PHONY: setup build run test check-config bench bench-api bench-line bench-mtd bench-teach models fixtures clean

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

## Line-output timing over 10,000 parts against a pymodbus PLC (issue 5; figures in README).
bench-line: build
	bash scripts/python-env.sh
	bash scripts/bench-line.sh

## Teach mode on real data: teach + eval on Magnetic Tile Defects from ../shared/datasets (issue 3;
## figures in README). About 5 minutes on 2 cores.
bench-mtd: build
	bash scripts/bench-mtd.sh

## Run-time cost of taught models, backbone vs scoring, and the coreset / k-NN kernels.
bench-teach: setup
	$(CARGO) bench --locked --bench teach_scoring
	$(CARGO) bench --locked --bench teach_kernels

## Regenerate the committed ONNX files (demo model, test fixtures) with their scripts.
models:
	bash scripts/python-env.sh
	.venv/bin/python models/demo/make_model.py
	.venv/bin/python tests/fixtures/make_fixtures.py

clean:
	$(CARGO) clean
