/* fusion.c - MagicLens' own layers: a small transformer over the two tokens
 * [image embedding, text embedding], then attention pooling with one learned
 * query, LayerNorm and L2 normalisation (layers.py in the official code). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/mem.h"
#include "kernels/gemm.h"
#include "kernels/ops.h"
#include "model/model.h"

#define LOGIT_CAP 50.0f
#define FUSION_EPS 1e-6f

/* One x_layers_i over n items (2 tokens each, rows 2i and 2i+1 of X):
 * pre-norm attention with a residual, then the FFN block with its own
 * residual (TransformerFFN adds it).  The linear layers run once over all
 * 2n rows so the weights are read once per batch, not once per item. */
static void fusion_layer(const ml_fusion_layer *f, int n, int D, int heads, float *X, float *h,
                         float *q, float *k, float *v, float *att, float *ff) {
    int rows = 2 * n, W = f->q.out, hd = W / heads;
    ml_layernorm(rows, D, X, f->ln.scale, f->ln.bias, FUSION_EPS, 1, h);
    ml_linear_forward(&f->q, rows, h, q, 0);
    ml_linear_forward(&f->k, rows, h, k, 0);
    ml_linear_forward(&f->v, rows, h, v, 0);
    for (int i = 0; i < n; i++) {
        size_t o = (size_t)2 * i * W;
        ml_attention(2, 2, heads, hd, q + o, W, k + o, W, v + o, W, 1.0f / sqrtf((float)hd), NULL,
                     LOGIT_CAP, NULL, 0, att + o, W);
    }
    ml_linear_forward(&f->post, rows, att, X, 1); /* A = attention + X, kept in X */
    ml_layernorm(rows, D, X, f->ff_ln.scale, f->ff_ln.bias, FUSION_EPS, 1, h);
    ml_linear_forward(&f->ff1, rows, h, ff, 0);
    ml_relu(ff, (long)rows * f->ff1.out);
    ml_linear_forward(&f->ff2, rows, ff, X, 1); /* X = F + A */
}

int ml_fusion_forward_batch(const ml_model *m, int n, const float *img_emb,
                            const float *const *txt_emb, float *out, ml_error *err) {
    const ml_pooler *p = &m->pool;
    int D = m->cfg.embed_dim, wide = p->q.out > D ? p->q.out : D;
    int ffw = m->cfg.fusion_ff > wide ? m->cfg.fusion_ff : wide;
    size_t rows = 2 * (size_t)n, nw = rows * wide;
    float *buf = ml_aligned_alloc(sizeof(float) * (rows * D + 5 * nw + rows * ffw), err);
    if (!buf) return -1;
    float *X = buf, *h = X + rows * D, *q = h + nw, *k = q + nw, *v = k + nw, *att = v + nw;
    float *ff = att + nw;
    for (int i = 0; i < n; i++) {
        memcpy(X + (size_t)2 * i * D, img_emb + (size_t)i * D, sizeof(float) * D);
        memcpy(X + (size_t)(2 * i + 1) * D, txt_emb[i], sizeof(float) * D);
    }
    for (int l = 0; l < m->fusion_layers; l++)
        fusion_layer(&m->fusion[l], n, D, m->fusion_heads, X, h, q, k, v, att, ff);

    /* Pooling: the learned query is the same for every item. */
    int W = p->q.out;
    ml_linear_forward(&p->q, 1, p->query, q, 0);
    ml_linear_forward(&p->k, (int)rows, X, k, 0);
    ml_linear_forward(&p->v, (int)rows, X, v, 0);
    for (int i = 0; i < n; i++)
        ml_attention(1, 2, p->heads, p->head_dim, q, W, k + (size_t)2 * i * W, W,
                     v + (size_t)2 * i * W, W, 1.0f, m->pool_qscale, LOGIT_CAP, NULL, 0,
                     att + (size_t)i * W, W);
    ml_linear_forward(&p->post, n, att, h, 0);
    ml_layernorm(n, D, h, p->ln.scale, p->ln.bias, FUSION_EPS, 1, out);
    for (int i = 0; i < n; i++) ml_l2_normalize(out + (size_t)i * D, D);
    free(buf);
    return 0;
}

int ml_fusion_forward(const ml_model *m, const float *img_emb, const float *txt_emb, float *out,
                      ml_error *err) {
    return ml_fusion_forward_batch(m, 1, img_emb, &txt_emb, out, err);
}
