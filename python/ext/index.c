/* index.c - magiclens._core.Index (an opened index: search, embeddings,
 * sync / add / remove on the handle) and _core.update (build or update an
 * index folder), over include/magiclens_index.h.
 *
 * The C handle may be searched by several threads at once but updated by
 * one thread alone (nothing searching), so each Index holds a read-write
 * lock: searches and reads take it shared, updates exclusive.  The lock is
 * always taken with the GIL released, so a thread waiting for it never
 * blocks Python. */
#include "ext.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct mlpy_Index {
    PyObject_HEAD
    ml_index *ix;
    pthread_rwlock_t lock;
    int lock_ready;
} mlpy_Index;

static int need_open(const mlpy_Index *self) {
    if (self->ix) return 0;
    PyErr_SetString(mlpy_Error, "the index is closed");
    return -1;
}

static int need_model(PyObject *o) {
    if (PyObject_TypeCheck(o, &mlpy_ModelType) && ((mlpy_Model *)o)->m) return 0;
    PyErr_SetString(PyExc_TypeError, "model must be a loaded magiclens.Model");
    return -1;
}

/* ---- progress and Ctrl-C ---------------------------------------------------- */

int mlpy_progress_cb(void *ctx, long long done, long long total) {
    mlpy_progress *p = ctx;
    PyGILState_STATE g = PyGILState_Ensure();
    if (PyErr_CheckSignals() != 0) {
        p->raised = 1;
    } else if (p->callable && p->callable != Py_None) {
        PyObject *r = PyObject_CallFunction(p->callable, "LL", done, total);
        if (!r) p->raised = 1;
        Py_XDECREF(r);
    }
    PyGILState_Release(g);
    return p->raised;
}

/* ---- updates ---------------------------------------------------------------- */

/* The source paths as file-system bytes (a list of bytes objects, owned)
 * and the C array pointing into them. */
static PyObject *fs_list(PyObject *seq, const char ***out, int *n) {
    PyObject *fast = PySequence_Fast(seq, "sources must be a list of paths");
    if (!fast) return NULL;
    Py_ssize_t len = PySequence_Fast_GET_SIZE(fast);
    PyObject *keep = PyList_New(len);
    const char **arr = PyMem_Calloc((size_t)(len ? len : 1), sizeof *arr);
    if (!keep || !arr) {
        Py_DECREF(fast);
        Py_XDECREF(keep);
        PyMem_Free(arr);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < len; i++) {
        PyObject *b = NULL;
        if (!PyUnicode_FSConverter(PySequence_Fast_GET_ITEM(fast, i), &b)) {
            Py_DECREF(fast);
            Py_DECREF(keep);
            PyMem_Free(arr);
            return NULL;
        }
        PyList_SET_ITEM(keep, i, b);
        arr[i] = PyBytes_AS_STRING(b);
    }
    Py_DECREF(fast);
    *out = arr;
    *n = (int)len;
    return keep;
}

static PyObject *stats_dict(const ml_index_stats *st) {
    return Py_BuildValue("{s:L,s:L,s:L,s:L,s:L,s:L,s:L,s:L,s:d,s:O}", "found", st->found, "added",
                         st->added, "updated", st->updated, "touched", st->touched, "unchanged",
                         st->unchanged, "removed", st->removed, "failed", st->failed, "items",
                         st->items, "seconds", st->seconds, "cancelled",
                         st->cancelled ? Py_True : Py_False);
}

