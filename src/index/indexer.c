/* indexer.c - plan (what is new, changed, gone), then embed and commit in
 * batches.  Each batch is durable before it is reported, so a killed run
 * loses at most the batch in flight and the next run redoes only that. */
#include "index/indexer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "core/dist.h"
#include "core/error.h"
#include "core/mem.h"
#include "core/progress.h"
#include "index/sources.h"
#include "index/store.h"
#include "model/loader.h"

enum { W_NEW = 1, W_CHANGED = 2, W_DELETE = 3 };

typedef struct work {
    const ml_source *src; /* NULL for deletions */
    const ml_item *old;   /* the indexed version, if any */
    int64_t id;
    int shard, kind;
    /* Filled on the loader thread. */
    uint8_t hash[16];
    uint64_t nbytes;
    int same_content;
} work;

typedef struct plan {
    work *w;
    size_t n;
    long long unchanged;
} plan;

typedef struct run {
    ml_model *m;
    ml_store *s;
    const ml_index_opts *o;
    ml_index_stats *st;
    ml_source_reader *reader;
    work **mine; /* this rank's embedding work */
    int nmine;
    int D;
} run;

static int add_work(plan *p, work w, ml_error *err) {
    if ((p->n & (p->n - 1)) == 0) { /* grow at powers of two */
        work *g = realloc(p->w, (p->n ? 2 * p->n : 16) * sizeof *g);
        if (!g) return ml_fail(err, "out of memory");
        p->w = g;
    }
    p->w[p->n++] = w;
    return 0;
}

static int cmp_src_path(const void *key, const void *elem) {
    return strcmp(key, ((const ml_source *)elem)->path);
}

/* Items to drop: every indexed item that the sources no longer contain
 * (SYNC), or that lies at or under one of the given paths (REMOVE). */
static int under(const char *path, const char *root) {
    size_t n = strlen(root);
    return strncmp(path, root, n) == 0 &&
           (path[n] == 0 || path[n] == '/' || strncmp(path + n, ML_TAR_SEP, 2) == 0);
}

static int plan_removals(const ml_store *s, const ml_source_list *srcs, char **roots, int nroots,
                         int mode, plan *p, ml_error *err) {
    const ml_item *items = ml_store_items(s);
    for (size_t i = 0; i < ml_store_count(s); i++) {
        int drop = 0;
        if (mode == ML_INDEX_SYNC)
            drop = !bsearch(items[i].path, srcs->items, srcs->n, sizeof *srcs->items, cmp_src_path);
        for (int r = 0; mode == ML_INDEX_REMOVE && r < nroots && !drop; r++)
            drop = under(items[i].path, roots[r]);
        if (drop && add_work(p, (work){.old = &items[i], .id = items[i].id,
                                        .shard = items[i].shard, .kind = W_DELETE}, err) != 0)
            return -1;
    }
    return 0;
}

static int plan_sources(const ml_store *s, const ml_source_list *srcs, int nranks, plan *p,
                        ml_error *err) {
    int64_t next = ml_store_next_id(s), j = 0;
    for (size_t i = 0; i < srcs->n; i++) {
        const ml_source *src = &srcs->items[i];
        const ml_item *old = ml_store_find_path(s, src->path);
        if (old && old->size == src->size && old->mtime_ns == src->mtime_ns) {
            p->unchanged++;
            continue;
        }
        work w = {.src = src, .old = old};
        if (old) {
            w.kind = W_CHANGED, w.id = old->id, w.shard = old->shard;
        } else {
            w.kind = W_NEW, w.id = next + j, w.shard = (int)(j % nranks);
            j++;
        }
        if (add_work(p, w, err) != 0) return -1;
    }
    return 0;
}

/* Every rank must have computed the same plan from the same files. */
static int check_plan_agrees(const plan *p, ml_error *err) {
    if (!ml_dist_active()) return 0;
    XXH64_hash_t h = XXH64(&p->n, sizeof p->n, 0);
    for (size_t i = 0; i < p->n; i++) {
        int64_t v[3] = {p->w[i].id, p->w[i].shard, p->w[i].kind};
        h = XXH64(v, sizeof v, h);
    }
    if (ml_dist_max_u64(h) != h || ml_dist_max_u64(~h) != ~h)
        return ml_fail(err, "the ranks see different files (the sources changed during the "
                            "scan, or are not shared between machines)");
    return 0;
}

/* ---- loading (runs on the loader thread) ------------------------------ */

static int load_item(void *ctx, int i, ml_image *img, ml_error *err) {
    run *r = ctx;
    work *w = r->mine[i];
    uint8_t *data;
    size_t len;
    if (ml_source_read(r->reader, w->src->path, &data, &len, err) != 0) return -1;
    XXH128_hash_t h = XXH3_128bits(data, len);
    XXH128_canonicalFromHash((XXH128_canonical_t *)w->hash, h);
    w->nbytes = len;
    if (w->old && memcmp(w->hash, w->old->hash, 16) == 0 && w->old->emb) {
        w->same_content = 1; /* touched, not changed: no model run needed */
        free(data);
        return 1;
    }
    int rc = ml_image_decode(data, len, 0, img, err);
    free(data);
    return rc == 0 ? 0 : ml_fail_prefix(err, "%s", w->src->path);
}

