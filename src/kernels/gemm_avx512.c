/* gemm_avx512.c - the AVX-512 f32 GEMM micro-kernel (built with -mavx512f
 * -mavx512bw -mavx512vl -mfma; called only when cpu.c reports AVX-512).
 * 12 rows x 32 columns = 24 zmm accumulators, 2 B loads per 24 FMAs. */
#if defined(__x86_64__)
#define ML_SIMD_AVX512
#ifndef GEMM_MR
#define GEMM_MR 12
#endif
#ifndef GEMM_NV
#define GEMM_NV 2
#endif
#include "kernels/gemm_simd.h"
#include "kernels/gemm_tmpl.h"
#else
typedef int ml_gemm_avx512_unused; /* ISO C wants a non-empty file */
#endif
