/* load.c - binds a tensor set to the network and derives the configuration
 * from tensor shapes (no table of model sizes: base, large and the tiny
 * test models all load the same way). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/mem.h"
#include "kernels/ops.h"
#include "model/model.h"

typedef struct binder {
    ml_model *m;
    ml_error *err;
    int failed;
} binder;

/* Returns the tensor as float32 (converted into an owned buffer when the
 * file stores another dtype or an unaligned array).  `expect` gives the
 * required shape, -1 for "any"; the actual shape is written to `shape`. */
static const float *get_f32(binder *b, int ndim, const int64_t *expect, int64_t *shape,
                            const char *fmt, ...) ML_PRINTF(5, 6);

static const float *get_f32(binder *b, int ndim, const int64_t *expect, int64_t *shape,
                            const char *fmt, ...) {
    if (b->failed) return NULL;
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    const ml_tensor *t = ml_tensor_set_find(&b->m->tensors, name);
    if (!t) {
        b->failed = 1;
        ml_fail(b->err, "checkpoint has no tensor '%s'", name);
        return NULL;
    }
    if (t->ndim != ndim) {
        b->failed = 1;
        ml_fail(b->err, "tensor '%s' has %d dimensions, expected %d", name, t->ndim, ndim);
        return NULL;
    }
    for (int i = 0; i < ndim; i++) {
        if (t->shape[i] <= 0 || (expect && expect[i] >= 0 && t->shape[i] != expect[i])) {
            b->failed = 1;
            ml_fail(b->err, "tensor '%s' dimension %d is %lld, expected %lld", name, i,
                    (long long)t->shape[i], expect ? (long long)expect[i] : 1LL);
            return NULL;
        }
        if (shape) shape[i] = t->shape[i];
    }
    if (t->dtype == ML_F32 && ((uintptr_t)t->data % sizeof(float)) == 0) return t->data;
    if (t->dtype == ML_U8) {
        b->failed = 1;
        ml_fail(b->err, "tensor '%s' has dtype %s, expected a float type", name,
                ml_dtype_name(t->dtype));
        return NULL;
    }
    int64_t n = ml_tensor_numel(t);
    float *buf = ml_aligned_alloc((size_t)n * sizeof(float), b->err);
    if (!buf || ml_tensor_set_own(&b->m->tensors, buf, b->err) != 0) {
        free(buf);
        b->failed = 1;
        return NULL;
    }
    for (int64_t i = 0; i < n; i++) buf[i] = ml_tensor_get_f32(t, i);
    return buf;
}

static int exists(const ml_model *m, const char *fmt, int i) {
    char name[256];
    snprintf(name, sizeof name, fmt, i);
    return ml_tensor_set_find(&m->tensors, name) != NULL;
}

static int count_layers(const ml_model *m, const char *fmt) {
    int n = 0;
    while (n < 1000 && exists(m, fmt, n)) n++;
    return n;
}

/* Flax DenseGeneral q/k/v kernel [W, heads, hd] + bias [heads, hd]. */
static void bind_proj(binder *b, ml_linear *l, int width, int *heads, int *hd, const char *pfx,
                      const char *wname, const char *bname) {
    int64_t s[3], e3[3] = {width, heads && *heads ? *heads : -1, hd && *hd ? *hd : -1};
    l->w = get_f32(b, 3, e3, s, "%s/%s", pfx, wname);
    if (b->failed) return;
    if (heads) *heads = (int)s[1];
    if (hd) *hd = (int)s[2];
    int64_t e2[2] = {s[1], s[2]};
    l->b = get_f32(b, 2, e2, NULL, "%s/%s", pfx, bname);
    l->in = width;
    l->out = (int)(s[1] * s[2]);
}

static void bind_norm(binder *b, ml_norm *n, int width, const char *pfx) {
    int64_t e[1] = {width};
    n->scale = get_f32(b, 1, e, NULL, "%s/scale", pfx);
    n->bias = get_f32(b, 1, e, NULL, "%s/bias", pfx);
}

