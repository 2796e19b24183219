/* search_internal.h - pieces shared by the exact engine (search.c), the IVF
 * (ivf.c) and the per-ISA scoring kernels (search_avx2.c, search_avx512.c).
 * Internal to src/index.
 *
 * Storage layout ("panels").  Rows are stored in panels of 16: a panel holds
 * rows 16p..16p+15 interleaved so that one vector load gives the same
 * coordinate(s) of all 16 rows.  A query coordinate is then broadcast and
 * multiplied into 16 row scores at once; no horizontal sums are needed, and
 * a single query streams the matrix exactly once.
 *   f32: panel = [d][16] floats          (one coordinate of 16 rows = 64 bytes)
 *   f16: panel = [d][16] IEEE halves      (32 bytes, widened with vcvtph2ps)
 *   i8:  panel = [dp/4][16][4] bytes      (4 coordinates of 16 rows = 64 bytes,
 *        the vpdpbusd operand), dp = d rounded up to 4.  Codes are stored
 *        offset by +128 (unsigned) because vpdpbusd multiplies unsigned bytes
 *        by signed bytes and only the signed operand can be broadcast; the
 *        offset adds 128 * sum(query codes) to every row, a per-query
 *        constant the kernels subtract.  One float scale per row.
 * Storage is always allocated in whole blocks of SK_BLOCK_PANELS panels
 * (zero-filled), so the kernels always score full 64-row blocks; the caller
 * ignores rows past the end. */
#ifndef ML_INDEX_SEARCH_INTERNAL_H
#define ML_INDEX_SEARCH_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "index/search.h"
#include "kernels/cpu.h"

#define SK_PANEL 16
#define SK_BLOCK_PANELS 4
#define SK_BLOCK (SK_PANEL * SK_BLOCK_PANELS) /* rows scored per kernel call */

/* Queries in the form the kernels take.  f: nq rows of d floats (stride
 * ldq).  For int8 sets, q8: nq rows of dp signed codes (stride dp, zero
 * padded), qscale[i] their scale and qcorr[i] = 128 * sum(q8 row i). */
typedef struct sk_queries {
    const float *f;
    int ldq;
    const int8_t *q8;
    const float *qscale;
    const int32_t *qcorr;
} sk_queries;

/* Scores one block (SK_BLOCK rows starting at `panels`) against nq queries:
 * out[i * SK_BLOCK + r] = score of query i and row r of the block, and bit
 * (r % 16) of mask[i * SK_BLOCK_PANELS + r / 16] set when that score is
 * > thr[i] (the query's current cut-off; most blocks set no bit, so the
 * caller only looks at the few rows worth a heap insertion). */
typedef struct sk_kernels {
    const char *name;
    void (*f32)(const float *panels, int d, const sk_queries *q, int q0, int nq, const float *thr,
                float *out, uint16_t *mask);
    void (*f16)(const uint16_t *panels, int d, const sk_queries *q, int q0, int nq,
                const float *thr, float *out, uint16_t *mask);
    void (*i8)(const uint8_t *panels, const float *scale, int dp, const sk_queries *q, int q0,
               int nq, const float *thr, float *out, uint16_t *mask);
} sk_kernels;

/* The kernels for `isa` (falls back to a lower path for what it lacks, e.g.
 * int8 on AVX-512 without VNNI). */
const sk_kernels *sk_kernels_for(ml_isa isa);
#if defined(__x86_64__)
void sk_avx2_f32(const float *panels, int d, const sk_queries *q, int q0, int nq, const float *thr,
                 float *out, uint16_t *mask);
void sk_avx2_f16(const uint16_t *panels, int d, const sk_queries *q, int q0, int nq,
                 const float *thr, float *out, uint16_t *mask);
void sk_avx2_i8(const uint8_t *panels, const float *scale, int dp, const sk_queries *q, int q0,
                int nq, const float *thr, float *out, uint16_t *mask);
void sk_avx512_f32(const float *panels, int d, const sk_queries *q, int q0, int nq,
                   const float *thr, float *out, uint16_t *mask);
void sk_avx512_f16(const uint16_t *panels, int d, const sk_queries *q, int q0, int nq,
                   const float *thr, float *out, uint16_t *mask);
void sk_avx512_i8(const uint8_t *panels, const float *scale, int dp, const sk_queries *q, int q0,
                  int nq, const float *thr, float *out, uint16_t *mask);
void sk_amx_i8(const uint8_t *panels, const float *scale, int dp, const sk_queries *q, int q0,
               int nq, const float *thr, float *out, uint16_t *mask);
