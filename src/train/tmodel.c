/* tmodel.c - the trainable MagicLens model: the flat parameter / gradient
 * arrays, the per-layer views into them (derived from tensor names and
 * shapes, as model/load.c does for inference), and the batch forward /
 * backward that drive the towers (ttower.c) and the fusion part
 * (tfusion.c). */
#include "train/tmodel.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/mem.h"
#include "train/tnet.h"

#define LOGIT_SCALE "clip/logit_scale"

/* ---- parameters --------------------------------------------------------- */

static unsigned group_of(const char *name) {
    if (strncmp(name, "clip/visual/", 12) == 0) return ML_TP_VISION;
    if (strncmp(name, "clip/text/", 10) == 0) return ML_TP_TEXT;
    if (strcmp(name, LOGIT_SCALE) == 0) return ML_TP_SCALE;
    if (strncmp(name, "multimodal_encoder/", 19) == 0 ||
        strncmp(name, "contrastive_multimodal_pooler/", 30) == 0)
        return ML_TP_FUSION;
    return 0;
}

/* Norms, biases, embeddings, per_dim_scale, the pooling query and the
 * logit scale are not decayed (the usual AdamW practice). */
static int no_decay(const char *name, int ndim) {
    const char *last = strrchr(name, '/');
    last = last ? last + 1 : name;
    return ndim <= 1 || !strcmp(last, "bias") || !strcmp(last, "b") || !strcmp(last, "scale") ||
           strstr(name, "embedding") || strstr(name, "pooling_attn_query") ||
           strstr(name, "per_dim_scale");
}

static size_t align16(size_t n) { return (n + 15) & ~(size_t)15; }

const ml_tparam *ml_tmodel_find(const ml_tmodel *tm, const char *name) {
    for (int i = 0; i < tm->n_params; i++)
        if (strcmp(tm->params[i].name, name) == 0) return &tm->params[i];
    return NULL;
}

void ml_tmodel_zero_grad(ml_tmodel *tm) {
    if (tm->g) memset(tm->g, 0, tm->total * sizeof(float));
}

/* Fills params (names copied into one block) and sizes w / g. */
static int collect_params(ml_tmodel *tm, const ml_tensor_set *ts, ml_error *err) {
    size_t names = sizeof(LOGIT_SCALE);
    int n = 1;
    for (size_t i = 0; i < ts->count; i++) {
        const ml_tensor *t = &ts->items[i];
        if (!group_of(t->name) || t->dtype == ML_U8) continue;
        if (ml_tensor_numel(t) < 0 ||
            (uint64_t)ml_tensor_numel(t) * ml_dtype_size(t->dtype) != t->nbytes)
            return ml_fail(err, "tensor '%s': %zu bytes do not match its shape", t->name,
                           t->nbytes);
        names += strlen(t->name) + 1;
        n++;
    }
    tm->params = ml_calloc((size_t)n, sizeof *tm->params, err);
    char *buf = ml_malloc(names, err);
    if (!tm->params || !buf) {
        free(buf);
        return -1;
    }
    int k = 0;
    size_t off = 0;
    for (size_t i = 0; i < ts->count; i++) {
        const ml_tensor *t = &ts->items[i];
        if (!group_of(t->name) || t->dtype == ML_U8) continue;
        ml_tparam *p = &tm->params[k++];
        size_t nl = strlen(t->name) + 1;
        memcpy(buf, t->name, nl);
        p->name = buf, buf += nl;
        p->ndim = t->ndim;
        memcpy(p->shape, t->shape, sizeof p->shape);
        p->count = (size_t)ml_tensor_numel(t);
        p->offset = off, off += align16(p->count);
        p->flags = group_of(t->name) | (no_decay(t->name, t->ndim) ? ML_TP_NODECAY : 0u);
    }
    if (!ml_tensor_set_find(ts, LOGIT_SCALE)) { /* created with log(1/0.07), as CLIP */
        ml_tparam *p = &tm->params[k++];
        memcpy(buf, LOGIT_SCALE, sizeof(LOGIT_SCALE));
        p->name = buf;
        p->ndim = 0, p->count = 1, p->offset = off, off += 16;
        p->flags = ML_TP_SCALE | ML_TP_NODECAY;
    }
    tm->n_params = k;
    tm->total = off;
    return 0;
}

