/* ops.h - the element-wise and row-wise operations of the transformer. */
#ifndef ML_KERNELS_OPS_H
#define ML_KERNELS_OPS_H

#include <stdint.h>

/* LayerNorm over rows of width n: (x-mean)/sqrt(var+eps) * s + b, where
 * s = scale (CLIP) or 1 + scale (MagicLens' fusion layers: plus_one = 1).
 * In-place allowed (out == x). */
void ml_layernorm(int rows, int n, const float *x, const float *scale, const float *bias,
                  float eps, int plus_one, float *out);

/* The same, each output row rounded to bf16 (round to nearest even) at
 * out + r * ldo; columns n..ldo are not written.  -1 (nothing done) for
 * rows wider than 4096. */
int ml_layernorm_bf16(int rows, int n, const float *x, const float *scale, const float *bias,
                      float eps, int plus_one, uint16_t *out, int ldo);
void ml_to_bf16(const float *x, uint16_t *out, int n); /* as ml_f32_to_bf16 */
void ml_quick_gelu(float *x, long n); /* x * sigmoid(1.702 x) */
void ml_relu(float *x, long n);
void ml_add(float *y, const float *x, long n); /* y += x */
/* x = softmax(x) in place; -INFINITY entries get 0, an all -INFINITY row all 0. */
void ml_softmax(float *x, int n);

#define ML_MAX_SEQ 4096 /* longest sequence the attention kernel accepts */

/* Multi-head attention for one sequence.  q, k, v are [T, heads*hd] rows
 * with stride ld; out is [T, heads*hd].  scale multiplies q.k; cap > 0
 * applies cap * tanh(logit / cap).  key_ok (may be NULL) marks usable keys;
 * causal restricts key s <= query t.  A query with no usable key gets a zero
 * output (its row is never read by the caller). */
void ml_attention(int T, int S, int heads, int hd, const float *q, int ldq, const float *k,
                  int ldk, const float *v, int ldv, float scale, const float *qscale, float cap,
                  const unsigned char *key_ok, int causal, float *out, int ldo);

/* x /= sqrt(sum(x^2) + 1e-12), computed in double. */
void ml_l2_normalize(float *x, int n);

#endif
