/* qgemm_x86.h - AVX-512 epilogues shared by qgemm_avx512.c and qgemm_amx.c
 * (both compiled with AVX-512 flags; never included elsewhere). */
#ifndef ML_KERNELS_QGEMM_X86_H
#define ML_KERNELS_QGEMM_X86_H

#include <immintrin.h>

#include "kernels/qgemm_internal.h"

/* x * sigmoid(1.702 x): the AVX-512 vquick_gelu that the float32 kernels
 * use too, so every path rounds the GELU the same way. */
#define ML_SIMD_AVX512
#include "kernels/gemm_simd.h"
#include "kernels/ops_vexp.h"
static inline __m512 qg_quick_gelu(__m512 v) { return vquick_gelu(v); }

/* C[i, panel p] <- v (+ bias) (+ C), only the columns that exist. */
static inline void qg_store_vec(const qg_job *j, int i, int p, __m512 v) {
    __mmask16 m = (__mmask16)((1u << qg_panel_cols(j->B, p)) - 1u);
    float *c = j->C + (size_t)i * j->ldc + p * QG_NR;
    if (j->bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, j->bias + p * QG_NR));
    if (j->accumulate) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, c));
    _mm512_mask_storeu_ps(c, m, v);
}

/* int8: (acc - z[i] * colsum) * (sa[i] * sw), the same operations in the same
 * order as the portable kernel, so every path gives identical floats. */
static inline void qg_store_i32(const qg_job *j, int i, int p, __m512i acc) {
    const float *sw = j->B->scale + p * QG_NR;
    const int32_t *cs = j->B->colsum + p * QG_NR;
    __m512i zc = _mm512_mullo_epi32(_mm512_set1_epi32(j->A->zero[i]), _mm512_loadu_si512(cs));
    __m512 s = _mm512_mul_ps(_mm512_set1_ps(j->A->scale[i]), _mm512_loadu_ps(sw));
    qg_store_vec(j, i, p, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc, zc)), s));
}

#endif
