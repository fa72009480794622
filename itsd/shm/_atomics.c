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
#include <errno.h>
#include <time.h>
#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

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

/*
 * Doorbells. A bell is two u32 words: +0 the ring counter (the futex word), +4 the
 * sleepers flag its one waiter sets while it may sleep. bell_ring adds one to the
 * counter (seq_cst) and, only when the flag is set, clears it and wakes the waiter
 * (FUTEX_WAKE, not private: the word lives in a shared mapping); the waiter sets the
 * flag again before its next sleep. bell_wait sleeps while the counter
 * still equals `expected`, at most `timeout` seconds, without the GIL. Without futexes
 * (not Linux) it sleeps for the shorter of the timeout and 2 ms: a poll, still correct.
 */
static PyObject *
bell_ring(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    CHECK_NARGS(2);
    uint32_t *p = get_ptr(args[0], args[1], 8, &view);
    if (p == NULL) return NULL;
    __atomic_fetch_add(p, 1, __ATOMIC_SEQ_CST);
    int woke = 0;
    /* Take the flag: of a burst of rings only the first makes the system call. */
    if (__atomic_load_n(p + 1, __ATOMIC_SEQ_CST) != 0
        && __atomic_exchange_n(p + 1, 0, __ATOMIC_SEQ_CST) != 0) {
#ifdef __linux__
        long n = syscall(SYS_futex, p, FUTEX_WAKE, 1, NULL, NULL, 0);
        woke = n > 0 ? (int)n : 0;
#endif
    }
    PyBuffer_Release(&view);
    return PyLong_FromLong(woke);
}

static PyObject *
bell_wait(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    CHECK_NARGS(4);
    unsigned long expected = PyLong_AsUnsignedLong(args[2]);
    if (expected == (unsigned long)-1 && PyErr_Occurred()) return NULL;
    if (expected > 0xFFFFFFFFUL) {
        PyErr_SetString(PyExc_OverflowError, "value does not fit in 32 bits");
        return NULL;
    }
    double timeout = PyFloat_AsDouble(args[3]);
    if (timeout == -1.0 && PyErr_Occurred()) return NULL;
    if (!(timeout >= 0.0)) timeout = 0.0;
    if (timeout > 3600.0) timeout = 3600.0;
    uint32_t *p = get_ptr(args[0], args[1], 8, &view);
    if (p == NULL) return NULL;
    int rang = __atomic_load_n(p, __ATOMIC_SEQ_CST) != (uint32_t)expected;
    if (!rang && timeout > 0.0) {
        struct timespec ts;
#ifdef __linux__
        ts.tv_sec = (time_t)timeout;
        ts.tv_nsec = (long)((timeout - (double)ts.tv_sec) * 1e9);
        long r;
        int err;
        Py_BEGIN_ALLOW_THREADS
        r = syscall(SYS_futex, p, FUTEX_WAIT, (uint32_t)expected, &ts, NULL, 0);
        err = errno;
        Py_END_ALLOW_THREADS
        rang = (r == 0 || err == EAGAIN);  /* woken, or the counter had moved */
#else
        double nap = timeout < 0.002 ? timeout : 0.002;
        ts.tv_sec = (time_t)nap;
        ts.tv_nsec = (long)((nap - (double)ts.tv_sec) * 1e9);
        Py_BEGIN_ALLOW_THREADS
        nanosleep(&ts, NULL);
        Py_END_ALLOW_THREADS
        rang = __atomic_load_n(p, __ATOMIC_SEQ_CST) != (uint32_t)expected;
#endif
    }
    PyBuffer_Release(&view);
    if (PyErr_CheckSignals() < 0) return NULL;  /* a handler raised (EINTR) */
    return PyBool_FromLong(rang);
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
    {"bell_ring", (PyCFunction)(void (*)(void))bell_ring, METH_FASTCALL,
     "bell_ring(buf, off) -> int: count a ring of the bell at off; wake its sleeper."},
    {"bell_wait", (PyCFunction)(void (*)(void))bell_wait, METH_FASTCALL,
     "bell_wait(buf, off, expected, timeout) -> bool: sleep while the bell's count is "
     "`expected` (at most timeout s); True if it rang."},
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