static char *names_block(const ml_tmodel *tm) {
    return tm->n_params ? (char *)tm->params[0].name : NULL;
}

static int fill_weights(ml_tmodel *tm, const ml_tensor_set *ts, ml_error *err) {
    tm->w = ml_aligned_alloc(tm->total * sizeof(float), err);
    tm->g = ml_aligned_alloc(tm->total * sizeof(float), err);
    if (!tm->w || !tm->g) return -1;
    memset(tm->w, 0, tm->total * sizeof(float));
    memset(tm->g, 0, tm->total * sizeof(float));
    for (int i = 0; i < tm->n_params; i++) {
        const ml_tparam *p = &tm->params[i];
        const ml_tensor *t = ml_tensor_set_find(ts, p->name);
        float *w = tm->w + p->offset;
        if (!t)
            w[0] = (float)log(1 / 0.07);
        else if (t->dtype == ML_F32)
            memcpy(w, t->data, p->count * sizeof(float));
        else
            for (size_t j = 0; j < p->count; j++) w[j] = ml_tensor_get_f32(t, (int64_t)j);
    }
    return 0;
}

/* ---- binding ------------------------------------------------------------ */

typedef struct binder {
    ml_tmodel *tm;
    ml_error *err;
    int failed;
} binder;

static const ml_tparam *get(binder *b, int ndim, const int64_t *expect, int64_t *shape,
                            const char *fmt, ...) ML_PRINTF(5, 6);

/* The parameter named by fmt with `ndim` dimensions matching `expect`
 * (-1: any); its shape is copied to `shape`. */
static const ml_tparam *get(binder *b, int ndim, const int64_t *expect, int64_t *shape,
                            const char *fmt, ...) {
    if (b->failed) return NULL;
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    const ml_tparam *p = ml_tmodel_find(b->tm, name);
    if (!p) {
        b->failed = 1;
        ml_fail(b->err, "checkpoint has no tensor '%s'", name);
        return NULL;
    }
    if (p->ndim != ndim) {
        b->failed = 1;
        ml_fail(b->err, "tensor '%s' has %d dimensions, expected %d", name, p->ndim, ndim);
        return NULL;
    }
    for (int i = 0; i < ndim; i++) {
        if (p->shape[i] <= 0 || p->shape[i] > (1 << 30) ||
            (expect && expect[i] >= 0 && p->shape[i] != expect[i])) {
            b->failed = 1;
            ml_fail(b->err, "tensor '%s' dimension %d is %lld, expected %lld", name, i,
                    (long long)p->shape[i], expect ? (long long)expect[i] : 1LL);
            return NULL;
        }
        if (shape) shape[i] = p->shape[i];
    }
    return p;
}

static float *wv(binder *b, const ml_tparam *p) { return p ? b->tm->w + p->offset : NULL; }
static float *gv(binder *b, const ml_tparam *p) { return p ? b->tm->g + p->offset : NULL; }

static void bind_norm(binder *b, tl_norm *n, int width, const char *pfx) {
    int64_t e[1] = {width};
    const ml_tparam *s = get(b, 1, e, NULL, "%s/scale", pfx);
    const ml_tparam *bi = get(b, 1, e, NULL, "%s/bias", pfx);
    n->s = wv(b, s), n->gs = gv(b, s), n->b = wv(b, bi), n->gb = gv(b, bi);
}

/* Flax DenseGeneral q/k/v kernel [W, heads, hd] and bias [heads, hd]. */
static void bind_proj(binder *b, tl_lin *l, int width, int *heads, int *hd, const char *pfx,
                      const char *wname, const char *bname) {
    int64_t s[3], e3[3] = {width, *heads ? *heads : -1, *hd ? *hd : -1};
    const ml_tparam *w = get(b, 3, e3, s, "%s/%s", pfx, wname);
    if (b->failed) return;
    *heads = (int)s[1], *hd = (int)s[2];
    int64_t e2[2] = {s[1], s[2]};
    const ml_tparam *bi = get(b, 2, e2, NULL, "%s/%s", pfx, bname);
    l->w = wv(b, w), l->gw = gv(b, w), l->b = wv(b, bi), l->gb = gv(b, bi);
    l->in = width, l->out = (int)(s[1] * s[2]), l->wt = 0;
}

