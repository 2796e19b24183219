/* searcher.c - exact and approximate search over an opened index. */
#include "index/searcher.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "core/error.h"
#include "core/fileio.h"
#include "core/mem.h"
#include "kernels/ops.h"

#define ANN_IDS_MAGIC "MLANNIDS"
#define ANN_IDS_VERSION 1
#define ANN_ROW_BYTES 24 /* int64 id + 16-byte content hash */

struct ml_searcher {
    ml_store *store;
    const ml_item *items;
    size_t n;
    int D;
    ml_searcher_opts opts;
    ml_vecset *emb;
    /* CLIP space, built on first use. */
    pthread_mutex_t clip_mu;
    float *clip_norm;
    ml_vecset *clip;
    /* Approximate search: ivf rows -> item rows; items not covered by the
     * IVF (added or changed since it was built) are in `rest`. */
    ml_ivf *ivf;
    int64_t *ann_row;   /* per ivf row: item row, or -1 (deleted / changed) */
    ml_vecset *rest;
    int64_t *rest_row;  /* per rest row: item row */
};

static char *join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static const float *emb_row(void *ctx, int64_t row) {
    const ml_searcher *s = ctx;
    return s->items[row].emb;
}

static const float *clip_row(void *ctx, int64_t row) {
    const ml_searcher *s = ctx;
    return s->clip_norm + (size_t)row * s->D;
}

static const float *ivf_row(void *ctx, int64_t row) {
    const ml_searcher *s = ctx;
    int64_t r = s->ann_row[row];
    return s->items[r >= 0 ? r : 0].emb; /* masked rows are never re-ranked */
}

static const float *rest_vec(void *ctx, int64_t row) {
    const ml_searcher *s = ctx;
    return s->items[s->rest_row[row]].emb;
}

/* Appends the rows rows[0..n) (item rows; NULL = all) to a new vecset. */
static ml_vecset *make_set(const ml_searcher *s, const int64_t *rows, size_t n,
                           const float *(*get)(void *, int64_t), ml_vec_type t, ml_error *err) {
    ml_vecset *vs = ml_vecset_new(s->D, t, err);
    float *buf = ml_malloc(sizeof(float) * (size_t)s->D * 1024, err);
    for (size_t i = 0; vs && buf && i < n; i += 1024) {
        size_t m = n - i < 1024 ? n - i : 1024;
        for (size_t j = 0; j < m; j++)
            memcpy(buf + j * s->D, get((void *)s, rows ? rows[i + j] : (int64_t)(i + j)),
                   sizeof(float) * s->D);
        if (ml_vecset_append(vs, buf, m, err) != 0) {
            ml_vecset_free(vs);
            vs = NULL;
        }
    }
    free(buf);
    if (!buf) {
        ml_vecset_free(vs);
        return NULL;
    }
    return vs;
}

/* ---- the approximate structure ------------------------------------------ */

/* ann.ids: magic, version, count, the XXH3 of ann.ivf, then per ivf row the
 * item id and content hash it was built from; a trailing XXH3 of it all. */
