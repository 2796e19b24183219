/* model.c - magiclens._core.Model: a loaded model and its embeddings.
 *
 * embed() reproduces `magiclens embed` exactly: items are taken in batches
 * of `batch` positions, the images that decode go through
 * ml_embed_pixels_batch together (as the CLI's loader hands them over), so
 * the rows are bit-identical to the CLI's.  The GIL is released for each
 * batch and re-taken between batches to check for Ctrl-C. */
#include "ext.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/threads.h"
#include "kernels/cpu.h"
#include "kernels/ops.h"

enum { MODE_MAGICLENS = 0, MODE_CLIP_IMAGE = 1 };

static int parse_precision(const char *s) {
    if (!strcmp(s, "auto")) return ML_PRECISION_AUTO;
    if (!strcmp(s, "fp32")) return ML_PRECISION_FP32;
    if (!strcmp(s, "bf16")) return ML_PRECISION_BF16;
    if (!strcmp(s, "int8")) return ML_PRECISION_INT8;
    return -2;
}

static int Model_init(mlpy_Model *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"path", "vocab", "precision", NULL};
    PyObject *path = NULL, *vocab_obj = Py_None, *vocab = NULL;
    const char *precision = "auto";
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O&|Os", kwlist, PyUnicode_FSConverter, &path,
                                     &vocab_obj, &precision))
        return -1;
    int prec = parse_precision(precision);
    if (prec == -2) {
        PyErr_Format(PyExc_ValueError, "precision %s: use auto, fp32, bf16 or int8", precision);
        Py_DECREF(path);
        return -1;
    }
    if (vocab_obj != Py_None && !PyUnicode_FSConverter(vocab_obj, &vocab)) {
        Py_DECREF(path);
        return -1;
    }
    if (self->m) { /* another thread may be using it: never swap it */
        PyErr_SetString(PyExc_RuntimeError, "Model is already loaded");
        Py_DECREF(path);
        Py_XDECREF(vocab);
        return -1;
    }
    ml_load_options lo = {prec};
    ml_error err;
    ml_model *m;
    const char *p = PyBytes_AS_STRING(path), *v = vocab ? PyBytes_AS_STRING(vocab) : NULL;
    Py_BEGIN_ALLOW_THREADS
    m = ml_model_load_opts(p, v, &lo, &err);
    Py_END_ALLOW_THREADS
    Py_DECREF(path);
    Py_XDECREF(vocab);
    if (!m) {
        mlpy_raise(NULL, &err);
        return -1;
    }
    self->m = m;
    return 0;
}

