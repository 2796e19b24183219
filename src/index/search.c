/* search.c - exact nearest-neighbour search (ml_vecset), the portable
 * scoring kernels, and the candidate pools / re-ranking shared with ivf.c.
 *
 * A search scans the stored rows in blocks of 64 (search_internal.h: panel
 * layout), scoring each block against a chunk of queries with the kernel of
 * the active ISA.  Each thread owns a contiguous range of blocks and one
 * bounded heap per query; the kernel also flags which scores beat the heap's
 * cut-off, so almost no score is looked at twice.  Never more than
 * nq_chunk x 64 scores exist at a time.
 *
 * Results: the heaps of all threads are merged per query, the best `pool`
 * candidates by their stored-precision score are re-scored exactly (float64
 * sum of float32 products, rounded to float32) and sorted by score desc, row
 * asc.  Because the heaps keep a strict total order, the merged pool - and
 * so the answer - does not depend on the number of threads, and every
 * engine (f32, f16, int8, IVF) returns bit-identical scores for the same
 * (query, row).
 *
 * Pool size (opts.rerank = 0):
 *   f32: k + 8.  The float32 scan can only misorder rows whose scores differ
 *        by a few ulps; 8 extra rows absorb that at the k-th place.
 *   f16, int8: max(4k, k + 64).  Half precision perturbs a 512-d unit-vector
 *        score by ~1e-4, int8 (rows and query both quantised) by ~5e-4 (std);
 *        the exact top-k then ranks within the first ~k+10 low-precision
 *        places on clustered embeddings, so 4k / k+64 leaves a wide margin
 *        (bench/search.md measures recall 1.000 against f32).  The re-rank
 *        reads only `pool` float32 rows per query. */
#include "index/search.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/mem.h"
#include "core/threads.h"
#include "index/search_internal.h"

#define ML_VEC_MAX_DIM 65536
#define QUERY_CHUNK 256      /* queries scored together per pass over the rows */
#define BLOCKS_PER_THREAD 16 /* 1024 rows: less is not worth waking a thread */

/* ---- names ---- */

const char *ml_vec_type_name(ml_vec_type t) {
    switch (t) {
    case ML_VEC_F32: return "f32";
    case ML_VEC_F16: return "f16";
    case ML_VEC_I8: return "int8";
    }
    return "unknown";
}

int ml_vec_type_parse(const char *s, ml_vec_type *out) {
    static const ml_vec_type all[] = {ML_VEC_F32, ML_VEC_F16, ML_VEC_I8};
    for (int i = 0; s && i < 3; i++)
        if (strcmp(s, ml_vec_type_name(all[i])) == 0) {
            *out = all[i];
            return 0;
        }
    return -1;
}

/* ---- conversions ---- */

uint16_t sk_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0); /* inf, NaN */
    if (ax >= 0x477ff000u) return sign | 0x7c00; /* rounds past 65504: inf, as F16C does */
    if (ax < 0x38800000u) {                     /* below 2^-14: half subnormal (or zero) */
        float a;
        memcpy(&a, &ax, 4);
        return sign | (uint16_t)lrintf(a * 16777216.0f); /* units of 2^-24, nearest even */
    }
    uint32_t r = ax - 0x38000000u; /* rebias the exponent 127 -> 15 */
    uint32_t h = r >> 13, rem = r & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++; /* nearest even (may carry into exp) */
    return sign | (uint16_t)h;
}

float sk_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff, x;
    float f;
    if (e == 0x1f) x = sign | 0x7f800000u | (m << 13);
    else if (e == 0) {
        f = (float)m * 5.9604644775390625e-8f; /* 2^-24: subnormal (exact) */
        memcpy(&x, &f, 4);
        x |= sign;
    } else x = sign | ((e + 112) << 23) | (m << 13);
    memcpy(&f, &x, 4);
    return f;
}

float sk_quantize_i8(const float *x, int d, int8_t *codes) {
    float mx = 0.0f;
    for (int i = 0; i < d; i++) {
        float a = fabsf(x[i]);
        mx = a > mx ? a : mx;
    }
    if (!(mx > 0.0f) || !isfinite(mx)) { /* zero (or non-finite) row: all codes 0 */
        memset(codes, 0, (size_t)d);
        return 0.0f;
    }
    float inv = 127.0f / mx;
    for (int i = 0; i < d; i++) {
        long v = lrintf(x[i] * inv);
        codes[i] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
    }
    return mx / 127.0f;
}

