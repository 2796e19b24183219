/* ivf.c - approximate search: an inverted file over int8 codes.
 *
 * Build: spherical k-means (unit centroids, assignment by largest inner
 * product, which is what a query probes with) on a seeded sample, with the
 * assignment products done by ml_gemm.  A cluster left empty is re-seeded
 * with the training row its centroid fits worst, so every list is used.
 * Every row is then stored in the list of its nearest centroid as int8 codes
 * with a per-row scale (the ml_vecset int8 panel layout, search_internal.h),
 * in ascending row order.
 *
 * Search: the nprobe lists whose centroids score highest are scanned with the
 * int8 kernels into a candidate pool per query, and the pool is re-ranked
 * with the caller's float32 rows (sk_finish), so scores are exact and equal
 * ml_vecset's.  Batches (>= LIST_MAJOR_MIN queries) are scanned list-major:
 * each probed list once, against all the queries probing it, with the
 * multi-query kernels; threads split the lists.  Small batches are split
 * over queries, and fewer queries than threads split each query's lists.
 * Every way gives the same pools (strict total order), so the same answers.
 *
 * File format (little-endian), version 1:
 *   "MLIVFIDX"  u32 version  u32 d  u32 nlist  u32 0  u64 n
 *   f32 centroids[nlist][d]
 *   per list: u64 count, i64 ids[count], f32 scales[count], i8 codes[count][d]
 *   u64 XXH3_64bits of everything before it. */
#include "index/search.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "core/error.h"
#include "core/mem.h"
#include "core/threads.h"
#include "index/search_internal.h"
#include "kernels/gemm.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "ivf.c writes and maps its file format as little-endian"
#endif

#define IVF_MAGIC "MLIVFIDX"
#define IVF_VERSION 1u
#define IVF_HEADER 32
#define IVF_MAX_DIM 65536
#define ASSIGN_BLOCK 1024 /* rows per assignment product (1024 x nlist scores) */
#define QUERY_CHUNK 256
#define LIST_MAJOR_MIN 8 /* batches from this size scan each list once for all its queries */

typedef struct ivf_list {
    uint8_t *codes; /* cap_blocks * SK_BLOCK rows, int8 panel layout */
    float *scale;
    int64_t *ids;
    size_t n, cap_blocks;
} ivf_list;

struct ml_ivf {
    int d, dp, nlist;
    size_t n;
    float *cent;  /* [nlist][d], unit length */
    float *centT; /* [d][nlist]: the same, as ml_gemm's B operand */
    ivf_list *lists;
};

size_t ml_ivf_size(const ml_ivf *ivf) { return ivf->n; }
int ml_ivf_dim(const ml_ivf *ivf) { return ivf->d; }

void ml_ivf_free(ml_ivf *ivf) {
    if (!ivf) return;
    for (int l = 0; ivf->lists && l < ivf->nlist; l++) {
        free(ivf->lists[l].codes);
        free(ivf->lists[l].scale);
        free(ivf->lists[l].ids);
    }
    free(ivf->lists);
    free(ivf->cent);
    free(ivf->centT);
    free(ivf);
}

static ml_ivf *ivf_alloc(int d, int nlist, ml_error *err) {
    ml_ivf *ivf = ml_calloc(1, sizeof *ivf, err);
    if (!ivf) return NULL;
    ivf->d = d, ivf->dp = (d + 3) / 4 * 4, ivf->nlist = nlist;
    ivf->cent = ml_malloc(sizeof(float) * (size_t)nlist * d, err);
    ivf->centT = ivf->cent ? ml_malloc(sizeof(float) * (size_t)nlist * d, err) : NULL;
    ivf->lists = ivf->centT ? ml_calloc((size_t)nlist, sizeof(ivf_list), err) : NULL;
    if (!ivf->lists) {
        ml_ivf_free(ivf);
        return NULL;
    }
    return ivf;
}

static void set_transpose(ml_ivf *ivf) {
    for (int c = 0; c < ivf->nlist; c++)
        for (int k = 0; k < ivf->d; k++)
            ivf->centT[(size_t)k * ivf->nlist + c] = ivf->cent[(size_t)c * ivf->d + k];
}

