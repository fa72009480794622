/*
 * itsd.shm._ringread: the record ring's batch read in C (see itsd.shm.record_ring).
 *
 * read_records(buf, header_size, capacity, max_record, position, head, max_records)
 * copies up to max_records records of a RecordRing's data area, from byte position on
 * and before head, into new bytes objects, and returns (records, position after the
 * last one). It checks each record's prefix (u32 length, u32 ~length) the way the
 * Python reader does and stops, without raising, at the first prefix it cannot vouch
 * for: the caller reads that one in Python, which raises with the details. It handles
 * records whose payload wraps around the end of the data area.
 *
 * head must have been loaded with acquire semantics by the caller (itsd.shm.atomics)
 * before this call: that load is what makes the record bytes visible. This module must
 * never store into the buffer, never load or store head or tail itself, and never hold
 * the buffer past one call.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define PREFIX_SIZE 8

static int
as_u64(PyObject *obj, uint64_t *out)
{
    unsigned long long v = PyLong_AsUnsignedLongLong(obj);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) return -1;
    *out = (uint64_t)v;
    return 0;
}

static PyObject *
read_records(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t header_size, cap, max_record, position, head, max_records;
    if (nargs != 7) {
        PyErr_Format(PyExc_TypeError, "read_records expects 7 arguments, got %zd", nargs);
        return NULL;
    }
    if (as_u64(args[1], &header_size) || as_u64(args[2], &cap) || as_u64(args[3], &max_record)
        || as_u64(args[4], &position) || as_u64(args[5], &head) || as_u64(args[6], &max_records))
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) return NULL;
    if (cap == 0 || cap % 8 != 0 || (uint64_t)view.len < header_size + cap) {
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_ValueError,
                     "ring layout does not fit the buffer (%zd bytes; header %llu, capacity %llu)",
                     view.len, (unsigned long long)header_size, (unsigned long long)cap);
        return NULL;
    }
    const char *data = (const char *)view.buf + header_size;
    PyObject *out = PyList_New(0);
    if (out == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    uint64_t count = 0;
    while (position != head && count < max_records) {
        uint64_t pos = position % cap;
        if (pos + PREFIX_SIZE > cap) break; /* prefixes never straddle: damaged */
        uint32_t n, check;
        memcpy(&n, data + pos, 4);
        memcpy(&check, data + pos + 4, 4);
        uint64_t end = position + PREFIX_SIZE + (((uint64_t)n + 7) & ~(uint64_t)7);
        if (check != (n ^ 0xFFFFFFFFu) || n > max_record || end > head || end < position)
            break; /* the Python reader raises with the details */
        uint64_t p = pos + PREFIX_SIZE;
        if (p == cap) p = 0;
        uint64_t first = cap - p;
        PyObject *rec;
        if (n <= first) {
            rec = PyBytes_FromStringAndSize(data + p, (Py_ssize_t)n);
        } else {
            rec = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n);
            if (rec != NULL) {
                char *dst = PyBytes_AS_STRING(rec);
                memcpy(dst, data + p, first);
                memcpy(dst + first, data, n - first);
            }
        }
        if (rec == NULL || PyList_Append(out, rec) < 0) {
            Py_XDECREF(rec);
            Py_DECREF(out);
            PyBuffer_Release(&view);
            return NULL;
        }
        Py_DECREF(rec);
        position = end;
        count++;
    }
    PyBuffer_Release(&view);
    PyObject *pos_obj = PyLong_FromUnsignedLongLong(position);
    if (pos_obj == NULL) {
        Py_DECREF(out);
        return NULL;
    }
    PyObject *res = PyTuple_Pack(2, out, pos_obj);
    Py_DECREF(out);
    Py_DECREF(pos_obj);
    return res;
}

static PyMethodDef methods[] = {
    {"read_records", (PyCFunction)(void (*)(void))read_records, METH_FASTCALL,
     "read_records(buf, header_size, capacity, max_record, position, head, max_records)"
     " -> (list[bytes], position): copy records out of a record ring's data area."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_ringread",
    "The record ring's batch read (see itsd.shm.record_ring).", -1, methods,
};

PyMODINIT_FUNC
PyInit__ringread(void)
{
    return PyModule_Create(&module);
}