void sk_prepare_i8(const float *q, int nq, int d, int dp, int8_t *q8, float *qscale,
                   int32_t *qcorr) {
    for (int i = 0; i < nq; i++) {
        int8_t *c = q8 + (size_t)i * dp;
        memset(c, 0, (size_t)dp);
        qscale[i] = sk_quantize_i8(q + (size_t)i * d, d, c);
        int32_t s = 0;
        for (int j = 0; j < d; j++) s += c[j];
        qcorr[i] = 128 * s; /* the rows' +128 offset times sum(q) */
    }
}

/* ---- store layout ---- */

size_t sk_panel_bytes(ml_vec_type type, int d) {
    switch (type) {
    case ML_VEC_F32: return (size_t)d * SK_PANEL * 4;
    case ML_VEC_F16: return (size_t)d * SK_PANEL * 2;
    case ML_VEC_I8: return (size_t)((d + 3) / 4 * 4) * SK_PANEL;
    }
    return 0;
}

void sk_store_put(ml_vec_type type, int d, void *panels, float *scale, size_t i, const float *x) {
    size_t p = i / SK_PANEL, l = i % SK_PANEL;
    uint8_t *pan = (uint8_t *)panels + p * sk_panel_bytes(type, d);
    if (type == ML_VEC_F32) {
        float *f = (float *)pan;
        for (int k = 0; k < d; k++) f[(size_t)k * SK_PANEL + l] = x[k];
    } else if (type == ML_VEC_F16) {
        uint16_t *h = (uint16_t *)pan;
        for (int k = 0; k < d; k++) h[(size_t)k * SK_PANEL + l] = sk_f32_to_f16(x[k]);
    } else {
        int8_t codes[ML_VEC_MAX_DIM];
        float s = sk_quantize_i8(x, d, codes);
        sk_store_put_codes(d, panels, scale, i, codes, s);
    }
}

void sk_store_put_codes(int d, void *panels, float *scale, size_t i, const int8_t *codes, float s) {
    size_t l = i % SK_PANEL;
    uint8_t *pan = (uint8_t *)panels + i / SK_PANEL * sk_panel_bytes(ML_VEC_I8, d);
    scale[i] = s;
    for (int k = 0; k < (d + 3) / 4 * 4; k++) /* stored +128 (search_internal.h); pad = code 0 */
        pan[(size_t)(k / 4) * SK_PANEL * 4 + l * 4 + k % 4] = (uint8_t)((k < d ? codes[k] : 0) + 128);
}

void sk_store_get_codes(int d, const void *panels, size_t i, int8_t *codes) {
    size_t l = i % SK_PANEL;
    const uint8_t *pan = (const uint8_t *)panels + i / SK_PANEL * sk_panel_bytes(ML_VEC_I8, d);
    for (int k = 0; k < d; k++)
        codes[k] = (int8_t)(pan[(size_t)(k / 4) * SK_PANEL * 4 + l * 4 + k % 4] - 128);
}

void sk_store_get_f32(const sk_store *st, size_t i, float *buf) {
    const float *f = (const float *)((const uint8_t *)st->panels +
                                     i / SK_PANEL * sk_panel_bytes(ML_VEC_F32, st->d));
    for (int k = 0; k < st->d; k++) buf[k] = f[(size_t)k * SK_PANEL + i % SK_PANEL];
}

/* ---- portable kernels (also the reference the SIMD paths are tested against) ---- */

static void emit16(const float *acc, float thr, float *out, uint16_t *mask) {
    unsigned m = 0;
    for (int l = 0; l < SK_PANEL; l++) {
        out[l] = acc[l];
        if (acc[l] >= thr) m |= 1u << l;
    }
    *mask = (uint16_t)m;
}

