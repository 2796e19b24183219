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

/* One x_layers_i: pre-norm attention with a residual, then the FFN block
 * with its own residual (TransformerFFN adds it). */
static void fusion_layer(const ml_fusion_layer *f, int D, int heads, float *X, float *h, float *q,
                         float *k, float *v, float *att, float *ff) {
    ml_layernorm(2, D, X, f->ln.scale, f->ln.bias, FUSION_EPS, 1, h);
    ml_linear_forward(&f->q, 2, h, q, 0);
    ml_linear_forward(&f->k, 2, h, k, 0);
    ml_linear_forward(&f->v, 2, h, v, 0);
    int hd = f->q.out / heads;
    ml_attention(2, 2, heads, hd, q, f->q.out, k, f->k.out, v, f->v.out, 1.0f / sqrtf((float)hd),
                 NULL, LOGIT_CAP, NULL, 0, att, f->q.out);
    ml_linear_forward(&f->post, 2, att, X, 1); /* A = attention + X, kept in X */
    ml_layernorm(2, D, X, f->ff_ln.scale, f->ff_ln.bias, FUSION_EPS, 1, h);
    ml_linear_forward(&f->ff1, 2, h, ff, 0);
    ml_relu(ff, 2L * f->ff1.out);
    ml_linear_forward(&f->ff2, 2, ff, X, 1); /* X = F + A */
}

int ml_fusion_forward(const ml_model *m, const float *img_emb, const float *txt_emb, float *out,
                      ml_error *err) {
    int D = m->cfg.embed_dim, wide = m->pool.q.out > D ? m->pool.q.out : D;
    int ffw = m->cfg.fusion_ff > wide ? m->cfg.fusion_ff : wide;
    size_t n = 2 * (size_t)wide;
    float *buf = ml_aligned_alloc(sizeof(float) * (2 * (size_t)D + 5 * n + 2 * (size_t)ffw), err);
    if (!buf) return -1;
    float *X = buf, *h = X + 2 * D, *q = h + n, *k = q + n, *v = k + n, *att = v + n, *ff = att + n;
    memcpy(X, img_emb, sizeof(float) * D);
    memcpy(X + D, txt_emb, sizeof(float) * D);
    for (int l = 0; l < m->fusion_layers; l++)
        fusion_layer(&m->fusion[l], D, m->fusion_heads, X, h, q, k, v, att, ff);

    const ml_pooler *p = &m->pool;
    ml_linear_forward(&p->q, 1, p->query, q, 0);
    ml_linear_forward(&p->k, 2, X, k, 0);
    ml_linear_forward(&p->v, 2, X, v, 0);
    ml_attention(1, 2, p->heads, p->head_dim, q, p->q.out, k, p->k.out, v, p->v.out, 1.0f,
                 m->pool_qscale, LOGIT_CAP, NULL, 0, att, p->q.out);
    ml_linear_forward(&p->post, 1, att, h, 0);
    ml_layernorm(1, D, h, p->ln.scale, p->ln.bias, FUSION_EPS, 1, out);
    ml_l2_normalize(out, D);
    free(buf);
    return 0;
}