static void bind_dense(binder *b, tl_lin *l, int in, int out, int bias, const char *pfx,
                       const char *wname, const char *bname) {
    int64_t e[2] = {in, out}, s[2];
    const ml_tparam *w = get(b, 2, e, s, "%s/%s", pfx, wname);
    if (b->failed) return;
    l->w = wv(b, w), l->gw = gv(b, w), l->in = (int)s[0], l->out = (int)s[1], l->wt = 0;
    int64_t eb[1] = {s[1]};
    const ml_tparam *bi = bias ? get(b, 1, eb, NULL, "%s/%s", pfx, bname) : NULL;
    l->b = wv(b, bi), l->gb = gv(b, bi);
}

static int exists(const ml_tmodel *tm, const char *fmt, int i) {
    char name[256];
    snprintf(name, sizeof name, fmt, i);
    return ml_tmodel_find(tm, name) != NULL;
}

static int count_layers(const ml_tmodel *tm, const char *fmt) {
    int n = 0;
    while (n < 1000 && exists(tm, fmt, n)) n++;
    return n;
}

static void bind_blocks(binder *b, tl_tower *tw, const char *name) {
    tw->blocks = ml_calloc((size_t)tw->layers, sizeof *tw->blocks, b->err);
    if (!tw->blocks) {
        b->failed = 1;
        return;
    }
    int W = tw->width;
    tw->heads = 0;
    for (int i = 0; i < tw->layers && !b->failed; i++) {
        tl_block *k = &tw->blocks[i];
        char p[192];
        int hd = 0;
        const char *qkv[3] = {"query", "key", "value"};
        tl_lin *dst[3] = {&k->q, &k->k, &k->v};
        for (int j = 0; j < 3; j++) {
            snprintf(p, sizeof p, "clip/%s/transformer/resblocks_%d/attn/%s", name, i, qkv[j]);
            bind_proj(b, dst[j], W, &tw->heads, &hd, p, "kernel", "bias");
        }
        if (!b->failed && tw->heads * hd != W) {
            b->failed = 1;
            ml_fail(b->err, "clip/%s block %d: %d heads x %d != width %d", name, i, tw->heads, hd,
                    W);
            return;
        }
        int64_t eo[3] = {tw->heads, hd, W}, eb[1] = {W};
        const ml_tparam *ow =
            get(b, 3, eo, NULL, "clip/%s/transformer/resblocks_%d/attn/out/kernel", name, i);
        const ml_tparam *ob =
            get(b, 1, eb, NULL, "clip/%s/transformer/resblocks_%d/attn/out/bias", name, i);
        k->o = (tl_lin){wv(b, ow), gv(b, ow), wv(b, ob), gv(b, ob), W, W, 0, 0};
        snprintf(p, sizeof p, "clip/%s/transformer/resblocks_%d/ln_1", name, i);
        bind_norm(b, &k->ln1, W, p);
        snprintf(p, sizeof p, "clip/%s/transformer/resblocks_%d/ln_2", name, i);
        bind_norm(b, &k->ln2, W, p);
        snprintf(p, sizeof p, "clip/%s/transformer/resblocks_%d/mlp/c_fc", name, i);
        bind_dense(b, &k->fc, W, i ? tw->ff : -1, 1, p, "kernel", "bias");
        if (i == 0) tw->ff = k->fc.out;
        snprintf(p, sizeof p, "clip/%s/transformer/resblocks_%d/mlp/c_proj", name, i);
        bind_dense(b, &k->proj, tw->ff, W, 1, p, "kernel", "bias");
    }
}