static void Model_dealloc(mlpy_Model *self) {
    ml_model_free(self->m);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int need_model(const mlpy_Model *self) {
    if (self->m) return 0;
    PyErr_SetString(mlpy_Error, "the model is not loaded");
    return -1;
}

static PyObject *Model_info(mlpy_Model *self, PyObject *unused) {
    if (need_model(self)) return NULL;
    const ml_config *c = ml_model_config(self->m);
    char fp[33];
    ml_model_fingerprint(self->m, fp);
    return Py_BuildValue(
        "{s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:s,s:s,s:i,s:O,s:s}",
        "embed_dim", c->embed_dim, "image_size", c->image_size, "patch_size", c->patch_size,
        "vision_width", c->vision_width, "vision_layers", c->vision_layers, "vision_heads",
        c->vision_heads, "text_width", c->text_width, "text_layers", c->text_layers, "text_heads",
        c->text_heads, "vocab_size", c->vocab_size, "context_length", c->context_length,
        "fusion_layers", c->fusion_layers, "fusion_heads", c->fusion_heads, "fusion_ff",
        c->fusion_ff, "pool_heads", c->pool_heads, "pool_head_dim", c->pool_head_dim, "precision",
        ml_precision_choice_name(ml_model_precision(self->m)), "isa",
        ml_isa_name(ml_isa_active()), "threads", ml_num_threads(), "has_vocab",
        ml_model_has_vocab(self->m) ? Py_True : Py_False, "fingerprint", fp);
}

/* ---- embeddings of images ------------------------------------------------ */

/* One call of embed / embed_image: its inputs, output and per-item errors. */
typedef struct embed_run {
    ml_model *m;
    const mlpy_inputs *ins;
    const char **texts; /* NULL or n entries (NULL = empty instruction) */
    int truncate, mode, stop_at_error;
    int D;
    size_t px;          /* floats per preprocessed image */
    float *out;         /* n * D */
    char **errors;      /* n messages (malloc'd), NULL where fine */
    /* the current batch */
    int first, count;
    float *pix;         /* batch * px */
    float *tmp;         /* batch * D */
    int *ok;            /* batch */
} embed_run;

static char *format_error(const mlpy_input *in, Py_ssize_t i, const char *msg) {
    char what[600], *s = malloc(1200);
    if (!s) return NULL;
    if (in->kind == MLPY_PATH) snprintf(what, sizeof what, "item %zd", i); /* msg names the path */
    else mlpy_input_describe(in, i, what, sizeof what);
    snprintf(s, 1200, "%s: %s", what, msg);
    return s;
}

static void set_error(embed_run *r, Py_ssize_t i, const char *raw, int with_input) {
    char msg[700];
    if (r->errors[i]) return;
    mlpy_msg(raw, msg, sizeof msg);
    if (with_input) {
        r->errors[i] = format_error(&r->ins->items[i], i, msg);
    } else {
        char what[600];
        mlpy_input_describe(&r->ins->items[i], i, what, sizeof what);
        size_t n = strlen(what) + strlen(msg) + 3;
        if ((r->errors[i] = malloc(n))) snprintf(r->errors[i], n, "%s: %s", what, msg);
    }
}

/* Decodes and preprocesses the batch's images, one task per image. */
static void prep_tasks(void *ctx, int begin, int end) {
    embed_run *r = ctx;
    for (int j = begin; j < end; j++) {
        Py_ssize_t i = r->first + j;
        ml_image img;
        ml_error e;
        int owned = 0;
        r->ok[j] = 0;
        if (mlpy_input_image(&r->ins->items[i], &img, &owned, &e) == 0) {
            int rc = ml_model_preprocess(r->m, &img, r->pix + (size_t)j * r->px, &e);
            if (owned) ml_image_free(&img);
            if (rc == 0) {
                r->ok[j] = 1;
                continue;
            }
        }
        set_error(r, i, e.msg, 1);
    }
}

static void nan_row(float *row, int D) {
    for (int d = 0; d < D; d++) row[d] = NAN;
}

/* One batch without the GIL: items [first, first+count).  Returns 1 when
 * the run must stop (an item failed and stop_at_error). */
static int embed_batch(embed_run *r) {
    const float *px[256];
    const char *texts[256];
    int map[256], ok[256], k = 0, D = r->D, stop = 0;
    ml_error err;
    ml_parallel_for(r->count, 1, prep_tasks, r);
    for (int j = 0; j < r->count; j++) {
        Py_ssize_t i = r->first + j;
        nan_row(r->out + (size_t)i * D, D);
        if (!r->ok[j]) {
            stop |= r->stop_at_error;
            continue;
        }
        px[k] = r->pix + (size_t)j * r->px;
        texts[k] = r->texts ? r->texts[i] : NULL;
        map[k++] = j;
    }
    if (stop || !k) return stop;
    if (r->mode == MODE_CLIP_IMAGE) {
        if (ml_embed_clip_image(r->m, k, px, r->tmp, &err) != 0) {
            for (int g = 0; g < k; g++) set_error(r, r->first + map[g], err.msg, 0);
            return r->stop_at_error;
        }
        for (int g = 0; g < k; g++) {
            ml_l2_normalize(r->tmp + (size_t)g * D, D);
            memcpy(r->out + (size_t)(r->first + map[g]) * D, r->tmp + (size_t)g * D,
                   sizeof(float) * (size_t)D);
        }
        return 0;
    }
    /* Every decoded image joins the batch, whatever its instruction, as in
     * the CLI: the vision tower sees the same rows, so the results match
     * bit for bit. */
    if (ml_embed_pixels_batch(r->m, k, px, texts, r->truncate, r->tmp, NULL, ok, &err) != 0) {
        /* Each failed item's own reason (the batch reports the first one). */
        for (int g = 0; g < k; g++) {
            if (ok[g]) continue;
            ml_error e1;
            int ok1;
            if (ml_embed_pixels_batch(r->m, 1, &px[g], &texts[g], r->truncate,
                                      r->tmp + (size_t)g * D, NULL, &ok1, &e1) != 0)
                set_error(r, r->first + map[g], e1.msg, 0);
            else
                ok[g] = 1;
        }
    }
    for (int g = 0; g < k; g++) {
        if (ok[g])
            memcpy(r->out + (size_t)(r->first + map[g]) * D, r->tmp + (size_t)g * D,
                   sizeof(float) * (size_t)D);
        else
            stop |= r->stop_at_error;
    }
    return stop;
}

/* In raise mode every instruction is checked (tokenized) before any image
 * is touched, so an over-long one fails at once. */
static void precheck_texts(embed_run *r) {
    int32_t ids[1024];
    if (!r->texts || ml_model_config(r->m)->context_length > 1024) return;
    for (Py_ssize_t i = 0; i < r->ins->n; i++) {
        ml_error e;
        if (r->texts[i] && *r->texts[i] &&
            ml_model_tokenize(r->m, r->texts[i], r->truncate, ids, &e) != 0) {
            set_error(r, i, e.msg, 0);
            return;
        }
    }
}

static void free_run(embed_run *r) {
    if (r->errors)
        for (Py_ssize_t i = 0; i < r->ins->n; i++) free(r->errors[i]);
    free(r->errors), free(r->pix), free(r->tmp), free(r->ok);
}

/* embed / embed_image: (images, texts, truncate, batch, out, on_error_nan)
 * -> [(index, reason), ...] of the failed items (NaN rows); without
 * on_error_nan the first failure raises magiclens.Error instead. */
static PyObject *run_embed(mlpy_Model *self, PyObject *args, int mode) {
    PyObject *images, *texts_obj, *out_obj, *result = NULL;
    int truncate, batch, nan_mode;
    if (need_model(self) ||
        !PyArg_ParseTuple(args, "OOpiOp", &images, &texts_obj, &truncate, &batch, &out_obj,
                          &nan_mode))
        return NULL;
    if (batch < 1 || batch > 256) {
        PyErr_Format(PyExc_ValueError, "batch %d: must be between 1 and 256", batch);
        return NULL;
    }
    mlpy_inputs ins;
    if (mlpy_inputs_take(images, &ins) != 0) return NULL;
    embed_run r = {0};
    r.m = self->m, r.ins = &ins, r.truncate = truncate, r.mode = mode, r.stop_at_error = !nan_mode;
    const ml_config *c = ml_model_config(self->m);
    r.D = c->embed_dim;
    r.px = (size_t)c->image_size * c->image_size * 3;
    Py_buffer outv = {0};
    int have_out = 0;
    if (texts_obj != Py_None && !(r.texts = mlpy_utf8_list(texts_obj, ins.n, "texts"))) goto done;
    if (mlpy_out_buffer(out_obj, (size_t)ins.n * r.D * sizeof(float), sizeof(float), &outv) != 0)
        goto done;
    have_out = 1;
    r.out = outv.buf;
    size_t pix_bytes = ((size_t)batch * r.px * sizeof(float) + 63) / 64 * 64;
    r.errors = calloc((size_t)(ins.n ? ins.n : 1), sizeof *r.errors);
    r.pix = aligned_alloc(64, pix_bytes);
    r.tmp = aligned_alloc(64, ((size_t)batch * r.D * sizeof(float) + 63) / 64 * 64);
    r.ok = calloc((size_t)batch, sizeof *r.ok);
    if (!r.errors || !r.pix || !r.tmp || !r.ok) {
        PyErr_NoMemory();
        goto done;
    }
    int stop = 0;
    if (r.stop_at_error && mode == MODE_MAGICLENS) {
        Py_BEGIN_ALLOW_THREADS
        precheck_texts(&r);
        Py_END_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < ins.n && !stop; i++) stop = r.errors[i] != NULL;
    }
    for (Py_ssize_t first = 0; first < ins.n && !stop; first += batch) {
        r.first = (int)first;
        r.count = (int)(ins.n - first < batch ? ins.n - first : batch);
        Py_BEGIN_ALLOW_THREADS
        stop = embed_batch(&r);
        Py_END_ALLOW_THREADS
        if (PyErr_CheckSignals() != 0) goto done; /* Ctrl-C between batches */
    }
    if (!(result = PyList_New(0))) goto done;
    for (Py_ssize_t i = 0; i < ins.n; i++) {
        if (!r.errors[i]) continue;
        if (r.stop_at_error) {
            PyErr_SetString(mlpy_Error, r.errors[i]);
            Py_CLEAR(result);
            break;
        }
        PyObject *t = Py_BuildValue("(ns)", i, r.errors[i]);
        if (!t || PyList_Append(result, t) != 0) {
            Py_XDECREF(t);
            Py_CLEAR(result);
            break;
        }
        Py_DECREF(t);
    }
done:
    free_run(&r);
    if (have_out) PyBuffer_Release(&outv);
    PyMem_Free((void *)r.texts);
    mlpy_inputs_release(&ins);
    return result;
}

