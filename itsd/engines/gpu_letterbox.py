"""Letterbox a whole batch on an NVIDIA GPU in one kernel: the TensorRT and ONNX Runtime
CUDA backends' preprocess.

The uint8 RGB frames of a batch (any sizes) are packed into one page-locked staging
buffer, sent to the GPU with one asynchronous copy, and one kernel launch writes every
pixel of the (N, 3, H, W) model input (fp32 or fp16) straight into the engine's own
input buffer: no float image is made on the host, and the host-to-device traffic is the
uint8 frames (a quarter of the float batch at the model size, less for frames smaller
than it). The kernel is `LETTERBOX_SOURCE`, compiled at run time with NVRTC and launched
with the CUDA driver API (`cuda.bindings`, the library the TensorRT backend already
uses). It follows `preprocess.letterbox_into` exactly in geometry (`letterbox_params`,
grey 114 border) and within one grey level in pixels (bilinear with half-pixel centres
and edge clamping, rounded to 8 bits as OpenCV's INTER_LINEAR does, then scaled by
1/255).

The same source compiles as plain C (`cpu_reference_source`), where a loop stands in for
the threads, so the kernel's arithmetic is tested against `letterbox_into` on machines
without a GPU (tests/unit/engines/test_engines_gpu_letterbox.py); on a GPU the CUDA build
is checked against it too (test_engines_gpu_letterbox_gpu.py, run by bench/gpu_check.sh).

`describe_batch` (the per-frame table the kernel reads) is pure numpy. `GpuLetterbox`
needs cuda-python and a GPU; `try_gpu_letterbox` gives None with a logged reason when
either is missing or the kernel does not compile, and the engine then letterboxes on the
CPU. This module must never import cuda at module import time, never synchronize a
stream it was not given, and never write outside the output buffer it is given.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from itsd.engines.preprocess import Letterbox, check_frame, letterbox_params

log = logging.getLogger(__name__)

#: int64 fields per frame in the table the kernel reads.
TABLE_FIELDS = 8
#: Threads per block of the kernel (one thread per output pixel, three channels each).
THREADS = 256

#: The kernel, shared by the CUDA build and the C build the tests run. Table row per
#: frame: byte offset of its pixels, src_h, src_w, new_h, new_w, pad_y, pad_x, spare.
LETTERBOX_SOURCE = r"""
typedef long long itsd_i64;
#ifdef __CUDACC__
#define ITSD_FN __device__ __forceinline__
#else
#define ITSD_FN static inline
#endif
#define ITSD_FIELDS 8

/* A channel value (0..255, or -1 for the border) as the model input value: the border
   is 114/255, a pixel is multiplied by 1/255, both exactly as preprocess.py does. */
ITSD_FN float itsd_unit(float v) {
    return v < 0.0f ? 114.0f / 255.0f : v * (1.0f / 255.0f);
}

/* One channel of a bilinear sample at (fy, fx) source pixels, edges clamped, rounded
   half up to 8 bits as OpenCV's INTER_LINEAR gives uint8 images. */
ITSD_FN float itsd_sample(const unsigned char* img, itsd_i64 h, itsd_i64 w, int c,
                          float fy, float fx) {
    float y0f = floorf(fy), x0f = floorf(fx);
    float wy = fy - y0f, wx = fx - x0f;
    itsd_i64 y0 = (itsd_i64)y0f, x0 = (itsd_i64)x0f;
    itsd_i64 y1 = y0 + 1, x1 = x0 + 1;
    if (y0 < 0) y0 = 0;
    if (y1 < 0) y1 = 0;
    if (y0 > h - 1) y0 = h - 1;
    if (y1 > h - 1) y1 = h - 1;
    if (x0 < 0) x0 = 0;
    if (x1 < 0) x1 = 0;
    if (x0 > w - 1) x0 = w - 1;
    if (x1 > w - 1) x1 = w - 1;
    float a = (float)img[(y0 * w + x0) * 3 + c];
    float b = (float)img[(y0 * w + x1) * 3 + c];
    float d = (float)img[(y1 * w + x0) * 3 + c];
    float e = (float)img[(y1 * w + x1) * 3 + c];
    float top = a + (b - a) * wx;
    float bottom = d + (e - d) * wx;
    float v = floorf(top + (bottom - top) * wy + 0.5f);
    return v < 0.0f ? 0.0f : (v > 255.0f ? 255.0f : v);
}