static int load_ann(ml_searcher *s, const char *dir, ml_error *err) {
    char *ivf_path = join(dir, "ann.ivf"), *ids_path = join(dir, "ann.ids");
    unsigned char *ids = NULL, *ivf_bytes = NULL;
    size_t len = 0, ivf_len = 0;
    int rc = -1;
    if (!ivf_path || !ids_path) {
        ml_fail(err, "out of memory");
        goto done;
    }
    if (access(ivf_path, F_OK) != 0) {
        rc = 0; /* none built: exact search */
        goto done;
    }
    if (ml_read_all(ids_path, (size_t)1 << 34, &ids, &len, err) != 0 ||
        ml_read_all(ivf_path, (size_t)1 << 36, &ivf_bytes, &ivf_len, err) != 0)
        goto done;
    uint64_t count, ivf_hash;
    if (len < 40 || memcmp(ids, ANN_IDS_MAGIC, 8) != 0) {
        ml_fail(err, "%s: not a magiclens ANN id file", ids_path);
        goto done;
    }
    memcpy(&count, ids + 16, 8), memcpy(&ivf_hash, ids + 24, 8);
    uint64_t sum;
    memcpy(&sum, ids + len - 8, 8);
    if ((ids[8] | ids[9] << 8) != ANN_IDS_VERSION || count > (len - 40) / ANN_ROW_BYTES ||
        len != 40 + count * ANN_ROW_BYTES || sum != XXH3_64bits(ids, len - 8)) {
        ml_fail(err, "%s: corrupt or of another version", ids_path);
        goto done;
    }
    if (ivf_hash != XXH3_64bits(ivf_bytes, ivf_len)) {
        ml_fail(err, "%s does not belong to %s (rebuild with magiclens index --ann)", ids_path,
                ivf_path);
        goto done;
    }
    free(ivf_bytes);
    ivf_bytes = NULL;
    if (!(s->ivf = ml_ivf_load(ivf_path, err))) goto done;
    if (ml_ivf_size(s->ivf) != count || ml_ivf_dim(s->ivf) != s->D) {
        ml_fail(err, "%s: size or dimension does not match %s", ivf_path, ids_path);
        goto done;
    }
    s->ann_row = ml_malloc(sizeof(int64_t) * (count + 1), err);
    uint8_t *covered = ml_calloc(s->n + 1, 1, err);
    s->rest_row = ml_malloc(sizeof(int64_t) * (s->n + 1), err);
    if (!s->ann_row || !covered || !s->rest_row) {
        free(covered);
        goto done;
    }
    for (uint64_t i = 0; i < count; i++) {
        const unsigned char *e = ids + 32 + i * ANN_ROW_BYTES;
        int64_t id;
        memcpy(&id, e, 8);
        const ml_item *it = ml_store_find_id(s->store, id);
        s->ann_row[i] = it && memcmp(it->hash, e + 8, 16) == 0 ? it - s->items : -1;
        if (s->ann_row[i] >= 0) covered[s->ann_row[i]] = 1;
    }
    size_t nrest = 0;
    for (size_t r = 0; r < s->n; r++)
        if (!covered[r]) s->rest_row[nrest++] = (int64_t)r;
    free(covered);
    s->rest = make_set(s, NULL, nrest, rest_vec, ML_VEC_F32, err);
    rc = s->rest ? 0 : -1;
done:
    free(ivf_path), free(ids_path), free(ids), free(ivf_bytes);
    return rc;
}

ml_searcher *ml_searcher_open(const char *dir, const ml_searcher_opts *o, ml_error *err) {
    ml_searcher *s = ml_calloc(1, sizeof *s, err);
    if (!s) return NULL;
    pthread_mutex_init(&s->clip_mu, NULL);
    s->opts = *o;
    s->store = ml_store_open_part(dir, ML_STORE_READ, NULL, o->part_k, o->part_r, err);
    int rc = s->store ? 0 : -1;
    if (rc == 0) {
        s->items = ml_store_items(s->store);
        s->n = ml_store_count(s->store);
        s->D = ml_store_get_meta(s->store)->dim;
        /* Auto: float32 while it fits in 1 GiB, int8 (4x smaller, re-ranked
         * to exact scores) beyond. */
        if ((int)s->opts.store < 0)
            s->opts.store = (double)s->n * s->D * 4 <= (double)(1 << 30) ? ML_VEC_F32 : ML_VEC_I8;
        s->emb = make_set(s, NULL, s->n, emb_row, s->opts.store, err);
        rc = s->emb ? 0 : -1;
    }
    /* The IVF covers every shard; a partial open searches exactly. */
    if (rc == 0 && o->ann && o->part_k <= 1) rc = load_ann(s, dir, err);
    if (rc != 0) {
        ml_searcher_close(s);
        return NULL;
    }
    return s;
}

void ml_searcher_close(ml_searcher *s) {
    if (!s) return;
    ml_vecset_free(s->emb), ml_vecset_free(s->clip), ml_vecset_free(s->rest);
    ml_ivf_free(s->ivf);
    free(s->clip_norm), free(s->ann_row), free(s->rest_row);
    pthread_mutex_destroy(&s->clip_mu);
    ml_store_close(s->store);
    free(s);
}

const ml_store *ml_searcher_store(const ml_searcher *s) { return s->store; }
int ml_searcher_has_ann(const ml_searcher *s) { return s->ivf != NULL; }