static PyObject *Model_embed(mlpy_Model *self, PyObject *args) {
    return run_embed(self, args, MODE_MAGICLENS);
}

static PyObject *Model_embed_image(mlpy_Model *self, PyObject *args) {
    return run_embed(self, args, MODE_CLIP_IMAGE);
}

/* ---- text ------------------------------------------------------------------ */

/* (texts, truncate, out, on_error_nan) -> [(index, reason), ...]: the CLIP
 * text embeddings, L2-normalised. */
static PyObject *Model_embed_text(mlpy_Model *self, PyObject *args) {
    PyObject *texts_obj, *out_obj, *result = NULL;
    int truncate, nan_mode;
    if (need_model(self) || !PyArg_ParseTuple(args, "O!pOp", &PyList_Type, &texts_obj, &truncate,
                                              &out_obj, &nan_mode))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(texts_obj);
    int D = ml_model_config(self->m)->embed_dim;
    const char **texts = mlpy_utf8_list(texts_obj, n, "texts");
    if (!texts) return NULL;
    Py_buffer outv;
    if (mlpy_out_buffer(out_obj, (size_t)n * D * sizeof(float), sizeof(float), &outv) != 0) {
        PyMem_Free((void *)texts);
        return NULL;
    }
    float *out = outv.buf;
    result = PyList_New(0);
    for (Py_ssize_t i = 0; result && i < n; i++) {
        ml_error e;
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = ml_embed_clip_text(self->m, texts[i], truncate, out + (size_t)i * D, &e);
        Py_END_ALLOW_THREADS
        if (rc != 0) {
            nan_row(out + (size_t)i * D, D);
            char msg[700];
            mlpy_msg(e.msg, msg, sizeof msg);
            if (!nan_mode) {
                PyErr_Format(mlpy_Error, "item %zd: %s", i, msg);
                Py_CLEAR(result);
                break;
            }
            PyObject *t = Py_BuildValue("(ns)", i, msg);
            if (!t || PyList_Append(result, t) != 0) Py_CLEAR(result);
            Py_XDECREF(t);
        }
        if (result && PyErr_CheckSignals() != 0) Py_CLEAR(result);
    }
    PyBuffer_Release(&outv);
    PyMem_Free((void *)texts);
    return result;
}

