/* index_api.c - the public index API (include/magiclens_index.h) over the
 * store, the indexer and the searcher: what `magiclens index`, `search` and
 * `export --index` do, callable from C, the server and the Python package.
 *
 * Under MPI, a handle opens only this rank's shards for searching (rank r
 * of K searches shards s % K == r); rank 0 also keeps the whole store open
 * to look up `like` items and the paths of the hits it gathers. */
#include "magiclens.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dist.h"
#include "core/error.h"
#include "index/export.h"
#include "index/gather.h"
#include "index/indexer.h"
#include "index/searcher.h"
#include "index/store.h"

struct ml_index {
    char *dir;
    ml_index_open_opts opts;
    char store[8]; /* opts.store's text, owned */
    ml_searcher *s;
    ml_store *all; /* MPI, rank 0: every shard (NULL otherwise) */
};

/* ---- updates ----------------------------------------------------------------- */

int ml_index_update(const char *dir, ml_model *m, int mode, const char *const *sources,
                    int nsources, const ml_index_update_opts *o, ml_index_stats *st,
                    ml_error *err) {
    static const ml_index_update_opts defaults = {0};
    ml_index_stats st_buf;
    if (!o) o = &defaults;
    if (!st) st = &st_buf;
    memset(st, 0, sizeof *st);
    if (mode < ML_INDEX_SYNC || mode > ML_INDEX_REMOVE)
        return ml_fail(err, "%s: unknown update mode %d", dir, mode);
    if (!m && mode != ML_INDEX_REMOVE) return ml_fail(err, "%s: a model is needed to index", dir);
    if (nsources < 0 || (nsources && !sources))
        return ml_fail(err, "%s: no sources given", dir);
    ml_index_opts io = {sources, nsources, mode, o->batch ? o->batch : 8, o->progress,
                        o->verbose, o->max_errors ? (o->max_errors < 0 ? 0 : o->max_errors) : 20,
                        o->model_name, m ? ml_precision_choice_name(ml_model_precision(m)) : NULL,
                        o->on_progress, o->progress_ctx};
    return ml_index_run(m, dir, &io, st, err);
}

int ml_index_build(const char *dir, ml_model *m, const char *const *sources, int nsources,
                   const ml_index_update_opts *o, ml_index_stats *st, ml_error *err) {
    return ml_index_update(dir, m, ML_INDEX_SYNC, sources, nsources, o, st, err);
}

int ml_index_build_ann(const char *dir, int nlist, ml_error *err) {
    return ml_searcher_build_ann(dir, nlist, err);
}

/* ---- opening ------------------------------------------------------------------ */

static int open_parts(ml_index *ix, ml_error *err) {
    ml_searcher_opts so = {(ml_vec_type)-1, !ix->opts.exact, ml_dist_size(), ml_dist_rank()};
    if (ix->opts.store && strcmp(ix->opts.store, "auto") != 0 &&
        ml_vec_type_parse(ix->opts.store, &so.store) != 0)
        return ml_fail(err, "store %s: use auto, f32, f16 or int8", ix->opts.store);
    ix->s = ml_searcher_open(ix->dir, &so, err);
    int ok = ix->s != NULL;
    if (ok && ml_dist_size() > 1 && ml_dist_rank() == 0)
        ok = (ix->all = ml_store_open(ix->dir, ML_STORE_READ, NULL, err)) != NULL;
    if (!ml_dist_all_true(ok)) {
        if (ok) ml_fail(err, "%s: another rank could not open the index", ix->dir);
        return -1;
    }
    return 0;
}

static void close_parts(ml_index *ix) {
    ml_searcher_close(ix->s);
    ml_store_close(ix->all);
    ix->s = NULL, ix->all = NULL;
}

ml_index *ml_index_open(const char *dir, const ml_index_open_opts *o, ml_error *err) {
    ml_index *ix = calloc(1, sizeof *ix);
    if (!ix || !(ix->dir = strdup(dir))) {
        free(ix);
        ml_fail(err, "out of memory");
        return NULL;
    }
    if (o) ix->opts = *o;
    if (o && o->store) {
        snprintf(ix->store, sizeof ix->store, "%s", o->store);
        ix->opts.store = strlen(o->store) < sizeof ix->store ? ix->store : o->store;
    }
    if (open_parts(ix, err) != 0) {
        ml_index_close(ix);
        return NULL;
    }
    return ix;
}

