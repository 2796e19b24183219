/* search_avx2.c - AVX2 + FMA (+ F16C) scoring kernels.  Compiled with those
 * flags only; called after run-time detection (search.c: sk_kernels_for).
 *
 * Tile: one panel (16 rows = 2 ymm) x up to 4 queries (f32, f16) or 2
 * queries (int8, 4 accumulators each).  A panel (<= 32 KB for 512 dims) stays
 * in L1 while the chunk's queries pass over it.  Int8 has no vpdpbusd here:
 * the unsigned codes are widened to 16 bits and multiplied with vpmaddwd,
 * which is exact (no saturation, unlike vpmaddubsw). */
#if defined(__x86_64__)

#include <immintrin.h>
#include <string.h>

#include "index/search_internal.h"

#define QF 4 /* queries per f32 / f16 tile */
#define QI 2 /* queries per int8 tile */

static inline void emit(__m256 lo, __m256 hi, float thr, float *out, uint16_t *mask) {
    __m256 t = _mm256_set1_ps(thr);
    _mm256_storeu_ps(out, lo);
    _mm256_storeu_ps(out + 8, hi);
    int m = _mm256_movemask_ps(_mm256_cmp_ps(lo, t, _CMP_GE_OQ)) |
            _mm256_movemask_ps(_mm256_cmp_ps(hi, t, _CMP_GE_OQ)) << 8;
    *mask = (uint16_t)m;
}

/* f16 == 1: the panel holds halves. */
static inline __attribute__((always_inline)) void fp_tile(const void *pan, const int f16, int d,
                                                          const float *const *x, const int qm,
                                                          const float *thr, float *out,
                                                          uint16_t *mask) {
    __m256 acc[QF][2];
    for (int r = 0; r < qm; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int k = 0; k < d; k++) {
        __m256 w0, w1;
        if (f16) {
            const uint16_t *h = (const uint16_t *)pan + (size_t)k * SK_PANEL;
            w0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h));
            w1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + 8)));
        } else {
            const float *f = (const float *)pan + (size_t)k * SK_PANEL;
            w0 = _mm256_loadu_ps(f), w1 = _mm256_loadu_ps(f + 8);
        }
        for (int r = 0; r < qm; r++) {
            __m256 a = _mm256_broadcast_ss(x[r] + k);
            acc[r][0] = _mm256_fmadd_ps(a, w0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(a, w1, acc[r][1]);
        }
    }
    for (int r = 0; r < qm; r++)
        emit(acc[r][0], acc[r][1], thr[r], out + r * SK_BLOCK, mask + r * SK_BLOCK_PANELS);
}

#include "index/search_fp_block.h"

void sk_avx2_f32(const float *panels, int d, const sk_queries *q, int q0, int nq, const float *thr,
                 float *out, uint16_t *mask) {
    fp_block(panels, 0, d, q, q0, nq, thr, out, mask);
}

void sk_avx2_f16(const uint16_t *panels, int d, const sk_queries *q, int q0, int nq,
                 const float *thr, float *out, uint16_t *mask) {
    fp_block(panels, 1, d, q, q0, nq, thr, out, mask);
}

static inline int32_t load_i32(const void *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Sums the two 16-bit-product halves of each row: acc[j] covers rows
 * 4j..4j+3, two partial sums per row in 128-bit lane order. */
static inline __m256i row_sums(__m256i a, __m256i b) {
    __m256i h = _mm256_hadd_epi32(a, b); /* rows 0 1 4 5 | 2 3 6 7 */
    return _mm256_permute4x64_epi64(h, 0xD8);
}

static inline __attribute__((always_inline)) void i8_tile(const uint8_t *pan, const float *scale,
                                                          int dp, const int8_t *const *x,
                                                          const float *qs, const int32_t *qc,
                                                          const int qm, const float *thr,
                                                          float *out, uint16_t *mask) {
    __m256i acc[QI][4];
    for (int r = 0; r < qm; r++)
        for (int j = 0; j < 4; j++) acc[r][j] = _mm256_setzero_si256();
    for (int g = 0; g < dp / 4; g++) {
        __m256i w[4];
        for (int j = 0; j < 4; j++)
            w[j] = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(pan + (size_t)g * 64 + j * 16)));
        for (int r = 0; r < qm; r++) {
            /* the 4 query codes of the group, as 16-bit, repeated for 4 rows */
            __m256i a = _mm256_broadcastq_epi64(
                _mm_cvtepi8_epi16(_mm_cvtsi32_si128(load_i32(x[r] + g * 4))));
            for (int j = 0; j < 4; j++) acc[r][j] = _mm256_add_epi32(acc[r][j], _mm256_madd_epi16(w[j], a));
        }
    }
    for (int r = 0; r < qm; r++) {
        __m256i c = _mm256_set1_epi32(qc[r]);
        __m256 s = _mm256_set1_ps(qs[r]);
        __m256 lo = _mm256_cvtepi32_ps(_mm256_sub_epi32(row_sums(acc[r][0], acc[r][1]), c));
        __m256 hi = _mm256_cvtepi32_ps(_mm256_sub_epi32(row_sums(acc[r][2], acc[r][3]), c));
        lo = _mm256_mul_ps(_mm256_mul_ps(lo, s), _mm256_loadu_ps(scale));
        hi = _mm256_mul_ps(_mm256_mul_ps(hi, s), _mm256_loadu_ps(scale + 8));
        emit(lo, hi, thr[r], out + r * SK_BLOCK, mask + r * SK_BLOCK_PANELS);
    }
}

void sk_avx2_i8(const uint8_t *panels, const float *scale, int dp, const sk_queries *q, int q0,
                int nq, const float *thr, float *out, uint16_t *mask) {
    size_t ps = (size_t)dp * SK_PANEL;
    for (int p = 0; p < SK_BLOCK_PANELS; p++)
        for (int i = 0; i < nq; i += QI) {
            const int8_t *x[QI];
            int qm = nq - i < QI ? nq - i : QI;
            for (int r = 0; r < qm; r++) x[r] = q->q8 + (size_t)(q0 + i + r) * dp;
            const float *qs = q->qscale + q0 + i;
            const int32_t *qc = q->qcorr + q0 + i;
            float *o = out + i * SK_BLOCK + p * SK_PANEL;
            uint16_t *m = mask + i * SK_BLOCK_PANELS + p;
            if (qm == 1) i8_tile(panels + p * ps, scale + p * SK_PANEL, dp, x, qs, qc, 1, thr + i, o, m);
            else i8_tile(panels + p * ps, scale + p * SK_PANEL, dp, x, qs, qc, 2, thr + i, o, m);
        }
}

#else
typedef int search_avx2_unused; /* ISO C forbids an empty translation unit */
#endif
