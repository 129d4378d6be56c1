# Quick start: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DLTK := $(BIN)/dltk
INSTALLED := $(VENV)/.installed
DEMO := build/demo

.PHONY: setup demo test bench zoo gpu-check clean

setup: $(INSTALLED)

$(INSTALLED): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[full,dev,serve,ray,plot,tune,corpus]'
	touch $@

# Train LeNet on the 8x8 digits, export, compile for this CPU, run, and benchmark.
demo: $(INSTALLED)
	@mkdir -p $(DEMO)
	$(DLTK) train lenet -o $(DEMO)/lenet.pt
	$(DLTK) export $(DEMO)/lenet.pt -o $(DEMO)/lenet.onnx
	$(DLTK) compile $(DEMO)/lenet.onnx -o $(DEMO)/lenet.tvm --target cpu
	$(DLTK) run $(DEMO)/lenet.tvm
	$(DLTK) bench $(DEMO)/lenet.pt --backend torch,ort,tvm --batch 1,8 --json $(DEMO)/bench.json

# Train every zoo family with its default recipe, export, compile, check parity, time batch 1,
# and rewrite the README's zoo table (and benchmarks/results/MACHINE/zoo.{md,json}).
zoo: $(INSTALLED)
	$(BIN)/python benchmarks/zoo_table.py --readme README.md

# The README's latency table: every zoo model on every backend, written to benchmarks/results/<machine>/.
# `make bench PRECISION=fp32,int8` adds int8 rows (the copy `dltk quantize` makes by default: static QDQ for
# Conv models, dynamic int8 otherwise; on ort, and on tvm where it imports, with the held-out metric beside
# the latency) for the models that quantize; the others are skipped with a warning.
BENCH_ARGS ?= --backend torch,ort,tvm,tvm-untuned --batch 1,8 --scenario single-stream
PRECISION ?= fp32
bench: $(INSTALLED)
	$(DLTK) bench --zoo $(BENCH_ARGS) --precision $(PRECISION)

# On a machine with a CUDA GPU: install what dltk needs beside the machine's torch, run the GPU tests,
# compile and check the zoo on the GPU, benchmark it; writes benchmarks/results/<gpu>/ (benchmarks/gpu_check.sh).
gpu-check:
	benchmarks/gpu_check.sh $(GPU_CHECK_ARGS)

# Lint (ruff; the config is in pyproject.toml), then the tests (tests/test_layers.py checks the import layers).
# Two pytest workers, each taking whole files (module fixtures built once): much of the suite is
# single-threaded exporting and LLVM code generation, so two keep both cores busy.
LINTED := toolkit models tests benchmarks deploy
PYTEST_ARGS ?= -n 2 --dist loadfile --durations=15
test: $(INSTALLED)
	$(BIN)/python -m ruff check $(LINTED)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf build .pytest_cache