static void bind_dense(binder *b, ml_linear *l, int in, int out, int bias, const char *pfx,
                       const char *wname, const char *bname) {
    int64_t e[2] = {in, out}, s[2];
    l->w = get_f32(b, 2, e, s, "%s/%s", pfx, wname);
    if (b->failed) return;
    l->in = (int)s[0];
    l->out = (int)s[1];
    int64_t eb[1] = {s[1]};
    l->b = bias ? get_f32(b, 1, eb, NULL, "%s/%s", pfx, bname) : NULL;
}

static ml_clip_block *bind_clip_blocks(binder *b, const char *tower, int layers, int width,
                                       int *heads) {
    ml_clip_block *blocks = ml_calloc((size_t)layers, sizeof *blocks, b->err);
    if (!blocks) {
        b->failed = 1;
        return NULL;
    }
    for (int i = 0; i < layers && !b->failed; i++) {
        char p[128], a[160];
        ml_clip_block *k = &blocks[i];
        snprintf(p, sizeof p, "clip/%s/transformer/resblocks_%d", tower, i);
        snprintf(a, sizeof a, "%s/attn", p);
        int hd = 0;
        char q[192];
        snprintf(q, sizeof q, "%s/query", a);
        bind_proj(b, &k->q, width, heads, &hd, q, "kernel", "bias");
        snprintf(q, sizeof q, "%s/key", a);
        bind_proj(b, &k->k, width, heads, &hd, q, "kernel", "bias");
        snprintf(q, sizeof q, "%s/value", a);
        bind_proj(b, &k->v, width, heads, &hd, q, "kernel", "bias");
        if (!b->failed && *heads * hd != width) {
            b->failed = 1;
            ml_fail(b->err, "%s: %d heads x %d != width %d", a, *heads, hd, width);
        }
        int64_t eo[3] = {*heads, hd, width}, eb[1] = {width};
        k->o.w = get_f32(b, 3, eo, NULL, "%s/out/kernel", a);
        k->o.b = get_f32(b, 1, eb, NULL, "%s/out/bias", a);
        k->o.in = k->o.out = width;
        snprintf(q, sizeof q, "%s/ln_1", p);
        bind_norm(b, &k->ln_1, width, q);
        snprintf(q, sizeof q, "%s/ln_2", p);
        bind_norm(b, &k->ln_2, width, q);
        snprintf(q, sizeof q, "%s/mlp/c_fc", p);
        bind_dense(b, &k->fc, width, -1, 1, q, "kernel", "bias");
        snprintf(q, sizeof q, "%s/mlp/c_proj", p);
        bind_dense(b, &k->proj, k->fc.out, width, 1, q, "kernel", "bias");
    }
    return blocks;
}

static void bind_vision(binder *b, ml_vision *v) {
    int64_t s[4];
    const float *cls = get_f32(b, 1, NULL, s, "clip/visual/class_embedding");
    if (b->failed) return;
    v->width = (int)s[0];
    v->class_emb = cls;
    int64_t ek[4] = {-1, -1, 3, v->width};
    v->patch_embed.w = get_f32(b, 4, ek, s, "clip/visual/conv1/kernel");
    if (b->failed) return;
    if (s[0] != s[1]) {
        b->failed = 1;
        ml_fail(b->err, "clip/visual/conv1/kernel: patch %lldx%lld is not square",
                (long long)s[0], (long long)s[1]);
        return;
    }
    v->patch = (int)s[0];
    v->patch_embed.in = v->patch * v->patch * 3;
    v->patch_embed.out = v->width;
    int64_t ep[2] = {-1, v->width};
    v->pos_emb = get_f32(b, 2, ep, s, "clip/visual/positional_embedding");
    if (b->failed) return;
    v->tokens = (int)s[0];
    v->grid = (int)lround(sqrt((double)(v->tokens - 1)));
    if (v->grid < 1 || v->grid * v->grid + 1 != v->tokens || v->tokens > ML_MAX_SEQ) {
        b->failed = 1;
        ml_fail(b->err, "clip/visual/positional_embedding: %d positions is not a square grid + 1",
                v->tokens);
        return;
    }
    bind_norm(b, &v->ln_pre, v->width, "clip/visual/ln_pre");
    bind_norm(b, &v->ln_post, v->width, "clip/visual/ln_post");
    v->layers = count_layers(b->m, "clip/visual/transformer/resblocks_%d/ln_1/scale");
    v->heads = 0;
    v->blocks = bind_clip_blocks(b, "visual", v->layers, v->width, &v->heads);
    bind_dense(b, &v->proj, v->width, -1, 0, "clip/visual/proj", "kernel", NULL);
}