static void scalar_f32(const float *panels, int d, const sk_queries *q, int q0, int nq,
                       const float *thr, float *out, uint16_t *mask) {
    for (int i = 0; i < nq; i++) {
        const float *x = q->f + (size_t)(q0 + i) * q->ldq;
        for (int p = 0; p < SK_BLOCK_PANELS; p++) {
            const float *w = panels + (size_t)p * d * SK_PANEL;
            float acc[SK_PANEL] = {0};
            for (int k = 0; k < d; k++)
                for (int l = 0; l < SK_PANEL; l++) acc[l] += x[k] * w[(size_t)k * SK_PANEL + l];
            emit16(acc, thr[i], out + i * SK_BLOCK + p * SK_PANEL, mask + i * SK_BLOCK_PANELS + p);
        }
    }
}

static void scalar_f16(const uint16_t *panels, int d, const sk_queries *q, int q0, int nq,
                       const float *thr, float *out, uint16_t *mask) {
    for (int i = 0; i < nq; i++) {
        const float *x = q->f + (size_t)(q0 + i) * q->ldq;
        for (int p = 0; p < SK_BLOCK_PANELS; p++) {
            const uint16_t *w = panels + (size_t)p * d * SK_PANEL;
            float acc[SK_PANEL] = {0};
            for (int k = 0; k < d; k++)
                for (int l = 0; l < SK_PANEL; l++)
                    acc[l] += x[k] * sk_f16_to_f32(w[(size_t)k * SK_PANEL + l]);
            emit16(acc, thr[i], out + i * SK_BLOCK + p * SK_PANEL, mask + i * SK_BLOCK_PANELS + p);
        }
    }
}

static void scalar_i8(const uint8_t *panels, const float *scale, int dp, const sk_queries *q,
                      int q0, int nq, const float *thr, float *out, uint16_t *mask) {
    for (int i = 0; i < nq; i++) {
        const int8_t *x = q->q8 + (size_t)(q0 + i) * dp;
        float qs = q->qscale[q0 + i];
        int32_t corr = q->qcorr[q0 + i];
        for (int p = 0; p < SK_BLOCK_PANELS; p++) {
            const uint8_t *w = panels + (size_t)p * dp * SK_PANEL;
            int32_t acc[SK_PANEL] = {0};
            for (int g = 0; g < dp / 4; g++)
                for (int l = 0; l < SK_PANEL; l++)
                    for (int j = 0; j < 4; j++)
                        acc[l] += (int32_t)w[(size_t)g * 64 + l * 4 + j] * x[g * 4 + j];
            float f[SK_PANEL];
            for (int l = 0; l < SK_PANEL; l++)
                f[l] = (float)(acc[l] - corr) * qs * scale[p * SK_PANEL + l];
            emit16(f, thr[i], out + i * SK_BLOCK + p * SK_PANEL, mask + i * SK_BLOCK_PANELS + p);
        }
    }
}

static const sk_kernels k_scalar = {"scalar", scalar_f32, scalar_f16, scalar_i8};
#if defined(__x86_64__)
static const sk_kernels k_avx2 = {"avx2", sk_avx2_f32, sk_avx2_f16, sk_avx2_i8};
static const sk_kernels k_avx512 = {"avx512", sk_avx512_f32, sk_avx512_f16, sk_avx512_i8};
/* AMX: int8 query batches on tiles (the rest of each batch on VNNI). */
static const sk_kernels k_amx = {"amx", sk_avx512_f32, sk_avx512_f16, sk_amx_i8};
/* AVX-512 without VNNI (Skylake-X): int8 through the AVX2 16-bit products. */
static const sk_kernels k_avx512_novnni = {"avx512", sk_avx512_f32, sk_avx512_f16, sk_avx2_i8};
#endif
#if defined(__aarch64__) /* int8 on SDOT from the dotprod path up */
static const sk_kernels k_neon = {"neon", sk_neon_f32, sk_neon_f16, sk_neon_i8};
static const sk_kernels k_dotprod = {"dotprod", sk_neon_f32, sk_neon_f16, sk_dotprod_i8};
#endif