static void bind_vision(binder *b, tl_tower *v) {
    int64_t s[4];
    v->vision = 1;
    const ml_tparam *cls = get(b, 1, NULL, s, "clip/visual/class_embedding");
    if (b->failed) return;
    v->width = (int)s[0];
    v->cls = wv(b, cls), v->gcls = gv(b, cls);
    int64_t ek[4] = {-1, -1, 3, v->width};
    const ml_tparam *k = get(b, 4, ek, s, "clip/visual/conv1/kernel");
    if (b->failed) return;
    if (s[0] != s[1]) {
        b->failed = 1;
        ml_fail(b->err, "clip/visual/conv1/kernel: patch %lldx%lld is not square", (long long)s[0],
                (long long)s[1]);
        return;
    }
    v->patch = (int)s[0];
    v->patch_embed = (tl_lin){wv(b, k), gv(b, k), NULL, NULL, v->patch * v->patch * 3, v->width, 0, 0};
    int64_t ep[2] = {-1, v->width};
    const ml_tparam *pos = get(b, 2, ep, s, "clip/visual/positional_embedding");
    if (b->failed) return;
    v->tokens = (int)s[0];
    v->grid = (int)lround(sqrt((double)(v->tokens - 1)));
    if (v->grid < 1 || v->grid * v->grid + 1 != v->tokens) {
        b->failed = 1;
        ml_fail(b->err, "clip/visual/positional_embedding: %d positions is not a square grid + 1",
                v->tokens);
        return;
    }
    v->pos = wv(b, pos), v->gpos = gv(b, pos);
    bind_norm(b, &v->ln_pre, v->width, "clip/visual/ln_pre");
    bind_norm(b, &v->ln_post, v->width, "clip/visual/ln_post");
    v->layers = count_layers(b->tm, "clip/visual/transformer/resblocks_%d/ln_1/scale");
    bind_blocks(b, v, "visual");
    bind_dense(b, &v->proj, v->width, -1, 0, "clip/visual/proj", "kernel", NULL);
}

static void bind_text(binder *b, tl_tower *t, int embed) {
    int64_t s[2];
    const ml_tparam *tok = get(b, 2, NULL, s, "clip/text/token_embedding/embedding");
    if (b->failed) return;
    t->vocab = (int)s[0], t->width = (int)s[1];
    t->tok = wv(b, tok), t->gtok = gv(b, tok);
    int64_t ep[2] = {-1, t->width};
    const ml_tparam *pos = get(b, 2, ep, s, "clip/text/positional_embedding");
    if (b->failed) return;
    t->context = (int)s[0];
    t->pos = wv(b, pos), t->gpos = gv(b, pos);
    bind_norm(b, &t->ln_post, t->width, "clip/text/ln_final");
    t->layers = count_layers(b->tm, "clip/text/transformer/resblocks_%d/ln_1/scale");
    bind_blocks(b, t, "text");
    bind_dense(b, &t->proj, t->width, embed, 0, "clip/text/text_projection", "kernel", NULL);
}

/* q / k / v / post of a MagicLens attention; post/w is [D, heads, hd]. */
static void bind_attention(binder *b, int D, int *heads, int *hd, tl_lin *q, tl_lin *k, tl_lin *v,
                           tl_lin *post, const char *pfx) {
    char p[192];
    snprintf(p, sizeof p, "%s/query", pfx);
    bind_proj(b, q, D, heads, hd, p, "w", "b");
    snprintf(p, sizeof p, "%s/key", pfx);
    bind_proj(b, k, D, heads, hd, p, "w", "b");
    snprintf(p, sizeof p, "%s/value", pfx);
    bind_proj(b, v, D, heads, hd, p, "w", "b");
    if (b->failed) return;
    int64_t e[3] = {D, *heads, *hd}, eb[1] = {D};
    const ml_tparam *w = get(b, 3, e, NULL, "%s/post/w", pfx);
    const ml_tparam *bi = get(b, 1, eb, NULL, "%s/post/b", pfx);
    *post = (tl_lin){wv(b, w), gv(b, w), wv(b, bi), gv(b, bi), *heads * *hd, D, 1, 0};
}