static void bind_text(binder *b, ml_text *t, int embed_dim) {
    int64_t s[2];
    t->tok_emb = get_f32(b, 2, NULL, s, "clip/text/token_embedding/embedding");
    if (b->failed) return;
    t->vocab = (int)s[0];
    t->width = (int)s[1];
    int64_t ep[2] = {-1, t->width};
    t->pos_emb = get_f32(b, 2, ep, s, "clip/text/positional_embedding");
    if (b->failed) return;
    t->context = (int)s[0];
    if (t->context < 2 || t->context > ML_MAX_SEQ || t->vocab < 49408) {
        b->failed = 1;
        ml_fail(b->err, "clip/text: context %d / vocabulary %d not usable with the CLIP tokenizer",
                t->context, t->vocab);
        return;
    }
    bind_norm(b, &t->ln_final, t->width, "clip/text/ln_final");
    t->layers = count_layers(b->m, "clip/text/transformer/resblocks_%d/ln_1/scale");
    t->heads = 0;
    t->blocks = bind_clip_blocks(b, "text", t->layers, t->width, &t->heads);
    bind_dense(b, &t->proj, t->width, embed_dim, 0, "clip/text/text_projection", "kernel", NULL);
}

/* The fusion `post` weight is [D, heads, hd]; store its transpose [heads*hd, D]. */
static const float *transposed_post(binder *b, int D, int heads, int hd, const char *pfx) {
    int64_t e[3] = {D, heads, hd};
    const float *w = get_f32(b, 3, e, NULL, "%s/post/w", pfx);
    if (b->failed) return NULL;
    int J = heads * hd;
    float *t = ml_aligned_alloc((size_t)J * D * sizeof(float), b->err);
    if (!t || ml_tensor_set_own(&b->m->tensors, t, b->err) != 0) {
        free(t);
        b->failed = 1;
        return NULL;
    }
    for (int d = 0; d < D; d++)
        for (int j = 0; j < J; j++) t[(size_t)j * D + d] = w[(size_t)d * J + j];
    return t;
}

static void bind_attention(binder *b, int D, int *heads, int *hd, ml_linear *q, ml_linear *k,
                           ml_linear *v, ml_linear *post, const char *pfx) {
    char p[192];
    snprintf(p, sizeof p, "%s/query", pfx);
    bind_proj(b, q, D, heads, hd, p, "w", "b");
    snprintf(p, sizeof p, "%s/key", pfx);
    bind_proj(b, k, D, heads, hd, p, "w", "b");
    snprintf(p, sizeof p, "%s/value", pfx);
    bind_proj(b, v, D, heads, hd, p, "w", "b");
    if (b->failed) return;
    post->w = transposed_post(b, D, *heads, *hd, pfx);
    int64_t eb[1] = {D};
    post->b = get_f32(b, 1, eb, NULL, "%s/post/b", pfx);
    post->in = *heads * *hd;
    post->out = D;
}