/* Room for `rows` rows in list l (doubling). */
static int list_reserve(ml_ivf *ivf, ivf_list *L, size_t rows, ml_error *err) {
    size_t need = rows / SK_BLOCK + (rows % SK_BLOCK != 0);
    if (need <= L->cap_blocks) return 0;
    size_t cap = L->cap_blocks * 2 > need ? L->cap_blocks * 2 : need;
    size_t bb = sk_panel_bytes(ML_VEC_I8, ivf->d) * SK_BLOCK_PANELS;
    uint8_t *c = ml_aligned_alloc(cap * bb, err);
    float *s = c ? ml_calloc(cap * SK_BLOCK, sizeof(float), err) : NULL;
    int64_t *id = s ? ml_calloc(cap * SK_BLOCK, sizeof(int64_t), err) : NULL;
    if (!id) {
        free(c), free(s);
        return -1;
    }
    if (L->cap_blocks) {
        memcpy(c, L->codes, L->cap_blocks * bb);
        memcpy(s, L->scale, L->cap_blocks * SK_BLOCK * sizeof(float));
        memcpy(id, L->ids, L->cap_blocks * SK_BLOCK * sizeof(int64_t));
    }
    memset(c + L->cap_blocks * bb, 0, (cap - L->cap_blocks) * bb);
    free(L->codes), free(L->scale), free(L->ids);
    L->codes = c, L->scale = s, L->ids = id, L->cap_blocks = cap;
    return 0;
}

/* ---- assignment and k-means ---- */

/* a[i] = the centroid with the largest inner product with row i (ties: the
 * smaller list), best[i] (optional) that product. */
static int assign_rows(const ml_ivf *ivf, const float *x, size_t n, int32_t *a, float *best,
                       ml_error *err) {
    float *C = ml_malloc(sizeof(float) * ASSIGN_BLOCK * (size_t)ivf->nlist, err);
    if (!C) return -1;
    for (size_t i0 = 0; i0 < n; i0 += ASSIGN_BLOCK) {
        int m = n - i0 < ASSIGN_BLOCK ? (int)(n - i0) : ASSIGN_BLOCK;
        ml_gemm(m, ivf->nlist, ivf->d, x + i0 * ivf->d, ivf->d, ivf->centT, ivf->nlist, NULL, C,
                ivf->nlist, 0);
        for (int r = 0; r < m; r++) {
            const float *c = C + (size_t)r * ivf->nlist;
            int arg = 0;
            for (int j = 1; j < ivf->nlist; j++)
                if (c[j] > c[arg]) arg = j;
            a[i0 + r] = arg;
            if (best) best[i0 + r] = c[arg];
        }
    }
    free(C);
    return 0;
}

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Unit copy of x into c (x itself when it has no direction). */
static void set_unit(float *c, const double *x, int d) {
    double s = 0;
    for (int k = 0; k < d; k++) s += x[k] * x[k];
    double inv = s > 0 ? 1.0 / sqrt(s) : 1.0;
    for (int k = 0; k < d; k++) c[k] = (float)(x[k] * inv);
}

static void set_unit_f(float *c, const float *x, int d) {
    double s = 0;
    for (int k = 0; k < d; k++) s += (double)x[k] * x[k];
    double inv = s > 0 ? 1.0 / sqrt(s) : 1.0;
    for (int k = 0; k < d; k++) c[k] = (float)(x[k] * inv);
}