void ml_index_close(ml_index *ix) {
    if (!ix) return;
    close_parts(ix);
    free(ix->dir);
    free(ix);
}

/* The store holding every item this handle can see. */
static const ml_store *whole(const ml_index *ix) {
    return ix->all ? ix->all : ml_searcher_store(ix->s);
}

size_t ml_index_count(const ml_index *ix) { return ml_store_count(whole(ix)); }
int ml_index_dim(const ml_index *ix) { return ml_store_get_meta(whole(ix))->dim; }
const char *ml_index_model_name(const ml_index *ix) {
    return ml_store_get_meta(whole(ix))->model_name;
}
const char *ml_index_fingerprint(const ml_index *ix) {
    return ml_store_get_meta(whole(ix))->fingerprint;
}

static int update_open(ml_index *ix, ml_model *m, int mode, const char *const *paths, int n,
                       const ml_index_update_opts *o, ml_index_stats *st, ml_error *err) {
    close_parts(ix); /* the update rewrites shards: drop our mappings first */
    int rc = ml_index_update(ix->dir, m, mode, paths, n, o, st, err);
    ml_error reopen;
    if (open_parts(ix, rc == 0 ? err : &reopen) != 0) rc = -1;
    return rc;
}

int ml_index_sync(ml_index *ix, ml_model *m, const char *const *sources, int nsources,
                  const ml_index_update_opts *o, ml_index_stats *st, ml_error *err) {
    return update_open(ix, m, ML_INDEX_SYNC, sources, nsources, o, st, err);
}

int ml_index_add(ml_index *ix, ml_model *m, const char *const *paths, int npaths,
                 const ml_index_update_opts *o, ml_index_stats *st, ml_error *err) {
    return update_open(ix, m, ML_INDEX_ADD, paths, npaths, o, st, err);
}

int ml_index_remove(ml_index *ix, const char *const *paths, int npaths,
                    const ml_index_update_opts *o, ml_index_stats *st, ml_error *err) {
    return update_open(ix, NULL, ML_INDEX_REMOVE, paths, npaths, o, st, err);
}

/* ---- queries ------------------------------------------------------------------ */

/* The query embedding, computed here (rank 0 under MPI). */
static int query_here(ml_index *ix, ml_model *m, const ml_index_query *q, float *vec,
                      int *space, ml_error *err) {
    if (!q->image && !q->text && q->like < 0)
        return ml_fail(err, "give an image, a text and/or a like item id");
    if (q->image && q->like >= 0) return ml_fail(err, "an image and like cannot be combined");
    if (!m) return ml_fail(err, "a model is needed for the query");
    const ml_store *st = whole(ix);
    const ml_store_meta *meta = ml_store_get_meta(st);
    char fp[33];
    ml_model_fingerprint(m, fp);
    if (strcmp(fp, meta->fingerprint) != 0)
        return ml_fail(err, "the index was built with another model (%s, fingerprint %s; "
                            "this one is %s)", meta->model_name, meta->fingerprint, fp);
    if (ml_model_config(m)->embed_dim != meta->dim)
        return ml_fail(err, "the model's embeddings have %d dimensions, the index's %d",
                       ml_model_config(m)->embed_dim, meta->dim);
    if (q->like >= 0) {
        const ml_item *it = ml_store_find_id(st, q->like);
        int ok;
        *space = ML_SPACE_MAGICLENS;
        if (!it) return ml_fail(err, "like %lld: no such item in the index", (long long)q->like);
        return ml_embed_from_clip(m, 1, it->clip, &q->text, q->truncate, vec, &ok, err);
    }
    if (q->image) {
        *space = ML_SPACE_MAGICLENS;
        return ml_embed(m, q->image, q->text, q->truncate, vec, err);
    }
    *space = ML_SPACE_CLIP;
    return ml_embed_clip_text(m, q->text, q->truncate, vec, err);
}