static int ensure_clip(ml_searcher *s, ml_error *err) {
    pthread_mutex_lock(&s->clip_mu);
    int rc = 0;
    if (!s->clip) {
        s->clip_norm = ml_malloc(sizeof(float) * (s->n ? s->n : 1) * s->D, err);
        rc = s->clip_norm ? 0 : -1;
        for (size_t i = 0; rc == 0 && i < s->n; i++) {
            float *r = s->clip_norm + i * s->D;
            memcpy(r, s->items[i].clip, sizeof(float) * s->D);
            ml_l2_normalize(r, s->D);
        }
        if (rc == 0) s->clip = make_set(s, NULL, s->n, clip_row, s->opts.store, err);
        if (rc == 0 && !s->clip) rc = -1;
    }
    pthread_mutex_unlock(&s->clip_mu);
    return rc;
}

/* ---- queries --------------------------------------------------------------- */

static int better(const ml_hit *a, const ml_hit *b) {
    return a->score > b->score || (a->score == b->score && a->row < b->row);
}

/* Translates engine rows to item rows (in place). */
static void map_rows(ml_hit *h, int k, const int64_t *map) {
    for (int i = 0; i < k; i++)
        if (h[i].row >= 0) h[i].row = map[h[i].row];
}

/* Merges two best-first lists of item rows into out (k entries). */
static void merge(const ml_hit *a, const ml_hit *b, int k, ml_hit *out) {
    int i = 0, j = 0;
    for (int o = 0; o < k; o++) {
        int has_a = i < k && a[i].row >= 0, has_b = j < k && b[j].row >= 0;
        if (!has_a && !has_b) out[o] = (ml_hit){0.0f, -1};
        else out[o] = has_a && (!has_b || better(&a[i], &b[j])) ? a[i++] : b[j++];
    }
}

/* Rows allowed by the query's filters, or NULL when all are. */
static int filter_mask(const ml_searcher *s, const ml_query *q, uint8_t **out, ml_error *err) {
    const char *prefix = q->prefix && *q->prefix ? q->prefix : NULL;
    const ml_item *ex = q->exclude_id >= 0 ? ml_store_find_id(s->store, q->exclude_id) : NULL;
    *out = NULL;
    if (!prefix && !ex) return 0;
    uint8_t *m = ml_malloc(s->n + 1, err);
    if (!m) return -1;
    size_t pl = prefix ? strlen(prefix) : 0;
    for (size_t i = 0; i < s->n; i++) m[i] = !prefix || strncmp(s->items[i].path, prefix, pl) == 0;
    if (ex) m[ex - s->items] = 0;
    *out = m;
    return 0;
}

static int search_ann(ml_searcher *s, const ml_query *q, const uint8_t *mask, int want,
                      ml_hit *out, ml_error *err) {
    size_t nivf = ml_ivf_size(s->ivf);
    uint8_t *allow = ml_malloc(nivf + 1, err);
    ml_hit *a = ml_malloc(sizeof(ml_hit) * (size_t)want, err);
    ml_hit *b = ml_malloc(sizeof(ml_hit) * (size_t)want, err);
    uint8_t *rmask = NULL;
    int rc = allow && a && b ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < nivf; i++)
        allow[i] = s->ann_row[i] >= 0 && (!mask || mask[s->ann_row[i]]);
    size_t nrest = ml_vecset_size(s->rest);
    if (rc == 0 && mask) {
        rc = (rmask = ml_malloc(nrest + 1, err)) ? 0 : -1;
        for (size_t i = 0; rc == 0 && i < nrest; i++) rmask[i] = mask[s->rest_row[i]];
    }
    ml_search_opts oa = {.k = want, .allow = allow, .row_f32 = ivf_row, .row_ctx = s,
                         .nprobe = q->nprobe};
    ml_search_opts ob = {.k = want, .allow = rmask, .row_f32 = rest_vec, .row_ctx = s};
    if (rc == 0) rc = ml_ivf_search(s->ivf, q->vec, 1, &oa, a, err);
    if (rc == 0) rc = ml_vecset_search(s->rest, q->vec, 1, &ob, b, err);
    if (rc == 0) {
        map_rows(a, want, s->ann_row);
        map_rows(b, want, s->rest_row);
        merge(a, b, want, out);
    }
    free(allow), free(a), free(b), free(rmask);
    return rc;
}

