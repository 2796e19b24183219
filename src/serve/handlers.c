/* handlers.c - the API behind the routes: queries (search, embed), indexed
 * images and thumbnails, health, metrics, reload and add.  Queries are
 * formed exactly as `magiclens search` forms them (tools/cmd_index.c
 * make_query), so both give the same results for the same query. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/progress.h"
#include "index/indexer.h"
#include "index/sources.h"
#include "serve/internal.h"
#include "serve/media.h"
#include "serve/metrics.h"

#define THUMB_SIDE 256
#define MAX_ADD_PATHS 1024

void ml_reply_error(ml_reply *r, int status, const char *msg) {
    r->status = status;
    json_decref(r->json);
    r->json = json_pack("{s:s, s:i}", "error", msg, "status", status);
}

/* ---- query vector -------------------------------------------------------- */

/* Decodes an uploaded image outside the model lock (decoding is thread-safe). */
static int decode_upload(ml_server *S, const ml_sreq *q, ml_image *img, ml_error *err) {
    ml_error e;
    if (ml_image_decode(q->image, q->image_len, S->o->max_pixels, img, &e) == 0) return 0;
    int too_big = strstr(e.msg, "exceeds the limit") != NULL;
    ml_fail(err, "%s: %s", too_big ? "the image is too large" : "the image could not be read",
            e.msg);
    return too_big ? 413 : 400;
}

/* Fills vec and *space; returns 0 or an HTTP status (err set).
 * Called with the model lock held. */
static int embed_locked(ml_server *S, const ml_item *like, const ml_image *img, const char *text,
                        float *vec, int *space, ml_error *err) {
    ml_model *m = S->model;
    int ctx = ml_model_config(m)->context_length;
    int32_t *ids = calloc((size_t)ctx, sizeof *ids);
    if (!ids) return ml_fail(err, "out of memory"), 500;
    int bad_text = text && ml_model_tokenize(m, text, 0, ids, err) != 0;
    free(ids);
    if (bad_text) {
        /* The tokenizer's advice is for the command line; the API has no --truncate. */
        char *hint = strstr(err->msg, "; use --truncate");
        if (hint) *hint = 0;
        return 400;
    }
    if (like) {
        int ok;
        *space = ML_SPACE_MAGICLENS;
        return ml_embed_from_clip(m, 1, like->clip, &text, 0, vec, &ok, err) ? 500 : 0;
    }
    if (img) {
        *space = ML_SPACE_MAGICLENS;
        return ml_embed(m, img, text, 0, vec, err) ? 500 : 0;
    }
    *space = ML_SPACE_CLIP;
    return ml_embed_clip_text(m, text, 0, vec, err) ? 500 : 0;
}

static int make_vector(ml_server *S, const ml_store *st, const ml_sreq *q, float *vec, int *space,
                       ml_error *err) {
    const ml_item *like = NULL;
    ml_image img = {0, 0, NULL};
    if (q->image_id >= 0 && !(like = ml_store_find_id(st, q->image_id))) {
        ml_fail(err, "no indexed image has id %lld", q->image_id);
        return 404;
    }
    int rc = q->has_image ? decode_upload(S, q, &img, err) : 0;
    if (rc) return rc;
    pthread_mutex_lock(&S->model_mu);
    rc = embed_locked(S, like, q->has_image ? &img : NULL, q->text, vec, space, err);
    pthread_mutex_unlock(&S->model_mu);
    if (img.rgb) ml_image_free(&img);
    return rc;
}

/* ---- search / embed ------------------------------------------------------ */

static json_t *results_json(const ml_sreq *q, const ml_result *res, int n) {
    json_t *arr = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(arr, json_pack("{s:i, s:I, s:s, s:f}", "rank", q->offset + i + 1,
                                             "id", (json_int_t)res[i].id, "path", res[i].path,
                                             "score", (double)res[i].score));
    return arr;
}

static void run_search(ml_ixref *ix, const ml_sreq *q, const float *vec, int space, ml_reply *r) {
    ml_query qu = {vec, space, q->k, q->offset, (float)q->min_score, q->prefix, 0,
                   q->image_id >= 0 ? q->image_id : -1};
    ml_result *res = calloc((size_t)q->k, sizeof *res);
    int n = 0;
    ml_error err;
    if (!res) return ml_reply_error(r, 500, "out of memory");
    if (ml_searcher_search(ix->s, &qu, res, &n, &err) != 0) {
        free(res);
        return ml_reply_error(r, 500, err.msg);
    }
    r->status = 200;
    r->json = json_pack("{s:o}", "results", results_json(q, res, n));
    free(res);
}

