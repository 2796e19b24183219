/* embed_file.c - `magiclens embed --input`: a JSONL file of items (image,
 * optional instruction) to an .npy matrix or a .jsonl of embeddings,
 * batched on the background loader (src/model/loader.h).  Items that fail
 * are reported on stderr with their id and the reason, and written as NaN
 * rows (.npy) or "error" (.jsonl); the others are unaffected. */
#include "model/embed_file.h"

#include <errno.h>
#include <jansson.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/progress.h"
#include "io/npy.h"
#include "model/loader.h"

typedef struct item {
    json_t *id;      /* owned reference */
    char *image;     /* resolved path, owned */
    char *text;      /* owned, may be NULL */
    char *error;     /* owned, set when the item failed */
} item;

static char *resolve_path(const char *base_dir, const char *p) {
    if (p[0] == '/' || !base_dir) return strdup(p);
    size_t n = strlen(base_dir) + strlen(p) + 2;
    char *r = malloc(n);
    if (r) snprintf(r, n, "%s/%s", base_dir, p);
    return r;
}

static char *item_error(const char *fmt, const char *a) {
    char buf[600];
    snprintf(buf, sizeof buf, fmt, a);
    return strdup(buf);
}

/* Parses one JSONL line into `it`; problems become it->error, not failures. */
static void parse_item(const char *line, long lineno, const char *base_dir, item *it) {
    memset(it, 0, sizeof *it);
    json_error_t je;
    json_t *o = json_loads(line, 0, &je);
    char where[64];
    snprintf(where, sizeof where, "line %ld", lineno);
    if (!o || !json_is_object(o)) {
        it->id = json_string(where);
        it->error = item_error("not a JSON object (%s)", o ? "wrong type" : je.text);
        json_decref(o);
        return;
    }
    json_t *id = json_object_get(o, "id");
    it->id = id ? json_incref(id) : json_string(where);
    json_t *img = json_object_get(o, "image"), *txt = json_object_get(o, "text");
    if (!json_is_string(img)) it->error = strdup("missing \"image\" (a path string)");
    else it->image = resolve_path(base_dir, json_string_value(img));
    if (txt && !json_is_null(txt)) {
        if (!json_is_string(txt)) {
            free(it->error);
            it->error = strdup("\"text\" is not a string");
        } else {
            it->text = strdup(json_string_value(txt));
        }
    }
    json_decref(o);
}

static void free_items(item *items, long n) {
    for (long i = 0; i < n; i++) {
        json_decref(items[i].id);
        free(items[i].image);
        free(items[i].text);
        free(items[i].error);
    }
    free(items);
}

static item *read_items(const char *path, long *count) {
    FILE *f = strcmp(path, "-") ? fopen(path, "r") : stdin;
    if (!f) {
        fprintf(stderr, "magiclens: %s: cannot open: %s\n", path, strerror(errno));
        return NULL;
    }
    char *dup = strdup(path), *base_dir = strcmp(path, "-") ? dirname(dup) : NULL;
    item *items = NULL;
    long n = 0, cap = 0, lineno = 0;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t len;
    while ((len = getline(&line, &lcap, f)) != -1) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (len == 0) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 256;
            item *grown = realloc(items, sizeof *items * (size_t)cap);
            if (!grown) {
                fprintf(stderr, "magiclens: out of memory reading %s\n", path);
                free_items(items, n);
                items = NULL;
                n = 0;
                break;
            }
            items = grown;
        }
        parse_item(line, lineno, base_dir, &items[n++]);
    }
    free(line);
    free(dup);
    if (f != stdin) fclose(f);
    *count = n;
    return items ? items : calloc(1, sizeof(item));
}