/* One update: on the folder `dir` (ix NULL) or on the handle `self`. */
static PyObject *run_update(mlpy_Index *self, const char *dir, int mode, PyObject *model,
                            PyObject *sources, int batch, PyObject *progress,
                            const char *model_name) {
    if (mode < ML_INDEX_SYNC || mode > ML_INDEX_REMOVE)
        return PyErr_Format(PyExc_ValueError, "unknown update mode %d", mode);
    if (mode != ML_INDEX_REMOVE && need_model(model)) return NULL;
    if (batch < 0 || batch > 256) return PyErr_Format(PyExc_ValueError, "batch %d: 1 to 256", batch);
    if (progress != Py_None && !PyCallable_Check(progress))
        return PyErr_Format(PyExc_TypeError, "progress must be callable");
    const char **src = NULL;
    int nsrc = 0;
    PyObject *keep = fs_list(sources, &src, &nsrc);
    if (!keep) return NULL;
    ml_model *m = mode != ML_INDEX_REMOVE ? ((mlpy_Model *)model)->m : NULL;
    mlpy_progress pr = {progress, 0};
    ml_index_update_opts uo = {.batch = batch, .max_errors = 20, .model_name = model_name,
                               .on_progress = mlpy_progress_cb, .progress_ctx = &pr};
    ml_index_stats st;
    ml_error err;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    if (!self) {
        rc = ml_index_update(dir, m, mode, src, nsrc, &uo, &st, &err);
    } else {
        pthread_rwlock_wrlock(&self->lock);
        rc = mode == ML_INDEX_SYNC  ? ml_index_sync(self->ix, m, src, nsrc, &uo, &st, &err)
             : mode == ML_INDEX_ADD ? ml_index_add(self->ix, m, src, nsrc, &uo, &st, &err)
                                    : ml_index_remove(self->ix, src, nsrc, &uo, &st, &err);
        pthread_rwlock_unlock(&self->lock);
    }
    Py_END_ALLOW_THREADS
    PyMem_Free(src);
    Py_DECREF(keep);
    if (pr.raised) return NULL; /* KeyboardInterrupt or the callback's exception */
    if (rc != 0) {
        char what[600];
        snprintf(what, sizeof what, "index %s", dir);
        return mlpy_raise(what, &err);
    }
    return stats_dict(&st);
}

/* update(dir, mode, model, sources, batch, progress, model_name) -> stats */
PyObject *mlpy_update(PyObject *unused, PyObject *args) {
    PyObject *dir = NULL, *model, *sources, *progress;
    int mode, batch;
    const char *model_name = NULL;
    if (!PyArg_ParseTuple(args, "O&iOOiOz", PyUnicode_FSConverter, &dir, &mode, &model, &sources,
                          &batch, &progress, &model_name))
        return NULL;
    PyObject *r = run_update(NULL, PyBytes_AS_STRING(dir), mode, model, sources, batch, progress,
                             model_name);
    Py_DECREF(dir);
    return r;
}

/* ---- the Index type ------------------------------------------------------------ */

static int Index_init(mlpy_Index *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"path", "store", "exact", NULL};
    PyObject *path = NULL;
    const char *store = NULL;
    int exact = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O&|zp", kwlist, PyUnicode_FSConverter, &path,
                                     &store, &exact))
        return -1;
    if (self->ix) {
        PyErr_SetString(PyExc_RuntimeError, "Index is already open");
        Py_DECREF(path);
        return -1;
    }
    if (!self->lock_ready) {
        pthread_rwlock_init(&self->lock, NULL);
        self->lock_ready = 1;
    }
    ml_index_open_opts oo = {store, exact};
    ml_error err;
    ml_index *ix;
    const char *p = PyBytes_AS_STRING(path);
    Py_BEGIN_ALLOW_THREADS
    ix = ml_index_open(p, &oo, &err);
    Py_END_ALLOW_THREADS
    Py_DECREF(path);
    if (!ix) {
        mlpy_raise(NULL, &err);
        return -1;
    }
    self->ix = ix;
    return 0;
}

static PyObject *Index_close(mlpy_Index *self, PyObject *unused) {
    if (self->ix) {
        ml_index *ix = self->ix;
        Py_BEGIN_ALLOW_THREADS
        pthread_rwlock_wrlock(&self->lock);
        ml_index_close(ix);
        self->ix = NULL;
        pthread_rwlock_unlock(&self->lock);
        Py_END_ALLOW_THREADS
    }
    Py_RETURN_NONE;
}