static void bind_fusion(binder *b, ml_tnet *net) {
    int D = net->embed;
    net->n_fusion = count_layers(b->tm, "multimodal_encoder/x_layers_%d/layer_norm/scale");
    if (net->n_fusion == 0) {
        b->failed = 1;
        ml_fail(b->err, "checkpoint has no multimodal_encoder layers");
        return;
    }
    net->fusion = ml_calloc((size_t)net->n_fusion, sizeof *net->fusion, b->err);
    if (!net->fusion) {
        b->failed = 1;
        return;
    }
    int hd = 0;
    for (int i = 0; i < net->n_fusion && !b->failed; i++) {
        tl_flayer *f = &net->fusion[i];
        char p[128], q[192];
        snprintf(p, sizeof p, "multimodal_encoder/x_layers_%d", i);
        snprintf(q, sizeof q, "%s/layer_norm", p);
        bind_norm(b, &f->ln, D, q);
        snprintf(q, sizeof q, "%s/self_attention", p);
        bind_attention(b, D, &net->fusion_heads, &hd, &f->q, &f->k, &f->v, &f->post, q);
        snprintf(q, sizeof q, "%s/ff_layer/layer_norm", p);
        bind_norm(b, &f->ff_ln, D, q);
        snprintf(q, sizeof q, "%s/ff_layer/ffn_layer1", p);
        bind_dense(b, &f->ff1, D, i ? net->fusion[0].ff1.out : -1, 1, q, "linear/w", "bias/b");
        snprintf(q, sizeof q, "%s/ff_layer/ffn_layer2", p);
        bind_dense(b, &f->ff2, f->ff1.out, D, 1, q, "linear/w", "bias/b");
    }
}

static void bind_pool(binder *b, tl_pool *p, int D) {
    const char *pfx = "contrastive_multimodal_pooler";
    bind_attention(b, D, &p->heads, &p->hd, &p->q, &p->k, &p->v, &p->post,
                   "contrastive_multimodal_pooler/pool_attn");
    if (b->failed) return;
    int64_t es[1] = {p->hd}, eq[2] = {1, D};
    const ml_tparam *s = get(b, 1, es, NULL, "%s/pool_attn/per_dim_scale/per_dim_scale", pfx);
    p->pds = wv(b, s), p->gpds = gv(b, s);
    bind_norm(b, &p->ln, D, "contrastive_multimodal_pooler/pool_attn_ln");
    const ml_tparam *q = get(b, 2, eq, NULL, "%s/pooling_attn_query", pfx);
    p->query = wv(b, q), p->gquery = gv(b, q);
}

static void fill_config(ml_tmodel *tm) {
    const ml_tnet *n = tm->net;
    ml_config *c = &tm->cfg;
    c->embed_dim = n->embed;
    c->patch_size = n->vis.patch;
    c->image_size = n->vis.patch * n->vis.grid;
    c->vision_width = n->vis.width, c->vision_layers = n->vis.layers;
    c->vision_heads = n->vis.heads;
    c->text_width = n->txt.width, c->text_layers = n->txt.layers, c->text_heads = n->txt.heads;
    c->vocab_size = n->txt.vocab, c->context_length = n->txt.context;
    c->fusion_layers = n->n_fusion, c->fusion_heads = n->fusion_heads;
    c->fusion_ff = n->fusion[0].ff1.out;
    c->pool_heads = n->pool.heads, c->pool_head_dim = n->pool.hd;
}

static int bind_net(ml_tmodel *tm, ml_error *err) {
    binder b = {tm, err, 0};
    ml_tnet *net = tm->net;
    bind_vision(&b, &net->vis);
    if (b.failed) return -1;
    net->embed = net->vis.proj.out;
    bind_text(&b, &net->txt, net->embed);
    bind_fusion(&b, net);
    bind_pool(&b, &net->pool, net->embed);
    if (b.failed) return -1;
    if (net->vis.layers == 0 || net->txt.layers == 0)
        return ml_fail(err, "checkpoint has no vision or text transformer blocks");
    const ml_tparam *ls = ml_tmodel_find(tm, LOGIT_SCALE);
    if (ls->count != 1) return ml_fail(err, "tensor '%s' is not a scalar", LOGIT_SCALE);
    fill_config(tm);
    return 0;
}

