/*
 * itsd.shm._atomics: acquire/release atomics on shared-memory buffers.
 *
 * Plain Python stores into an mmap give no ordering guarantee on weakly ordered
 * CPUs (aarch64), so every cross-process publication in itsd goes through these
 * few functions, which use the compiler's __atomic builtins (ldar/stlr on aarch64,
 * plain mov plus a compiler barrier on x86-64).
 *
 * Each function takes a writable buffer (mmap, bytearray, memoryview) and a byte
 * offset that must be naturally aligned and inside the buffer. This module must
 * never hold a buffer past one call and never allocate inside the hot path.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

static void *
get_ptr(PyObject *obj, PyObject *off_obj, Py_ssize_t width, Py_buffer *view)
{
    Py_ssize_t off = PyLong_AsSsize_t(off_obj);
    if (off == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (PyObject_GetBuffer(obj, view, PyBUF_WRITABLE) < 0) {
        return NULL;
    }
    if (off < 0 || off > view->len - width) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_IndexError, "atomic offset %zd out of range for buffer of %zd bytes",
                     off, view->len);
        return NULL;
    }
    char *p = (char *)view->buf + off;
    if (((uintptr_t)p) % (uintptr_t)width != 0) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_ValueError, "atomic offset %zd is not %zd-byte aligned", off, width);
        return NULL;
    }
    return p;
}

#define CHECK_NARGS(n)                                                              \
    if (nargs != (n)) {                                                             \
        PyErr_Format(PyExc_TypeError, "expected %d arguments, got %zd", (n), nargs); \
        return NULL;                                                                \
    }

static PyObject *
load_u64(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    CHECK_NARGS(2);
    uint64_t *p = get_ptr(args[0], args[1], 8, &view);
    if (p == NULL) return NULL;
    uint64_t v = __atomic_load_n(p, __ATOMIC_ACQUIRE);
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLongLong(v);
}

static PyObject *
store_u64(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    CHECK_NARGS(3);
    unsigned long long v = PyLong_AsUnsignedLongLong(args[2]);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    uint64_t *p = get_ptr(args[0], args[1], 8, &view);
    if (p == NULL) return NULL;
    __atomic_store_n(p, (uint64_t)v, __ATOMIC_RELEASE);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

static PyObject *
fetch_add_u64(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    CHECK_NARGS(3);
    unsigned long long d = PyLong_AsUnsignedLongLong(args[2]);
    if (d == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    uint64_t *p = get_ptr(args[0], args[1], 8, &view);
    if (p == NULL) return NULL;
    uint64_t old = __atomic_fetch_add(p, (uint64_t)d, __ATOMIC_ACQ_REL);
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLongLong(old);
}

static PyObject *
load_u32(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    CHECK_NARGS(2);
    uint32_t *p = get_ptr(args[0], args[1], 4, &view);
    if (p == NULL) return NULL;
    uint32_t v = __atomic_load_n(p, __ATOMIC_ACQUIRE);
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(v);
}

static PyObject *
store_u32(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    CHECK_NARGS(3);
    unsigned long v = PyLong_AsUnsignedLong(args[2]);
    if (v == (unsigned long)-1 && PyErr_Occurred()) return NULL;
    if (v > 0xFFFFFFFFUL) {
        PyErr_SetString(PyExc_OverflowError, "value does not fit in 32 bits");
        return NULL;
    }
    uint32_t *p = get_ptr(args[0], args[1], 4, &view);
    if (p == NULL) return NULL;
    __atomic_store_n(p, (uint32_t)v, __ATOMIC_RELEASE);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

static PyObject *
cas_u32(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    CHECK_NARGS(4);
    unsigned long expected = PyLong_AsUnsignedLong(args[2]);
    if (expected == (unsigned long)-1 && PyErr_Occurred()) return NULL;
    unsigned long desired = PyLong_AsUnsignedLong(args[3]);
    if (desired == (unsigned long)-1 && PyErr_Occurred()) return NULL;
    if (expected > 0xFFFFFFFFUL || desired > 0xFFFFFFFFUL) {
        PyErr_SetString(PyExc_OverflowError, "value does not fit in 32 bits");
        return NULL;
    }
    uint32_t *p = get_ptr(args[0], args[1], 4, &view);
    if (p == NULL) return NULL;
    uint32_t exp32 = (uint32_t)expected;
    int ok = __atomic_compare_exchange_n(p, &exp32, (uint32_t)desired, 0, __ATOMIC_ACQ_REL,
                                         __ATOMIC_ACQUIRE);
    PyBuffer_Release(&view);
    return PyBool_FromLong(ok);
}

static PyObject *
fence(PyObject *self, PyObject *unused)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"load_u64", (PyCFunction)(void (*)(void))load_u64, METH_FASTCALL,
     "load_u64(buf, off) -> int: 64-bit load with acquire semantics."},
    {"store_u64", (PyCFunction)(void (*)(void))store_u64, METH_FASTCALL,
     "store_u64(buf, off, value): 64-bit store with release semantics."},
    {"fetch_add_u64", (PyCFunction)(void (*)(void))fetch_add_u64, METH_FASTCALL,
     "fetch_add_u64(buf, off, delta) -> int: atomic add (acq_rel); returns the old value."},
    {"load_u32", (PyCFunction)(void (*)(void))load_u32, METH_FASTCALL,
     "load_u32(buf, off) -> int: 32-bit load with acquire semantics."},
    {"store_u32", (PyCFunction)(void (*)(void))store_u32, METH_FASTCALL,
     "store_u32(buf, off, value): 32-bit store with release semantics."},
    {"cas_u32", (PyCFunction)(void (*)(void))cas_u32, METH_FASTCALL,
     "cas_u32(buf, off, expected, desired) -> bool: strong compare-and-swap (acq_rel)."},
    {"fence", fence, METH_NOARGS, "fence(): full sequentially consistent memory fence."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_atomics",
    "Acquire/release atomics on shared-memory buffers (see itsd.shm.atomics).", -1, methods,
};

PyMODINIT_FUNC
PyInit__atomics(void)
{
    return PyModule_Create(&module);
}
