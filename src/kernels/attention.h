/* attention.h - multi-head attention at the precision the model runs at. */
#ifndef ML_KERNELS_ATTENTION_H
#define ML_KERNELS_ATTENTION_H

#include <stdint.h>

#include "kernels/precision.h"

/* ml_attention (ops.h, same arguments) at precision `prec`: ML_PREC_FP32 is
 * exactly ml_attention; ML_PREC_BF16 / ML_PREC_INT8 (a model whose linear
 * layers run at reduced precision) compute Q K^T and P V with bf16 operands
 * and float32 accumulation where the active ISA has a kernel for it (AMX,
 * hd a multiple of 32); scale, masks, cap and softmax stay float32.
 * Elsewhere it falls back to the float32 kernel. */
void ml_attention_prec(ml_precision prec, int T, int S, int heads, int hd, const float *q, int ldq,
                       const float *k, int ldk, const float *v, int ldv, float scale,
                       const float *qscale, float cap, const unsigned char *key_ok, int causal,
                       float *out, int ldo);

/* The bf16 pipeline's attention: q, k, v and out are bf16 (round to
 * nearest even), strides in elements; no qscale or cap.  On AMX the tile
 * kernel with the same arithmetic as ml_attention_prec at bf16; elsewhere
 * through float32.  -1 (out not written) on bad sizes or out of memory. */
int ml_attention_bf16(int T, int S, int heads, int hd, const uint16_t *q, int ldq,
                      const uint16_t *k, int ldk, const uint16_t *v, int ldv, float scale,
                      const unsigned char *key_ok, int causal, uint16_t *out, int ldo);

#endif