const sk_kernels *sk_kernels_for(ml_isa isa) {
#if defined(__x86_64__)
    if (isa == ML_ISA_AMX && ml_cpu_has_avx512_vnni()) return &k_amx;
    if (isa == ML_ISA_AVX512 || isa == ML_ISA_AMX) return ml_cpu_has_avx512_vnni() ? &k_avx512 : &k_avx512_novnni;
    if (isa == ML_ISA_AVX2) return &k_avx2;
#endif
#if defined(__aarch64__)
    if (isa >= ML_ISA_DOTPROD && isa <= ML_ISA_NEON_BF16) return &k_dotprod;
    if (isa == ML_ISA_NEON) return &k_neon;
#endif
    (void)isa;
    return &k_scalar;
}

/* ---- candidate pools ---- */

float sk_pool_threshold(const sk_pool *p) { return p->n < p->cap ? -INFINITY : p->h[0].score; }

/* The root is the worst candidate; every child is better than its parent. */
void sk_pool_push(sk_pool *p, float score, int64_t row) {
    ml_hit *h = p->h;
    int i;
    if (p->n < p->cap) {
        i = p->n++;
        while (i > 0) { /* sift up past better parents */
            int up = (i - 1) / 2;
            if (!sk_better(h[up].score, h[up].row, score, row)) break;
            h[i] = h[up];
            i = up;
        }
    } else {
        if (p->cap == 0 || !sk_better(score, row, h[0].score, h[0].row)) return;
        i = 0;
        for (;;) { /* sift down: move the worse child up */
            int c = 2 * i + 1;
            if (c >= p->n) break;
            if (c + 1 < p->n && sk_better(h[c].score, h[c].row, h[c + 1].score, h[c + 1].row)) c++;
            if (!sk_better(score, row, h[c].score, h[c].row)) break;
            h[i] = h[c];
            i = c;
        }
    }
    h[i].score = score, h[i].row = row;
}

void sk_scan(const sk_kernels *k, const sk_store *st, size_t b0, size_t b1, const sk_queries *q,
             int q0, int nq, const uint8_t *allow, sk_pool *pools, float *out, uint16_t *mask,
             float *thr) {
    size_t bb = sk_panel_bytes(st->type, st->d) * SK_BLOCK_PANELS;
    for (size_t b = b0; b < b1; b++) {
        for (int i = 0; i < nq; i++) thr[i] = sk_pool_threshold(&pools[i]);
        const void *pan = (const uint8_t *)st->panels + b * bb;
        if (st->type == ML_VEC_F32) k->f32(pan, st->d, q, q0, nq, thr, out, mask);
        else if (st->type == ML_VEC_F16) k->f16(pan, st->d, q, q0, nq, thr, out, mask);
        else k->i8(pan, st->scale + b * SK_BLOCK, st->dp, q, q0, nq, thr, out, mask);
        size_t base = b * SK_BLOCK, valid = st->n - base < SK_BLOCK ? st->n - base : SK_BLOCK;
        for (int i = 0; i < nq; i++)
            for (int p = 0; p < SK_BLOCK_PANELS && (size_t)p * SK_PANEL < valid; p++) {
                unsigned m = mask[i * SK_BLOCK_PANELS + p];
                size_t left = valid - (size_t)p * SK_PANEL;
                if (left < SK_PANEL) m &= (1u << left) - 1; /* padding rows past the end */
                while (m) {
                    int l = __builtin_ctz(m);
                    m &= m - 1;
                    size_t idx = base + (size_t)p * SK_PANEL + (size_t)l;
                    int64_t row = st->ids ? st->ids[idx] : (int64_t)idx;
                    if (allow && !allow[row]) continue;
                    sk_pool_push(&pools[i], out[i * SK_BLOCK + p * SK_PANEL + l], row);
                }
            }
    }
}

/* ---- final ranking ---- */

static int hit_cmp(const void *a, const void *b) {
    const ml_hit *x = a, *y = b;
    if (sk_better(x->score, x->row, y->score, y->row)) return -1;
    return sk_better(y->score, y->row, x->score, x->row) ? 1 : 0;
}

/* Float64 sum of float32 products, rounded once to float32: within an ulp
 * of the true inner product, the same on every ISA (a fixed 8-way split
 * keeps it vectorisable and off the add-latency chain). */
static float dot_exact(const float *a, const float *b, int d) {
    double s[8] = {0};
    int i = 0;
    for (; i + 8 <= d; i += 8)
        for (int j = 0; j < 8; j++) s[j] += (double)a[i + j] * b[i + j];
    for (; i < d; i++) s[0] += (double)a[i] * b[i];
    return (float)(((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7])));
}