/* ---- committing a batch --------------------------------------------------- */

static int put_item(run *r, const work *w, const float *emb, const float *clip, ml_error *err) {
    ml_item it = {.id = w->id, .path = w->src->path, .size = w->nbytes,
                  .mtime_ns = w->src->mtime_ns};
    memcpy(it.hash, w->hash, 16);
    return ml_store_put(r->s, w->shard, &it, emb, clip, err);
}

static void report_failure(run *r, const work *w, const char *msg) {
    if (r->st->failed++ < r->o->max_errors) fprintf(stderr, "skipped: %s\n", msg);
    (void)w;
}

static int process_batch(run *r, const ml_loader_batch *b, float *clip, float *emb,
                         ml_error *err) {
    const float *px[4096];
    int map[4096], ok[4096], k = 0;
    for (int i = 0; i < b->count; i++) {
        work *w = r->mine[b->first + i];
        if (w->same_content) {
            if (put_item(r, w, w->old->emb, w->old->clip, err) != 0) return -1;
            r->st->touched++;
        } else if (!b->pixels[i]) {
            report_failure(r, w, b->errors[i] ? b->errors[i] : "unreadable");
        } else {
            px[k] = b->pixels[i], map[k++] = i;
        }
    }
    if (k && (ml_embed_clip_image(r->m, k, px, clip, err) != 0 ||
              ml_embed_from_clip(r->m, k, clip, NULL, 0, emb, ok, err) != 0))
        return -1;
    for (int j = 0; j < k; j++) {
        work *w = r->mine[b->first + map[j]];
        if (put_item(r, w, emb + (size_t)j * r->D, clip + (size_t)j * r->D, err) != 0) return -1;
        if (w->kind == W_NEW) r->st->added++;
        else r->st->updated++;
    }
    return ml_store_commit(r->s, err);
}

static int embed_all(run *r, ml_error *err) {
    int B = r->o->batch;
    float *clip = ml_aligned_alloc(sizeof(float) * (size_t)B * r->D, err);
    float *emb = ml_aligned_alloc(sizeof(float) * (size_t)B * r->D, err);
    r->reader = ml_source_reader_new();
    ml_loader *l = clip && emb && r->reader
                       ? ml_loader_start_fn(r->m, r->nmine, load_item, r, B, err)
                       : NULL;
    int rc = l ? 0 : -1;
    ml_progress pr;
    ml_progress_start(&pr, "index", r->nmine, r->o->progress && ml_dist_rank() == 0);
    ml_loader_batch b;
    long long done = 0;
    while (rc == 0 && ml_loader_next(l, &b) == 0) {
        rc = process_batch(r, &b, clip, emb, err);
        ml_loader_release(l, &b);
        if (rc != 0) break;
        done += b.count;
        if (r->o->verbose) {
            fprintf(stderr, "committed %lld of %d items\n", done, r->nmine);
            fflush(stderr);
        }
        ml_progress_add(&pr, b.count);
        if (r->o->on_progress && r->o->on_progress(r->o->progress_ctx, done, r->nmine) != 0) {
            r->st->cancelled = 1; /* what is committed stays; the next sync redoes the rest */
            rc = ml_fail(err, "cancelled after %lld of %d items", done, r->nmine);
        }
    }
    ml_progress_finish(&pr);
    ml_loader_free(l);
    ml_source_reader_free(r->reader);
    free(clip), free(emb);
    return rc;
}

/* ---- the whole pass ------------------------------------------------------ */

static void warn_cb(void *ctx, const char *msg) {
    (void)ctx;
    fprintf(stderr, "warning: %s\n", msg);
}

static int collect(const ml_index_opts *o, ml_source_list *srcs, char ***roots, ml_error *err) {
    if (o->mode == ML_INDEX_REMOVE) {
        *roots = calloc((size_t)o->nsources + 1, sizeof **roots);
        if (!*roots) return ml_fail(err, "out of memory");
        for (int i = 0; i < o->nsources; i++) {
            char *a = ml_abs_path(o->sources[i]);
            size_t n = a ? strlen(a) : 0;
            while (n > 1 && a[n - 1] == '/') a[--n] = 0;
            if (!((*roots)[i] = a)) return ml_fail(err, "out of memory");
        }
        return 0;
    }
    for (int i = 0; i < o->nsources; i++)
        if (ml_sources_add(srcs, o->sources[i], warn_cb, NULL, err) != 0) return -1;
    ml_sources_finish(srcs);
    return 0;
}

static int make_meta(ml_model *m, const ml_index_opts *o, ml_store_meta *meta) {
    memset(meta, 0, sizeof *meta);
    meta->dim = meta->clip_dim = ml_model_config(m)->embed_dim;
    ml_model_fingerprint(m, meta->fingerprint);
    const char *name = o->model_name ? strrchr(o->model_name, '/') : NULL;
    snprintf(meta->model_name, sizeof meta->model_name, "%s",
             name ? name + 1 : o->model_name ? o->model_name : "");
    snprintf(meta->precision, sizeof meta->precision, "%s", o->precision ? o->precision : "");
    return 0;
}

