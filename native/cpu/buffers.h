/* Shared by taplab's C kernels: arrays travel through the buffer protocol (no numpy headers). */
#ifndef TAPLAB_BUFFERS_H
#define TAPLAB_BUFFERS_H
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* A C-contiguous view of obj holding at least need bytes; -1 with a Python error otherwise. */
static int get_buffer(PyObject *obj, Py_buffer *view, Py_ssize_t need, int writable, const char *what) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)) < 0) return -1;
    if (view->len < need) {
        PyErr_Format(PyExc_ValueError, "%s: buffer holds %zd bytes, need %zd", what, view->len, need);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

#endif
