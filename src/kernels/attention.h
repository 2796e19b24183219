/* attention.h - multi-head attention at the precision the model runs at. */
#ifndef ML_KERNELS_ATTENTION_H
#define ML_KERNELS_ATTENTION_H

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

#endif