static void bind_fusion(binder *b, ml_model *m, int D) {
    m->fusion_layers = count_layers(m, "multimodal_encoder/x_layers_%d/layer_norm/scale");
    if (m->fusion_layers == 0) {
        b->failed = 1;
        ml_fail(b->err, "checkpoint has no multimodal_encoder layers");
        return;
    }
    m->fusion = ml_calloc((size_t)m->fusion_layers, sizeof *m->fusion, b->err);
    if (!m->fusion) {
        b->failed = 1;
        return;
    }
    m->fusion_heads = 0;
    for (int i = 0; i < m->fusion_layers && !b->failed; i++) {
        ml_fusion_layer *f = &m->fusion[i];
        char p[128], q[192];
        snprintf(p, sizeof p, "multimodal_encoder/x_layers_%d", i);
        snprintf(q, sizeof q, "%s/layer_norm", p);
        bind_norm(b, &f->ln, D, q);
        snprintf(q, sizeof q, "%s/self_attention", p);
        int hd = 0;
        bind_attention(b, D, &m->fusion_heads, &hd, &f->q, &f->k, &f->v, &f->post, q);
        snprintf(q, sizeof q, "%s/ff_layer/layer_norm", p);
        bind_norm(b, &f->ff_ln, D, q);
        snprintf(q, sizeof q, "%s/ff_layer/ffn_layer1", p);
        bind_dense(b, &f->ff1, D, -1, 1, q, "linear/w", "bias/b");
        snprintf(q, sizeof q, "%s/ff_layer/ffn_layer2", p);
        bind_dense(b, &f->ff2, f->ff1.out, D, 1, q, "linear/w", "bias/b");
    }
}

static void bind_pooler(binder *b, ml_pooler *p, int D) {
    const char *pfx = "contrastive_multimodal_pooler";
    p->heads = 0;
    p->head_dim = 0;
    bind_attention(b, D, &p->heads, &p->head_dim, &p->q, &p->k, &p->v, &p->post,
                   "contrastive_multimodal_pooler/pool_attn");
    int64_t es[1] = {p->head_dim}, eq[2] = {1, D};
    p->per_dim_scale = get_f32(b, 1, es, NULL, "%s/pool_attn/per_dim_scale/per_dim_scale", pfx);
    bind_norm(b, &p->ln, D, "contrastive_multimodal_pooler/pool_attn_ln");
    p->query = get_f32(b, 2, eq, NULL, "%s/pooling_attn_query", pfx);
}

static void fill_config(ml_model *m) {
    ml_config *c = &m->cfg;
    c->embed_dim = m->vision.proj.out;
    c->patch_size = m->vision.patch;
    c->image_size = m->vision.patch * m->vision.grid;
    c->vision_width = m->vision.width;
    c->vision_layers = m->vision.layers;
    c->vision_heads = m->vision.heads;
    c->text_width = m->text.width;
    c->text_layers = m->text.layers;
    c->text_heads = m->text.heads;
    c->vocab_size = m->text.vocab;
    c->context_length = m->text.context;
    c->fusion_layers = m->fusion_layers;
    c->fusion_heads = m->fusion_heads;
    c->fusion_ff = m->fusion[0].ff1.out;
    c->pool_heads = m->pool.heads;
    c->pool_head_dim = m->pool.head_dim;
}

/* softplus computed stably: log1p(exp(-|x|)) + max(x, 0). */
static double softplus(double x) { return log1p(exp(-fabs(x))) + (x > 0 ? x : 0); }

int ml_model_bind(ml_model *m, ml_error *err) {
    binder b = {m, err, 0};
    bind_vision(&b, &m->vision);
    if (b.failed) return -1;
    int D = m->vision.proj.out;
    bind_text(&b, &m->text, D);
    bind_fusion(&b, m, D);
    bind_pooler(&b, &m->pool, D);
    if (b.failed) return -1;
    if (m->vision.layers == 0 || m->text.layers == 0)
        return ml_fail(err, "checkpoint has no vision or text transformer blocks");
    fill_config(m);
    int hd = m->pool.head_dim;
    m->pool_qscale = ml_malloc(sizeof(float) * (size_t)hd, err);
    if (!m->pool_qscale) return -1;
    for (int i = 0; i < hd; i++)
        m->pool_qscale[i] =
            (float)(1.442695041 / sqrt((double)hd) * softplus(m->pool.per_dim_scale[i]));
    return 0;
}
