/* search_avx512.c - AVX-512 scoring kernels (f32, f16 via vcvtph2ps, int8
 * via AVX512-VNNI vpdpbusd).  Compiled with AVX-512 flags; called only after
 * run-time detection (search.c: sk_kernels_for).
 *
 * Tile: up to 6 queries x the block's 4 panels = 24 zmm accumulators.  Per
 * coordinate (int8: per group of 4) the tile loads one 64-byte vector per
 * panel and broadcasts one query value per query, so a single query streams
 * the block once and a batch reuses each loaded vector 6 times. */
#if defined(__x86_64__)

#include <immintrin.h>
#include <string.h>

#include "index/search_internal.h"

#define QM 6
#define NPB SK_BLOCK_PANELS

static inline void emit(__m512 v, float thr, float *out, uint16_t *mask) {
    _mm512_storeu_ps(out, v);
    *mask = (uint16_t)_mm512_cmp_ps_mask(v, _mm512_set1_ps(thr), _CMP_GE_OQ);
}

static inline __attribute__((always_inline)) void f32_tile(const float *pan, int d,
                                                           const float *const *x, const int qm,
                                                           const float *thr, float *out,
                                                           uint16_t *mask) {
    __m512 acc[QM][NPB];
    for (int r = 0; r < qm; r++)
        for (int p = 0; p < NPB; p++) acc[r][p] = _mm512_setzero_ps();
    size_t ps = (size_t)d * SK_PANEL;
    for (int k = 0; k < d; k++) {
        __m512 w[NPB];
        for (int p = 0; p < NPB; p++) w[p] = _mm512_loadu_ps(pan + p * ps + (size_t)k * SK_PANEL);
        for (int r = 0; r < qm; r++) {
            __m512 a = _mm512_set1_ps(x[r][k]);
            for (int p = 0; p < NPB; p++) acc[r][p] = _mm512_fmadd_ps(a, w[p], acc[r][p]);
        }
    }
    for (int r = 0; r < qm; r++)
        for (int p = 0; p < NPB; p++)
            emit(acc[r][p], thr[r], out + r * SK_BLOCK + p * SK_PANEL, mask + r * NPB + p);
}

void sk_avx512_f32(const float *panels, int d, const sk_queries *q, int q0, int nq,
                   const float *thr, float *out, uint16_t *mask) {
    for (int i = 0; i < nq; i += QM) {
        const float *x[QM];
        int qm = nq - i < QM ? nq - i : QM;
        for (int r = 0; r < qm; r++) x[r] = q->f + (size_t)(q0 + i + r) * q->ldq;
        float *o = out + i * SK_BLOCK;
        uint16_t *m = mask + i * NPB;
        switch (qm) { /* constant tile heights: accumulators stay in registers */
        case 1: f32_tile(panels, d, x, 1, thr + i, o, m); break;
        case 2: f32_tile(panels, d, x, 2, thr + i, o, m); break;
        case 3: f32_tile(panels, d, x, 3, thr + i, o, m); break;
        case 4: f32_tile(panels, d, x, 4, thr + i, o, m); break;
        case 5: f32_tile(panels, d, x, 5, thr + i, o, m); break;
        default: f32_tile(panels, d, x, 6, thr + i, o, m); break;
        }
    }
}

static inline __attribute__((always_inline)) void f16_tile(const uint16_t *pan, int d,
                                                           const float *const *x, const int qm,
                                                           const float *thr, float *out,
                                                           uint16_t *mask) {
    __m512 acc[QM][NPB];
    for (int r = 0; r < qm; r++)
        for (int p = 0; p < NPB; p++) acc[r][p] = _mm512_setzero_ps();
    size_t ps = (size_t)d * SK_PANEL;
    for (int k = 0; k < d; k++) {
        __m512 w[NPB];
        for (int p = 0; p < NPB; p++)
            w[p] = _mm512_cvtph_ps(
                _mm256_loadu_si256((const __m256i *)(pan + p * ps + (size_t)k * SK_PANEL)));
        for (int r = 0; r < qm; r++) {
            __m512 a = _mm512_set1_ps(x[r][k]);
            for (int p = 0; p < NPB; p++) acc[r][p] = _mm512_fmadd_ps(a, w[p], acc[r][p]);
        }
    }
    for (int r = 0; r < qm; r++)
        for (int p = 0; p < NPB; p++)
            emit(acc[r][p], thr[r], out + r * SK_BLOCK + p * SK_PANEL, mask + r * NPB + p);
}

