/* gemm_isa.h - the per-instruction-set kernels behind ml_gemm and the ops
 * (internal to src/kernels).
 *
 * Each SIMD file (gemm_avx2.c, gemm_avx512.c, ops_avx2.c, ops_avx512.c) is
 * compiled with its own -m flags and is only called after cpu.c has said the
 * machine can run it; everything else in the binary stays baseline x86-64.
 * On aarch64, gemm_neon.c and ops_neon.c serve every path (NEON is baseline). */
#ifndef ML_KERNELS_GEMM_ISA_H
#define ML_KERNELS_GEMM_ISA_H

#include <stdint.h>

#include "kernels/cpu.h"

#define ML_GEMM_MR_MAX 16 /* most rows any micro-kernel takes */

/* One row block of A against n columns of B: C[mr, n] (=|+=) A @ B.
 * a, b and c point at the block's first row / column; row r of A is at
 * a + r * lda.  load_c: add the existing C; bias (or NULL) is added
 * once, by the first K block. */
typedef struct ml_gemm_panel {
    const float *a;
    long lda;
    int mr, kc, n;
    const float *b;
    long ldb;
    long bpanel; /* floats from one nr-column panel of B to the next */
    float *c;
    long ldc;
    const float *bias;
    int load_c;
    int gelu; /* quick_gelu the result as it is stored (the last K block) */
} ml_gemm_panel;

typedef struct ml_gemm_impl {
    int mr;                                   /* rows per micro-kernel */
    int nr;                                   /* columns per micro-kernel */
    void (*panel)(const ml_gemm_panel *p);
    /* Copies a kc x n slab of B (rows ldb apart) into buf as the panels
     * that ml_gemm_panel reads with ldb = nr, bpanel = kc * nr. */
    void (*pack_b)(const float *b, long ldb, int kc, int n, float *buf);
} ml_gemm_impl;

/* NULL when the ISA has no SIMD GEMM (scalar). */
const ml_gemm_impl *ml_gemm_impl_for(ml_isa isa);

/* Single-threaded ml_gemm (for callers already inside ml_parallel_for). */
void ml_gemm_serial(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                    const float *bias, float *C, int ldc, int accumulate);

/* B given by a function instead of a matrix: it writes the kc x nn slab at
 * row k0, column n0 as nr-column panels of kc rows (pack_b's layout; n0 is a
 * multiple of 16).  The low-precision weights use it to be widened to
 * float32 as they are packed (qg_widen_bf16). */
typedef void (*ml_gemm_b_fn)(const void *ctx, int k0, int kc, int n0, int nn, int nr, float *buf);

/* ml_gemm (gelu: ml_gemm_gelu) on the float32 micro-kernel of `isa` with B
 * from bfn; isa must have a SIMD GEMM (ml_gemm_impl_for non-NULL). */
void ml_gemm_bfn(ml_isa isa, int M, int N, int K, const float *A, int lda, ml_gemm_b_fn bfn,
                 const void *bctx, const float *bias, float *C, int ldc, int accumulate, int gelu);

/* The element-wise / row kernels of one ISA. */
typedef struct ml_ops_impl {
    void (*quick_gelu)(float *x, long n);
    void (*add)(float *y, const float *x, long n);
    void (*layernorm_row)(int n, const float *x, const float *scale, const float *bias, float eps,
                          int plus_one, float *out);
    /* x = softmax(x * scale) over n values; -INFINITY entries get exactly 0. */
    void (*softmax_row)(float *x, int n, float scale);
    /* out[i] = bf16(x[i]) for i < n, as ml_f32_to_bf16 (kernels/bf16.h). */
    void (*to_bf16)(const float *x, uint16_t *out, int n);
    /* layernorm_row with its output rounded to bf16 as to_bf16 does. */
    void (*layernorm_row_bf16)(int n, const float *x, const float *scale, const float *bias,
                               float eps, int plus_one, uint16_t *out);
} ml_ops_impl;

const ml_ops_impl *ml_ops_impl_for(ml_isa isa);

#if defined(__x86_64__)
extern const ml_gemm_impl ml_gemm_avx2, ml_gemm_avx512;
extern const ml_ops_impl ml_ops_avx2, ml_ops_avx512;
#endif
#if defined(__aarch64__)
extern const ml_gemm_impl ml_gemm_neon;
extern const ml_ops_impl ml_ops_neon;
#endif

#endif
