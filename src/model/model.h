/* model.h - the MagicLens network: weights (views into a tensor set) and
 * the forward passes of its three parts.
 *
 * Layout conventions: every linear weight is float32 [in, out] row-major
 * (Flax's kernel layout) so that y = x @ w + b.  The fusion layers' output
 * projections are stored [out, heads, head_dim] in the checkpoint and are
 * transposed once at load time into that convention. */
#ifndef ML_MODEL_MODEL_H
#define ML_MODEL_MODEL_H

#include <pthread.h>

#include "io/tensors.h"
#include "kernels/precision.h"
#include "io/tokenizer.h"
#include "magiclens.h"

typedef struct ml_linear {
    const float *w;    /* [in, out] */
    const float *b;    /* [out] or NULL */
    int in, out;
    ml_packed *packed; /* bf16/int8 copy of w when the model runs at that precision */
} ml_linear;

typedef struct ml_norm {
    const float *scale, *bias;
} ml_norm;

/* One CLIP residual attention block (scenic ResidualAttentionBlock). */
typedef struct ml_clip_block {
    ml_norm ln_1, ln_2;
    ml_linear q, k, v, o, fc, proj;
    ml_linear qkv; /* bf16/int8 only: q, k, v packed side by side ([W, 3W]) so the
                      layer-norm output is converted once and read by one product */
} ml_clip_block;

typedef struct ml_vision {
    int width, layers, heads, patch, grid, tokens; /* tokens = grid^2 + 1 */
    ml_linear patch_embed;                          /* [P*P*3, width], no bias */
    const float *class_emb, *pos_emb;
    ml_norm ln_pre, ln_post;
    ml_clip_block *blocks;
    ml_linear proj; /* [width, E] */
} ml_vision;

typedef struct ml_text {
    int width, layers, heads, vocab, context;
    const float *tok_emb, *pos_emb;
    ml_clip_block *blocks;
    ml_norm ln_final;
    ml_linear proj; /* [width, E] */
} ml_text;

/* MagicLens' fusion transformer layer and attention pooler. */
typedef struct ml_fusion_layer {
    ml_norm ln, ff_ln;           /* LayerNorm with (1 + scale), eps 1e-6 */
    ml_linear q, k, v, post, ff1, ff2;
} ml_fusion_layer;

typedef struct ml_pooler {
    int heads, head_dim;
    ml_linear q, k, v, post;
    const float *per_dim_scale; /* [head_dim], raw: softplus applied at use */
    ml_norm ln;
    const float *query; /* [1, D] */
} ml_pooler;

struct ml_model {
    ml_config cfg;
    ml_tensor_set tensors; /* owns the file mapping and converted buffers */
    ml_vision vision;
    ml_text text;
    int fusion_layers, fusion_heads;
    ml_fusion_layer *fusion;
    ml_pooler pool;
    ml_tokenizer *tok;
    float *empty_text_emb; /* CLIP text embedding of "" (computed at load) */
    float *pool_qscale;    /* 1.442695041/sqrt(hd) * softplus(per_dim_scale) */
    int precision;         /* ml_precision of the tower linear layers */
};

/* Packs the towers' linear layers for `prec` (no-op for ML_PREC_FP32). */
int ml_model_pack(ml_model *m, ml_precision prec, ml_error *err);
void ml_model_unpack(ml_model *m);

/* y = x @ l.w + l.b (+ y if accumulate), at the layer's precision. */
void ml_linear_forward(const ml_linear *l, int rows, const float *x, float *y, int accumulate);
void ml_linear_forward_gelu(const ml_linear *l, int rows, const float *x, float *y);

/* Builds the network views from a loaded tensor set (which the model takes
 * over) and derives every size from the tensor shapes. */
int ml_model_bind(ml_model *m, ml_error *err);

/* Forward passes.  Images are preprocessed HWC floats of the tower's size. */
int ml_vision_forward(const ml_model *m, int n, const float *const *pixels, float *out_emb,
                      ml_error *err);
int ml_text_forward(const ml_model *m, const int32_t *ids, float *out_emb, ml_error *err);
/* img_emb, txt_emb: [E] each (not normalised); out: normalised [E]. */
int ml_fusion_forward(const ml_model *m, const float *img_emb, const float *txt_emb, float *out,
                      ml_error *err);
/* n items at once: img_emb [n, E], txt_emb n pointers to [E]; out [n, E]. */
int ml_fusion_forward_batch(const ml_model *m, int n, const float *img_emb,
                            const float *const *txt_emb, float *out, ml_error *err);

#endif