/* The three channels (0..255; -1 on the border) of output pixel i of the batch:
   i = (b * H + y) * W + x. Returns the frame index b. */
ITSD_FN itsd_i64 itsd_pixel(const unsigned char* frames, const itsd_i64* table,
                            int dst_h, int dst_w, itsd_i64 i, float* rgb) {
    itsd_i64 plane = (itsd_i64)dst_h * dst_w;
    itsd_i64 b = i / plane;
    itsd_i64 r = i - b * plane;
    itsd_i64 y = r / dst_w;
    itsd_i64 x = r - y * dst_w;
    const itsd_i64* t = table + b * ITSD_FIELDS;
    itsd_i64 sh = t[1], sw = t[2], nh = t[3], nw = t[4];
    itsd_i64 ny = y - t[5], nx = x - t[6];
    if (ny < 0 || nx < 0 || ny >= nh || nx >= nw) {
        rgb[0] = rgb[1] = rgb[2] = -1.0f;
        return b;
    }
    const unsigned char* img = frames + t[0];
    if (sh == nh && sw == nw) {
        const unsigned char* p = img + (ny * sw + nx) * 3;
        rgb[0] = (float)p[0];
        rgb[1] = (float)p[1];
        rgb[2] = (float)p[2];
        return b;
    }
    float fy = ((float)ny + 0.5f) * ((float)sh / (float)nh) - 0.5f;
    float fx = ((float)nx + 0.5f) * ((float)sw / (float)nw) - 0.5f;
    for (int c = 0; c < 3; c++) rgb[c] = itsd_sample(img, sh, sw, c, fy, fx);
    return b;
}

/* Output pixel i of the batch, its three channels as model input values in vals, and
   where its first channel goes in the (N, 3, H, W) output (the others follow a plane
   apart). */
ITSD_FN itsd_i64 itsd_values(const unsigned char* frames, const itsd_i64* table,
                             int dst_h, int dst_w, itsd_i64 i, float* vals) {
    itsd_i64 plane = (itsd_i64)dst_h * dst_w;
    itsd_i64 b = itsd_pixel(frames, table, dst_h, dst_w, i, vals);
    for (int c = 0; c < 3; c++) vals[c] = itsd_unit(vals[c]);
    return b * 3 * plane + (i - b * plane);
}

#ifdef __CUDACC__
extern "C" __global__ void itsd_letterbox_f32(const unsigned char* frames,
        const itsd_i64* table, int n, int dst_h, int dst_w, float* out) {
    itsd_i64 i = (itsd_i64)blockIdx.x * blockDim.x + threadIdx.x;
    itsd_i64 plane = (itsd_i64)dst_h * dst_w;
    if (i >= n * plane) return;
    float v[3];
    itsd_i64 at = itsd_values(frames, table, dst_h, dst_w, i, v);
    for (int c = 0; c < 3; c++) out[at + c * plane] = v[c];
}

extern "C" __global__ void itsd_letterbox_f16(const unsigned char* frames,
        const itsd_i64* table, int n, int dst_h, int dst_w, unsigned short* out) {
    itsd_i64 i = (itsd_i64)blockIdx.x * blockDim.x + threadIdx.x;
    itsd_i64 plane = (itsd_i64)dst_h * dst_w;
    if (i >= n * plane) return;
    float v[3];
    itsd_i64 at = itsd_values(frames, table, dst_h, dst_w, i, v);
    for (int c = 0; c < 3; c++) {
        unsigned short h;
        asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v[c]));  /* round to nearest even */
        out[at + c * plane] = h;
    }
}
#endif
"""

#: What the C build adds: a loop over every "thread" of the fp32 kernel.
_CPU_DRIVER = r"""
void itsd_letterbox_cpu(const unsigned char* frames, const itsd_i64* table, int n,
                        int dst_h, int dst_w, float* out) {
    itsd_i64 plane = (itsd_i64)dst_h * dst_w;
    for (itsd_i64 i = 0; i < n * plane; i++) {
        float v[3];
        itsd_i64 at = itsd_values(frames, table, dst_h, dst_w, i, v);
        for (int c = 0; c < 3; c++) out[at + c * plane] = v[c];
    }
}
"""


def cpu_reference_source() -> str:
    """`LETTERBOX_SOURCE` as a C file with ``itsd_letterbox_cpu`` (the fp32 kernel run
    by a loop): compiled by the tests to check the kernel's arithmetic without a GPU."""
    return "#include <math.h>\n" + LETTERBOX_SOURCE + _CPU_DRIVER


