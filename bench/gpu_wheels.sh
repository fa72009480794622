#!/usr/bin/env bash
# Prepare what the GPU check (bench/gpu_check.sh) carries to the lent GPU machine, in
# .whl/ (ignored by git through .git/info/exclude; never commit it):
#
#   .whl/site.tar.xz   the Python packages that machine lacks for itsd's GPU checks,
#                      installed here for CPython 3.12 manylinux x86_64 into one folder,
#                      pruned and xz-packed (unpacked there into /tmp/site)
#   .whl/media/        the clips: the shared 640x360 street_overhead_dusk.mp4 and a 1920x1080
#                      H.264 copy of it made here with ffmpeg (the machine has no ffmpeg,
#                      and ../shared does not travel); ITSD_TEST_MEDIA points there
#
# Why a packed folder and not the wheels: the wheels come to 76 MB (PyAV 36 MB,
# PyNvVideoCodec 27 MB of which 17 MB are FFmpeg's source tarball and notebooks) and one
# call carries 64 MiB in all. Installed, pruned, with duplicate libraries turned into
# links and packed with xz, they take about 40 MB.
#
# The machine already has (see the device notes): torch 2.11 CUDA 13, torchvision, numpy,
# opencv-python-headless, onnxruntime (CPU), aiohttp, pyyaml, click, psutil, pillow,
# prometheus-client, nvidia-ml-py, grpcio, protobuf, pytest, pytest-timeout, xdist.
# Carried, each --no-deps at one version (the project venv's), their own needs named:
#   pydantic + pydantic-core + annotated-types + typing-inspection + typing-extensions
#                             (itsd.config; pydantic needs typing-extensions >= 4.16)
#   av                        (CPU decoders, clip frames of the benches)
#   PyNvVideoCodec==2.2.4     (NVDEC)
#   ultralytics               (DetectionModel only: its import path needs nothing more
#                              than torch, numpy, cv2, yaml and PIL, all there)
#   sqlalchemy + alembic + mako          (the aggregates store of `itsd start`)
#   grpcio + protobuf + grpcio-health-checking + grpcio-reflection
#                             (`itsd start`'s control API: its generated code needs
#                              grpcio >= 1.85.1 and protobuf 7; the machine's may be older)
#
# Run here (needs PyPI and ffmpeg):  bash bench/gpu_wheels.sh
# Downloads are cached in $ITSD_GPU_WHEEL_CACHE (default ~/.cache/itsd/gpu-wheels).
# This script must never touch the project's venv, nor install anything into it.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PY="${PY:-$REPO/.venv/bin/python}"
[ -x "$PY" ] || PY=python3
CACHE="${ITSD_GPU_WHEEL_CACHE:-$HOME/.cache/itsd/gpu-wheels}"
SHARED_MEDIA="${ITSD_TEST_MEDIA:-$REPO/../shared/media}"
OUTDIR="$REPO/.whl"
# Travel budget of one call: 64 MiB for tree + carried; keep the carried part under 55.
LIMIT_MIB=55

WHEELS=(
    pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
    typing-extensions==4.16.0
    av==18.1.0
    PyNvVideoCodec==2.2.4
    ultralytics==8.4.21
    sqlalchemy==2.1.9 alembic==1.20.1 mako==1.4.3
    grpcio==1.85.3 protobuf==7.36.2 grpcio-health-checking==1.85.1 grpcio-reflection==1.85.1
)
PLATFORM=(
    --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --abi abi3
    --abi none --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
    --platform manylinux1_x86_64 --platform any
)

grep -qx '/.whl/' .git/info/exclude 2>/dev/null || {
    mkdir -p .git/info && echo '/.whl/' >>.git/info/exclude
}

