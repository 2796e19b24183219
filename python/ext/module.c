/* module.c - the module magiclens._core: its exception, the library-wide
 * functions (threads, vocabulary lookup, CPU) and the helpers that the
 * Model and Index types share. */
#include "ext.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/threads.h"
#include "io/native.h"
#include "kernels/cpu.h"

#ifndef MLPY_SOURCE_ROOT
#define MLPY_SOURCE_ROOT ""
#endif

PyObject *mlpy_Error;

const char *mlpy_msg(const char *msg, char *buf, size_t cap) {
    const char *hit = strstr(msg, "--truncate");
    if (!hit) snprintf(buf, cap, "%s", msg);
    else snprintf(buf, cap, "%.*struncate=True%s", (int)(hit - msg), msg, hit + 10);
    return buf;
}

PyObject *mlpy_raise(const char *what, const ml_error *err) {
    char buf[700];
    mlpy_msg(err->msg, buf, sizeof buf);
    if (what && *what) PyErr_Format(mlpy_Error, "%s: %s", what, buf);
    else PyErr_SetString(mlpy_Error, buf);
    return NULL;
}

int mlpy_out_buffer(PyObject *o, size_t bytes, Py_ssize_t itemsize, Py_buffer *view) {
    if (PyObject_GetBuffer(o, view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) != 0) return -1;
    if ((size_t)view->len != bytes || view->itemsize != itemsize) {
        PyErr_Format(PyExc_ValueError, "output buffer holds %zd bytes, %zu needed", view->len,
                     bytes);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

const char **mlpy_utf8_list(PyObject *list, Py_ssize_t n, const char *what) {
    if (!PyList_Check(list) || PyList_GET_SIZE(list) != n) {
        PyErr_Format(PyExc_ValueError, "%s: expected a list of %zd entries", what, n);
        return NULL;
    }
    const char **out = PyMem_Calloc((size_t)(n ? n : 1), sizeof *out);
    if (!out) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *s = PyList_GET_ITEM(list, i);
        if (s == Py_None) continue;
        if (!PyUnicode_Check(s)) {
            PyErr_Format(PyExc_TypeError, "%s: item %zd is %.80s, not str", what, i,
                         Py_TYPE(s)->tp_name);
            PyMem_Free(out);
            return NULL;
        }
        if (!(out[i] = PyUnicode_AsUTF8(s))) {
            PyMem_Free(out);
            return NULL;
        }
    }
    return out;
}

static PyObject *set_threads(PyObject *self, PyObject *arg) {
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    ml_set_threads((int)n);
    Py_RETURN_NONE;
}

static PyObject *num_threads(PyObject *self, PyObject *unused) {
    return PyLong_FromLong(ml_num_threads());
}

/* ml_vocab_find: the lookup without a model (explicit, $MAGICLENS_VOCAB,
 * beside the program, the current folder); None when nothing is found. */
static PyObject *vocab_find(PyObject *self, PyObject *args) {
    PyObject *explicit_path = NULL;
    if (!PyArg_ParseTuple(args, "|O&", PyUnicode_FSConverter, &explicit_path)) return NULL;
    char buf[4096];
    int rc = ml_vocab_find(explicit_path ? PyBytes_AS_STRING(explicit_path) : NULL, buf, sizeof buf);
    Py_XDECREF(explicit_path);
    if (rc != 0) Py_RETURN_NONE;
    return PyUnicode_DecodeFSDefault(buf);
}

/* 1 when the file is in the native .mlens format (which may carry a vocabulary). */
static PyObject *is_native(PyObject *self, PyObject *args) {
    PyObject *path = NULL;
    if (!PyArg_ParseTuple(args, "O&", PyUnicode_FSConverter, &path)) return NULL;
    int r = ml_native_is_native(PyBytes_AS_STRING(path));
    Py_DECREF(path);
    return PyBool_FromLong(r == 1);
}

static PyObject *cpu_isa(PyObject *self, PyObject *unused) {
    return PyUnicode_FromString(ml_isa_name(ml_isa_active()));
}

static PyMethodDef module_methods[] = {
    {"set_threads", set_threads, METH_O, "set_threads(n): compute threads, process-wide (0 = all CPUs)."},
    {"num_threads", num_threads, METH_NOARGS, "num_threads() -> int: compute threads in use."},
    {"vocab_find", vocab_find, METH_VARARGS,
     "vocab_find(explicit=None) -> str | None: the library's vocabulary lookup without a model."},
    {"is_native", is_native, METH_VARARGS, "is_native(path) -> bool: a .mlens file?"},
    {"update", mlpy_update, METH_VARARGS,
     "update(dir, mode, model, sources, batch, progress, model_name) -> stats: build / sync / "
     "add / remove an index folder."},
    {"cpu_isa", cpu_isa, METH_NOARGS, "cpu_isa() -> str: the instruction set the kernels use."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "magiclens._core",
    "Compiled core of the magiclens package (use the magiclens module instead).", -1,
    module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__core(void) {
    if (PyType_Ready(&mlpy_ModelType) < 0 || PyType_Ready(&mlpy_IndexType) < 0) return NULL;
    PyObject *mod = PyModule_Create(&module_def);
    if (!mod) return NULL;
    mlpy_Error = PyErr_NewExceptionWithDoc(
        "magiclens.Error",
        "A failure of the MagicLens library; the message names the item and the reason.", NULL,
        NULL);
    if (!mlpy_Error || PyModule_AddObjectRef(mod, "Error", mlpy_Error) < 0 ||
        PyModule_AddObjectRef(mod, "Model", (PyObject *)&mlpy_ModelType) < 0 ||
        PyModule_AddObjectRef(mod, "Index", (PyObject *)&mlpy_IndexType) < 0 ||
        PyModule_AddStringConstant(mod, "SOURCE_ROOT", MLPY_SOURCE_ROOT) < 0 ||
        PyModule_AddStringConstant(mod, "VERSION", ML_VERSION) < 0) {
        Py_DECREF(mod);
        return NULL;
    }
    return mod;
}