def describe_batch(
    frames: Sequence[np.ndarray], dst_h: int, dst_w: int
) -> tuple[np.ndarray, list[Letterbox], int]:
    """The kernel's table for a batch: an (n, TABLE_FIELDS) int64 array (byte offset of
    each frame in the packed upload, its size, its scaled size and padding), the
    Letterboxes (to map boxes back) and the packed size in bytes.

    Frames are packed in order, each at an offset rounded up to 16 bytes. Raises
    ValueError naming the index of a frame that is not (H, W, 3) uint8.
    """
    table = np.zeros((len(frames), TABLE_FIELDS), dtype=np.int64)
    boxes: list[Letterbox] = []
    offset = 0
    for i, frame in enumerate(frames):
        check_frame(frame, f"frame {i}")
        h, w = int(frame.shape[0]), int(frame.shape[1])
        lb = letterbox_params(h, w, dst_h, dst_w)
        table[i] = (offset, h, w, lb.new_h, lb.new_w, lb.pad_y, lb.pad_x, 0)
        boxes.append(lb)
        offset += -(-h * w * 3 // 16) * 16
    return table, boxes, offset


def pack_frames(frames: Sequence[np.ndarray], table: np.ndarray, into: np.ndarray) -> None:
    """Copy each frame's pixels to its offset in `into` (a flat uint8 buffer)."""
    for frame, row in zip(frames, table, strict=True):
        start = int(row[0])
        n = int(frame.nbytes)
        into[start : start + n].reshape(frame.shape)[...] = frame


def _imports() -> tuple[Any, Any, Any]:
    from cuda.bindings import driver, nvrtc
    from cuda.bindings import runtime as cudart

    return driver, nvrtc, cudart


def cuda_unavailable() -> str | None:
    """Why no GPU letterbox can run in this process (no cuda-python, no CUDA device),
    or None when one can."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return "needs cuda-python (cuda.bindings)"
    err, count = cudart.cudaGetDeviceCount()
    return None if int(err) == 0 and count > 0 else "needs a CUDA device"


def _ok(result: Any, what: str) -> Any:
    """Unwrap a cuda.bindings (err, *values) tuple; raise RuntimeError on an error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"{what} failed: {err}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


class GpuLetterbox:
    """Letterbox batches on one GPU into a device buffer the caller owns.

    `run(frames, out_ptr, stream)` queues the upload and the kernel on `stream` and
    returns at once; the caller synchronizes that stream (or queues its own work after
    it) before reading the output, and before the next `run` (the staging buffer is
    reused). Not thread-safe: one per engine.
    """

    def __init__(self, gpu: int, input_size: tuple[int, int], half: bool = False) -> None:
        self._driver, self._nvrtc, self.cudart = _imports()
        self.gpu = gpu
        self.input_size = input_size
        self.half = half
        _ok(self.cudart.cudaSetDevice(gpu), "cudaSetDevice")
        _ok(self.cudart.cudaFree(0), "cudaFree(0) (creating the context)")
        self._kernel = self._compile("itsd_letterbox_f16" if half else "itsd_letterbox_f32")
        self._stage_ptr = 0
        self._stage_bytes = 0
        self._stage: np.ndarray = np.empty(0, dtype=np.uint8)
        self._frames_dev = 0
        self._frames_dev_bytes = 0
        self._table_dev = 0
        self._table_rows = 0
        self._table_host_ptr = 0
        self._table_host: np.ndarray = np.empty((0, TABLE_FIELDS), dtype=np.int64)

    def _compile(self, name: str) -> Any:
        nvrtc, driver, cudart = self._nvrtc, self._driver, self.cudart
        major = _ok(
            cudart.cudaDeviceGetAttribute(
                cudart.cudaDeviceAttr.cudaDevAttrComputeCapabilityMajor, self.gpu
            ),
            "cudaDeviceGetAttribute",
        )
        minor = _ok(
            cudart.cudaDeviceGetAttribute(
                cudart.cudaDeviceAttr.cudaDevAttrComputeCapabilityMinor, self.gpu
            ),
            "cudaDeviceGetAttribute",
        )
        prog = _ok(
            nvrtc.nvrtcCreateProgram(LETTERBOX_SOURCE.encode(), b"itsd_letterbox.cu", 0, [], []),
            "nvrtcCreateProgram",
        )
        opts = [f"--gpu-architecture=compute_{major}{minor}".encode(), b"-default-device"]
        try:
            (err,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
            if int(err) != 0:
                size = _ok(nvrtc.nvrtcGetProgramLogSize(prog), "nvrtcGetProgramLogSize")
                text = b" " * size
                nvrtc.nvrtcGetProgramLog(prog, text)
                raise RuntimeError(f"the letterbox kernel does not compile: {text.decode()}")
            size = _ok(nvrtc.nvrtcGetPTXSize(prog), "nvrtcGetPTXSize")
            ptx = b" " * size
            _ok(nvrtc.nvrtcGetPTX(prog, ptx), "nvrtcGetPTX")
        finally:
            nvrtc.nvrtcDestroyProgram(prog)
        image = np.frombuffer(ptx, dtype=np.uint8)
        self._module = _ok(driver.cuModuleLoadData(image.ctypes.data), "cuModuleLoadData")
        return _ok(driver.cuModuleGetFunction(self._module, name.encode()), "cuModuleGetFunction")

    def _reserve(self, frame_bytes: int, rows: int) -> None:
        """Grow the pinned staging, the device frame buffer and the table to fit."""
        cudart = self.cudart
        if frame_bytes > self._stage_bytes:
            if self._stage_ptr:
                _ok(cudart.cudaFreeHost(self._stage_ptr), "cudaFreeHost")
            size = max(frame_bytes, 2 * self._stage_bytes)
            self._stage_ptr = int(_ok(cudart.cudaHostAlloc(size, 0), "cudaHostAlloc"))
            self._stage_bytes = size
            self._stage = np.ctypeslib.as_array(
                (ctypes.c_uint8 * size).from_address(self._stage_ptr)
            )
        if frame_bytes > self._frames_dev_bytes:
            if self._frames_dev:
                _ok(cudart.cudaFree(self._frames_dev), "cudaFree")
            size = max(frame_bytes, 2 * self._frames_dev_bytes)
            self._frames_dev = int(_ok(cudart.cudaMalloc(size), "cudaMalloc"))
            self._frames_dev_bytes = size
        if rows > self._table_rows:
            if self._table_dev:
                _ok(cudart.cudaFree(self._table_dev), "cudaFree")
                _ok(cudart.cudaFreeHost(self._table_host_ptr), "cudaFreeHost")
            nbytes = rows * TABLE_FIELDS * 8
            self._table_dev = int(_ok(cudart.cudaMalloc(nbytes), "cudaMalloc"))
            self._table_host_ptr = int(_ok(cudart.cudaHostAlloc(nbytes, 0), "cudaHostAlloc"))
            flat = np.ctypeslib.as_array(
                (ctypes.c_int64 * (rows * TABLE_FIELDS)).from_address(self._table_host_ptr)
            )
            self._table_host = flat.reshape(rows, TABLE_FIELDS)
            self._table_rows = rows

    def run(self, frames: Sequence[np.ndarray], out_ptr: int, stream: Any) -> list[Letterbox]:
        """Queue the letterbox of `frames` into the (len(frames), 3, H, W) buffer at
        device address `out_ptr` (fp16 when made with ``half``) on `stream` (a CUDA stream
        handle); return the frames' Letterboxes."""
        if not frames:
            return []
        cudart, driver = self.cudart, self._driver
        h, w = self.input_size
        table, boxes, total = describe_batch(frames, h, w)
        n = len(frames)
        self._reserve(total, n)
        pack_frames(frames, table, self._stage)
        self._table_host[:n] = table
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        _ok(
            cudart.cudaMemcpyAsync(self._frames_dev, self._stage_ptr, total, h2d, stream),
            "cudaMemcpyAsync (frames)",
        )
        table_bytes = table.nbytes
        _ok(
            cudart.cudaMemcpyAsync(self._table_dev, self._table_host_ptr, table_bytes, h2d, stream),
            "cudaMemcpyAsync (table)",
        )
        # cuLaunchKernel takes the address of an array of pointers to each argument.
        args: list[np.ndarray] = [
            np.array([self._frames_dev], dtype=np.uint64),
            np.array([self._table_dev], dtype=np.uint64),
            np.array([n], dtype=np.int32),
            np.array([h], dtype=np.int32),
            np.array([w], dtype=np.int32),
            np.array([int(out_ptr)], dtype=np.uint64),
        ]
        params = np.array([a.ctypes.data for a in args], dtype=np.uint64)
        blocks = -(-n * h * w // THREADS)
        _ok(
            driver.cuLaunchKernel(
                self._kernel, blocks, 1, 1, THREADS, 1, 1, 0, int(stream), params.ctypes.data, 0
            ),
            "cuLaunchKernel (letterbox)",
        )
        return boxes

    def close(self) -> None:
        """Free the buffers and the module (safe to call twice)."""
        cudart = self.cudart
        for ptr in (self._frames_dev, self._table_dev):
            if ptr:
                cudart.cudaFree(ptr)
        for ptr in (self._stage_ptr, self._table_host_ptr):
            if ptr:
                cudart.cudaFreeHost(ptr)
        self._frames_dev = self._table_dev = self._stage_ptr = self._table_host_ptr = 0
        self._stage_bytes = self._frames_dev_bytes = self._table_rows = 0
        module = getattr(self, "_module", None)
        if module is not None:
            self._driver.cuModuleUnload(module)
            self._module = None


class DeviceInput:
    """A model input buffer on the GPU for `max_batch` frames, a CUDA stream and a
    GpuLetterbox writing into it: for a backend that owns neither (ONNX Runtime's CUDA
    provider reads the buffer through an IOBinding)."""

    #: Where the buffer lives, as ONNX Runtime's IOBinding names it.
    device_type = "cuda"

    def __init__(self, letterbox: GpuLetterbox, max_batch: int, itemsize: int) -> None:
        self.letterbox_kernel = letterbox
        self.gpu = letterbox.gpu
        cudart = letterbox.cudart
        h, w = letterbox.input_size
        self.nbytes = max_batch * 3 * h * w * itemsize
        self.ptr = int(_ok(cudart.cudaMalloc(self.nbytes), "cudaMalloc"))
        try:
            self.stream = _ok(cudart.cudaStreamCreate(), "cudaStreamCreate")
        except Exception:
            cudart.cudaFree(self.ptr)
            raise

    def letterbox(self, frames: Sequence[np.ndarray]) -> list[Letterbox]:
        """Letterbox `frames` into the buffer and wait until it is written."""
        boxes = self.letterbox_kernel.run(frames, self.ptr, self.stream)
        _ok(self.letterbox_kernel.cudart.cudaStreamSynchronize(self.stream), "letterbox")
        return boxes

    def close(self) -> None:
        """Free the buffer, the stream and the kernel (safe to call twice)."""
        cudart = self.letterbox_kernel.cudart
        if self.ptr:
            cudart.cudaFree(self.ptr)
            cudart.cudaStreamDestroy(self.stream)
            self.ptr = 0
        self.letterbox_kernel.close()


def try_gpu_letterbox(
    gpu: int | None, input_size: tuple[int, int], half: bool, where: str
) -> GpuLetterbox | None:
    """A GpuLetterbox for `gpu`, or None (letterbox on the CPU) with the reason logged:
    no GPU asked for, cuda-python missing, or the kernel failing to compile or load."""
    if gpu is None:
        return None
    try:
        return GpuLetterbox(gpu, input_size, half)
    except ImportError as exc:
        log.warning("%s: letterboxing on the CPU: cuda-python is not installed (%s)", where, exc)
    except Exception as exc:
        log.warning("%s: letterboxing on the CPU: the GPU letterbox cannot start: %s", where, exc)
    return None