int sk_default_rerank(int k) { return 4 * k > k + 64 ? 4 * k : k + 64; }

int sk_finish(ml_hit *cand, int nc, int pool, int k, const float *q, int d, ml_row_fn row_f32,
              void *row_ctx, const sk_store *own, float *buf, ml_hit *out) {
    if (nc > pool) {
        qsort(cand, (size_t)nc, sizeof *cand, hit_cmp);
        nc = pool;
    }
    for (int i = 0; i < nc; i++) {
        const float *r;
        if (own) {
            sk_store_get_f32(own, (size_t)cand[i].row, buf);
            r = buf;
        } else if (!(r = row_f32(row_ctx, cand[i].row)))
            return -1;
        cand[i].score = dot_exact(q, r, d);
    }
    qsort(cand, (size_t)nc, sizeof *cand, hit_cmp);
    for (int i = 0; i < k; i++)
        out[i] = i < nc ? cand[i] : (ml_hit){0.0f, -1};
    return 0;
}

/* ---- ml_vecset ---- */

struct ml_vecset {
    ml_vec_type type;
    int d, dp;
    size_t n, cap_blocks;
    void *panels; /* cap_blocks * SK_BLOCK rows, panel layout, zero padding */
    float *scale; /* int8: cap_blocks * SK_BLOCK */
};

ml_vecset *ml_vecset_new(int d, ml_vec_type type, ml_error *err) {
    if (d < 1 || d > ML_VEC_MAX_DIM) {
        ml_fail(err, "vector set: dimension %d out of range 1..%d", d, ML_VEC_MAX_DIM);
        return NULL;
    }
    if (type != ML_VEC_F32 && type != ML_VEC_F16 && type != ML_VEC_I8) {
        ml_fail(err, "vector set: unknown storage type %d", (int)type);
        return NULL;
    }
    ml_vecset *vs = ml_calloc(1, sizeof *vs, err);
    if (!vs) return NULL;
    vs->type = type, vs->d = d, vs->dp = (d + 3) / 4 * 4;
    return vs;
}

size_t ml_vecset_size(const ml_vecset *vs) { return vs->n; }
int ml_vecset_dim(const ml_vecset *vs) { return vs->d; }
ml_vec_type ml_vecset_type(const ml_vecset *vs) { return vs->type; }

static size_t block_bytes(const ml_vecset *vs) {
    return sk_panel_bytes(vs->type, vs->d) * SK_BLOCK_PANELS;
}

size_t ml_vecset_bytes(const ml_vecset *vs) {
    return vs->cap_blocks * (block_bytes(vs) + (vs->scale ? SK_BLOCK * sizeof(float) : 0));
}

void ml_vecset_free(ml_vecset *vs) {
    if (!vs) return;
    free(vs->panels);
    free(vs->scale);
    free(vs);
}

/* Capacity for `rows` rows, doubling so appends stay amortised O(1). */
static int vecset_reserve(ml_vecset *vs, size_t rows, ml_error *err) {
    size_t need = rows / SK_BLOCK + (rows % SK_BLOCK != 0);
    if (need <= vs->cap_blocks) return 0;
    size_t cap = vs->cap_blocks * 2 > need ? vs->cap_blocks * 2 : need, bb = block_bytes(vs);
    if (cap > SIZE_MAX / 2 / bb)
        return ml_fail(err, "vector set: %zu rows of %d dims do not fit in memory", rows, vs->d);
    uint8_t *p = ml_aligned_alloc(cap * bb, err);
    float *s = NULL;
    if (p && vs->type == ML_VEC_I8) s = ml_calloc(cap * SK_BLOCK, sizeof(float), err);
    if (!p || (vs->type == ML_VEC_I8 && !s)) {
        free(p);
        return ml_fail_prefix(err, "vector set: growing to %zu rows", rows);
    }
    if (vs->cap_blocks) memcpy(p, vs->panels, vs->cap_blocks * bb);
    memset(p + vs->cap_blocks * bb, 0, (cap - vs->cap_blocks) * bb);
    if (s && vs->cap_blocks) memcpy(s, vs->scale, vs->cap_blocks * SK_BLOCK * sizeof(float));
    free(vs->panels);
    free(vs->scale);
    vs->panels = p, vs->scale = s, vs->cap_blocks = cap;
    return 0;
}

