/* qgemm_avxvnni.c - the int8 kernel for AVX-VNNI (vpdpbusd on ymm, VEX
 * encoded: Intel Alder Lake and later client CPUs, AMD Zen 5), which have it
 * with or without AVX-512.  Compiled with -mavx2 -mfma -mavxvnni; called only
 * when CPUID reports AVX-VNNI.  vpdpbusd adds the four u8 x s8 products of
 * each lane straight into int32 (no int16 step), the same integers as the
 * AVX-512 VNNI and AMX kernels. */
#if defined(__x86_64__)

#include "kernels/qgemm_avx2.h"

#define QG_Y_MR 6 /* 12 accumulators + 2 weights + the broadcast */
#define QG_Y_NAME qg_avxvnni_int8
#define QG_Y_DOT(acc, a, w) _mm256_dpbusd_avx_epi32((acc), (a), (w))
#include "kernels/qgemm_avx2_tmpl.h"

#else
typedef int qgemm_avxvnni_unused; /* ISO C forbids an empty translation unit */
#endif
