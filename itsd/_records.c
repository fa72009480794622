/*
 * itsd._records: the publisher's hot decoding loop of itsd.records in C.
 *
 * unpack_events(cls, records, topics, kinds) decodes a list of packed event records
 * (u8 topic | u8 event type | u16 key_len | key (utf-8) | payload; see itsd.records)
 * into instances of cls, a tuple subclass of four fields (EventRecord): topics[topic],
 * the key as str, the payload as bytes, kinds[event type]. It raises ValueError at the
 * first record that is not an event (too short, a topic or type out of range, a key
 * that runs past the end or is not utf-8), exactly where EventRecord.unpack_all's
 * Python loop would.
 *
 * This module must never know more of the layout than itsd.records documents, never
 * keep a reference to its arguments past one call, and never import anything.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#define HEADER_SIZE 4

static PyObject *
unpack_events(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "unpack_events expects 4 arguments, got %zd", nargs);
        return NULL;
    }
    PyObject *cls = args[0], *records = args[1], *topics = args[2], *kinds = args[3];
    if (!PyType_Check(cls) || !PyType_IsSubtype((PyTypeObject *)cls, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "unpack_events: cls must be a tuple subclass");
        return NULL;
    }
    if (!PyList_Check(records) || !PyTuple_Check(topics) || !PyTuple_Check(kinds)) {
        PyErr_SetString(PyExc_TypeError,
                        "unpack_events: records must be a list, topics and kinds tuples");
        return NULL;
    }
    PyTypeObject *type = (PyTypeObject *)cls;
    Py_ssize_t n_topics = PyTuple_GET_SIZE(topics), n_kinds = PyTuple_GET_SIZE(kinds);
    Py_ssize_t count = PyList_GET_SIZE(records);
    PyObject *out = PyList_New(count);
    if (out == NULL) return NULL;
    for (Py_ssize_t i = 0; i < count; i++) {
        /* An allocation can run a collection, and a finaliser any code: re-check. */
        if (i >= PyList_GET_SIZE(records)) {
            PyErr_SetString(PyExc_RuntimeError, "unpack_events: the list shrank meanwhile");
            goto fail;
        }
        PyObject *rec = PyList_GET_ITEM(records, i);
        Py_buffer view;
        if (PyObject_GetBuffer(rec, &view, PyBUF_SIMPLE) < 0) {
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError, "malformed event record: %.100s is not bytes",
                         Py_TYPE(rec)->tp_name);
            goto fail;
        }
        const unsigned char *p = (const unsigned char *)view.buf;
        Py_ssize_t size = view.len;
        if (size < HEADER_SIZE) {
            PyBuffer_Release(&view);
            PyErr_Format(PyExc_ValueError, "malformed event record: %zd bytes", size);
            goto fail;
        }
        unsigned topic = p[0], kind = p[1];
        Py_ssize_t klen = (Py_ssize_t)(p[2] | (p[3] << 8));
        Py_ssize_t end = HEADER_SIZE + klen;
        if ((Py_ssize_t)topic >= n_topics || (Py_ssize_t)kind >= n_kinds) {
            PyBuffer_Release(&view);
            PyErr_Format(PyExc_ValueError, "malformed event record: topic %u, type %u", topic,
                         kind);
            goto fail;
        }
        if (end > size) {
            PyBuffer_Release(&view);
            PyErr_SetString(PyExc_ValueError, "event record key runs past its end");
            goto fail;
        }
        PyObject *key = PyUnicode_DecodeUTF8((const char *)p + HEADER_SIZE, klen, NULL);
        if (key == NULL) {
            PyBuffer_Release(&view);
            PyObject *et, *ev, *tb;
            PyErr_Fetch(&et, &ev, &tb);
            PyErr_NormalizeException(&et, &ev, &tb);
            PyErr_Format(PyExc_ValueError, "malformed event record: %S", ev ? ev : Py_None);
            Py_XDECREF(et);
            Py_XDECREF(ev);
            Py_XDECREF(tb);
            goto fail;
        }
        PyObject *payload = PyBytes_FromStringAndSize((const char *)p + end, size - end);
        PyBuffer_Release(&view);
        if (payload == NULL) {
            Py_DECREF(key);
            goto fail;
        }
        PyObject *ev = type->tp_alloc(type, 4);
        if (ev == NULL) {
            Py_DECREF(key);
            Py_DECREF(payload);
            goto fail;
        }
        PyObject *t = PyTuple_GET_ITEM(topics, topic), *k = PyTuple_GET_ITEM(kinds, kind);
        Py_INCREF(t);
        Py_INCREF(k);
        PyTuple_SET_ITEM(ev, 0, t);
        PyTuple_SET_ITEM(ev, 1, key);
        PyTuple_SET_ITEM(ev, 2, payload);
        PyTuple_SET_ITEM(ev, 3, k);
        PyList_SET_ITEM(out, i, ev);
    }
    return out;
fail:
    Py_DECREF(out); /* items not set yet are NULL: list dealloc skips them */
    return NULL;
}

static PyMethodDef methods[] = {
    {"unpack_events", (PyCFunction)(void (*)(void))unpack_events, METH_FASTCALL,
     "unpack_events(cls, records, topics, kinds) -> list: decode packed event records."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_records",
    "The event records' decoding loop (see itsd.records).", -1, methods,
};

PyMODINIT_FUNC
PyInit__records(void)
{
    return PyModule_Create(&module);
}
