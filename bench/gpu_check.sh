#!/usr/bin/env bash
# The GPU check: the one command a session lent an NVIDIA GPU runs (bench/README.md,
# "GPU check"). Prepare its luggage first, here: bash bench/gpu_wheels.sh (.whl/).
#
#   run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=480)
#
# Steps, each under its own timeout inside one budget (GPU_CHECK_BUDGET seconds, 420 by
# default: with the unpacking and the table it ends within the 8 minutes issue 13 asks),
# each writing JSON under $OUT; a step that fails prints its error and the script goes
# on. GPU_CHECK_STEPS=tests,infer,nvdec,e2e picks some of them (a rerun):
#   0. unpack .whl/site.tar.xz into /tmp/site, build the C extensions in place, nvidia-smi -L
#   a. the GPU tests: pytest -m gpu on tests/**/test_*_gpu.py
#   b. bench/infer_backend_bench.py --backend torch --gpu 0 --precision fp16, with and
#      without CUDA graphs, batch 1/8/32/64, YOLO11n from the yaml (issue 10); and
#      bench/letterbox_bench.py: the TensorRT / ONNX Runtime CUDA letterbox kernel
#      beside the bare upload of the same bytes
#   c. bench/nvdec_bench.py on 1080p H.264, 1/4/8 streams (issue 9)
#   d. bench/gpu_e2e.py at 1080p and 640x360 while time remains (issue 13)
# It ends with one table of every number, printed and written to $OUT/gpu_check.md.
#
# Without a GPU (or with GPU_CHECK_DRY=1) it is a dry run, for this machine: the archive
# is unpacked and checked but not used (its packages are for Python 3.12), the C
# extensions are built into a scratch folder, and each step runs its CPU-only check of
# itself or says why it is skipped. Results go to $OUT, else out/gpu_check/.
# This script must never change the GPU's settings nor install anything outside /tmp.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
T0=$(date +%s)
BUDGET="${GPU_CHECK_BUDGET:-420}"
# Steps to run (a rerun of some while the machine is warm): tests,infer,nvdec,e2e.
STEPS=",${GPU_CHECK_STEPS:-tests,infer,nvdec,e2e},"
OUT="${OUT:-$REPO/out/gpu_check}"
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: >"$LOG"
export PYTHONUNBUFFERED=1 YOLO_OFFLINE=1 YOLO_VERBOSE=False
MEDIA="$REPO/.whl/media"
[ -d "$MEDIA" ] || MEDIA="$REPO/../shared/media"
export ITSD_TEST_MEDIA="$MEDIA"
CLIP360="$MEDIA/street_overhead_dusk.mp4"
CLIP1080="$MEDIA/street_overhead_dusk_1920x1080.mp4"

say() { echo "$*" | tee -a "$LOG"; }
TMPD="$(mktemp -d)"
trap 'rm -rf "$TMPD"' EXIT
STATUS=""
left() { echo $((BUDGET - ($(date +%s) - T0))); }
want() { [[ "$STEPS" == *",$1,"* ]]; }
# step NAME MAX_SECONDS CMD...: runs CMD under timeout min(MAX, budget left - 10 s).
step() {
    local name="$1" max="$2" t
    shift 2
    t=$(left)
    t=$((t - 10 < max ? t - 10 : max))
    if [ "$t" -lt 15 ]; then
        say "== $name: skipped, no time left in the ${BUDGET} s budget"
        STATUS+="$name|-|0|skipped: no time left in the ${BUDGET} s budget"$'\n'
        return 0
    fi
    say "== $name (timeout ${t} s): $*"
    local s0 rc last
    s0=$(date +%s)
    timeout -k 5 "$t" "$@" 2>&1 | tee -a "$LOG" "$TMPD/$name.out"
    rc=${PIPESTATUS[0]}
    say "== $name: exit $rc after $(($(date +%s) - s0)) s$([ "$rc" = 124 ] && echo ' (timed out)')"
    last="$(grep -v '^[[:space:]]*$' "$TMPD/$name.out" | tail -1 | cut -c1-160 | tr '|' '/')"
    STATUS+="$name|$rc|$(($(date +%s) - s0))|$last"$'\n'
    return 0
}