typedef struct put_job {
    ml_vecset *vs;
    const float *rows;
    size_t first; /* set row of rows[0] */
} put_job;

static void put_rows(void *ctx, int b, int e) {
    const put_job *j = ctx;
    for (int i = b; i < e; i++)
        sk_store_put(j->vs->type, j->vs->d, j->vs->panels, j->vs->scale, j->first + (size_t)i,
                     j->rows + (size_t)i * j->vs->d);
}

int ml_vecset_append(ml_vecset *vs, const float *rows, size_t n, ml_error *err) {
    if (n == 0) return 0;
    if (!rows) return ml_fail(err, "vector set: append of %zu rows from NULL", n);
    if (vecset_reserve(vs, vs->n + n, err)) return -1;
    /* Rows are independent (distinct bytes of the panels), so quantising
     * them in parallel is race-free; int ranges bound the chunk size. */
    for (size_t done = 0; done < n;) {
        size_t c = n - done < (1u << 24) ? n - done : (1u << 24);
        put_job j = {vs, rows + done * vs->d, vs->n + done};
        ml_parallel_for((int)c, 256, put_rows, &j);
        done += c;
    }
    vs->n += n;
    return 0;
}

/* One search: per-slot (thread) pools for the current query chunk. */
typedef struct vs_search {
    const ml_vecset *vs;
    const sk_kernels *kern;
    sk_store st;
    sk_queries q;
    const ml_search_opts *o;
    int pool, nslots, q0, nq; /* current chunk */
    size_t nblocks;
    ml_hit *hits;   /* [nslots][QUERY_CHUNK][pool] */
    sk_pool *pools; /* [nslots][QUERY_CHUNK] */
    float *out, *thr;
    uint16_t *mask;
    ml_hit *res;
    atomic_int failed; /* row_f32 returned NULL */
} vs_search;

static void scan_slots(void *ctx, int b, int e) {
    vs_search *s = ctx;
    for (int t = b; t < e; t++) {
        size_t b0 = s->nblocks * t / s->nslots, b1 = s->nblocks * (t + 1) / s->nslots;
        sk_pool *pools = s->pools + (size_t)t * QUERY_CHUNK;
        for (int i = 0; i < s->nq; i++)
            pools[i] = (sk_pool){s->hits + ((size_t)t * QUERY_CHUNK + i) * s->pool, 0, s->pool};
        sk_scan(s->kern, &s->st, b0, b1, &s->q, s->q0, s->nq, s->o->allow, pools,
                s->out + (size_t)t * QUERY_CHUNK * SK_BLOCK,
                s->mask + (size_t)t * QUERY_CHUNK * SK_BLOCK_PANELS,
                s->thr + (size_t)t * QUERY_CHUNK);
    }
}

/* Merge the slots' pools of each query and re-rank. */
static void finish_queries(void *ctx, int b, int e) {
    vs_search *s = ctx;
    int d = s->vs->d;
    ml_hit *cand = malloc(sizeof(ml_hit) * (size_t)s->nslots * s->pool);
    float *buf = malloc(sizeof(float) * (size_t)d);
    if (!cand || !buf) {
        atomic_store(&s->failed, 2);
        free(cand), free(buf);
        return;
    }
    for (int i = b; i < e; i++) {
        int nc = 0;
        for (int t = 0; t < s->nslots; t++) {
            const sk_pool *p = &s->pools[(size_t)t * QUERY_CHUNK + i];
            memcpy(cand + nc, p->h, sizeof(ml_hit) * (size_t)p->n);
            nc += p->n;
        }
        int qi = s->q0 + i;
        const sk_store *own = s->vs->type == ML_VEC_F32 ? &s->st : NULL;
        if (sk_finish(cand, nc, s->pool, s->o->k, s->q.f + (size_t)qi * d, d, s->o->row_f32,
                      s->o->row_ctx, own, buf, s->res + (size_t)qi * s->o->k))
            atomic_store(&s->failed, 1);
    }
    free(cand), free(buf);
}