static int cmp_size(const void *a, const void *b) {
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

/* Order of rows by fit, worst first (for re-seeding empty clusters). */
typedef struct fit {
    float s;
    size_t i;
} fit;
static int cmp_fit(const void *a, const void *b) {
    const fit *x = a, *y = b;
    if (x->s != y->s) return x->s < y->s ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

/* The sample: ntr distinct rows chosen by a seeded partial Fisher-Yates,
 * copied in ascending row order. */
static float *sample_rows(const float *rows, size_t n, int d, size_t ntr, uint64_t *rng,
                          ml_error *err) {
    float *X = ml_malloc(sizeof(float) * ntr * d, err);
    size_t *idx = X ? ml_malloc(sizeof(size_t) * n, err) : NULL;
    if (!idx) {
        free(X);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) idx[i] = i;
    if (ntr < n) {
        for (size_t i = 0; i < ntr; i++) {
            size_t j = i + (size_t)(splitmix64(rng) % (n - i)), t = idx[i];
            idx[i] = idx[j], idx[j] = t;
        }
        qsort(idx, ntr, sizeof *idx, cmp_size);
    }
    for (size_t i = 0; i < ntr; i++) memcpy(X + i * d, rows + idx[i] * d, sizeof(float) * d);
    free(idx);
    return X;
}

static int kmeans(ml_ivf *ivf, const float *X, size_t ntr, int iters, uint64_t *rng,
                  ml_error *err) {
    int d = ivf->d, K = ivf->nlist;
    int32_t *a = ml_malloc(sizeof(int32_t) * ntr, err);
    float *best = a ? ml_malloc(sizeof(float) * ntr, err) : NULL;
    double *sum = best ? ml_calloc((size_t)K * d, sizeof(double), err) : NULL;
    size_t *cnt = sum ? ml_calloc((size_t)K, sizeof(size_t), err) : NULL;
    size_t *perm = cnt ? ml_malloc(sizeof(size_t) * ntr, err) : NULL;
    fit *order = perm ? ml_malloc(sizeof(fit) * ntr, err) : NULL;
    int rc = order ? 0 : -1;
    if (rc == 0) {
        /* Initial centroids: K distinct sample rows in seeded random order. */
        for (size_t i = 0; i < ntr; i++) perm[i] = i;
        for (int c = 0; c < K; c++) {
            size_t j = (size_t)c + (size_t)(splitmix64(rng) % (ntr - (size_t)c)), t = perm[c];
            perm[c] = perm[j], perm[j] = t;
            set_unit_f(ivf->cent + (size_t)c * d, X + perm[c] * d, d);
        }
        set_transpose(ivf);
    }
    for (int it = 0; rc == 0 && it < iters; it++) {
        if (assign_rows(ivf, X, ntr, a, best, err)) {
            rc = -1;
            break;
        }
        memset(sum, 0, sizeof(double) * (size_t)K * d);
        memset(cnt, 0, sizeof(size_t) * K);
        for (size_t i = 0; i < ntr; i++) {
            double *s = sum + (size_t)a[i] * d;
            const float *x = X + i * d;
            for (int k = 0; k < d; k++) s[k] += x[k];
            cnt[a[i]]++;
        }
        size_t next = 0; /* empty clusters take the worst-fitting rows, in order */
        int sorted = 0;
        for (int c = 0; c < K; c++) {
            if (cnt[c]) {
                set_unit(ivf->cent + (size_t)c * d, sum + (size_t)c * d, d);
                continue;
            }
            if (!sorted) {
                for (size_t i = 0; i < ntr; i++) order[i] = (fit){best[i], i};
                qsort(order, ntr, sizeof *order, cmp_fit);
                sorted = 1;
            }
            set_unit_f(ivf->cent + (size_t)c * d, X + order[next % ntr].i * d, d);
            next++;
        }
        set_transpose(ivf);
    }
    free(a), free(best), free(sum), free(cnt), free(perm), free(order);
    return rc;
}

/* ---- build / add ---- */

/* Defaults (bench/search.md): nlist ~ sqrt(n) keeps training and assignment
 * cheap (the products cost n * nlist * d) while lists stay ~sqrt(n) long. */
static int default_nlist(size_t n) {
    double s = sqrt((double)n);
    int c = (int)(s + 0.5);
    return c < 1 ? 1 : c > (1 << 20) ? (1 << 20) : c;
}

ml_ivf *ml_ivf_build(const float *rows, size_t n, int d, const ml_ivf_params *p, ml_error *err) {
    if (d < 1 || d > IVF_MAX_DIM) {
        ml_fail(err, "IVF build: dimension %d out of range 1..%d", d, IVF_MAX_DIM);
        return NULL;
    }
    if (n == 0 || !rows) {
        ml_fail(err, "IVF build: no rows to train on");
        return NULL;
    }
    ml_ivf_params def = {0};
    if (!p) p = &def;
    if (p->nlist < 0 || p->train_max < 0 || p->iters < 0) {
        ml_fail(err, "IVF build: negative nlist, train_max or iters");
        return NULL;
    }
    int nlist = p->nlist ? p->nlist : default_nlist(n);
    if ((size_t)nlist > n) nlist = (int)n; /* a list per row at most */
    size_t ntr = p->train_max ? (size_t)p->train_max : (size_t)nlist * 64;
    if (ntr > n) ntr = n;
    if (ntr < (size_t)nlist) ntr = (size_t)nlist;
    uint64_t rng = p->seed;
    ml_ivf *ivf = ivf_alloc(d, nlist, err);
    if (!ivf) return NULL;
    float *X = sample_rows(rows, n, d, ntr, &rng, err);
    if (!X || kmeans(ivf, X, ntr, p->iters ? p->iters : 10, &rng, err) ||
        ml_ivf_add(ivf, rows, n, err)) {
        free(X);
        ml_ivf_free(ivf);
        ml_fail_prefix(err, "IVF build (%zu rows, %d lists)", n, nlist);
        return NULL;
    }
    free(X);
    return ivf;
}

typedef struct add_job {
    ml_ivf *ivf;
    const float *rows;
    const size_t *off;   /* [nlist + 1]: rows of list l are by_list[off[l]..off[l+1]) */
    const size_t *by_list;
    size_t first;        /* row number of rows[0] */
} add_job;

static void add_lists(void *ctx, int b, int e) {
    const add_job *j = ctx;
    ml_ivf *ivf = j->ivf;
    for (int l = b; l < e; l++) {
        ivf_list *L = &ivf->lists[l];
        for (size_t t = j->off[l]; t < j->off[l + 1]; t++) {
            size_t i = j->by_list[t];
            sk_store_put(ML_VEC_I8, ivf->d, L->codes, L->scale, L->n, j->rows + i * ivf->d);
            L->ids[L->n++] = (int64_t)(j->first + i);
        }
    }
}

int ml_ivf_add(ml_ivf *ivf, const float *rows, size_t n, ml_error *err) {
    if (n == 0) return 0;
    if (!rows) return ml_fail(err, "IVF add: %zu rows from NULL", n);
    int32_t *a = ml_malloc(sizeof(int32_t) * n, err);
    size_t *off = a ? ml_calloc((size_t)ivf->nlist + 1, sizeof(size_t), err) : NULL;
    size_t *by = off ? ml_malloc(sizeof(size_t) * n, err) : NULL;
    int rc = by ? assign_rows(ivf, rows, n, a, NULL, err) : -1;
    if (rc == 0) { /* counting sort: each list's new rows in ascending order */
        for (size_t i = 0; i < n; i++) off[a[i] + 1]++;
        for (int l = 0; l < ivf->nlist; l++) off[l + 1] += off[l];
        size_t *pos = ml_malloc(sizeof(size_t) * ivf->nlist, err);
        if (!pos) rc = -1;
        else {
            memcpy(pos, off, sizeof(size_t) * ivf->nlist);
            for (size_t i = 0; i < n; i++) by[pos[a[i]]++] = i;
            free(pos);
        }
    }
    for (int l = 0; rc == 0 && l < ivf->nlist; l++)
        rc = list_reserve(ivf, &ivf->lists[l], ivf->lists[l].n + off[l + 1] - off[l], err);
    if (rc == 0) {
        add_job j = {ivf, rows, off, by, ivf->n};
        ml_parallel_for(ivf->nlist, 1, add_lists, &j);
        ivf->n += n;
    } else
        ml_fail_prefix(err, "IVF add of %zu rows", n);
    free(a), free(off), free(by);
    return rc;
}

/* ---- search ---- */

/* Lists visited when opts.nprobe = 0 (bench/search.md): nlist / 32, at least
 * 8 (all lists when there are fewer).  On the clustered 1M x 512 benchmark
 * recall@10 is 0.99 from nprobe 2 and 1.000 from 8; real embeddings are less
 * tidy than a Gaussian mixture, so the default keeps a wide margin (~3% of
 * the lists, still ~40x faster than exact int8 for one query). */
static int default_nprobe(int nlist) {
    int p = nlist / 32;
    if (p < 8) p = 8;
    return p > nlist ? nlist : p;
}

typedef struct ivf_search {
    const ml_ivf *ivf;
    const sk_kernels *kern;
    const ml_search_opts *o;
    const float *q;
    sk_queries sq;
    int q0, nq, nprobe, pool, slices;
    int32_t *probe; /* [QUERY_CHUNK][nprobe], best list first */
    int32_t *qoff, *qids; /* list-major: queries of list l = qids[qoff[l]..qoff[l+1]) */
    ml_hit *hits;   /* [QUERY_CHUNK * slices][pool] */
    sk_pool *pools;
    ml_hit *res;
    atomic_int failed;
} ivf_search;

/* Item = (query, slice): the slice's share of the query's probed lists,
 * dealt round-robin so each slice gets some of the best lists. */
static void scan_items(void *ctx, int b, int e) {
    ivf_search *s = ctx;
    const ml_ivf *ivf = s->ivf;
    float out[SK_BLOCK], thr[1];
    uint16_t mask[SK_BLOCK_PANELS];
    for (int it = b; it < e; it++) {
        int i = it / s->slices, sl = it % s->slices;
        sk_pool *pool = &s->pools[it];
        *pool = (sk_pool){s->hits + (size_t)it * s->pool, 0, s->pool};
        for (int j = sl; j < s->nprobe; j += s->slices) {
            const ivf_list *L = &ivf->lists[s->probe[(size_t)i * s->nprobe + j]];
            if (!L->n) continue;
            sk_store st = {ML_VEC_I8, ivf->d, ivf->dp, L->n, L->codes, L->scale, L->ids};
            size_t nb = L->n / SK_BLOCK + (L->n % SK_BLOCK != 0);
            sk_scan(s->kern, &st, 0, nb, &s->sq, s->q0 + i, 1, s->o->allow, pool, out, mask, thr);
        }
    }
}

/* List-major batch: slot t scans lists [t*nlist/T, (t+1)*nlist/T), each
 * once for all the chunk's queries that probe it (gathered, so the kernels'
 * multi-query tiles and AMX apply), into the queries' slot-t pools. */
static void scan_lists(void *ctx, int b, int e) {
    ivf_search *s = ctx;
    const ml_ivf *ivf = s->ivf;
    int dp = ivf->dp, T = s->slices;
    int8_t *g8 = malloc((size_t)QUERY_CHUNK * dp);
    float *gs = malloc(sizeof(float) * QUERY_CHUNK), *thr = malloc(sizeof(float) * QUERY_CHUNK);
    float *out = malloc(sizeof(float) * QUERY_CHUNK * SK_BLOCK);
    int32_t *gc = malloc(sizeof(int32_t) * QUERY_CHUNK);
    uint16_t *mask = malloc(sizeof(uint16_t) * QUERY_CHUNK * SK_BLOCK_PANELS);
    sk_pool *gp = malloc(sizeof(sk_pool) * QUERY_CHUNK);
    if (!g8 || !gs || !thr || !out || !gc || !mask || !gp) {
        atomic_store(&s->failed, 2);
        goto done;
    }
    for (int t = b; t < e; t++) {
        for (int i = 0; i < s->nq; i++)
            s->pools[(size_t)i * T + t] = (sk_pool){s->hits + ((size_t)i * T + t) * s->pool, 0, s->pool};
        int l0 = (int)((long long)ivf->nlist * t / T), l1 = (int)((long long)ivf->nlist * (t + 1) / T);
        for (int l = l0; l < l1; l++) {
            const ivf_list *L = &ivf->lists[l];
            int m = s->qoff[l + 1] - s->qoff[l];
            if (!L->n || !m) continue;
            const int32_t *qs = s->qids + s->qoff[l];
            for (int j = 0; j < m; j++) {
                int qi = s->q0 + qs[j];
                memcpy(g8 + (size_t)j * dp, s->sq.q8 + (size_t)qi * dp, (size_t)dp);
                gs[j] = s->sq.qscale[qi], gc[j] = s->sq.qcorr[qi];
                gp[j] = s->pools[(size_t)qs[j] * T + t];
            }
            sk_queries gq = {NULL, 0, g8, gs, gc};
            sk_store st = {ML_VEC_I8, ivf->d, dp, L->n, L->codes, L->scale, L->ids};
            size_t nb = L->n / SK_BLOCK + (L->n % SK_BLOCK != 0);
            sk_scan(s->kern, &st, 0, nb, &gq, 0, m, s->o->allow, gp, out, mask, thr);
            for (int j = 0; j < m; j++) s->pools[(size_t)qs[j] * T + t].n = gp[j].n;
        }
    }
done:
    free(g8), free(gs), free(thr), free(out), free(gc), free(mask), free(gp);
}

/* The queries of the chunk per list (CSR over s->probe). */
static void invert_probes(ivf_search *s) {
    int nl = s->ivf->nlist;
    memset(s->qoff, 0, sizeof(int32_t) * (size_t)(nl + 1));
    for (int i = 0; i < s->nq * s->nprobe; i++) s->qoff[s->probe[i] + 1]++;
    for (int l = 0; l < nl; l++) s->qoff[l + 1] += s->qoff[l];
    for (int i = 0; i < s->nq; i++) /* ascending query order within a list */
        for (int j = 0; j < s->nprobe; j++) {
            int l = s->probe[(size_t)i * s->nprobe + j];
            s->qids[s->qoff[l]++] = i;
        }
    for (int l = nl; l > 0; l--) s->qoff[l] = s->qoff[l - 1]; /* undo the fill's advance */
    s->qoff[0] = 0;
}

static void finish_items(void *ctx, int b, int e) {
    ivf_search *s = ctx;
    int d = s->ivf->d;
    ml_hit *cand = malloc(sizeof(ml_hit) * (size_t)s->slices * s->pool);
    if (!cand) {
        atomic_store(&s->failed, 2);
        return;
    }
    for (int i = b; i < e; i++) {
        int nc = 0;
        for (int sl = 0; sl < s->slices; sl++) {
            const sk_pool *p = &s->pools[(size_t)i * s->slices + sl];
            memcpy(cand + nc, p->h, sizeof(ml_hit) * (size_t)p->n);
            nc += p->n;
        }
        int qi = s->q0 + i;
        if (sk_finish(cand, nc, s->pool, s->o->k, s->q + (size_t)qi * d, d, s->o->row_f32,
                      s->o->row_ctx, NULL, NULL, s->res + (size_t)qi * s->o->k))
            atomic_store(&s->failed, 1);
    }
    free(cand);
}

/* The nprobe best lists of each query of the chunk, best first. */
static int probe_lists(ivf_search *s, ml_error *err) {
    const ml_ivf *ivf = s->ivf;
    float *C = ml_malloc(sizeof(float) * (size_t)s->nq * ivf->nlist, err);
    ml_hit *h = C ? ml_malloc(sizeof(ml_hit) * (size_t)s->nprobe, err) : NULL;
    if (!h) {
        free(C);
        return -1;
    }
    ml_gemm(s->nq, ivf->nlist, ivf->d, s->q + (size_t)s->q0 * ivf->d, ivf->d, ivf->centT,
            ivf->nlist, NULL, C, ivf->nlist, 0);
    for (int i = 0; i < s->nq; i++) {
        sk_pool p = {h, 0, s->nprobe};
        const float *c = C + (size_t)i * ivf->nlist;
        for (int l = 0; l < ivf->nlist; l++)
            if (c[l] >= sk_pool_threshold(&p)) sk_pool_push(&p, c[l], l);
        /* heap -> best first: pop by repeated selection (nprobe is small) */
        for (int j = 0; j < p.n; j++) {
            int bi = j;
            for (int t = j + 1; t < p.n; t++)
                if (sk_better(h[t].score, h[t].row, h[bi].score, h[bi].row)) bi = t;
            ml_hit tmp = h[j];
            h[j] = h[bi], h[bi] = tmp;
            s->probe[(size_t)i * s->nprobe + j] = (int32_t)h[j].row;
        }
        for (int j = p.n; j < s->nprobe; j++) s->probe[(size_t)i * s->nprobe + j] = 0;
    }
    free(C), free(h);
    return 0;
}

int ml_ivf_search(const ml_ivf *ivf, const float *q, int nq, const ml_search_opts *o,
                  ml_hit *out, ml_error *err) {
    if (sk_check_opts(o, nq, q, out, 1, "IVF", err)) return -1;
    if (nq == 0) return 0;
    if (ivf->n == 0) {
        for (size_t i = 0; i < (size_t)nq * o->k; i++) out[i] = (ml_hit){0.0f, -1};
        return 0;
    }
    ivf_search s = {.ivf = ivf, .kern = sk_kernels_for(ml_isa_active()), .o = o, .q = q, .res = out};
    s.nprobe = o->nprobe ? (o->nprobe < ivf->nlist ? o->nprobe : ivf->nlist)
                         : default_nprobe(ivf->nlist);
    s.pool = o->rerank > 0 ? (o->rerank > o->k ? o->rerank : o->k) : sk_default_rerank(o->k);
    int t = ml_num_threads();
    size_t items = (size_t)QUERY_CHUNK * (size_t)(t > 1 ? t : 1);
    s.probe = malloc(sizeof(int32_t) * QUERY_CHUNK * (size_t)s.nprobe);
    s.qoff = malloc(sizeof(int32_t) * ((size_t)ivf->nlist + 1));
    s.qids = malloc(sizeof(int32_t) * QUERY_CHUNK * (size_t)s.nprobe);
    s.hits = malloc(sizeof(ml_hit) * items * s.pool);
    s.pools = malloc(sizeof(sk_pool) * items);
    int8_t *q8 = malloc((size_t)nq * ivf->dp);
    float *qscale = malloc(sizeof(float) * nq);
    int32_t *qcorr = malloc(sizeof(int32_t) * nq);
    int rc = 0;
    if (!s.probe || !s.qoff || !s.qids || !s.hits || !s.pools || !q8 || !qscale || !qcorr) {
        rc = ml_fail(err, "IVF search: out of memory for %d queries", nq);
        goto done;
    }
    sk_prepare_i8(q, nq, ivf->d, ivf->dp, q8, qscale, qcorr);
    s.sq = (sk_queries){q, ivf->d, q8, qscale, qcorr};
    for (s.q0 = 0; s.q0 < nq; s.q0 += QUERY_CHUNK) {
        s.nq = nq - s.q0 < QUERY_CHUNK ? nq - s.q0 : QUERY_CHUNK;
        /* Fewer queries than threads: split each query's lists too.  The
         * merged pools are the same either way (strict total order). */
        int list_major = s.nq >= LIST_MAJOR_MIN && t > 0;
        s.slices = list_major ? t : s.nq < t ? (t + s.nq - 1) / s.nq : 1;
        if (!list_major && s.slices > s.nprobe) s.slices = s.nprobe;
        if (probe_lists(&s, err)) {
            rc = ml_fail_prefix(err, "IVF search");
            break;
        }
        if (list_major) {
            invert_probes(&s);
            ml_parallel_for(s.slices, 1, scan_lists, &s);
        } else
            ml_parallel_for(s.nq * s.slices, 1, scan_items, &s);
        ml_parallel_for(s.nq, 16, finish_items, &s);
        if (atomic_load(&s.failed)) {
            rc = atomic_load(&s.failed) == 2 ? ml_fail(err, "IVF search: out of memory")
                                             : ml_fail(err, "IVF search: row_f32 returned no row");
            break;
        }
    }
done:
    free(s.probe), free(s.qoff), free(s.qids), free(s.hits), free(s.pools), free(q8), free(qscale), free(qcorr);
    return rc;
}

/* ---- save / load ---- */

typedef struct writer {
    FILE *f;
    XXH3_state_t *h;
    int bad;
} writer;

static void put(writer *w, const void *p, size_t n) {
    if (w->bad || n == 0) return;
    if (fwrite(p, 1, n, w->f) != n) w->bad = 1;
    XXH3_64bits_update(w->h, p, n);
}

static void put_u32(writer *w, uint32_t v) { put(w, &v, 4); }
static void put_u64(writer *w, uint64_t v) { put(w, &v, 8); }

static int fsync_dir_of(const char *path) {
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == path) snprintf(dir, sizeof dir, "/");
    else snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

static void write_body(const ml_ivf *ivf, writer *w, int8_t *codes) {
    put(w, IVF_MAGIC, 8);
    put_u32(w, IVF_VERSION);
    put_u32(w, (uint32_t)ivf->d);
    put_u32(w, (uint32_t)ivf->nlist);
    put_u32(w, 0);
    put_u64(w, ivf->n);
    put(w, ivf->cent, sizeof(float) * (size_t)ivf->nlist * ivf->d);
    for (int l = 0; l < ivf->nlist; l++) {
        const ivf_list *L = &ivf->lists[l];
        put_u64(w, L->n);
        put(w, L->ids, sizeof(int64_t) * L->n);
        put(w, L->scale, sizeof(float) * L->n);
        for (size_t i = 0; i < L->n; i++) {
            sk_store_get_codes(ivf->d, L->codes, i, codes);
            put(w, codes, (size_t)ivf->d);
        }
    }
}

int ml_ivf_save(const ml_ivf *ivf, const char *path, ml_error *err) {
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return ml_fail(err, "%s: path too long", path);
    writer w = {fopen(tmp, "wb"), XXH3_createState(), 0};
    int8_t *codes = malloc((size_t)ivf->d);
    if (!w.f || !w.h || !codes) {
        int e = errno;
        if (w.f) fclose(w.f), unlink(tmp);
        XXH3_freeState(w.h);
        free(codes);
        return ml_fail(err, "%s: cannot write: %s", tmp, w.f ? "out of memory" : strerror(e));
    }
    XXH3_64bits_reset(w.h);
    write_body(ivf, &w, codes);
    uint64_t sum = XXH3_64bits_digest(w.h);
    if (!w.bad && fwrite(&sum, 1, 8, w.f) != 8) w.bad = 1;
    int e = errno;
    if (fflush(w.f) != 0 || fsync(fileno(w.f)) != 0) w.bad = 1, e = errno;
    if (fclose(w.f) != 0 && !w.bad) w.bad = 1, e = errno;
    XXH3_freeState(w.h);
    free(codes);
    if (w.bad) {
        unlink(tmp);
        return ml_fail(err, "%s: write failed: %s", tmp, strerror(e));
    }
    if (rename(tmp, path) != 0) {
        e = errno;
        unlink(tmp);
        return ml_fail(err, "%s: cannot rename from %s: %s", path, tmp, strerror(e));
    }
    if (fsync_dir_of(path) != 0)
        return ml_fail(err, "%s: saved, but syncing its directory failed: %s", path, strerror(errno));
    return 0;
}

/* A bounds-checked cursor over the mapped file. */
typedef struct reader {
    const uint8_t *p;
    size_t left;
} reader;

static int take(reader *r, void *dst, size_t n) {
    if (n > r->left) return -1;
    memcpy(dst, r->p, n);
    r->p += n, r->left -= n;
    return 0;
}

static const uint8_t *skip(reader *r, size_t n) {
    if (n > r->left) return NULL;
    const uint8_t *p = r->p;
    r->p += n, r->left -= n;
    return p;
}

/* Parses the checked body into a new index; msg gets the reason on failure. */
static ml_ivf *parse(reader *r, const char **msg, ml_error *err) {
    uint32_t version, d, nlist, zero;
    uint64_t n;
    char magic[8];
    if (take(r, magic, 8) || take(r, &version, 4) || take(r, &d, 4) || take(r, &nlist, 4) ||
        take(r, &zero, 4) || take(r, &n, 8))
        return *msg = "truncated header", NULL;
    if (d < 1 || d > IVF_MAX_DIM) return *msg = "dimension out of range", NULL;
    if (nlist < 1 || nlist > (1u << 24) || (uint64_t)nlist * d * 4 > r->left)
        return *msg = "bad list count", NULL;
    if (n > r->left / (8 + 4 + (uint64_t)d)) return *msg = "row count exceeds the file size", NULL;
    if (zero != 0) return *msg = "bad reserved field", NULL;
    ml_ivf *ivf = ivf_alloc((int)d, (int)nlist, err);
    uint8_t *seen = ivf ? ml_calloc(n ? n : 1, 1, err) : NULL;
    int8_t *codes = seen ? ml_malloc(d, err) : NULL;
    if (!codes) {
        free(seen);
        ml_ivf_free(ivf);
        return *msg = "out of memory", NULL;
    }
    take(r, ivf->cent, sizeof(float) * (size_t)nlist * d);
    set_transpose(ivf);
    uint64_t total = 0;
    for (uint32_t l = 0; l < nlist && !*msg; l++) {
        uint64_t cnt;
        if (take(r, &cnt, 8)) *msg = "truncated list";
        else if (cnt > n - total || cnt > r->left / (8 + 4 + (uint64_t)d)) *msg = "list longer than the index";
        else if (list_reserve(ivf, &ivf->lists[l], cnt, err)) *msg = "out of memory";
        if (*msg) break;
        ivf_list *L = &ivf->lists[l];
        const uint8_t *ids = skip(r, 8 * cnt), *sc = skip(r, 4 * cnt), *cd = skip(r, d * cnt);
        for (uint64_t i = 0; i < cnt; i++) {
            int64_t id;
            float s;
            memcpy(&id, ids + 8 * i, 8);
            memcpy(&s, sc + 4 * i, 4);
            if (id < 0 || (uint64_t)id >= n || seen[id]) {
                *msg = "row id out of range or repeated";
                break;
            }
            if (!isfinite(s)) {
                *msg = "non-finite scale";
                break;
            }
            seen[id] = 1;
            memcpy(codes, cd + d * i, d);
            for (uint32_t k = 0; k < d; k++)
                if (codes[k] == -128) codes[k] = -127; /* keep the stored +128 in u8 range */
            sk_store_put_codes((int)d, L->codes, L->scale, L->n, codes, s);
            L->ids[L->n++] = id;
        }
        total += cnt;
    }
    if (!*msg && total != n) *msg = "lists do not hold every row";
    if (!*msg && r->left != 0) *msg = "trailing bytes";
    free(seen), free(codes);
    if (*msg) {
        ml_ivf_free(ivf);
        return NULL;
    }
    ivf->n = (size_t)n;
    return ivf;
}

ml_ivf *ml_ivf_load(const char *path, ml_error *err) {
    ml_file_map m;
    if (ml_file_map_open(path, &m, err)) {
        ml_fail_prefix(err, "%s: cannot open IVF index", path);
        return NULL;
    }
    const char *msg = NULL;
    ml_ivf *ivf = NULL;
    uint32_t version = 0;
    uint64_t want, got;
    if (m.size < IVF_HEADER + 8) msg = "too short to be an IVF index";
    else if (memcmp(m.data, IVF_MAGIC, 8) != 0) msg = "not an IVF index (bad magic)";
    else if (memcpy(&version, m.data + 8, 4), version != IVF_VERSION) {
        ml_fail(err, "%s: IVF index format version %u, this build reads version %u", path,
                version, IVF_VERSION);
        ml_file_map_close(&m);
        return NULL;
    } else if (memcpy(&want, m.data + m.size - 8, 8), (got = XXH3_64bits(m.data, m.size - 8)) != want)
        msg = "checksum mismatch (truncated or corrupt)";
    else {
        reader r = {m.data, m.size - 8};
        ivf = parse(&r, &msg, err);
    }
    ml_file_map_close(&m);
    if (!ivf) ml_fail(err, "%s: refusing IVF index: %s", path, msg ? msg : "unreadable");
    return ivf;
}