# -- 0. where we are ---------------------------------------------------------------------
DRY="${GPU_CHECK_DRY:-}"
if [ -z "$DRY" ] && ! command -v nvidia-smi >/dev/null 2>&1; then
    DRY="no nvidia-smi: no NVIDIA GPU here"
fi
PY=python3
if [ -n "$DRY" ] && [ -x "$REPO/.venv/bin/python" ]; then
    PY="$REPO/.venv/bin/python"
fi
say "== gpu_check $(date -u +%FT%TZ) on $(hostname), $(nproc) cores, $($PY -V 2>&1)"
[ -n "$DRY" ] && say "== DRY RUN: $DRY; GPU steps check themselves on the CPU or skip"

if [ -f .whl/site.tar.xz ]; then
    SITE=/tmp/site
    [ -n "$DRY" ] && SITE="$(mktemp -d)/site"
    mkdir -p "$SITE"
    s0=$(date +%s)
    if tar -C "$SITE" -xJf .whl/site.tar.xz; then
        say "== unpacked .whl/site.tar.xz into $SITE in $(($(date +%s) - s0)) s: $(ls "$SITE" | grep -cv dist-info) top-level entries"
        for pkg in pydantic pydantic_core av PyNvVideoCodec ultralytics sqlalchemy grpc; do
            [ -e "$SITE/$pkg" ] || say "   missing in the archive: $pkg"
        done
        if [ -z "$DRY" ]; then
            export PYTHONPATH="$SITE:$REPO"
        else
            rm -rf "$SITE"
        fi
    else
        say "== cannot unpack .whl/site.tar.xz"
    fi
