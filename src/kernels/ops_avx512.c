/* ops_avx512.c - the AVX512 element-wise and row kernels (built with this ISA's
 * -m flags; called only when cpu.c reports it). */
#if defined(__x86_64__)
#define ML_SIMD_AVX512
#include "kernels/gemm_simd.h"
#include "kernels/ops_tmpl.h"
#else
typedef int ml_ops_avx512_unused; /* ISO C wants a non-empty file */
#endif