/* (texts, truncate, out int32 [n, context]) -> None. */
static PyObject *Model_tokenize(mlpy_Model *self, PyObject *args) {
    PyObject *texts_obj, *out_obj;
    int truncate;
    if (need_model(self) ||
        !PyArg_ParseTuple(args, "O!pO", &PyList_Type, &texts_obj, &truncate, &out_obj))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(texts_obj);
    int L = ml_model_config(self->m)->context_length;
    const char **texts = mlpy_utf8_list(texts_obj, n, "texts");
    if (!texts) return NULL;
    Py_buffer outv;
    if (mlpy_out_buffer(out_obj, (size_t)n * L * sizeof(int32_t), sizeof(int32_t), &outv) != 0) {
        PyMem_Free((void *)texts);
        return NULL;
    }
    int32_t *ids = outv.buf;
    Py_ssize_t bad = -1;
    ml_error e;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n && bad < 0; i++)
        if (ml_model_tokenize(self->m, texts[i] ? texts[i] : "", truncate, ids + (size_t)i * L,
                              &e) != 0)
            bad = i;
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&outv);
    PyMem_Free((void *)texts);
    char msg[700];
    if (bad >= 0) return PyErr_Format(mlpy_Error, "item %zd: %s", bad, mlpy_msg(e.msg, msg, sizeof msg));
    Py_RETURN_NONE;
}

static PyObject *Model_dim(mlpy_Model *self, void *unused) {
    if (need_model(self)) return NULL;
    return PyLong_FromLong(ml_model_config(self->m)->embed_dim);
}

static PyObject *Model_context_length(mlpy_Model *self, void *unused) {
    if (need_model(self)) return NULL;
    return PyLong_FromLong(ml_model_config(self->m)->context_length);
}

static PyMethodDef Model_methods[] = {
    {"info", (PyCFunction)Model_info, METH_NOARGS, "info() -> dict: sizes, precision, isa."},
    {"embed", (PyCFunction)Model_embed, METH_VARARGS,
     "embed(images, texts, truncate, batch, out, on_error_nan) -> failures"},
    {"embed_image", (PyCFunction)Model_embed_image, METH_VARARGS,
     "embed_image(images, texts, truncate, batch, out, on_error_nan) -> failures"},
    {"embed_text", (PyCFunction)Model_embed_text, METH_VARARGS,
     "embed_text(texts, truncate, out, on_error_nan) -> failures"},
    {"tokenize", (PyCFunction)Model_tokenize, METH_VARARGS, "tokenize(texts, truncate, out)"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Model_getset[] = {
    {"dim", (getter)Model_dim, NULL, "embedding size", NULL},
    {"context_length", (getter)Model_context_length, NULL, "token ids per text", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject mlpy_ModelType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "magiclens._core.Model",
    .tp_basicsize = sizeof(mlpy_Model),
    .tp_dealloc = (destructor)Model_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Model(path, vocab=None, precision='auto'): the compiled model (see magiclens.Model).",
    .tp_methods = Model_methods,
    .tp_getset = Model_getset,
    .tp_init = (initproc)Model_init,
    .tp_new = PyType_GenericNew,
};
