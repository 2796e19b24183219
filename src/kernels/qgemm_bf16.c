/* qgemm_bf16.c - the aarch64 bf16 kernel on BFMMLA (built with +bf16,
 * called only when cpu.c has seen bf16 in AT_HWCAP2): bf16 x bf16 products
 * summed in float32, 4 k per instruction. */
#if defined(__aarch64__)
#define MM_ESIZE 2
#define MM_ACC float32x4_t
#define MM_ZERO vdupq_n_f32(0.0f)
#define MM_OP(acc, a, b) vbfmmlaq_f32(acc, vreinterpretq_bf16_u8(a), vreinterpretq_bf16_u8(b))
#define MM_U64(x) vreinterpretq_u64_f32(x)
#define MM_FROM_U64(x) vreinterpretq_f32_u64(x)
#define MM_STORE(j, i, p, v) qg_arm_store(j, i, p, v)
#define MM_NAME qg_bf16mm_bf16
#include "kernels/qgemm_mmla_tmpl.h"
#else
typedef int ml_qgemm_bf16_unused; /* ISO C wants a non-empty file */
#endif