#endif
#if defined(__aarch64__) /* search_neon.c, search_dotprod.c */
void sk_neon_f32(const float *panels, int d, const sk_queries *q, int q0, int nq, const float *thr,
                 float *out, uint16_t *mask);
void sk_neon_f16(const uint16_t *panels, int d, const sk_queries *q, int q0, int nq,
                 const float *thr, float *out, uint16_t *mask);
void sk_neon_i8(const uint8_t *panels, const float *scale, int dp, const sk_queries *q, int q0,
                int nq, const float *thr, float *out, uint16_t *mask);
void sk_dotprod_i8(const uint8_t *panels, const float *scale, int dp, const sk_queries *q, int q0,
                   int nq, const float *thr, float *out, uint16_t *mask);
#endif

/* ---- element conversions (portable, bit-exact with F16C) ---- */
uint16_t sk_f32_to_f16(float f);
float sk_f16_to_f32(uint16_t h);
/* Symmetric int8 codes of x[0..d): returns the scale (max|x| / 127, 0 for a
 * zero row); codes[i] = round(x[i] / scale) in [-127, 127]. */
float sk_quantize_i8(const float *x, int d, int8_t *codes);

/* ---- a row store in panels (a whole ml_vecset, or one IVF list) ---- */
typedef struct sk_store {
    ml_vec_type type;
    int d, dp;
    size_t n;            /* rows */
    const void *panels;  /* (n rounded up to SK_BLOCK) rows in panel layout */
    const float *scale;  /* i8: per row, same padding */
    const int64_t *ids;  /* row numbers of the store's rows; NULL: 0..n-1 */
} sk_store;

size_t sk_panel_bytes(ml_vec_type type, int d); /* bytes of one 16-row panel */
/* Writes row x (d floats) as store row i (panels/scale are the writable storage). */
void sk_store_put(ml_vec_type type, int d, void *panels, float *scale, size_t i, const float *x);
/* Int8 row i from its codes (d of them) and scale; and back (codes: d bytes). */
void sk_store_put_codes(int d, void *panels, float *scale, size_t i, const int8_t *codes, float s);
void sk_store_get_codes(int d, const void *panels, size_t i, int8_t *codes);
/* Float32 values of f32 store row i into buf (d floats). */
void sk_store_get_f32(const sk_store *st, size_t i, float *buf);

/* ---- candidate pools: a bounded min-heap, worst candidate at the root ---- */
typedef struct sk_pool {
    ml_hit *h;
    int n, cap;
} sk_pool;

/* Strict total order: higher score first, then smaller row. */
static inline int sk_better(float s1, int64_t r1, float s2, int64_t r2) {
    return s1 > s2 || (s1 == s2 && r1 < r2);
}
void sk_pool_push(sk_pool *p, float score, int64_t row);
/* Scores must beat this to enter (-inf while the pool is not full). */
float sk_pool_threshold(const sk_pool *p);

/* Scans store blocks [b0, b1) for queries q0..q0+nq-1 into pools[0..nq)
 * (one per query).  out: nq * SK_BLOCK floats, mask: nq * SK_BLOCK_PANELS,
 * thr: nq floats of scratch. */
void sk_scan(const sk_kernels *k, const sk_store *st, size_t b0, size_t b1, const sk_queries *q,
             int q0, int nq, const uint8_t *allow, sk_pool *pools, float *out, uint16_t *mask,
             float *thr);

/* Final ranking of one query: keeps the best `pool` of the nc candidates by
 * their (approximate) score, re-scores them exactly (float64 sum rounded to
 * float32) from row_f32, or from `own` when it is an f32 store with NULL
 * ids (buf: d floats of scratch), sorts by score desc / row asc and writes k hits (row -1, score 0 for
 * missing ones).  cand is reordered.  Returns -1 when row_f32 returned NULL. */
int sk_finish(ml_hit *cand, int nc, int pool, int k, const float *q, int d, ml_row_fn row_f32,
              void *row_ctx, const sk_store *own, float *buf, ml_hit *out);

/* Validates search options; what names the engine in the message. */
int sk_check_opts(const ml_search_opts *o, int nq, const float *q, const ml_hit *out,
                  int need_rows, const char *what, ml_error *err);
/* Default candidate pool for lossy storage (see search.c). */
int sk_default_rerank(int k);
/* Int8 form of nq queries (q8: nq*dp, qscale, qcorr: nq). */
void sk_prepare_i8(const float *q, int nq, int d, int dp, int8_t *q8, float *qscale,
                   int32_t *qcorr);

#endif
