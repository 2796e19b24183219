/* ext.h - shared declarations of the CPython extension magiclens._core,
 * the compiled half of the Python package (python/magiclens/).  It wraps
 * libmagiclens with the CPython C API and the buffer protocol: inputs are
 * read from Python objects while the GIL is held, then every decode,
 * preprocess, forward pass, index update and search runs with the GIL
 * released.  Arrays are created by the Python half (numpy) and filled here
 * through their buffers, so the extension needs no numpy headers. */
#ifndef MLPY_EXT_H
#define MLPY_EXT_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "magiclens.h"

/* magiclens.Error: every failure of the library, with its message. */
extern PyObject *mlpy_Error;
extern PyTypeObject mlpy_ModelType, mlpy_IndexType;

/* A library message as Python users read it: the CLI's "--truncate" advice
 * becomes "truncate=True".  Returns buf. */
const char *mlpy_msg(const char *msg, char *buf, size_t cap);
/* Raises magiclens.Error with `err`'s message (prefixed when `what` is set). */
PyObject *mlpy_raise(const char *what, const ml_error *err);

typedef struct mlpy_Model {
    PyObject_HEAD
    ml_model *m;
} mlpy_Model;

/* ---- image arguments (inputs.c) ---------------------------------------- */

typedef enum { MLPY_PATH, MLPY_ENCODED, MLPY_PIXELS } mlpy_kind;

/* One image argument: taken from its Python object with the GIL held
 * (mlpy_input_take), read without it (mlpy_input_image). */
typedef struct mlpy_input {
    mlpy_kind kind;
    PyObject *path;  /* MLPY_PATH: bytes in the file-system encoding (owned) */
    Py_buffer view;  /* MLPY_ENCODED / MLPY_PIXELS: held until released */
    int has_view;
    int width, height; /* MLPY_PIXELS */
} mlpy_input;

/* str paths, bytes-like encoded files, and C-contiguous uint8 HxWx3
 * buffers (numpy arrays); anything else raises TypeError naming item i. */
int mlpy_input_take(PyObject *o, Py_ssize_t i, mlpy_input *in);
void mlpy_input_release(mlpy_input *in);
/* The decoded RGB image (no copy for pixels: img->rgb then points into the
 * buffer and *owned is 0).  No GIL needed. */
int mlpy_input_image(const mlpy_input *in, ml_image *img, int *owned, ml_error *err);
/* "item 3 (cat.png)", "item 3 (bytes, 1234 bytes)", "item 3 (array 64x48x3)". */
void mlpy_input_describe(const mlpy_input *in, Py_ssize_t i, char *buf, size_t cap);

/* A list of image arguments, all taken or none. */
typedef struct mlpy_inputs {
    Py_ssize_t n;
    mlpy_input *items;
} mlpy_inputs;
int mlpy_inputs_take(PyObject *seq, mlpy_inputs *out);
void mlpy_inputs_release(mlpy_inputs *ins);

/* ---- helpers (module.c) -------------------------------------------------- */

/* A writable C-contiguous buffer of exactly `bytes` bytes with item size
 * `itemsize`; raises ValueError otherwise. */
int mlpy_out_buffer(PyObject *o, size_t bytes, Py_ssize_t itemsize, Py_buffer *view);
/* UTF-8 strings of a list of str/None (NULL entries for None), owned by the
 * list: keep it alive.  Returns a malloc'd array or NULL (exception set). */
const char **mlpy_utf8_list(PyObject *list, Py_ssize_t n, const char *what);

/* ---- update progress (index.c) ------------------------------------------- */

/* Calls the Python callable `progress` (may be None) after each committed
 * batch and checks for signals (Ctrl-C): either raising stops the update
 * cleanly; the exception is kept and re-raised by the caller. */
typedef struct mlpy_progress {
    PyObject *callable;
    int raised;
} mlpy_progress;
int mlpy_progress_cb(void *ctx, long long done, long long total);
/* _core.update(dir, mode, model, sources, batch, progress, model_name). */
PyObject *mlpy_update(PyObject *unused, PyObject *args);

#endif
