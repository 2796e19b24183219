/* qgemm_i8mm.c - the aarch64 int8 kernel on USMMLA (i8mm; built with +i8mm,
 * called only when cpu.c has seen it in AT_HWCAP2).  USMMLA multiplies the
 * u8 activations by the s8 weights directly, so its integers are the ones
 * every other path computes (qgemm_internal.h). */
#if defined(__aarch64__)
#define MM_ESIZE 1
#define MM_ACC int32x4_t
#define MM_ZERO vdupq_n_s32(0)
#define MM_OP(acc, a, b) vusmmlaq_s32(acc, a, vreinterpretq_s8_u8(b))
#define MM_U64(x) vreinterpretq_u64_s32(x)
#define MM_FROM_U64(x) vreinterpretq_s32_u64(x)
#define MM_STORE(j, i, p, v) qg_arm_store_i32(j, i, p, v, 0)
#define MM_NAME qg_i8mm_int8
#include "kernels/qgemm_mmla_tmpl.h"
#else
typedef int ml_qgemm_i8mm_unused; /* ISO C wants a non-empty file */
#endif
