/* gemm.h - dense matrix products for the model.
 *
 * All matrices are row-major float32.  B is stored [K, N] (Flax's [in, out]
 * kernel layout), so a linear layer is y = x @ W + b with no transposes. */
#ifndef ML_KERNELS_GEMM_H
#define ML_KERNELS_GEMM_H

/* C[M,N] = A[M,K] @ B[K,N] (+ bias[N] if not NULL) (+ C if accumulate). */
void ml_gemm(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
             const float *bias, float *C, int ldc, int accumulate);

/* C[M,N] = quick_gelu(A @ B (+ bias)), the GELU applied as C is written
 * instead of in a second pass over it. */
void ml_gemm_gelu(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                  const float *bias, float *C, int ldc);

#endif
