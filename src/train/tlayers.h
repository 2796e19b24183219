/* tlayers.h - forward and backward passes of the layers the trainable
 * MagicLens network is made of (llm.c style: one forward and one backward
 * per layer; the backward ADDS parameter gradients and writes or adds the
 * input gradient as documented per function).
 *
 * Everything is float32 row-major.  Matrix products run through ml_gemm; the
 * transposed products a backward pass needs (A^T @ B, A @ B^T) transpose one
 * operand into caller-provided scratch first.  The math of each backward is
 * written out in docs/training-math.md. */
#ifndef ML_TRAIN_TLAYERS_H
#define ML_TRAIN_TLAYERS_H

#include <stddef.h>

/* A linear layer y = x @ W + b over views into the model's w / g arrays.
 * W is [in, out], or [out, in] when wt = 1 (the fusion layers' `post`
 * weight, stored [D, heads, head_dim]).  bf16 = 1: the products with W
 * (forward and input gradient) take bf16-rounded operands with float32
 * accumulation, on CPUs with native bf16 (AMX or AVX-512 BF16); elsewhere,
 * and for the weight gradients, float32. */
typedef struct tl_lin {
    float *w, *gw; /* weight and its gradient */
    float *b, *gb; /* bias and gradient, or NULL */
    int in, out, wt, bf16;
} tl_lin;

/* 1 when this CPU runs bf16 products natively (what bf16 = 1 needs). */
int tl_bf16_native(void);

typedef struct tl_norm {
    float *s, *gs, *b, *gb; /* scale, bias and their gradients */
} tl_norm;

/* dst[c, r] = src[r, c] for an R x C block (threaded, cache-blocked). */
void tl_transpose(int R, int C, const float *src, int lds, float *dst, int ldd);

/* y[M, out] = x @ W + b (+ y if acc).  ws: scratch of in*out floats when
 * l->wt (unused otherwise, may be NULL). */
void tl_linear_fwd(const tl_lin *l, int M, const float *x, float *y, int acc, float *ws);
/* Parameter gradients: gW += x^T @ dy, gb += colsum(dy).  xt: x already
 * transposed ([in, M]) or NULL to transpose x into ws (M * max(in, out)
 * floats). */
void tl_linear_bwd_w(const tl_lin *l, int M, const float *x, const float *xt, const float *dy,
                     float *ws);
/* dx[M, in] = dy @ W^T (+ dx if acc).  ws: in*out floats (unused when wt). */
void tl_linear_bwd_x(const tl_lin *l, int M, const float *dy, float *dx, int acc, float *ws);

/* Column sums: out[c] += sum_r x[r, c]. */
void tl_colsum_add(int R, int C, const float *x, float *out);

/* LayerNorm over rows of width n, eps as given; plus_one: the effective
 * scale is 1 + s (MagicLens' fusion layers).  Saves each row's mean and
 * 1/sqrt(var + eps) (mean, rstd: [rows]) for the backward. */
void tl_layernorm_fwd(int rows, int n, const float *x, const tl_norm *p, float eps, int plus_one,
                      float *y, float *mean, float *rstd);
/* dx (+)= dLN/dx . dy (acc: add to dx), gs += sum dy*xhat, gb += sum dy.
 * xhat is recomputed from x, mean, rstd. dx may not alias dy. */
void tl_layernorm_bwd(int rows, int n, const float *x, const float *mean, const float *rstd,
                      const tl_norm *p, int plus_one, const float *dy, float *dx, int acc);

/* y = z * sigmoid(1.702 z); y may alias z. */
void tl_quick_gelu_fwd(long n, const float *z, float *y);
/* dz = dy * d(quick_gelu)/dz at z; dz may alias dy. */
void tl_quick_gelu_bwd(long n, const float *z, const float *dy, float *dz);
/* relu backward from the OUTPUT y: dz = dy where y > 0, else 0 (dz may alias dy). */
void tl_relu_bwd(long n, const float *y, const float *dy, float *dz);

/* y = x / sqrt(|x|^2 + 1e-12) per row (double accumulation). */
void tl_l2norm_fwd(int rows, int n, const float *x, float *y);
/* dx = (dy - y (y . dy)) / sqrt(|x|^2 + 1e-12), from x and y. */
void tl_l2norm_bwd(int rows, int n, const float *x, const float *y, const float *dy, float *dx);

/* Multi-head attention over a batch of independent sequences, one task
 * per (sequence, head), in parallel.  q, k, v, out: rows of width
 * heads*hd (row strides ldq, ldk, ldo; v shares ldk).  Sequence i has T_i
 * queries at rows qrow(i) and S_i keys at rows krow(i):
 *   off == NULL: uniform T, S; qrow = i*T, krow = i*S;
 *   off != NULL: self-attention with len[i] = T_i = S_i at rows off[i].
 *   q_shared: every sequence uses query rows 0..T-1 (pooling); its
 *   output and dq rows are still i*T.
 * logits = scale * (q * qscale) . k (qscale [hd] or NULL), then
 * cap * tanh(logits / cap) when cap > 0; keys with key_ok[row] == 0 (when
 * key_ok != NULL) and, if causal, keys after the query are masked.  A
 * query with no usable key gets a zero output. */
typedef struct tl_attn {
    int nseq, heads, hd, T, S;
    const int *off, *len;
    int q_shared, causal;
    float scale, cap;
    const float *qscale;
    const unsigned char *key_ok;
    const float *q, *k, *v;
    int ldq, ldk;
    float *out;
    int ldo;
} tl_attn;

int tl_attention_fwd(const tl_attn *a);
/* Given dout (stride ldo), writes dq (stride ldq; rows as out when
 * q_shared), dk and dv (stride ldk, rows as k); every row a task touches
 * is overwritten.  dqscale (or NULL): [nseq*heads, hd] per-task sums of
 * d loss / d qscale, to be reduced by the caller.  Returns -1 when out of
 * memory. */
int tl_attention_bwd(const tl_attn *a, const float *dout, float *dq, float *dk, float *dv,
                     float *dqscale);

#endif
