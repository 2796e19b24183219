/* search_neon.c - aarch64 NEON scoring kernels (Advanced SIMD, baseline;
 * search.c: sk_kernels_for).  f16 rows are widened with vcvt (baseline
 * ARMv8 too).  int8 without the dot-product instructions: the stored u8
 * codes and the query's s8 codes are widened to 16 bits and multiplied into
 * 32-bit sums (exact), then the +128 offset is taken out with qcorr, as in
 * the portable kernel (search_dotprod.c has the SDOT version).
 *
 * Tile: one panel (16 rows = 4 vectors) x up to 4 queries: 16
 * accumulators; the panel stays in L1 while the chunk's queries pass. */
#if defined(__aarch64__)

#include <string.h>

#include "index/search_arm.h"

#define QF 4 /* queries per f32 / f16 tile */
#define QN 4 /* queries per int8 tile */

/* f16 == 1: the panel holds halves. */
static inline __attribute__((always_inline)) void fp_tile(const void *pan, const int f16, int d,
                                                          const float *const *x, const int qm,
                                                          const float *thr, float *out,
                                                          uint16_t *mask) {
    float32x4_t acc[QF][4];
    for (int r = 0; r < qm; r++)
        for (int q = 0; q < 4; q++) acc[r][q] = vdupq_n_f32(0.0f);
    for (int k = 0; k < d; k++) {
        float32x4_t w[4];
        if (f16) {
            const uint16_t *h = (const uint16_t *)pan + (size_t)k * SK_PANEL;
            for (int q = 0; q < 4; q++) w[q] = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(h + 4 * q)));
        } else {
            const float *f = (const float *)pan + (size_t)k * SK_PANEL;
            for (int q = 0; q < 4; q++) w[q] = vld1q_f32(f + 4 * q);
        }
        for (int r = 0; r < qm; r++) {
            float a = x[r][k];
            for (int q = 0; q < 4; q++) acc[r][q] = vfmaq_n_f32(acc[r][q], w[q], a);
        }
    }
    for (int r = 0; r < qm; r++) sk_arm_emit(acc[r], thr[r], out + r * SK_BLOCK, mask + r * SK_BLOCK_PANELS);
}

#include "index/search_fp_block.h"

void sk_neon_f32(const float *panels, int d, const sk_queries *q, int q0, int nq, const float *thr,
                 float *out, uint16_t *mask) {
    fp_block(panels, 0, d, q, q0, nq, thr, out, mask);
}

void sk_neon_f16(const uint16_t *panels, int d, const sk_queries *q, int q0, int nq,
                 const float *thr, float *out, uint16_t *mask) {
    fp_block(panels, 1, d, q, q0, nq, thr, out, mask);
}

/* The 4 codes of group g of a query, as 16-bit lanes 0-3. */
static inline int16x8_t group_codes(const int8_t *x) {
    int32_t v;
    memcpy(&v, x, 4);
    return vmovl_s8(vreinterpret_s8_s32(vdup_n_s32(v)));
}

#define QI_MAC(t)                                                                          \
    do {                                                                                   \
        int16x8_t lo = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(w.val[t])));             \
        int16x8_t hi = vreinterpretq_s16_u16(vmovl_u8(vget_high_u8(w.val[t])));            \
        for (int r = 0; r < qm; r++) {                                                     \
            acc[r][0] = vmlal_laneq_s16(acc[r][0], vget_low_s16(lo), a[r], t);             \
            acc[r][1] = vmlal_laneq_s16(acc[r][1], vget_high_s16(lo), a[r], t);            \
            acc[r][2] = vmlal_laneq_s16(acc[r][2], vget_low_s16(hi), a[r], t);             \
            acc[r][3] = vmlal_laneq_s16(acc[r][3], vget_high_s16(hi), a[r], t);            \
        }                                                                                  \
    } while (0)

static inline __attribute__((always_inline)) void i8_tile(const uint8_t *pan, const float *scale,
                                                          int dp, const int8_t *const *x,
                                                          const float *qs, const int32_t *qc,
                                                          const int qm, const float *thr,
                                                          float *out, uint16_t *mask) {
    int32x4_t acc[QN][4];
    for (int r = 0; r < qm; r++)
        for (int q = 0; q < 4; q++) acc[r][q] = vdupq_n_s32(0);
    for (int g = 0; g < dp / 4; g++) {
        /* val[t]: coordinate 4g + t of the 16 rows */
        uint8x16x4_t w = vld4q_u8(pan + (size_t)g * 64);
        int16x8_t a[QN];
        for (int r = 0; r < qm; r++) a[r] = group_codes(x[r] + g * 4);
        QI_MAC(0);
        QI_MAC(1);
        QI_MAC(2);
        QI_MAC(3);
    }
    for (int r = 0; r < qm; r++) {
        int32x4_t v[4];
        for (int q = 0; q < 4; q++) v[q] = vsubq_s32(acc[r][q], vdupq_n_s32(qc[r]));
        sk_arm_emit_i8(v, qs[r], scale, thr[r], out + r * SK_BLOCK, mask + r * SK_BLOCK_PANELS);
    }
}

void sk_neon_i8(const uint8_t *panels, const float *scale, int dp, const sk_queries *q, int q0,
                int nq, const float *thr, float *out, uint16_t *mask) {
    size_t ps = (size_t)dp * SK_PANEL;
    for (int p = 0; p < SK_BLOCK_PANELS; p++)
        for (int i = 0; i < nq; i += QN) {
            const int8_t *x[QN];
            int qm = nq - i < QN ? nq - i : QN;
            for (int r = 0; r < qm; r++) x[r] = q->q8 + (size_t)(q0 + i + r) * dp;
            const float *qs = q->qscale + q0 + i;
            const int32_t *qc = q->qcorr + q0 + i;
            float *o = out + i * SK_BLOCK + p * SK_PANEL;
            uint16_t *m = mask + i * SK_BLOCK_PANELS + p;
            const uint8_t *pan = panels + p * ps;
            const float *sc = scale + p * SK_PANEL;
            switch (qm) {
            case 1: i8_tile(pan, sc, dp, x, qs, qc, 1, thr + i, o, m); break;
            case 2: i8_tile(pan, sc, dp, x, qs, qc, 2, thr + i, o, m); break;
            case 3: i8_tile(pan, sc, dp, x, qs, qc, 3, thr + i, o, m); break;
            default: i8_tile(pan, sc, dp, x, qs, qc, 4, thr + i, o, m); break;
            }
        }
}

#else
typedef int search_neon_unused; /* ISO C forbids an empty translation unit */
#endif