int ml_tmodel_init(ml_tmodel *tm, const ml_tensor_set *ts, ml_error *err) {
    memset(tm, 0, sizeof *tm);
    tm->net = ml_calloc(1, sizeof *tm->net, err);
    if (!tm->net || collect_params(tm, ts, err) != 0 || fill_weights(tm, ts, err) != 0 ||
        bind_net(tm, err) != 0) {
        ml_tmodel_free(tm);
        return -1;
    }
    return 0;
}

void ml_tmodel_free(ml_tmodel *tm) {
    if (!tm) return;
    if (tm->net) {
        free(tm->net->vis.blocks);
        free(tm->net->txt.blocks);
        free(tm->net->fusion);
        free(tm->net->spare);
        free(tm->net);
    }
    free(names_block(tm));
    free(tm->params);
    free(tm->w);
    free(tm->g);
    memset(tm, 0, sizeof *tm);
}

int ml_tmodel_to_tensors(const ml_tmodel *tm, ml_tensor_set *out, ml_error *err) {
    for (int i = 0; i < tm->n_params; i++) {
        const ml_tparam *p = &tm->params[i];
        if (ml_tensor_set_add(out, p->name, ML_F32, p->ndim, p->shape, tm->w + p->offset,
                              p->count * sizeof(float), err) != 0)
            return -1;
    }
    return 0;
}

/* ---- forward / backward ------------------------------------------------- */

static void tower_set_bf16(tl_tower *t, int on) {
    t->patch_embed.bf16 = t->proj.bf16 = on;
    for (int i = 0; i < t->layers; i++) {
        tl_block *b = &t->blocks[i];
        b->q.bf16 = b->k.bf16 = b->v.bf16 = b->o.bf16 = b->fc.bf16 = b->proj.bf16 = on;
    }
}

/* tm->bf16 may change between passes: copy it into every linear layer. */
static void net_set_bf16(ml_tnet *net, int on) {
    on = on != 0;
    tower_set_bf16(&net->vis, on);
    tower_set_bf16(&net->txt, on);
    for (int i = 0; i < net->n_fusion; i++) {
        tl_flayer *f = &net->fusion[i];
        f->q.bf16 = f->k.bf16 = f->v.bf16 = f->post.bf16 = f->ff1.bf16 = f->ff2.bf16 = on;
    }
    tl_pool *p = &net->pool;
    p->q.bf16 = p->k.bf16 = p->v.bf16 = p->post.bf16 = on;
}

struct ml_tstate {
    ml_tnet *net;
    void *mem; /* one block for everything below */
    size_t bytes;
    int n_img, n_txt, n_out;
    int use_vis, use_txt;     /* the towers run in this pass */
    int train_vis, train_txt; /* ... and are trained */
    int *out_img, *out_txt;
    float *img, *txt;   /* raw tower outputs [n_img, E], [n_txt, E] */
    float *dimg, *dtxt; /* their gradients */
    float *dx0;         /* d/d(fusion input) [2 n_out, E] */
    float *ws;          /* transposes */
    tl_tower_state vis, tst;
    tl_fusion_state fus;
};

static void state_layout(ml_tstate *st, const ml_tbatch *b, tl_arena *a) {
    ml_tnet *net = st->net;
    size_t E = (size_t)net->embed, ws = tl_fusion_ws(net, b->n_out);
    st->out_img = (int *)tl_take(a, (size_t)b->n_out);
    st->out_txt = (int *)tl_take(a, (size_t)b->n_out);
    st->img = tl_take(a, (size_t)b->n_img * E), st->txt = tl_take(a, (size_t)b->n_txt * E);
    st->dimg = tl_take(a, (size_t)b->n_img * E), st->dtxt = tl_take(a, (size_t)b->n_txt * E);
    st->dx0 = tl_take(a, (size_t)2 * b->n_out * E);
    if (st->use_vis) {
        tl_tower_layout(&st->vis, &net->vis, b->n_img, NULL, st->train_vis, st->train_vis, a);
        size_t w = tl_tower_ws(&net->vis, st->vis.rows, b->n_img);
        ws = w > ws ? w : ws;
    }
    if (st->use_txt) {
        tl_tower_layout(&st->tst, &net->txt, b->n_txt, b->ids, st->train_txt, st->train_txt, a);
        size_t w = tl_tower_ws(&net->txt, st->tst.rows, b->n_txt);
        ws = w > ws ? w : ws;
    }
    tl_fusion_layout(&st->fus, net, b->n_out, a);
    st->ws = tl_take(a, ws);
}