static json_t *vector_json(const float *v, int D) {
    json_t *a = json_array();
    for (int d = 0; d < D; d++) json_array_append_new(a, json_real(v[d]));
    return a;
}

/* Runs inside the gate and with an index reference held. */
static void query_admitted(ml_server *S, ml_ixref *ix, const ml_sreq *q, int embed_only,
                           ml_reply *r) {
    const ml_store *st = ml_searcher_store(ix->s);
    int D = ml_store_get_meta(st)->dim, space = 0;
    float *vec = calloc((size_t)D, sizeof *vec);
    ml_error err;
    if (!vec) return ml_reply_error(r, 500, "out of memory");
    int rc = make_vector(S, st, q, vec, &space, &err);
    if (rc) ml_reply_error(r, rc, err.msg);
    else if (!embed_only) run_search(ix, q, vec, space, r);
    else {
        r->status = 200;
        r->json = json_pack("{s:o, s:s, s:i}", "embedding", vector_json(vec, D), "space",
                            space == ML_SPACE_CLIP ? "clip" : "magiclens", "dim", D);
    }
    free(vec);
}

/* Enters the admission gate; on failure fills a 503. */
static int admit(ml_server *S, ml_reply *r) {
    int g = ml_gate_enter(&S->gate, S->o->timeout_s);
    if (g == ML_GATE_OK) return 1;
    ml_reply_error(r, 503, g == ML_GATE_FULL
                               ? "the server is busy (request queue full); try again shortly"
                               : "the server is busy (waited too long for a worker); try again");
    return 0;
}

void ml_handle_query(ml_server *S, ml_sreq *q, int embed_only, ml_reply *r) {
    if (!admit(S, r)) return;
    double t0 = ml_now();
    ml_ixref *ix = ml_ix_acquire(S);
    query_admitted(S, ix, q, embed_only, r);
    ml_ix_release(S, ix);
    ml_gate_leave(&S->gate);
    if (r->status == 200) json_object_set_new(r->json, "took_ms", json_real((ml_now() - t0) * 1e3));
}

/* ---- images -------------------------------------------------------------- */

/* The id in the URL must be a plain decimal number: anything else (dots,
 * slashes, encoded characters) is refused before any lookup, and the file
 * read is always the path stored in the index, never the request's. */
static int parse_id(const char *s, long long *id) {
    size_t n = strlen(s);
    if (n == 0 || n > 16) return -1;
    long long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    *id = v;
    return 0;
}

static void thumb_reply(ml_server *S, uint8_t *bytes, size_t len, ml_reply *r) {
    ml_image img;
    ml_error err;
    uint8_t *jpg;
    size_t jlen;
    if (ml_image_decode(bytes, len, S->o->max_pixels, &img, &err) != 0)
        return ml_reply_error(r, 500, "the indexed image can no longer be decoded");
    int rc = ml_thumbnail_jpeg(&img, THUMB_SIDE, &jpg, &jlen, &err);
    ml_image_free(&img);
    if (rc != 0) return ml_reply_error(r, 500, err.msg);
    r->status = 200, r->data = jpg, r->len = jlen, r->type = "image/jpeg";
}

static void image_admitted(ml_server *S, const ml_item *it, int thumb, ml_reply *r) {
    ml_source_reader *rd = ml_source_reader_new();
    uint8_t *bytes = NULL;
    size_t len = 0;
    ml_error err;
    if (!rd || ml_source_read(rd, it->path, &bytes, &len, &err) != 0) {
        ml_source_reader_free(rd);
        return ml_reply_error(r, 410, "the indexed image is no longer readable");
    }
    ml_source_reader_free(rd);
    r->cache = "private, max-age=60";
    if (thumb) {
        thumb_reply(S, bytes, len, r);
        free(bytes);
        return;
    }
    r->status = 200, r->data = bytes, r->len = len, r->type = ml_sniff_image_type(bytes, len);
}

void ml_handle_image(ml_server *S, const char *idstr, int thumb, ml_reply *r) {
    long long id;
    if (parse_id(idstr, &id) != 0)
        return ml_reply_error(r, 400, "an image id is a non-negative decimal number");
    if (!admit(S, r)) return;
    ml_ixref *ix = ml_ix_acquire(S);
    const ml_item *it = ml_store_find_id(ml_searcher_store(ix->s), id);
    if (it) image_admitted(S, it, thumb, r);
    else ml_reply_error(r, 404, "no indexed image has this id");
    ml_ix_release(S, ix);
    ml_gate_leave(&S->gate);
}