/* Runs the model on one loaded batch; failed items keep NaN rows. */
static void embed_loaded(ml_model *m, item *items, const ml_loader_batch *b, int truncate,
                         float *out) {
    int D = ml_model_config(m)->embed_dim, k = 0;
    const float *px[4096];
    const char *texts[4096];
    int map[4096], ok[4096];
    for (int i = 0; i < b->count; i++) {
        item *it = &items[b->first + i];
        for (int d = 0; d < D; d++) out[(size_t)(b->first + i) * D + d] = NAN;
        if (b->errors[i] && !it->error) it->error = strdup(b->errors[i]);
        if (!b->pixels[i]) continue;
        px[k] = b->pixels[i], texts[k] = it->text, map[k++] = b->first + i;
    }
    float *tmp = malloc(sizeof(float) * (size_t)(k ? k : 1) * D);
    ml_error err;
    if (!tmp) {
        for (int j = 0; j < k; j++) items[map[j]].error = strdup("out of memory");
        return;
    }
    if (k && ml_embed_pixels_batch(m, k, px, texts, truncate, tmp, NULL, ok, &err) != 0) {
        /* Find each failed item's own reason (the batch reports the first). */
        for (int j = 0; j < k; j++) {
            if (ok[j]) continue;
            ml_error e1;
            int ok1;
            float *row = tmp + (size_t)j * D;
            if (ml_embed_pixels_batch(m, 1, &px[j], &texts[j], truncate, row, NULL, &ok1, &e1) != 0)
                items[map[j]].error = strdup(e1.msg);
            else
                ok[j] = 1;
        }
    }
    for (int j = 0; j < k; j++)
        if (ok[j]) memcpy(out + (size_t)map[j] * D, tmp + (size_t)j * D, sizeof(float) * D);
    free(tmp);
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static int write_jsonl(const char *path, const item *items, long n, const float *emb, int D) {
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "magiclens: %s: cannot create: %s\n", path, strerror(errno));
        return -1;
    }
    for (long i = 0; i < n; i++) {
        json_t *o = json_object();
        json_object_set(o, "id", items[i].id);
        if (items[i].error) {
            json_object_set_new(o, "error", json_string(items[i].error));
        } else {
            json_t *a = json_array();
            for (int d = 0; d < D; d++) json_array_append_new(a, json_real(emb[(size_t)i * D + d]));
            json_object_set_new(o, "embedding", a);
        }
        char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(9));
        fprintf(f, "%s\n", s ? s : "{}");
        free(s);
        json_decref(o);
    }
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) {
        fprintf(stderr, "magiclens: %s: write failed\n", path);
        return -1;
    }
    return 0;
}

static void report_errors(const item *items, long n, long *failed) {
    *failed = 0;
    for (long i = 0; i < n; i++) {
        if (!items[i].error) continue;
        char *id = json_dumps(items[i].id, JSON_ENCODE_ANY | JSON_COMPACT);
        fprintf(stderr, "magiclens: item %s: %s\n", id ? id : "?", items[i].error);
        free(id);
        (*failed)++;
    }
}

int ml_embed_file(ml_model *m, const ml_embed_file_opts *o) {
    if (!o->output) {
        fprintf(stderr, "magiclens: embed --input needs --output out.npy or out.jsonl\n");
        return 2;
    }
    long n = 0, failed = 0;
    item *items = read_items(o->input, &n);
    if (!items) return 1;
    int D = ml_model_config(m)->embed_dim;
    float *emb = malloc(sizeof(float) * (size_t)(n ? n : 1) * D);
    if (!emb) {
        fprintf(stderr, "magiclens: out of memory for %ld embeddings\n", n);
        free_items(items, n);
        return 1;
    }
    const char **paths = calloc((size_t)(n ? n : 1), sizeof *paths);
    ml_error err;
    ml_loader *ld = NULL;
    for (long i = 0; paths && i < n; i++) paths[i] = items[i].error ? NULL : items[i].image;
    if (!paths || !(ld = ml_loader_start(m, (int)n, paths, o->batch, &err))) {
        fprintf(stderr, "magiclens: %s\n", paths ? err.msg : "out of memory");
        free(paths), free(emb);
        free_items(items, n);
        return 1;
    }
    ml_progress pr;
    ml_progress_start(&pr, "embed", n, !o->quiet && n >= 16);
    ml_loader_batch b;
    while (ml_loader_next(ld, &b) == 0) {
        embed_loaded(m, items, &b, o->truncate, emb);
        ml_loader_release(ld, &b);
        ml_progress_add(&pr, b.count);
    }
    ml_progress_finish(&pr);
    ml_loader_free(ld);
    free(paths);
    report_errors(items, n, &failed);
    int rc;
    if (ends_with(o->output, ".jsonl")) {
        rc = write_jsonl(o->output, items, n, emb, D);
    } else {
        rc = ml_npy_write_f32(o->output, emb, n, D, &err);
        if (rc != 0) fprintf(stderr, "magiclens: %s\n", err.msg);
    }
    if (!o->quiet)
        fprintf(stderr, "magiclens: embedded %ld of %ld items into %s\n", n - failed, n, o->output);
    free(emb);
    free_items(items, n);
    return rc != 0 ? 1 : failed ? 1 : 0;
}