echo "== wheels (cp312 manylinux x86_64, --no-deps) into $CACHE"
files=()
for spec in "${WHEELS[@]}"; do
    dir="$CACHE/$spec"  # one folder per requirement: exactly one version each
    if ! ls "$dir"/*.whl >/dev/null 2>&1; then
        mkdir -p "$dir"
        "$PY" -m pip download -q --no-deps "${PLATFORM[@]}" -d "$dir" "$spec" 2>&1 |
            grep -v 'is ignored' || true
    fi
    whl="$(ls "$dir"/*.whl 2>/dev/null | head -1)"
    if [ -z "$whl" ]; then
        echo "no wheel for $spec (cp312 manylinux x86_64)" >&2
        exit 1
    fi
    files+=("$whl")
done
du -ch "${files[@]}" | tail -1 | sed 's/total/wheels in all (too many for one call: packed below)/'

echo "== installed for Python 3.12 into a staging folder, pruned"
STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
"$PY" -m pip install -q --no-index --no-deps --no-compile --target "$STAGE/site" \
    "${PLATFORM[@]}" "${files[@]}" 2>&1 | grep -v 'is ignored' || true
site="$STAGE/site"
[ -d "$site/PyNvVideoCodec" ] && [ -d "$site/av" ] && [ -d "$site/pydantic_core" ] || {
    echo "staging install failed" >&2
    exit 1
}
# FFmpeg's source tarball, notebooks and samples of PyNvVideoCodec; scripts; caches.
rm -rf "$site/external" "$site/samples" "$site/benchmarks" "$site/tests" "$site/bin"
find "$site" -name __pycache__ -type d -prune -exec rm -rf {} +
# Identical files in one folder (libfoo.so, libfoo.so.N, libfoo.so.N.M: wheels hold
# copies, not links) become relative links.
"$PY" - "$site" <<'EOF'
import hashlib, os, sys
seen: dict[tuple[str, str], str] = {}
saved = 0
for root, _dirs, names in os.walk(sys.argv[1]):
    for name in sorted(names):
        path = os.path.join(root, name)
        if os.path.islink(path) or os.path.getsize(path) < 65536:
            continue
        digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
        first = seen.setdefault((root, digest), name)
        if first != name:
            saved += os.path.getsize(path)
            os.remove(path)
            os.symlink(first, path)
print(f"duplicates linked: {saved / 2**20:.1f} MiB")
EOF
du -sh "$site" | sed 's/\t.*/ installed/'

mkdir -p "$OUTDIR/media"
rm -f "$OUTDIR"/*.whl  # a folder of loose wheels from an earlier recipe would travel too
echo "== packing $OUTDIR/site.tar.xz (xz -6; a minute or two)"
tar -C "$site" --sort=name -cf - . | xz -6 -T2 >"$OUTDIR/site.tar.xz.part"
mv "$OUTDIR/site.tar.xz.part" "$OUTDIR/site.tar.xz"

echo "== clips into $OUTDIR/media"
src="$SHARED_MEDIA/street_overhead_dusk.mp4"
[ -f "$src" ] || {
    echo "no shared clip at $src (set ITSD_TEST_MEDIA)" >&2
    exit 1
}
cp -f "$src" "$OUTDIR/media/street_overhead_dusk.mp4"  # its own name: tests find it
if [ ! -s "$OUTDIR/media/street_overhead_dusk_1920x1080.mp4" ]; then
    # H.264 High, no B-frames (as cameras send), a key frame every second.
    ffmpeg -v error -y -i "$src" -vf scale=1920:1080 -c:v libx264 -preset veryfast -crf 23 \
        -g 30 -bf 0 -pix_fmt yuv420p -an -threads 2 \
        "$OUTDIR/media/street_overhead_dusk_1920x1080.mp4"
fi

echo "== sizes"
du -ah "$OUTDIR" | sort -h
carried=$(du -sb "$OUTDIR" | cut -f1)
tree=$(
    {
        git ls-files -z
        git ls-files -z --others --exclude-standard
    } | xargs -0 -r stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}'
)
printf 'carried .whl: %.1f MiB (limit %d)   tree: %.1f MiB   together: %.1f MiB of 64\n' \
    "$(echo "$carried / 1048576" | bc -l)" "$LIMIT_MIB" "$(echo "$tree / 1048576" | bc -l)" \
    "$(echo "($carried + $tree) / 1048576" | bc -l)"
if [ "$carried" -gt $((LIMIT_MIB * 1048576)) ]; then
    echo "too large: .whl is over $LIMIT_MIB MiB" >&2
    exit 1
fi
