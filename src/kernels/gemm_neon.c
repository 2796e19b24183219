/* gemm_neon.c - the aarch64 NEON f32 GEMM micro-kernel (gemm_tmpl.h; Advanced
 * SIMD is baseline on aarch64, so no extra flags).  6 rows x 16 columns = 24
 * of the 32 q registers as accumulators, 4 for the B row, 1 for the A
 * broadcast; every B load feeds 6 FMAs. */
#if defined(__aarch64__)
#define ML_SIMD_NEON
#define GEMM_MR 6
#define GEMM_NV 4
#include "kernels/gemm_simd.h"
#include "kernels/gemm_tmpl.h"
#else
typedef int ml_gemm_neon_unused; /* ISO C wants a non-empty file */
#endif