/* Memory for a state: the last freed state's block when it is big
 * enough, so that steps after the first do not fault in fresh pages. */
static void *state_mem(ml_tnet *net, size_t bytes, size_t *got, ml_error *err) {
    if (net->spare && net->spare_bytes >= bytes) {
        void *m = net->spare;
        *got = net->spare_bytes;
        net->spare = NULL, net->spare_bytes = 0;
        return m;
    }
    free(net->spare);
    net->spare = NULL, net->spare_bytes = 0;
    *got = bytes;
    return ml_aligned_alloc(bytes, err);
}

void ml_tstate_free(ml_tstate *st) {
    if (!st) return;
    ml_tnet *net = st->net;
    if (!net->spare || net->spare_bytes < st->bytes) {
        free(net->spare);
        net->spare = st->mem, net->spare_bytes = st->bytes;
    } else {
        free(st->mem);
    }
    free(st);
}

static int check_batch(const ml_tmodel *tm, const ml_tbatch *b, ml_error *err) {
    if (b->n_out <= 0 || b->n_img <= 0 || b->n_txt <= 0)
        return ml_fail(err, "batch needs at least one image, text and output (got %d, %d, %d)",
                       b->n_img, b->n_txt, b->n_out);
    if ((!b->pixels && !b->img_emb) || (!b->ids && !b->txt_emb))
        return ml_fail(err, "batch has neither pixels nor image embeddings, or neither ids nor "
                            "text embeddings");
    for (int j = 0; j < b->n_out; j++)
        if (b->out_img[j] < 0 || b->out_img[j] >= b->n_img || b->out_txt[j] < 0 ||
            b->out_txt[j] >= b->n_txt)
            return ml_fail(err, "batch output %d refers to image %d / text %d (have %d / %d)", j,
                           b->out_img[j], b->out_txt[j], b->n_img, b->n_txt);
    if (b->ids) {
        int C = tm->cfg.context_length;
        for (int i = 0; i < b->n_txt; i++)
            for (int t = 0; t < C; t++) {
                int32_t id = b->ids[(size_t)i * C + t];
                if (id < 0 || id >= tm->cfg.vocab_size)
                    return ml_fail(err,
                                   "text %d: token id %d at position %d is outside the "
                                   "vocabulary of %d",
                                   i, id, t, tm->cfg.vocab_size);
            }
    }
    return 0;
}

ml_tstate *ml_tmodel_forward(ml_tmodel *tm, const ml_tbatch *b, int train_towers, float *emb,
                             ml_error *err) {
    if (check_batch(tm, b, err) != 0) return NULL;
    net_set_bf16(tm->net, tm->bf16);
    ml_tstate *st = ml_calloc(1, sizeof *st, err);
    if (!st) return NULL;
    st->net = tm->net;
    st->n_img = b->n_img, st->n_txt = b->n_txt, st->n_out = b->n_out;
    st->use_vis = b->pixels != NULL, st->use_txt = b->ids != NULL;
    st->train_vis = st->use_vis && train_towers, st->train_txt = st->use_txt && train_towers;
    tl_arena a = {NULL, 0};
    state_layout(st, b, &a);
    st->mem = state_mem(tm->net, a.used, &st->bytes, err);
    if (!st->mem) {
        free(st);
        return NULL;
    }
    a = (tl_arena){st->mem, 0};
    state_layout(st, b, &a);
    memcpy(st->out_img, b->out_img, sizeof(int) * b->n_out);
    memcpy(st->out_txt, b->out_txt, sizeof(int) * b->n_out);
    size_t E = (size_t)tm->net->embed;
    int rc = 0;
    if (st->use_vis)
        rc = tl_tower_forward(&st->vis, b->pixels, st->img, err);
    else
        memcpy(st->img, b->img_emb, sizeof(float) * b->n_img * E);
    if (rc == 0 && st->use_txt)
        rc = tl_tower_forward(&st->tst, NULL, st->txt, err);
    else if (rc == 0)
        memcpy(st->txt, b->txt_emb, sizeof(float) * b->n_txt * E);
    if (rc == 0)
        rc = tl_fusion_forward(&st->fus, st->img, st->out_img, st->txt, st->out_txt, emb, st->ws,
                               err);
    if (rc != 0) {
        ml_tstate_free(st);
        return NULL;
    }
    return st;
}