elif ls .whl/*.whl >/dev/null 2>&1 && [ -z "$DRY" ]; then
    # Loose wheels (the device notes' recipe) instead of the packed folder.
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl 2>&1 | tee -a "$LOG"
    export PYTHONPATH="/tmp/site:$REPO"
else
    say "== no .whl/site.tar.xz (run bash bench/gpu_wheels.sh here first); using what is installed"
fi
export PYTHONPATH="${PYTHONPATH:-$REPO}"

# The C extensions by hand, should setup.py not build there (an older or newer setuptools
# refusing the metadata): the same sources and flags as setup.py, beside their package.
build_by_hand() {
    local inc suffix src mod
    inc="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
    suffix="$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
    for src in itsd/shm/_atomics.c itsd/shm/_ringread.c itsd/_records.c itsd/sources/_planecopy.c; do
        mod="${src%.c}$suffix"
        cc -O2 -std=c11 -shared -fPIC -I"$inc" "$src" -o "$mod" || return 1
    done
}
if [ -z "$DRY" ]; then
    step build_ext 120 "$PY" setup.py -q build_ext --inplace
    "$PY" -c "import itsd.shm.atomics, itsd._records, itsd.sources._planecopy" 2>/dev/null ||
        { say "== setup.py gave no importable extensions: cc by hand"; build_by_hand 2>&1 | tee -a "$LOG"; }
else
    scratch="$(mktemp -d)"
    step build_ext 120 "$PY" setup.py -q build_ext --build-lib "$scratch/lib" --build-temp "$scratch/tmp"
    rm -rf "$scratch"
fi
if [ -z "$DRY" ]; then
    for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib; do
        [ -d "$d" ] && export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$d"
    done
    nvidia-smi -L 2>&1 | tee -a "$LOG"
    # NVDEC needs the driver's video libraries (PyNvVideoCodec loads NVENC's at import).
    say "video libraries: $( (ldconfig -p 2>/dev/null; ls /usr/local/nvidia/lib64 2>/dev/null) |
        grep -oE 'libnv(cuvid|idia-encode)\.so[.0-9]*' | sort -u | tr '\n' ' ')"
    "$PY" -c "import PyNvVideoCodec as n; print('PyNvVideoCodec', n.__version__, 'imports')" 2>&1 |
        grep -E 'imports|Error' | head -2 | tee -a "$LOG"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm \
        --format=csv 2>&1 | tee -a "$LOG"
    "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" 2>&1 | tee -a "$LOG"
fi
"$PY" -c "import itsd.config, av, pydantic; print('itsd imports: pydantic', pydantic.VERSION, 'av', av.__version__)" 2>&1 | tee -a "$LOG"
"$PY" - <<'VERSIONS' 2>&1 | tee -a "$LOG"
from importlib import metadata
names = ["torch", "torchvision", "numpy", "opencv-python-headless", "grpcio", "protobuf",
         "onnxruntime", "ultralytics", "PyNvVideoCodec", "setuptools"]
found = []
for n in names:
    try:
        found.append(f"{n} {metadata.version(n)}")
    except metadata.PackageNotFoundError:
        found.append(f"{n} -")
print("versions:", ", ".join(found))
VERSIONS
say "shared memory: $(df -h /dev/shm 2>/dev/null | tail -1)"

# -- a. GPU tests ----------------------------------------------------------------------
mapfile -t GPU_TESTS < <(find tests -name 'test_*_gpu.py' | sort)
want tests && step tests 90 "$PY" -m pytest -q -p no:cacheprovider -m gpu -rs --timeout 120 \
    --junitxml="$OUT/tests.xml" "${GPU_TESTS[@]}"

# -- b. PyTorch backend: worker path vs raw forward (issue 10) ---------------------------
if ! want infer; then
    :
elif [ -z "$DRY" ]; then
    IB=(--backend torch --gpu 0 --precision fp16 --batches 1,8,32,64 --seconds 1 --rounds 2)
    step infer_graphs 110 "$PY" bench/infer_backend_bench.py "${IB[@]}" --clip "$CLIP360" \
        --json "$OUT/infer_graphs.json"
    step infer_nographs 110 "$PY" bench/infer_backend_bench.py "${IB[@]}" --no-graphs \
        --clip "$CLIP360" --json "$OUT/infer_nographs.json"
else
    step infer_graphs 120 "$PY" bench/infer_backend_bench.py --backend torch --imgsz 320 \
        --batches 1 --seconds 0.3 --rounds 1 --clip "$CLIP360" --json "$OUT/infer_graphs.json"
fi

# -- b2. the TensorRT / ONNX Runtime CUDA letterbox kernel beside the bare upload (issue 10)
if want infer; then
    LB=(--clip "$CLIP360" --imgsz 640 --batches 1,16,64 --seconds 0.5 --rounds 2)
    [ -n "$DRY" ] && LB=(--clip "$CLIP360" --imgsz 320 --batches 1 --seconds 0.2 --rounds 1 --dry)
    step letterbox 45 "$PY" bench/letterbox_bench.py "${LB[@]}" --json "$OUT/letterbox.json"
fi

# -- c. NVDEC beside raw PyNvVideoCodec, CPU+NVDEC (issue 9) -----------------------------
if ! want nvdec; then
    :
elif [ -z "$DRY" ]; then
    step nvdec 120 "$PY" bench/nvdec_bench.py --clip "$CLIP1080" --streams 1 4 8 \
        --seconds 3 --rounds 2 --json "$OUT/nvdec.json"
else
    step nvdec 60 "$PY" bench/nvdec_bench.py --clip "$CLIP1080" --streams 1 --seconds 1 \
        --rounds 1 --dry --json "$OUT/nvdec.json"
fi

# -- d. end to end (issue 13), while time remains ---------------------------------------
if ! want e2e; then
    :
elif [ -z "$DRY" ]; then
    step e2e 200 "$PY" bench/gpu_e2e.py --clip "$CLIP1080" --clip "$CLIP360" --cameras 24 \
        --json "$OUT/e2e.json"
else
    step e2e 60 "$PY" bench/gpu_e2e.py --clip "$CLIP1080" --clip "$CLIP360" --dry \
        --json "$OUT/e2e.json"
fi

# -- the table -------------------------------------------------------------------------
"$PY" - "$OUT" "${DRY:-}" "$STATUS" <<'EOF' 2>&1 | tee "$OUT/gpu_check.md"
import json, sys, xml.etree.ElementTree as ET
from pathlib import Path

out, dry, status = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
rows = []

def load(name):
    p = out / f"{name}.json"
    try:
        return json.loads(p.read_text())
    except Exception:
        return None

def f(v, spec=".0f"):
    return "-" if v is None else format(v, spec)

def row(what, value, goal=""):
    rows.append(f"| {what} | {value} | {goal} |")

try:
    t = ET.parse(out / "tests.xml").getroot()
    t = t if t.tag == "testsuite" else t[0]
    row("GPU tests", f"{t.get('tests')} run, {t.get('failures')} failed, "
        f"{t.get('errors')} errors, {t.get('skipped')} skipped")
except Exception as err:
    row("GPU tests", f"no result ({type(err).__name__})")
for name in ("infer_graphs", "infer_nographs"):
    r = load(name)
    if not r:
        row(f"torch {name}", "no result")
        continue
    tag = f"torch {r.get('device')} {r.get('precision')} graphs {'on' if r.get('cuda_graphs') else 'off'}"
    for b, v in r["batches"].items():
        row(f"{tag} b{b}: worker / raw img/s, p50/p99 ms at half load",
            f"{f(v['worker_img_s'])} / {f(v['raw_img_s'])} = **{f(v['ratio'], '.2f')}**, "
            f"{f(v['p50_ms'], '.1f')}/{f(v['p99_ms'], '.1f')}", ">= 0.80 (issue 10)")
r = load("letterbox")
for v in (r or {}).get("results", []):
    gpu = (f"gpu {f(v.get('gpu'))} / upload {f(v.get('upload'))} = "
           f"**{f(v.get('gpu_over_upload'), '.2f')}**" if "gpu" in v else "gpu -")
    row(f"letterbox {v['frames']} b{v['batch']} to {r['imgsz']}: frames/s",
        f"{gpu}; cpu {f(v.get('cpu'))}", "")
if r is None:
    row("letterbox", "no result")
r = load("nvdec")
if r:
    if r.get("skipped"):
        row("nvdec", f"skipped: {r['skipped']}")
    for n, v in r["streams"].items():
        row(f"NVDEC {n} streams 1080p: itsd / raw fps", f"{f(v['nvdec_fps'])} / "
            f"{f(v['raw_fps'])} = **{f(v['ratio'], '.2f')}**", ">= 0.90 (issue 9)")
        row(f"CPU {n} streams; CPU+NVDEC / NVDEC", f"{f(v['cpu_fps'])} fps; {f(v['both_fps'])} fps "
            f"= {f(v['both_over_nvdec'], '.2f')}x", "")
else:
    row("nvdec", "no result")
r = load("e2e")
if r:
    if r.get("skipped"):
        row("e2e", f"skipped: {r['skipped']}")
    for clip, v in r["clips"].items():
        if not v:
            continue
        fps = {k: (v.get(k) or {}).get("fps") for k in ("a_limit", "b_itsd", "c_user_loop")}
        errs = [f"{k}: {v[k]['error'][:80]}" for k in fps if "error" in (v.get(k) or {})]
        row(f"e2e {clip}: (a) limit / (b) itsd / (c) user loop fps",
            f"{f(fps['a_limit'])} / {f(fps['b_itsd'])} / {f(fps['c_user_loop'])}; "
            f"(b)/(a) **{f(v.get('b_over_a'), '.2f')}**, (b)/(c) **{f(v.get('b_over_c'), '.2f')}**"
            + (f"; {'; '.join(errs)}" if errs else ""),
            "(b)/(c) >= 2 at 1080p, (b)/(a) >= 0.8 at 640x360 (issue 13)")
else:
    row("e2e", "no result")
for line in status.splitlines():
    name, rc, secs, last = (line.split("|", 3) + ["", "", ""])[:4]
    state = "ok" if rc == "0" else ("timed out" if rc == "124" else last if rc == "-" else f"exit {rc}: {last}")
    row(f"step {name} ({secs} s)", state)
print(f"\n## GPU check{' (DRY RUN: ' + dry + ')' if dry else ''}\n")
print("| what | measured | goal |\n| --- | --- | --- |")
print("\n".join(rows))
EOF
say "== gpu_check done in $(($(date +%s) - T0)) s; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
