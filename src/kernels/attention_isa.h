/* attention_isa.h - the per-ISA low-precision attention kernels (internal). */
#ifndef ML_KERNELS_ATTENTION_ISA_H
#define ML_KERNELS_ATTENTION_ISA_H

#include <stddef.h>
#include <stdint.h>

#define ML_ATT_HD_MAX 256 /* largest head size the low-precision kernels take */

#if defined(__x86_64__)
/* Bytes of 64-byte-aligned scratch ml_att_amx_head needs. */
size_t ml_att_amx_scratch(int S, int hd);
/* One head (hd % 32 == 0) on AMX tiles: bf16 Q K^T and P V, fp32 softmax.
 * Arguments as ml_attention with heads = 1; `scratch` is 64-byte aligned. */
void ml_att_amx_head(int T, int S, int hd, const float *q, int ldq, const float *k, int ldk,
                     const float *v, int ldv, float scale, const float *qscale, float cap,
                     const unsigned char *key_ok, int causal, float *out, int ldo, void *scratch);
/* The same with bf16 (uint16_t) q, k, v and out (the bf16 pipeline). */
void ml_att_amx_head_bf16(int T, int S, int hd, const uint16_t *q, int ldq, const uint16_t *k,
                          int ldk, const uint16_t *v, int ldv, float scale,
                          const unsigned char *key_ok, int causal, uint16_t *out, int ldo,
                          void *scratch);
#endif

#endif
