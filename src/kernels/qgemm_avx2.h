/* qgemm_avx2.h - the ymm low-precision kernels (qgemm_avx2.c,
 * qgemm_avxvnni.c), for CPUs without AVX-512 VNNI / BF16. */
#ifndef ML_KERNELS_QGEMM_AVX2_H
#define ML_KERNELS_QGEMM_AVX2_H

#include "kernels/qgemm_internal.h"

/* int8 kernels with qg_ref_int8's contract (and its exact integers on the
 * weights their packer wrote: 7-bit for qg_avx2_int8). */
void qg_avx2_int8(const qg_job *j, int i0, int i1, int p0, int p1);
void qg_avxvnni_int8(const qg_job *j, int i0, int i1, int p0, int p1);

/* qg_avx512_pack_u8 for AVX2: ref_pack_u8's integers. */
void qg_avx2_pack_u8(const float *A, int lda, int K, int Kp, uint8_t *dst, float *scale,
                     int32_t *zero, int r0, int r1);

/* bf16 weights (ctx: the ml_packed) widened into the float32 GEMM's packed
 * B slabs: an ml_gemm_b_fn (gemm_isa.h). */
void qg_widen_bf16(const void *ctx, int k0, int kc, int n0, int nn, int nr, float *buf);

#endif