void sk_avx512_f16(const uint16_t *panels, int d, const sk_queries *q, int q0, int nq,
                   const float *thr, float *out, uint16_t *mask) {
    for (int i = 0; i < nq; i += QM) {
        const float *x[QM];
        int qm = nq - i < QM ? nq - i : QM;
        for (int r = 0; r < qm; r++) x[r] = q->f + (size_t)(q0 + i + r) * q->ldq;
        float *o = out + i * SK_BLOCK;
        uint16_t *m = mask + i * NPB;
        switch (qm) {
        case 1: f16_tile(panels, d, x, 1, thr + i, o, m); break;
        case 2: f16_tile(panels, d, x, 2, thr + i, o, m); break;
        case 3: f16_tile(panels, d, x, 3, thr + i, o, m); break;
        case 4: f16_tile(panels, d, x, 4, thr + i, o, m); break;
        case 5: f16_tile(panels, d, x, 5, thr + i, o, m); break;
        default: f16_tile(panels, d, x, 6, thr + i, o, m); break;
        }
    }
}

static inline int32_t load_i32(const void *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline __attribute__((always_inline)) void i8_tile(const uint8_t *pan, const float *scale,
                                                          int dp, const int8_t *const *x,
                                                          const float *qs, const int32_t *qc,
                                                          const int qm, const float *thr,
                                                          float *out, uint16_t *mask) {
    __m512i acc[QM][NPB];
    for (int r = 0; r < qm; r++)
        for (int p = 0; p < NPB; p++) acc[r][p] = _mm512_setzero_si512();
    size_t ps = (size_t)dp * SK_PANEL;
    for (int g = 0; g < dp / 4; g++) {
        __m512i w[NPB];
        for (int p = 0; p < NPB; p++) w[p] = _mm512_loadu_si512(pan + p * ps + (size_t)g * 64);
        for (int r = 0; r < qm; r++) {
            __m512i a = _mm512_set1_epi32(load_i32(x[r] + g * 4));
            for (int p = 0; p < NPB; p++) acc[r][p] = _mm512_dpbusd_epi32(acc[r][p], w[p], a);
        }
    }
    for (int r = 0; r < qm; r++)
        for (int p = 0; p < NPB; p++) {
            /* same operation order as the scalar kernel: ((acc - corr) * qs) * scale */
            __m512 v = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[r][p], _mm512_set1_epi32(qc[r])));
            v = _mm512_mul_ps(v, _mm512_set1_ps(qs[r]));
            v = _mm512_mul_ps(v, _mm512_loadu_ps(scale + p * SK_PANEL));
            emit(v, thr[r], out + r * SK_BLOCK + p * SK_PANEL, mask + r * NPB + p);
        }
}

void sk_avx512_i8(const uint8_t *panels, const float *scale, int dp, const sk_queries *q, int q0,
                  int nq, const float *thr, float *out, uint16_t *mask) {
    for (int i = 0; i < nq; i += QM) {
        const int8_t *x[QM];
        int qm = nq - i < QM ? nq - i : QM;
        for (int r = 0; r < qm; r++) x[r] = q->q8 + (size_t)(q0 + i + r) * dp;
        const float *qs = q->qscale + q0 + i;
        const int32_t *qc = q->qcorr + q0 + i;
        float *o = out + i * SK_BLOCK;
        uint16_t *m = mask + i * NPB;
        switch (qm) {
        case 1: i8_tile(panels, scale, dp, x, qs, qc, 1, thr + i, o, m); break;
        case 2: i8_tile(panels, scale, dp, x, qs, qc, 2, thr + i, o, m); break;
        case 3: i8_tile(panels, scale, dp, x, qs, qc, 3, thr + i, o, m); break;
        case 4: i8_tile(panels, scale, dp, x, qs, qc, 4, thr + i, o, m); break;
        case 5: i8_tile(panels, scale, dp, x, qs, qc, 5, thr + i, o, m); break;
        default: i8_tile(panels, scale, dp, x, qs, qc, 6, thr + i, o, m); break;
        }
    }
}

#else
typedef int search_avx512_unused; /* ISO C forbids an empty translation unit */
#endif
