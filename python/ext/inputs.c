/* inputs.c - the image arguments of the Python API: paths, encoded bytes
 * and decoded HxWx3 uint8 arrays, taken from Python objects with the GIL
 * held and turned into ml_image without it.  (PIL images and os.PathLike
 * are converted to these by the Python half.) */
#include "ext.h"

#include <stdio.h>
#include <string.h>

int mlpy_input_take(PyObject *o, Py_ssize_t i, mlpy_input *in) {
    memset(in, 0, sizeof *in);
    if (PyUnicode_Check(o)) {
        in->kind = MLPY_PATH;
        in->path = PyUnicode_EncodeFSDefault(o);
        return in->path ? 0 : -1;
    }
    if (!PyObject_CheckBuffer(o)) {
        PyErr_Format(PyExc_TypeError,
                     "item %zd: %.80s is not an image (give a path, encoded bytes, a PIL image "
                     "or an HxWx3 uint8 array)",
                     i, Py_TYPE(o)->tp_name);
        return -1;
    }
    if (PyObject_GetBuffer(o, &in->view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) != 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "item %zd: the array is not C-contiguous", i);
        return -1;
    }
    in->has_view = 1;
    Py_buffer *v = &in->view;
    const char *fmt = v->format ? v->format : "B";
    int bytes_like = v->itemsize == 1 && (!strcmp(fmt, "B") || !strcmp(fmt, "b") || !strcmp(fmt, "c"));
    if (v->ndim <= 1) {
        if (!bytes_like) {
            PyErr_Format(PyExc_TypeError, "item %zd: a one-dimensional buffer must hold the bytes "
                                          "of an encoded image", i);
            goto fail;
        }
        in->kind = MLPY_ENCODED;
        return 0;
    }
    if (v->ndim != 3 || v->shape[2] != 3 || v->itemsize != 1 || strcmp(fmt, "B") != 0) {
        PyErr_Format(PyExc_TypeError, "item %zd: an image array must be HxWx3 uint8 (RGB); got "
                                      "%d dimensions of format '%s'", i, v->ndim, fmt);
        goto fail;
    }
    if (v->shape[0] < 1 || v->shape[1] < 1 || v->shape[0] > (1 << 20) || v->shape[1] > (1 << 20)) {
        PyErr_Format(mlpy_Error, "item %zd: invalid image size %zdx%zd", i, v->shape[1],
                     v->shape[0]);
        goto fail;
    }
    in->kind = MLPY_PIXELS;
    in->height = (int)v->shape[0];
    in->width = (int)v->shape[1];
    return 0;
fail:
    PyBuffer_Release(v);
    in->has_view = 0;
    return -1;
}

void mlpy_input_release(mlpy_input *in) {
    Py_CLEAR(in->path);
    if (in->has_view) PyBuffer_Release(&in->view);
    in->has_view = 0;
}

int mlpy_input_image(const mlpy_input *in, ml_image *img, int *owned, ml_error *err) {
    *owned = 1;
    switch (in->kind) {
    case MLPY_PATH: return ml_image_load(PyBytes_AS_STRING(in->path), 0, img, err);
    case MLPY_ENCODED:
        return ml_image_decode(in->view.buf, (size_t)in->view.len, 0, img, err);
    case MLPY_PIXELS:
        *owned = 0;
        img->width = in->width;
        img->height = in->height;
        img->rgb = in->view.buf;
        return 0;
    }
    return -1;
}

void mlpy_input_describe(const mlpy_input *in, Py_ssize_t i, char *buf, size_t cap) {
    switch (in->kind) {
    case MLPY_PATH: snprintf(buf, cap, "item %zd (%s)", i, PyBytes_AS_STRING(in->path)); break;
    case MLPY_ENCODED: snprintf(buf, cap, "item %zd (bytes, %zd bytes)", i, in->view.len); break;
    case MLPY_PIXELS:
        snprintf(buf, cap, "item %zd (array %dx%dx3)", i, in->height, in->width);
        break;
    }
}

int mlpy_inputs_take(PyObject *seq, mlpy_inputs *out) {
    out->n = 0;
    out->items = NULL;
    PyObject *fast = PySequence_Fast(seq, "images must be a sequence");
    if (!fast) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    out->items = PyMem_Calloc((size_t)(n ? n : 1), sizeof *out->items);
    if (!out->items) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (mlpy_input_take(PySequence_Fast_GET_ITEM(fast, i), i, &out->items[i]) != 0) {
            Py_DECREF(fast);
            mlpy_inputs_release(out);
            return -1;
        }
        out->n = i + 1;
    }
    Py_DECREF(fast);
    return 0;
}

void mlpy_inputs_release(mlpy_inputs *ins) {
    for (Py_ssize_t i = 0; i < ins->n; i++) mlpy_input_release(&ins->items[i]);
    PyMem_Free(ins->items);
    ins->items = NULL;
    ins->n = 0;
}
