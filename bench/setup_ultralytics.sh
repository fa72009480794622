#!/usr/bin/env bash
# Creates the separate environment that contender (c) of bench/e2e_bench.py runs in: an
# Ultralytics `track` loop per camera, as a Python user would write it.
#
# It never touches the project's .venv: the project keeps the CPU build of torch, beside
# which PyPI's torchvision does not import (`operator torchvision::nms does not exist`),
# while Ultralytics' predictor imports torchvision. Here a matching torch + torchvision pair
# of PyPI's default (CUDA) builds is installed instead; they import and run on the CPU of a
# machine without a GPU (about 5 GB with the nvidia libraries).
#
# Ultralytics declares opencv-python; the headless build is installed instead (one cv2
# module, no libGL needed), so Ultralytics goes in without its dependencies and they are
# listed here. `lap` and `onnx` are installed beforehand: with no internet at run time
# Ultralytics' tracker and ONNX loader would otherwise try to pip-install them.
#
#   bash bench/setup_ultralytics.sh            # or ITSD_ULTRALYTICS_VENV=/path bash ...
#
# Not part of the test command (make test / .ci/run): only the benchmark uses it.
set -euo pipefail

VENV="${ITSD_ULTRALYTICS_VENV:-$HOME/.cache/itsd/ultralytics-venv}"
TORCH="${TORCH_VERSION:-2.14.1}"
TORCHVISION="${TORCHVISION_VERSION:-0.29.1}"
ULTRALYTICS="${ULTRALYTICS_VERSION:-8.4.21}"
OPENCV="${OPENCV_VERSION:-5.0.0.93}"

if [ ! -x "$VENV/bin/python" ]; then
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV"
fi
PIP=("$VENV/bin/pip" install --disable-pip-version-check -q)

echo "torch $TORCH + torchvision $TORCHVISION (PyPI default builds) into $VENV"
"${PIP[@]}" "torch==$TORCH" "torchvision==$TORCHVISION"
echo "ultralytics $ULTRALYTICS (without opencv-python), opencv-python-headless, onnxruntime, lap"
"${PIP[@]}" "opencv-python-headless==$OPENCV" onnxruntime onnx "lap>=0.5.12" \
    matplotlib numpy pillow polars psutil pyyaml requests scipy ultralytics-thop
"${PIP[@]}" --no-deps "ultralytics==$ULTRALYTICS"
if "$VENV/bin/pip" show opencv-python >/dev/null 2>&1; then
    echo "opencv-python found beside opencv-python-headless: removing it" >&2
    "$VENV/bin/pip" uninstall -y -q opencv-python
    "${PIP[@]}" --force-reinstall --no-deps "opencv-python-headless==$OPENCV"
fi

# The checks the benchmark relies on: torchvision's compiled NMS, one cv2 that reads
# video, the tracker's assignment solver and ONNX Runtime, all without the network.
YOLO_OFFLINE=1 "$VENV/bin/python" - <<'PY'
import cv2
import lap
import onnxruntime
import torch
import torchvision
import ultralytics

boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0]])
keep = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8]), 0.5)
assert keep.tolist() == [0], keep
assert cv2.videoio_registry.hasBackend(cv2.CAP_FFMPEG), "cv2 cannot read video files"
print(
    f"ok: torch {torch.__version__}, torchvision {torchvision.__version__} (nms works), "
    f"ultralytics {ultralytics.__version__}, onnxruntime {onnxruntime.__version__}, "
    f"cv2 {cv2.__version__}, lap {lap.__version__}"
)
PY
echo "$VENV/bin/python"
