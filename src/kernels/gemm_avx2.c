/* gemm_avx2.c - the AVX2 + FMA f32 GEMM micro-kernel (built with -mavx2
 * -mfma; called only when cpu.c reports AVX2).  6 rows x 16 columns = 12 ymm
 * accumulators, leaving registers for 2 B vectors and the broadcast. */
#if defined(__x86_64__)
#define ML_SIMD_AVX2
#define GEMM_MR 6
#define GEMM_NV 2
#include "kernels/gemm_simd.h"
#include "kernels/gemm_tmpl.h"
#else
typedef int ml_gemm_avx2_unused; /* ISO C wants a non-empty file */
#endif
