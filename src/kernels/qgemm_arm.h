/* qgemm_arm.h - the epilogues shared by the aarch64 low-precision kernels
 * (qgemm_neon.c, qgemm_dotprod.c, qgemm_i8mm.c, qgemm_bf16.c; never
 * included elsewhere).  They do the portable kernel's float operations in
 * its order (qgemm.c: store_row, qg_ref_int8), so int8 results are
 * bit-identical to every other path. */
#ifndef ML_KERNELS_QGEMM_ARM_H
#define ML_KERNELS_QGEMM_ARM_H

#include <arm_neon.h>
#include <string.h>

#include "kernels/qgemm_internal.h"

/* C[i, panel p] <- v (16 values) + bias (+ C), only the columns that exist. */
static inline void qg_arm_store(const qg_job *j, int i, int p, const float32x4_t v[4]) {
    int nc = qg_panel_cols(j->B, p);
    float *c = j->C + (size_t)i * j->ldc + p * QG_NR;
    const float *bias = j->bias ? j->bias + p * QG_NR : NULL;
    float t[QG_NR];
    for (int q = 0; q < 4; q++) vst1q_f32(t + 4 * q, v[q]);
    for (int n = 0; n < nc; n++) {
        float x = t[n] + (bias ? bias[n] : 0.0f);
        c[n] = j->accumulate ? c[n] + x : x;
    }
}

/* int8 row i, panel p: acc holds sum_k (qa - off) * qw for 16 columns (off
 * = 128 where the kernel moved the u8 activations to s8, else 0); the
 * dequantisation is (acc' - z * colsum) * (sa * sw) with acc' the u8 sum,
 * exactly as qg_ref_int8. */
static inline void qg_arm_store_i32(const qg_job *j, int i, int p, const int32x4_t acc[4], int off) {
    const float *sw = j->B->scale + p * QG_NR;
    const int32_t *cs = j->B->colsum + p * QG_NR;
    int32_t z = j->A->zero[i];
    float sa = j->A->scale[i];
    float32x4_t v[4];
    for (int q = 0; q < 4; q++) {
        int32x4_t x = vsubq_s32(acc[q], vmulq_n_s32(vld1q_s32(cs + 4 * q), z - off));
        v[q] = vmulq_f32(vcvtq_f32_s32(x), vmulq_n_f32(vld1q_f32(sw + 4 * q), sa));
    }
    qg_arm_store(j, i, p, v);
}

#endif