/* ---- health, metrics ----------------------------------------------------- */

static long long index_items(ml_server *S) {
    ml_ixref *ix = ml_ix_acquire(S);
    long long n = (long long)ml_store_count(ml_searcher_store(ix->s));
    ml_ix_release(S, ix);
    return n;
}

void ml_handle_health(ml_server *S, ml_reply *r) {
    r->status = 200;
    r->json = json_pack("{s:s, s:I}", "status", "ok", "items", (json_int_t)index_items(S));
}

void ml_handle_metrics(ml_server *S, ml_reply *r) {
    ml_gauges g = {0, 0, S->gate.slots, S->gate.queue, index_items(S)};
    ml_gate_load(&S->gate, &g.running, &g.waiting);
    size_t len = 0;
    char *text = ml_metrics_render(&g, &len);
    if (!text) return ml_reply_error(r, 500, "out of memory");
    r->status = 200, r->data = (uint8_t *)text, r->len = len;
    r->type = "text/plain; version=0.0.4; charset=utf-8";
}

/* ---- admin --------------------------------------------------------------- */

void ml_handle_reload(ml_server *S, ml_reply *r) {
    ml_error err;
    pthread_mutex_lock(&S->write_mu);
    int rc = ml_ix_reload(S, &err);
    pthread_mutex_unlock(&S->write_mu);
    if (rc != 0) return ml_reply_error(r, 500, err.msg);
    r->status = 200;
    r->json = json_pack("{s:s, s:I}", "status", "reloaded", "items", (json_int_t)index_items(S));
}

/* Reads {"paths": ["...", ...]} into a NULL-free array of borrowed strings. */
static int add_paths(json_t *j, const char **paths, int *n) {
    json_t *a = json_is_object(j) ? json_object_get(j, "paths") : NULL;
    if (!json_is_array(a) || json_array_size(a) == 0 || json_array_size(a) > MAX_ADD_PATHS)
        return -1;
    *n = (int)json_array_size(a);
    for (int i = 0; i < *n; i++) {
        json_t *p = json_array_get(a, (size_t)i);
        if (!json_is_string(p) || json_string_length(p) == 0) return -1;
        paths[i] = json_string_value(p);
    }
    return 0;
}

static json_t *stats_json(const ml_index_stats *st) {
    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}", "found", (json_int_t)st->found, "added",
                     (json_int_t)st->added, "updated", (json_int_t)st->updated, "unchanged",
                     (json_int_t)st->unchanged, "failed", (json_int_t)st->failed, "items",
                     (json_int_t)st->items);
}

/* Embeds and appends the given files (the index's own `--add`), then
 * reloads.  Searches keep running on the old index meanwhile; only other
 * model work waits for the embedding. */
static void add_locked(ml_server *S, const char **paths, int n, ml_reply *r) {
    ml_index_opts io = {paths, n, ML_INDEX_ADD, 8, 0, 0, 20, S->o->model_name,
                        ml_precision_choice_name(ml_model_precision(S->model)), NULL, NULL};
    ml_index_stats st;
    ml_error err;
    pthread_mutex_lock(&S->model_mu);
    int rc = ml_index_run(S->model, S->o->index, &io, &st, &err);
    pthread_mutex_unlock(&S->model_mu);
    if (rc != 0) return ml_reply_error(r, 400, err.msg);
    if (ml_ix_reload(S, &err) != 0) return ml_reply_error(r, 500, err.msg);
    r->status = 200;
    r->json = stats_json(&st);
}

void ml_handle_add(ml_server *S, const char *body, size_t len, ml_reply *r) {
    json_error_t je;
    json_t *j = json_loadb(body ? body : "", len, 0, &je);
    const char **paths = calloc(MAX_ADD_PATHS, sizeof *paths);
    int n = 0;
    if (!paths) ml_reply_error(r, 500, "out of memory");
    else if (!j || add_paths(j, paths, &n) != 0)
        ml_reply_error(r, 400, "expected a JSON body {\"paths\": [\"/abs/file.jpg\", ...]} "
                               "with 1 to 1024 paths");
    else {
        pthread_mutex_lock(&S->write_mu);
        add_locked(S, paths, n, r);
        pthread_mutex_unlock(&S->write_mu);
    }
    free(paths);
    json_decref(j);
}