int ml_tmodel_backward(ml_tmodel *tm, ml_tstate *st, const float *d_emb, ml_error *err) {
    size_t E = (size_t)tm->net->embed;
    if (st->net != tm->net) return ml_fail(err, "backward with a state of another model");
    net_set_bf16(tm->net, tm->bf16);
    if (tl_fusion_backward(&st->fus, d_emb, st->dx0, st->ws, err) != 0) return -1;
    if (st->train_vis) {
        memset(st->dimg, 0, sizeof(float) * st->n_img * E);
        for (int j = 0; j < st->n_out; j++)
            for (size_t c = 0; c < E; c++)
                st->dimg[(size_t)st->out_img[j] * E + c] += st->dx0[2 * j * E + c];
        if (tl_tower_backward(&st->vis, st->dimg, st->ws, err) != 0) return -1;
    }
    if (st->train_txt) {
        memset(st->dtxt, 0, sizeof(float) * st->n_txt * E);
        for (int j = 0; j < st->n_out; j++)
            for (size_t c = 0; c < E; c++)
                st->dtxt[(size_t)st->out_txt[j] * E + c] += st->dx0[(2 * j + 1) * E + c];
        if (tl_tower_backward(&st->tst, st->dtxt, st->ws, err) != 0) return -1;
    }
    return 0;
}

/* ---- towers alone -------------------------------------------------------- */

#define TOWER_CHUNK 32 /* sequences per pass: bounds the scratch memory */

static int tower_only(ml_tmodel *tm, const tl_tower *tw, int n, const float *const *pixels,
                      const int32_t *ids, float *out, ml_error *err) {
    size_t E = (size_t)tm->net->embed;
    net_set_bf16(tm->net, tm->bf16);
    for (int i0 = 0; i0 < n; i0 += TOWER_CHUNK) {
        int m = n - i0 < TOWER_CHUNK ? n - i0 : TOWER_CHUNK;
        const int32_t *id = ids ? ids + (size_t)i0 * tw->context : NULL;
        tl_tower_state st;
        tl_arena a = {NULL, 0};
        tl_tower_layout(&st, tw, m, id, 0, 0, &a);
        a.base = ml_aligned_alloc(a.used, err);
        if (!a.base) return -1;
        a.used = 0;
        tl_tower_layout(&st, tw, m, id, 0, 0, &a);
        int rc = tl_tower_forward(&st, pixels ? pixels + i0 : NULL, out + (size_t)i0 * E, err);
        free(a.base);
        if (rc != 0) return -1;
    }
    return 0;
}

int ml_tmodel_image_tower(ml_tmodel *tm, int n, const float *const *pixels, float *out,
                          ml_error *err) {
    return tower_only(tm, &tm->net->vis, n, pixels, NULL, out, err);
}

int ml_tmodel_text_tower(ml_tmodel *tm, int n, const int32_t *ids, float *out, ml_error *err) {
    int C = tm->cfg.context_length;
    for (size_t i = 0; i < (size_t)n * C; i++)
        if (ids[i] < 0 || ids[i] >= tm->cfg.vocab_size)
            return ml_fail(err,
                           "text %zu: token id %d at position %zu is outside the "
                           "vocabulary of %d",
                           i / C, ids[i], i % C, tm->cfg.vocab_size);
    return tower_only(tm, &tm->net->txt, n, NULL, ids, out, err);
}