int sk_check_opts(const ml_search_opts *o, int nq, const float *q, const ml_hit *out,
                      int need_rows, const char *what, ml_error *err) {
    if (!o || o->k < 1) return ml_fail(err, "%s search: k must be >= 1", what);
    if (nq < 0 || (nq > 0 && (!q || !out)))
        return ml_fail(err, "%s search: bad query batch (nq %d)", what, nq);
    if (o->rerank < 0 || o->nprobe < 0)
        return ml_fail(err, "%s search: negative rerank or nprobe", what);
    if (need_rows && !o->row_f32)
        return ml_fail(err, "%s search: float32 rows (row_f32) are required for re-ranking", what);
    return 0;
}

int ml_vecset_search(const ml_vecset *vs, const float *q, int nq, const ml_search_opts *o,
                     ml_hit *out, ml_error *err) {
    if (sk_check_opts(o, nq, q, out, vs->type != ML_VEC_F32, ml_vec_type_name(vs->type), err))
        return -1;
    if (nq == 0) return 0;
    if (vs->n == 0) {
        for (size_t i = 0; i < (size_t)nq * o->k; i++) out[i] = (ml_hit){0.0f, -1};
        return 0;
    }
    vs_search s = {.vs = vs, .kern = sk_kernels_for(ml_isa_active()), .o = o, .res = out};
    s.st = (sk_store){vs->type, vs->d, vs->dp, vs->n, vs->panels, vs->scale, NULL};
    s.pool = o->rerank > 0 ? (o->rerank > o->k ? o->rerank : o->k)
                           : vs->type == ML_VEC_F32 ? o->k + 8 : sk_default_rerank(o->k);
    s.nblocks = vs->n / SK_BLOCK + (vs->n % SK_BLOCK != 0);
    size_t slots = s.nblocks / BLOCKS_PER_THREAD;
    int t = ml_num_threads();
    s.nslots = slots < 1 ? 1 : slots > (size_t)t ? t : (int)slots;
    size_t per_slot = QUERY_CHUNK * (size_t)s.nslots;
    s.hits = malloc(sizeof(ml_hit) * per_slot * s.pool);
    s.pools = malloc(sizeof(sk_pool) * per_slot);
    s.out = ml_aligned_alloc(sizeof(float) * per_slot * SK_BLOCK, err);
    s.thr = malloc(sizeof(float) * per_slot);
    s.mask = malloc(sizeof(uint16_t) * per_slot * SK_BLOCK_PANELS);
    int8_t *q8 = NULL;
    float *qscale = NULL;
    int32_t *qcorr = NULL;
    int rc = 0;
    if (vs->type == ML_VEC_I8) {
        q8 = malloc((size_t)nq * vs->dp);
        qscale = malloc(sizeof(float) * nq);
        qcorr = malloc(sizeof(int32_t) * nq);
    }
    if (!s.hits || !s.pools || !s.out || !s.thr || !s.mask ||
        (vs->type == ML_VEC_I8 && (!q8 || !qscale || !qcorr))) {
        rc = ml_fail(err, "%s search: out of memory for %d queries", ml_vec_type_name(vs->type), nq);
        goto done;
    }
    s.q = (sk_queries){q, vs->d, q8, qscale, qcorr};
    if (q8) sk_prepare_i8(q, nq, vs->d, vs->dp, q8, qscale, qcorr);
    for (s.q0 = 0; s.q0 < nq; s.q0 += QUERY_CHUNK) {
        s.nq = nq - s.q0 < QUERY_CHUNK ? nq - s.q0 : QUERY_CHUNK;
        ml_parallel_for(s.nslots, 1, scan_slots, &s);
        ml_parallel_for(s.nq, 16, finish_queries, &s);
        if (atomic_load(&s.failed)) {
            rc = atomic_load(&s.failed) == 2
                     ? ml_fail(err, "%s search: out of memory", ml_vec_type_name(vs->type))
                     : ml_fail(err, "%s search: row_f32 returned no row", ml_vec_type_name(vs->type));
            break;
        }
    }
done:
    free(s.hits), free(s.pools), free(s.out), free(s.thr), free(s.mask);
    free(q8), free(qscale), free(qcorr);
    return rc;
}