int ml_searcher_search(ml_searcher *s, const ml_query *q, ml_result *out, int *n, ml_error *err) {
    *n = 0;
    if (q->k < 1 || q->offset < 0) return ml_fail(err, "k must be >= 1 and offset >= 0");
    if (q->space == ML_SPACE_CLIP && ensure_clip(s, err) != 0) return -1;
    long long want_ll = (long long)q->offset + q->k;
    if (want_ll > (long long)s->n) want_ll = (long long)s->n;
    int want = (int)want_ll;
    if (want <= q->offset) return 0;
    uint8_t *mask = NULL;
    ml_hit *hits = ml_malloc(sizeof(ml_hit) * (size_t)want, err);
    int rc = hits ? filter_mask(s, q, &mask, err) : -1;
    if (rc == 0 && q->space == ML_SPACE_MAGICLENS && s->ivf) {
        rc = search_ann(s, q, mask, want, hits, err);
    } else if (rc == 0) {
        int clip = q->space == ML_SPACE_CLIP;
        ml_search_opts o = {.k = want, .allow = mask, .row_f32 = clip ? clip_row : emb_row,
                            .row_ctx = s};
        rc = ml_vecset_search(clip ? s->clip : s->emb, q->vec, 1, &o, hits, err);
    }
    for (int i = q->offset; rc == 0 && i < want; i++) {
        if (hits[i].row < 0 || hits[i].score < q->min_score) break;
        const ml_item *it = &s->items[hits[i].row];
        out[(*n)++] = (ml_result){it->id, it->path, hits[i].score};
    }
    free(mask), free(hits);
    return rc;
}

/* ---- building the approximate structure ------------------------------------ */

static int write_ids(const char *path, const ml_store *st, const char *ivf_path, ml_error *err) {
    unsigned char *ivf = NULL;
    size_t ivf_len = 0;
    if (ml_read_all(ivf_path, (size_t)1 << 36, &ivf, &ivf_len, err) != 0) return -1;
    uint64_t count = ml_store_count(st), h = XXH3_64bits(ivf, ivf_len);
    free(ivf);
    size_t len = 40 + count * ANN_ROW_BYTES;
    unsigned char *b = ml_calloc(len, 1, err);
    if (!b) return -1;
    memcpy(b, ANN_IDS_MAGIC, 8);
    b[8] = ANN_IDS_VERSION;
    memcpy(b + 16, &count, 8), memcpy(b + 24, &h, 8);
    const ml_item *items = ml_store_items(st);
    for (uint64_t i = 0; i < count; i++) {
        memcpy(b + 32 + i * ANN_ROW_BYTES, &items[i].id, 8);
        memcpy(b + 40 + i * ANN_ROW_BYTES, items[i].hash, 16);
    }
    uint64_t sum = XXH3_64bits(b, len - 8);
    memcpy(b + len - 8, &sum, 8);
    int rc = ml_write_atomic(path, b, len, err);
    free(b);
    return rc;
}

int ml_searcher_build_ann(const char *dir, int nlist, ml_error *err) {
    ml_store *st = ml_store_open(dir, ML_STORE_READ, NULL, err);
    if (!st) return -1;
    size_t n = ml_store_count(st);
    int D = ml_store_get_meta(st)->dim;
    const ml_item *items = ml_store_items(st);
    float *rows = ml_malloc(sizeof(float) * (n ? n : 1) * D, err);
    for (size_t i = 0; rows && i < n; i++) memcpy(rows + i * D, items[i].emb, sizeof(float) * D);
    ml_ivf_params p = {.nlist = nlist, .seed = 1};
    ml_ivf *ivf = rows && n ? ml_ivf_build(rows, n, D, &p, err) : NULL;
    if (rows && !n) ml_fail(err, "%s: the index is empty", dir);
    char *ivf_path = join(dir, "ann.ivf"), *ids_path = join(dir, "ann.ids");
    int rc = ivf && ivf_path && ids_path ? 0 : -1;
    /* The ids file names the IVF file's hash, so a crash between the two
     * writes leaves a pair that is detected as inconsistent (a clear error
     * asking for a rebuild), never a silently wrong mapping. */
    if (rc == 0) rc = ml_ivf_save(ivf, ivf_path, err);
    if (rc == 0) rc = write_ids(ids_path, st, ivf_path, err);
    ml_ivf_free(ivf);
    free(rows), free(ivf_path), free(ids_path);
    ml_store_close(st);
    return rc;
}
