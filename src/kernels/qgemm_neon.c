/* qgemm_neon.c - the aarch64 low-precision kernels that need only baseline
 * Advanced SIMD (the "neon" path's floor): int8 by widening to 16 bits and
 * multiply-accumulating into 32 (exact, as the dot-product instructions),
 * bf16 by widening to float32 (a shift) and FMA.
 *
 * Both take 4 rows x one 16-column panel at a time.  vld4 / vld2 split a
 * packed k group (qgemm_internal.h: the G values of column 0, then of
 * column 1, ...) into one vector per k holding all 16 columns, so a k step
 * is a by-lane multiply-accumulate per 4 columns, with no horizontal sums. */
#if defined(__aarch64__)
#include "kernels/bf16.h"
#include "kernels/qgemm_arm.h"

#define QN_ROWS 4

/* k = 4 kq + t of all 16 columns (wv.val[t]) times lane `lane` of each row's
 * widened activations. */
#define QN_MAC(wv, t, lane)                                                           \
    do {                                                                              \
        int16x8_t lo = vmovl_s8(vget_low_s8((wv).val[t])), hi = vmovl_s8(vget_high_s8((wv).val[t])); \
        for (int r = 0; r < QN_ROWS; r++) {                                           \
            acc[r][0] = vmlal_laneq_s16(acc[r][0], vget_low_s16(lo), av[r], lane);    \
            acc[r][1] = vmlal_laneq_s16(acc[r][1], vget_high_s16(lo), av[r], lane);   \
            acc[r][2] = vmlal_laneq_s16(acc[r][2], vget_low_s16(hi), av[r], lane);    \
            acc[r][3] = vmlal_laneq_s16(acc[r][3], vget_high_s16(hi), av[r], lane);   \
        }                                                                             \
    } while (0)

/* Rows i..i+3 (packed rows past M are zero and not stored) x panel p. */
static void int8_tile(const qg_job *j, int i, int p) {
    const int Kp = j->A->Kp;
    const int8_t *w = qg_panel(j->B, p);
    const uint8_t *a = (const uint8_t *)j->A->a + (size_t)i * Kp;
    int32x4_t acc[QN_ROWS][4];
    for (int r = 0; r < QN_ROWS; r++)
        for (int q = 0; q < 4; q++) acc[r][q] = vdupq_n_s32(0);
    for (int k = 0; k < Kp; k += 8, w += 128) { /* two k groups: 8 activations a row */
        int16x8_t av[QN_ROWS];
        for (int r = 0; r < QN_ROWS; r++)
            av[r] = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(a + (size_t)r * Kp + k)));
        int8x16x4_t w0 = vld4q_s8(w), w1 = vld4q_s8(w + 64);
        QN_MAC(w0, 0, 0);
        QN_MAC(w0, 1, 1);
        QN_MAC(w0, 2, 2);
        QN_MAC(w0, 3, 3);
        QN_MAC(w1, 0, 4);
        QN_MAC(w1, 1, 5);
        QN_MAC(w1, 2, 6);
        QN_MAC(w1, 3, 7);
    }
    for (int r = 0; r < QN_ROWS && i + r < j->A->M; r++) qg_arm_store_i32(j, i + r, p, acc[r], 0);
}

void qg_neon_int8(const qg_job *j, int i0, int i1, int p0, int p1) {
    for (int p = p0; p < p1; p++)
        for (int i = i0; i < i1 && i < j->A->M; i += QN_ROWS) int8_tile(j, i, p);
}

static inline float32x4_t widen_bf16(uint16x4_t h) { return vreinterpretq_f32_u32(vshll_n_u16(h, 16)); }

static void bf16_tile(const qg_job *j, int i, int p) {
    const int Kp = j->A->Kp;
    const uint16_t *w = qg_panel(j->B, p);
    const uint16_t *a = (const uint16_t *)j->A->a + (size_t)i * Kp;
    float32x4_t acc[QN_ROWS][4];
    for (int r = 0; r < QN_ROWS; r++)
        for (int q = 0; q < 4; q++) acc[r][q] = vdupq_n_f32(0.0f);
    for (int k = 0; k < Kp; k += 2, w += 32) {
        /* val[0]: k of columns 0-7 (lo) / 8-15 (hi), val[1]: k + 1 */
        uint16x8x2_t lo = vld2q_u16(w), hi = vld2q_u16(w + 16);
        float32x4_t w0[4] = {widen_bf16(vget_low_u16(lo.val[0])), widen_bf16(vget_high_u16(lo.val[0])),
                             widen_bf16(vget_low_u16(hi.val[0])), widen_bf16(vget_high_u16(hi.val[0]))};
        float32x4_t w1[4] = {widen_bf16(vget_low_u16(lo.val[1])), widen_bf16(vget_high_u16(lo.val[1])),
                             widen_bf16(vget_low_u16(hi.val[1])), widen_bf16(vget_high_u16(hi.val[1]))};
        for (int r = 0; r < QN_ROWS; r++) {
            float a0 = ml_bf16_to_f32(a[(size_t)r * Kp + k]), a1 = ml_bf16_to_f32(a[(size_t)r * Kp + k + 1]);
            for (int q = 0; q < 4; q++) acc[r][q] = vfmaq_n_f32(vfmaq_n_f32(acc[r][q], w0[q], a0), w1[q], a1);
        }
    }
    for (int r = 0; r < QN_ROWS && i + r < j->A->M; r++) qg_arm_store(j, i + r, p, acc[r]);
}

void qg_neon_bf16(const qg_job *j, int i0, int i1, int p0, int p1) {
    for (int p = p0; p < p1; p++)
        for (int i = i0; i < i1 && i < j->A->M; i += QN_ROWS) bf16_tile(j, i, p);
}

#else
typedef int ml_qgemm_neon_unused; /* ISO C wants a non-empty file */
#endif
