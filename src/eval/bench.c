/* bench.c - the task / gallery / query tables that loaders fill. */
#include "eval/bench.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

/* ---- key -> gallery position: open addressing, FNV-1a ------------------ */

typedef struct keymap {
    int32_t *slots; /* position + 1; 0 = empty */
    size_t cap;     /* power of two */
} keymap;

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ULL;
    return h;
}

static int32_t map_find(const ml_eval_task *t, const char *key) {
    const keymap *m = t->lookup;
    if (!m || !m->cap) return -1;
    for (size_t i = hash_str(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        int32_t v = m->slots[i];
        if (v == 0) return -1;
        if (strcmp(t->keys[v - 1], key) == 0) return v - 1;
    }
}

static void map_put(keymap *m, char **keys, int32_t pos) {
    size_t i = hash_str(keys[pos]) & (m->cap - 1);
    while (m->slots[i]) i = (i + 1) & (m->cap - 1);
    m->slots[i] = pos + 1;
}

/* Keeps the load factor under 1/2; rehashes every key on growth. */
static int map_reserve(ml_eval_task *t, ml_error *err) {
    keymap *m = t->lookup;
    if (!m && !(m = t->lookup = calloc(1, sizeof *m))) return ml_fail(err, "out of memory");
    if ((size_t)(t->ngallery + 1) * 2 <= m->cap) return 0;
    size_t cap = m->cap ? m->cap * 2 : 1024;
    int32_t *s = calloc(cap, sizeof *s);
    if (!s) return ml_fail(err, "out of memory");
    free(m->slots);
    m->slots = s, m->cap = cap;
    for (int32_t i = 0; i < t->ngallery; i++) map_put(m, t->keys, i);
    return 0;
}

/* ---- tables ------------------------------------------------------------ */

static int grow(void **p, int *cap, int need, size_t elem, ml_error *err) {
    if (need <= *cap) return 0;
    int c = *cap ? *cap * 2 : 64;
    while (c < need) c *= 2;
    void *q = realloc(*p, (size_t)c * elem);
    if (!q) return ml_fail(err, "out of memory");
    memset((char *)q + (size_t)*cap * elem, 0, (size_t)(c - *cap) * elem);
    *p = q, *cap = c;
    return 0;
}

ml_eval_task *ml_eval_add_task(ml_eval_bench *b, const char *name, const char *index_name,
                               ml_error *err) {
    ml_eval_task *t = realloc(b->tasks, (size_t)(b->ntasks + 1) * sizeof *t);
    if (!t) return ml_fail(err, "out of memory"), NULL;
    b->tasks = t;
    t = &b->tasks[b->ntasks];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    t->index_name = strdup(index_name);
    if (!t->name || !t->index_name) {
        free(t->name), free(t->index_name);
        return ml_fail(err, "out of memory"), NULL;
    }
    b->ntasks++;
    return t;
}

/* realpath when the file exists (what the indexer stores), else the path
 * as given so that a missing image can still be named in the report. */
static char *abs_path(const char *p) {
    char *r = realpath(p, NULL);
    return r ? r : strdup(p);
}

int32_t ml_eval_gallery_add(ml_eval_task *t, const char *key, const char *path, ml_error *err) {
    int32_t pos = ml_eval_gallery_find(t, key);
    if (pos >= 0) return pos;
    if (t->ngallery >= INT32_MAX - 1) return ml_fail(err, "gallery too large"), -1;
    if (map_reserve(t, err) != 0) return -1;
    if (grow((void **)&t->keys, &t->gcap, t->ngallery + 1, sizeof *t->keys, err) != 0) return -1;
    /* paths has the same capacity as keys (gcap) */
    char **np = realloc(t->paths, (size_t)t->gcap * sizeof *np);
    if (!np) return ml_fail(err, "out of memory"), -1;
    t->paths = np;
    char *k = strdup(key), *ap = abs_path(path);
    if (!k || !ap) {
        free(k), free(ap);
        return ml_fail(err, "out of memory"), -1;
    }
    pos = t->ngallery++;
    t->keys[pos] = k, t->paths[pos] = ap;
    map_put(t->lookup, t->keys, pos);
    return pos;
}

int32_t ml_eval_gallery_add_crop(ml_eval_task *t, const char *key, const char *crop_path,
                                 const char *src, const double box[4], ml_error *err) {
    int32_t pos = ml_eval_gallery_find(t, key);
    if (pos >= 0) return pos;
    if ((pos = ml_eval_gallery_add(t, key, crop_path, err)) < 0) return -1;
    /* crops has the capacity of keys (gcap), zero-filled as it grows */
    if (!t->crops || t->ccap < t->gcap) {
        ml_eval_crop *c = realloc(t->crops, (size_t)t->gcap * sizeof *c);
        if (!c) return ml_fail(err, "out of memory"), -1;
        memset(c + t->ccap, 0, (size_t)(t->gcap - t->ccap) * sizeof *c);
        t->crops = c, t->ccap = t->gcap;
    }
    if (!(t->crops[pos].src = strdup(src))) return ml_fail(err, "out of memory"), -1;
    memcpy(t->crops[pos].box, box, sizeof t->crops[pos].box);
    return pos;
}

int32_t ml_eval_gallery_find(const ml_eval_task *t, const char *key) { return map_find(t, key); }

ml_eval_query *ml_eval_add_query(ml_eval_task *t, const char *id, const char *image,
                                 const char *text, ml_error *err) {
    if (grow((void **)&t->q, &t->qcap, t->nq + 1, sizeof *t->q, err) != 0) return NULL;
    ml_eval_query *q = &t->q[t->nq];
    memset(q, 0, sizeof *q);
    q->ref = -1;
    q->id = strdup(id);
    q->text = strdup(text ? text : "");
    q->image = image ? abs_path(image) : NULL;
    if (!q->id || !q->text || (image && !q->image)) {
        free(q->id), free(q->text), free(q->image);
        return ml_fail(err, "out of memory"), NULL;
    }
    t->nq++;
    return q;
}

static int push_i32(int32_t **a, int *n, int32_t v, ml_error *err) {
    int32_t *p = realloc(*a, (size_t)(*n + 1) * sizeof *p);
    if (!p) return ml_fail(err, "out of memory");
    p[(*n)++] = v;
    *a = p;
    return 0;
}

int ml_eval_query_target(ml_eval_query *q, int32_t pos, ml_error *err) {
    return push_i32(&q->targets, &q->ntargets, pos, err);
}

int ml_eval_query_subset(ml_eval_query *q, int32_t pos, ml_error *err) {
    return push_i32(&q->subset, &q->nsubset, pos, err);
}

void ml_eval_query_problem(ml_eval_query *q, const char *fmt, ...) {
    if (q->problem) return; /* the first cause is the one worth reporting */
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    q->problem = strdup(buf);
}

void ml_eval_add_metric(ml_eval_task *t, int kind, int k) {
    if (t->nmetrics < ML_EVAL_MAX_METRICS) t->metrics[t->nmetrics++] = (ml_metric_spec){kind, k};
}

const char *ml_metric_name(const ml_metric_spec *m, char *buf, int n) {
    const char *p = m->kind == ML_METRIC_MAP ? "mAP" : m->kind == ML_METRIC_RECALL ? "R" : "Rsubset";
    snprintf(buf, (size_t)n, "%s@%d", p, m->k);
    return buf;
}

static void free_task(ml_eval_task *t) {
    for (int i = 0; i < t->ngallery; i++) free(t->keys[i]), free(t->paths[i]);
    for (int i = 0; t->crops && i < t->ccap; i++) free(t->crops[i].src);
    free(t->crops);
    for (int i = 0; i < t->nq; i++) {
        ml_eval_query *q = &t->q[i];
        free(q->id), free(q->image), free(q->text), free(q->targets), free(q->subset);
        free(q->problem);
    }
    keymap *m = t->lookup;
    if (m) free(m->slots);
    free(m);
    free(t->keys), free(t->paths), free(t->q), free(t->name), free(t->index_name);
}

void ml_eval_bench_free(ml_eval_bench *b) {
    if (!b) return;
    for (int i = 0; i < b->ntasks; i++) free_task(&b->tasks[i]);
    free(b->tasks), free(b->name), free(b->split), free(b->work);
    memset(b, 0, sizeof *b);
}
