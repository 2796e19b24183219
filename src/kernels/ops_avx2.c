/* ops_avx2.c - the AVX2 element-wise and row kernels (built with this ISA's
 * -m flags; called only when cpu.c reports it). */
#if defined(__x86_64__)
#define ML_SIMD_AVX2
#include "kernels/gemm_simd.h"
#include "kernels/ops_tmpl.h"
#else
typedef int ml_ops_avx2_unused; /* ISO C wants a non-empty file */
#endif