/* Rank 0 creates the index and the K shards before anyone writes. */
static int prepare(const char *dir, const ml_store_meta *meta, ml_error *err) {
    int ok = 1;
    if (ml_dist_rank() == 0) {
        ml_store *s = ml_store_open(dir, ML_STORE_WRITE, meta, err);
        ok = s && ml_store_ensure_shards(s, ml_dist_size(), err) == 0;
        ml_store_close(s);
    }
    if (!ml_dist_all_true(ok)) {
        if (ok) ml_fail(err, "%s: rank 0 could not prepare the index", dir);
        return -1;
    }
    return 0;
}

static int execute(run *r, plan *p, ml_error *err) {
    int K = ml_dist_size(), me = ml_dist_rank(), ndel = 0;
    for (size_t i = 0; i < p->n; i++) {
        work *w = &p->w[i];
        if (w->shard % K != me) continue;
        if (w->kind == W_DELETE) {
            if (ml_store_del(r->s, w->shard, w->id, err) != 0) return -1;
            ndel++;
        } else {
            r->mine[r->nmine++] = w;
        }
    }
    if (ndel && ml_store_commit(r->s, err) != 0) return -1;
    r->st->removed = ndel;
    return r->nmine ? embed_all(r, err) : 0;
}

static void sum_stats(ml_index_stats *st) {
    st->added = ml_dist_sum(st->added), st->updated = ml_dist_sum(st->updated);
    st->touched = ml_dist_sum(st->touched), st->removed = ml_dist_sum(st->removed);
    st->failed = ml_dist_sum(st->failed);
}

int ml_index_run(ml_model *m, const char *dir, const ml_index_opts *o, ml_index_stats *st,
                 ml_error *err) {
    double t0 = ml_now();
    memset(st, 0, sizeof *st);
    /* process_batch keeps per-batch arrays on the stack. */
    if (o->batch < 1 || o->batch > 256) return ml_fail(err, "batch %d: use 1 to 256", o->batch);
    /* Removing needs no model: the index must exist then. */
    ml_store_meta meta_buf, *meta = m ? &meta_buf : NULL;
    if (m) make_meta(m, o, meta);
    ml_source_list srcs = {0};
    char **roots = NULL;
    plan p = {0};
    ml_store *s = NULL;
    run r = {.m = m, .o = o, .st = st, .D = meta ? meta->dim : 0};
    int rc = collect(o, &srcs, &roots, err);
    if (!ml_dist_all_true(rc == 0)) rc = -1;
    if (rc == 0) rc = prepare(dir, meta, err);
    if (rc == 0) rc = (s = ml_store_open(dir, ML_STORE_WRITE, meta, err)) ? 0 : -1;
    if (rc == 0 && o->mode != ML_INDEX_REMOVE)
        rc = plan_sources(s, &srcs, ml_dist_size(), &p, err);
    if (rc == 0 && o->mode != ML_INDEX_ADD)
        rc = plan_removals(s, &srcs, roots, o->nsources, o->mode, &p, err);
    if (rc == 0) rc = check_plan_agrees(&p, err);
    r.s = s;
    if (rc == 0 && !(r.mine = calloc(p.n + 1, sizeof *r.mine))) rc = ml_fail(err, "out of memory");
    if (rc == 0) rc = execute(&r, &p, err);
    int all_ok = ml_dist_all_true(rc == 0);
    st->found = (long long)srcs.n;
    st->unchanged = p.unchanged;
    sum_stats(st);
    ml_store_close(s);
    free(r.mine), free(p.w);
    ml_sources_free(&srcs);
    for (int i = 0; roots && roots[i]; i++) free(roots[i]);
    free(roots);
    if (rc == 0 && !all_ok) rc = ml_fail(err, "another rank failed");
    if (rc == 0) {
        ml_dist_barrier();
        ml_store *after = ml_store_open(dir, ML_STORE_READ, NULL, err);
        if (!after) return -1;
        st->items = (long long)ml_store_count(after);
        ml_store_close(after);
    }
    st->seconds = ml_now() - t0;
    return rc;
}

/* Rewrites the shards this rank owns that hold dead records. */
int ml_index_compact(const char *dir, long long *freed, ml_error *err) {
    *freed = 0;
    ml_store *s = ml_store_open(dir, ML_STORE_WRITE, NULL, err);
    if (!s) return -1;
    int rc = 0, K = ml_dist_size(), me = ml_dist_rank();
    for (int i = 0; rc == 0 && i < ml_store_shard_count(s); i++) {
        if (i % K != me) continue;
        uint64_t f = 0;
        rc = ml_store_compact(s, i, &f, err);
        *freed += (long long)f;
    }
    ml_store_close(s);
    *freed = ml_dist_sum(*freed);
    return ml_dist_all_true(rc == 0) ? 0 : -1;
}
