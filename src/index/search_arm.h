/* search_arm.h - the score/threshold epilogue shared by the aarch64 scoring
 * kernels (search_neon.c, search_dotprod.c; never included elsewhere). */
#ifndef ML_INDEX_SEARCH_ARM_H
#define ML_INDEX_SEARCH_ARM_H

#include <arm_neon.h>

#include "index/search_internal.h"

/* 16 scores to out, and bit r of *mask set where score r >= thr. */
static inline void sk_arm_emit(const float32x4_t v[4], float thr, float *out, uint16_t *mask) {
    static const uint32_t bits[4] = {1, 2, 4, 8};
    const uint32x4_t b = vld1q_u32(bits);
    const float32x4_t t = vdupq_n_f32(thr);
    unsigned m = 0;
    for (int q = 0; q < 4; q++) {
        vst1q_f32(out + 4 * q, v[q]);
        m |= vaddvq_u32(vandq_u32(vcgeq_f32(v[q], t), b)) << (4 * q);
    }
    *mask = (uint16_t)m;
}

/* int8 scores from the integer sums (acc - corr: the +128 offset of the
 * stored codes already taken out), as the portable kernel: (float)x * qs *
 * row scale. */
static inline void sk_arm_emit_i8(const int32x4_t x[4], float qs, const float *scale, float thr,
                                  float *out, uint16_t *mask) {
    float32x4_t v[4];
    for (int q = 0; q < 4; q++)
        v[q] = vmulq_f32(vmulq_n_f32(vcvtq_f32_s32(x[q]), qs), vld1q_f32(scale + 4 * q));
    sk_arm_emit(v, thr, out, mask);
}

#endif
