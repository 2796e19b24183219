/* search_dotprod.c - the aarch64 int8 scoring kernel on SDOT (ARMv8.2
 * dotprod; built with +dotprod, used when cpu.c has seen it in AT_HWCAP).
 *
 * The stored codes are u8 = code + 128 (search_internal.h); flipping their
 * top bit gives the signed codes back, so SDOT's s8 x s8 sums are exactly
 * the portable kernel's sum(u8 * q) - qcorr, with nothing to subtract.  A
 * 64-byte group (4 coordinates of 16 rows) is 4 SDOT operands; each query's
 * 4 codes of the group are one 32-bit lane, repeated.  Tile: one panel x up
 * to 4 queries = 16 accumulators. */
#if defined(__aarch64__)

#include <string.h>

#include "index/search_arm.h"

#define QD 4 /* queries per tile */

static inline __attribute__((always_inline)) void i8_tile(const uint8_t *pan, const float *scale,
                                                          int dp, const int8_t *const *x,
                                                          const float *qs, const int qm,
                                                          const float *thr, float *out,
                                                          uint16_t *mask) {
    int32x4_t acc[QD][4];
    for (int r = 0; r < qm; r++)
        for (int q = 0; q < 4; q++) acc[r][q] = vdupq_n_s32(0);
    const uint8x16_t flip = vdupq_n_u8(0x80);
    for (int g = 0; g < dp / 4; g++) {
        int8x16_t w[4];
        for (int q = 0; q < 4; q++)
            w[q] = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(pan + (size_t)g * 64 + 16 * q), flip));
        for (int r = 0; r < qm; r++) {
            int32_t v;
            memcpy(&v, x[r] + 4 * g, 4);
            int8x16_t a = vreinterpretq_s8_s32(vdupq_n_s32(v));
            for (int q = 0; q < 4; q++) acc[r][q] = vdotq_s32(acc[r][q], w[q], a);
        }
    }
    for (int r = 0; r < qm; r++)
        sk_arm_emit_i8(acc[r], qs[r], scale, thr[r], out + r * SK_BLOCK, mask + r * SK_BLOCK_PANELS);
}

void sk_dotprod_i8(const uint8_t *panels, const float *scale, int dp, const sk_queries *q, int q0,
                   int nq, const float *thr, float *out, uint16_t *mask) {
    size_t ps = (size_t)dp * SK_PANEL;
    for (int p = 0; p < SK_BLOCK_PANELS; p++)
        for (int i = 0; i < nq; i += QD) {
            const int8_t *x[QD];
            int qm = nq - i < QD ? nq - i : QD;
            for (int r = 0; r < qm; r++) x[r] = q->q8 + (size_t)(q0 + i + r) * dp;
            const float *qs = q->qscale + q0 + i;
            float *o = out + i * SK_BLOCK + p * SK_PANEL;
            uint16_t *m = mask + i * SK_BLOCK_PANELS + p;
            const uint8_t *pan = panels + p * ps;
            const float *sc = scale + p * SK_PANEL;
            switch (qm) {
            case 1: i8_tile(pan, sc, dp, x, qs, 1, thr + i, o, m); break;
            case 2: i8_tile(pan, sc, dp, x, qs, 2, thr + i, o, m); break;
            case 3: i8_tile(pan, sc, dp, x, qs, 3, thr + i, o, m); break;
            default: i8_tile(pan, sc, dp, x, qs, 4, thr + i, o, m); break;
            }
        }
}

#else
typedef int search_dotprod_unused; /* ISO C forbids an empty translation unit */
#endif
