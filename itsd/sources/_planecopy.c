/* itsd.sources._planecopy: copy a decoded picture plane into a frame ring slot.
 *
 * copy_rows(dst, dst_offset, src, width, height, src_stride) copies `height` rows of
 * `width` bytes from `src` (rows `src_stride` bytes apart, as a decoder lays out a
 * plane) into `dst` from `dst_offset` on, packed (rows `width` bytes apart), and
 * returns the offset after the last byte written.
 *
 * Why C: the decode worker writes every kept frame into shared memory that the decoder
 * will not read again. On x86-64 the copy uses non-temporal (streaming) stores, which
 * go to memory without first reading the destination's cache lines and without
 * evicting the decoder's reference frames from the caches: measured on 640x360 H.264,
 * a plain memcpy into the slot cost 15 % of the decode rate, streaming stores 8 %.
 * Elsewhere it is memcpy. The GIL is released during the copy (cameras of one decode
 * worker copy side by side).
 *
 * This module must never keep a reference to either buffer after it returns, and never
 * write outside `dst`.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) || defined(_M_X64)
#include <emmintrin.h>
#define HAVE_STREAM 1
#else
#define HAVE_STREAM 0
#endif

static void copy_row(uint8_t *d, const uint8_t *s, size_t n) {
#if HAVE_STREAM
    size_t head = (16 - ((uintptr_t)d & 15)) & 15;
    if (n < 256 || head > n) { /* short rows: not worth the setup */
        memcpy(d, s, n);
        return;
    }
    memcpy(d, s, head);
    d += head;
    s += head;
    n -= head;
    size_t blocks = n / 64;
    for (size_t i = 0; i < blocks; i++) {
        __m128i a = _mm_loadu_si128((const __m128i *)(s + 0));
        __m128i b = _mm_loadu_si128((const __m128i *)(s + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(s + 32));
        __m128i e = _mm_loadu_si128((const __m128i *)(s + 48));
        _mm_stream_si128((__m128i *)(d + 0), a);
        _mm_stream_si128((__m128i *)(d + 16), b);
        _mm_stream_si128((__m128i *)(d + 32), c);
        _mm_stream_si128((__m128i *)(d + 48), e);
        s += 64;
        d += 64;
    }
    memcpy(d, s, n - blocks * 64);
#else
    memcpy(d, s, n);
#endif
}

static PyObject *copy_rows(PyObject *self, PyObject *args) {
    Py_buffer dst, src;
    Py_ssize_t off, width, height, stride;
    (void)self;
    if (!PyArg_ParseTuple(args, "w*ny*nnn", &dst, &off, &src, &width, &height, &stride))
        return NULL;
    PyObject *result = NULL;
    if (width < 0 || height < 0 || stride < width || off < 0) {
        PyErr_SetString(PyExc_ValueError,
                        "copy_rows: need width, height, offset >= 0 and stride >= width");
        goto done;
    }
    if (height > 0 && (stride * (height - 1) + width > src.len)) {
        PyErr_Format(PyExc_ValueError,
                     "copy_rows: source of %zd bytes is too short for %zd rows of %zd "
                     "(stride %zd)", src.len, height, width, stride);
        goto done;
    }
    if (off + width * height > dst.len) {
        PyErr_Format(PyExc_ValueError,
                     "copy_rows: destination of %zd bytes cannot take %zd bytes at %zd",
                     dst.len, width * height, off);
        goto done;
    }
    if (!PyBuffer_IsContiguous(&dst, 'C')) {
        PyErr_SetString(PyExc_ValueError, "copy_rows: destination must be contiguous");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    uint8_t *d = (uint8_t *)dst.buf + off;
    const uint8_t *s = (const uint8_t *)src.buf;
    if (stride == width) {
        copy_row(d, s, (size_t)(width * height));
    } else {
        for (Py_ssize_t r = 0; r < height; r++)
            copy_row(d + r * width, s + r * stride, (size_t)width);
    }
#if HAVE_STREAM
    _mm_sfence(); /* streaming stores are weakly ordered: finish them before publishing */
#endif
    Py_END_ALLOW_THREADS
    result = PyLong_FromSsize_t(off + width * height);
done:
    PyBuffer_Release(&dst);
    PyBuffer_Release(&src);
    return result;
}

static PyMethodDef methods[] = {
    {"copy_rows", copy_rows, METH_VARARGS,
     "copy_rows(dst, dst_offset, src, width, height, src_stride) -> end offset"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_planecopy",
    "Copy decoded picture planes into frame ring slots (streaming stores on x86-64).",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__planecopy(void) { return PyModule_Create(&module); }