int ml_index_query_vector(ml_index *ix, ml_model *m, const ml_index_query *q, float *vec,
                          int *space, ml_error *err) {
    int rc = 0;
    *space = ML_SPACE_MAGICLENS;
    if (ml_dist_rank() == 0) rc = query_here(ix, m, q, vec, space, err);
    if (!ml_dist_all_true(rc == 0)) {
        if (rc == 0) ml_fail(err, "rank 0 could not compute the query");
        return -1;
    }
    ml_dist_bcast(vec, sizeof(float) * (size_t)ml_index_dim(ix), 0);
    ml_dist_bcast(space, sizeof *space, 0);
    return 0;
}

int ml_index_search_vector(ml_index *ix, const float *vec, int space, const ml_index_query *q,
                           ml_index_hit *out, int *n, ml_error *err) {
    int K = ml_dist_size(), k = q->k ? q->k : 10;
    *n = 0;
    if (k < 1 || q->offset < 0) return ml_fail(err, "k must be >= 1 and offset >= 0");
    if (space != ML_SPACE_MAGICLENS && space != ML_SPACE_CLIP)
        return ml_fail(err, "unknown vector space %d", space);
    int want = q->offset + k;
    float min_score = isnan(q->min_score) ? -INFINITY : q->min_score;
    ml_query qu = {vec, space, K > 1 ? want : k, K > 1 ? 0 : q->offset, min_score,
                   q->prefix, q->nprobe, q->like};
    ml_result *res = calloc((size_t)(K > 1 ? want : k), sizeof *res);
    int got = 0;
    int rc = res ? ml_searcher_search(ix->s, &qu, res, &got, err) : ml_fail(err, "out of memory");
    if (!ml_dist_all_true(rc == 0)) {
        if (rc == 0) ml_fail(err, "search failed on another rank");
        free(res);
        return -1;
    }
    int first = 0;
    if (K > 1) {
        if (ml_index_gather_hits(res, &got, want, ix->all, err) != 0) {
            free(res);
            return -1;
        }
        first = q->offset < got ? q->offset : got;
    }
    for (int i = first; i < got; i++) out[(*n)++] = (ml_index_hit){res[i].id, res[i].score, res[i].path};
    free(res);
    return 0;
}

int ml_index_search(ml_index *ix, ml_model *m, const ml_index_query *q, ml_index_hit *out,
                    int *n, ml_error *err) {
    float *vec = calloc((size_t)ml_index_dim(ix) + 1, sizeof *vec);
    int space;
    *n = 0;
    if (!vec) return ml_fail(err, "out of memory");
    int rc = ml_index_query_vector(ix, m, q, vec, &space, err);
    if (rc == 0) rc = ml_index_search_vector(ix, vec, space, q, out, n, err);
    free(vec);
    return rc;
}

/* ---- reading the items ---------------------------------------------------------- */

int ml_index_item(const ml_index *ix, size_t i, int64_t *id, const char **path,
                  const float **emb) {
    const ml_store *st = whole(ix);
    if (i >= ml_store_count(st)) return -1;
    const ml_item *it = &ml_store_items(st)[i];
    if (id) *id = it->id;
    if (path) *path = it->path;
    if (emb) *emb = it->emb;
    return 0;
}

int ml_index_embeddings(const ml_index *ix, int64_t *ids, float *emb, ml_error *err) {
    const ml_store *st = whole(ix);
    size_t n = ml_store_count(st);
    int D = ml_store_get_meta(st)->dim;
    const ml_item *items = ml_store_items(st);
    for (size_t i = 0; i < n; i++) {
        if (ids) ids[i] = items[i].id;
        if (emb) memcpy(emb + i * D, items[i].emb, sizeof(float) * D);
    }
    (void)err;
    return 0;
}

int ml_index_export(const ml_index *ix, const char *out, ml_error *err) {
    if (ml_dist_size() > 1 && ml_dist_rank() != 0) return 0; /* rank 0 writes it all */
    return ml_index_export_store(whole(ix), out, err);
}