static void Index_dealloc(mlpy_Index *self) {
    ml_index_close(self->ix); /* no other reference: nothing else can use it */
    if (self->lock_ready) pthread_rwlock_destroy(&self->lock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Index_count(mlpy_Index *self, PyObject *unused) {
    if (need_open(self)) return NULL;
    size_t n;
    Py_BEGIN_ALLOW_THREADS
    pthread_rwlock_rdlock(&self->lock);
    n = self->ix ? ml_index_count(self->ix) : 0;
    pthread_rwlock_unlock(&self->lock);
    Py_END_ALLOW_THREADS
    return PyLong_FromSize_t(n);
}

static PyObject *Index_info(mlpy_Index *self, PyObject *unused) {
    if (need_open(self)) return NULL;
    PyObject *r;
    Py_BEGIN_ALLOW_THREADS
    pthread_rwlock_rdlock(&self->lock);
    Py_END_ALLOW_THREADS
    r = self->ix ? Py_BuildValue("{s:n,s:i,s:s,s:s}", "count", (Py_ssize_t)ml_index_count(self->ix),
                                 "dim", ml_index_dim(self->ix), "model_name",
                                 ml_index_model_name(self->ix) ? ml_index_model_name(self->ix) : "",
                                 "fingerprint", ml_index_fingerprint(self->ix))
                 : PyErr_Format(mlpy_Error, "the index is closed");
    pthread_rwlock_unlock(&self->lock);
    return r;
}

/* search(model, image, text, like, k, offset, min_score, prefix, truncate,
 * nprobe) -> [(id, score, path), ...] best first: `magiclens search`. */
static PyObject *Index_search(mlpy_Index *self, PyObject *args) {
    PyObject *model, *image, *min_obj, *result = NULL;
    const char *text = NULL, *prefix = NULL;
    long long like;
    int k, offset, truncate, nprobe;
    if (need_open(self) ||
        !PyArg_ParseTuple(args, "OOzLiiOzpi", &model, &image, &text, &like, &k, &offset, &min_obj,
                          &prefix, &truncate, &nprobe) ||
        need_model(model))
        return NULL;
    if (k < 1 || k > 100000 || offset < 0)
        return PyErr_Format(PyExc_ValueError, "k must be 1..100000 and offset >= 0");
    float min_score = -INFINITY;
    if (min_obj != Py_None) {
        double v = PyFloat_AsDouble(min_obj);
        if (v == -1.0 && PyErr_Occurred()) return NULL;
        min_score = (float)v;
    }
    mlpy_input in = {0};
    int have_image = image != Py_None;
    if (have_image && mlpy_input_take(image, 0, &in) != 0) return NULL;
    ml_index_hit *hits = PyMem_Calloc((size_t)k, sizeof *hits);
    char **paths = PyMem_Calloc((size_t)k, sizeof *paths);
    if (!hits || !paths) {
        PyErr_NoMemory();
        goto done;
    }
    ml_image img = {0};
    int owned = 0, rc = 0, n = 0, img_failed = 0;
    ml_error err;
    ml_index_query q = {NULL, text, like, truncate, k, offset, min_score, prefix, nprobe};
    Py_BEGIN_ALLOW_THREADS
    if (have_image && mlpy_input_image(&in, &img, &owned, &err) != 0) {
        rc = -1, img_failed = 1;
    } else {
        q.image = have_image ? &img : NULL;
        pthread_rwlock_rdlock(&self->lock);
        if (!self->ix) {
            rc = -1;
            snprintf(err.msg, sizeof err.msg, "the index is closed");
        } else if ((rc = ml_index_search(self->ix, ((mlpy_Model *)model)->m, &q, hits, &n, &err)) == 0) {
            /* the paths live in the handle: copy them before an update may run */
            for (int i = 0; i < n; i++) paths[i] = strdup(hits[i].path ? hits[i].path : "");
        }
        pthread_rwlock_unlock(&self->lock);
    }
    if (owned) ml_image_free(&img);
    Py_END_ALLOW_THREADS
    if (rc != 0) {
        if (img_failed) {
            char what[600];
            mlpy_input_describe(&in, 0, what, sizeof what);
            PyErr_Format(mlpy_Error, "query image%s: %s", what + 6, err.msg);
        } else {
            mlpy_raise("search", &err);
        }
        goto done;
    }
    if (!(result = PyList_New(n))) goto done;
    for (int i = 0; i < n; i++) {
        PyObject *t = paths[i] ? Py_BuildValue("(Lds)", (long long)hits[i].id,
                                               (double)hits[i].score, paths[i])
                               : PyErr_NoMemory();
        if (!t) {
            Py_CLEAR(result);
            break;
        }
        PyList_SET_ITEM(result, i, t);
    }
done:
    if (paths)
        for (int i = 0; i < k; i++) free(paths[i]);
    PyMem_Free(paths);
    PyMem_Free(hits);
    if (have_image) mlpy_input_release(&in);
    return result;
}

/* embeddings(ids int64 [n], emb float32 [n, dim]) fills both (one copy:
 * the shard logs interleave the records). */
static PyObject *Index_embeddings(mlpy_Index *self, PyObject *args) {
    PyObject *ids_obj, *emb_obj;
    if (need_open(self) || !PyArg_ParseTuple(args, "OO", &ids_obj, &emb_obj)) return NULL;
    Py_buffer idv, embv;
    int rc = -1;
    ml_error err;
    Py_BEGIN_ALLOW_THREADS
    pthread_rwlock_rdlock(&self->lock);
    Py_END_ALLOW_THREADS
    size_t n = self->ix ? ml_index_count(self->ix) : 0;
    int dim = self->ix ? ml_index_dim(self->ix) : 0;
    if (!self->ix) {
        PyErr_SetString(mlpy_Error, "the index is closed");
    } else if (mlpy_out_buffer(ids_obj, n * sizeof(int64_t), sizeof(int64_t), &idv) == 0) {
        if (mlpy_out_buffer(emb_obj, n * (size_t)dim * sizeof(float), sizeof(float), &embv) == 0) {
            Py_BEGIN_ALLOW_THREADS
            rc = ml_index_embeddings(self->ix, idv.buf, embv.buf, &err);
            Py_END_ALLOW_THREADS
            if (rc != 0) mlpy_raise("embeddings", &err);
            PyBuffer_Release(&embv);
        }
        PyBuffer_Release(&idv);
    }
    pthread_rwlock_unlock(&self->lock);
    if (rc != 0) return NULL;
    Py_RETURN_NONE;
}

/* update(name, mode, model, sources, batch, progress, model_name) -> stats: sync,
 * add or remove on this handle (reopened on the result). */
static PyObject *Index_update(mlpy_Index *self, PyObject *args) {
    PyObject *model, *sources, *progress;
    int mode, batch;
    const char *model_name = NULL, *name;
    if (need_open(self) || !PyArg_ParseTuple(args, "siOOiOz", &name, &mode, &model, &sources,
                                             &batch, &progress, &model_name))
        return NULL;
    return run_update(self, name, mode, model, sources, batch, progress, model_name);
}

static PyMethodDef Index_methods[] = {
    {"close", (PyCFunction)Index_close, METH_NOARGS, "close(): releases the index."},
    {"count", (PyCFunction)Index_count, METH_NOARGS, "count() -> int: live items."},
    {"info", (PyCFunction)Index_info, METH_NOARGS, "info() -> dict: count, dim, model."},
    {"search", (PyCFunction)Index_search, METH_VARARGS,
     "search(model, image, text, like, k, offset, min_score, prefix, truncate, nprobe)"},
    {"embeddings", (PyCFunction)Index_embeddings, METH_VARARGS, "embeddings(ids_out, emb_out)"},
    {"update", (PyCFunction)Index_update, METH_VARARGS,
     "update(name, mode, model, sources, batch, progress, model_name) -> stats"},
    {NULL, NULL, 0, NULL},
};

PyTypeObject mlpy_IndexType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "magiclens._core.Index",
    .tp_basicsize = sizeof(mlpy_Index),
    .tp_dealloc = (destructor)Index_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Index(path, store=None, exact=False): an opened index (see magiclens.Index).",
    .tp_methods = Index_methods,
    .tp_init = (initproc)Index_init,
    .tp_new = PyType_GenericNew,
};
