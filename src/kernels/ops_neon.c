/* ops_neon.c - the aarch64 NEON element-wise and row kernels (ops_tmpl.h;
 * Advanced SIMD is baseline on aarch64). */
#if defined(__aarch64__)
#define ML_SIMD_NEON
#include "kernels/gemm_simd.h"
#include "kernels/ops_tmpl.h"
#else
typedef int ml_ops_neon_unused; /* ISO C wants a non-empty file */
#endif
