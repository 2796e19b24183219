/* tfusion.c - MagicLens' fusion layers and attention pooler, forward and
 * backward (layers.py in the official code), for training.
 *
 * Each output is a 2-token sequence [image embedding, text embedding]; the
 * n sequences are stacked into [2n, D] so that the linear layers run once
 * per batch. */
#include <math.h>
#include <string.h>

#include "core/error.h"
#include "train/tnet.h"

#define LOGIT_CAP 50.0f
#define FUSION_EPS 1e-6f

static size_t zmax(size_t a, size_t b) { return a > b ? a : b; }

void tl_fusion_layout(tl_fusion_state *st, const struct ml_tnet *net, int n, tl_arena *a) {
    memset(st, 0, sizeof *st);
    st->net = net, st->n = n, st->rows = 2 * n;
    const tl_pool *p = &net->pool;
    size_t rows = (size_t)st->rows, D = (size_t)net->embed;
    size_t J = (size_t)net->fusion[0].q.out, F = (size_t)net->fusion[0].ff1.out;
    size_t Jp = (size_t)p->q.out, Jm = zmax(J, Jp);
    st->acts =
        (tl_flayer_act *)tl_take(a, net->n_fusion * sizeof(tl_flayer_act) / sizeof(float) + 1);
    for (int l = 0; l < net->n_fusion; l++) {
        tl_flayer_act b;
        b.m1 = tl_take(a, rows), b.r1 = tl_take(a, rows);
        b.m2 = tl_take(a, rows), b.r2 = tl_take(a, rows);
        b.q = tl_take(a, rows * J), b.k = tl_take(a, rows * J), b.v = tl_take(a, rows * J);
        b.att = tl_take(a, rows * J), b.a = tl_take(a, rows * D), b.ff = tl_take(a, rows * F);
        if (a->base) st->acts[l] = b;
    }
    st->xs = tl_take(a, (size_t)(net->n_fusion + 1) * rows * D);
    st->h = tl_take(a, rows * D);
    st->pq = tl_take(a, Jp);
    st->pk = tl_take(a, rows * Jp), st->pv = tl_take(a, rows * Jp);
    st->patt = tl_take(a, (size_t)n * Jp);
    st->qscale = tl_take(a, (size_t)p->hd);
    st->pe = tl_take(a, (size_t)n * D), st->ph = tl_take(a, (size_t)n * D);
    st->emb = tl_take(a, (size_t)n * D);
    st->pm = tl_take(a, (size_t)n), st->pr = tl_take(a, (size_t)n);
    st->dx = tl_take(a, rows * D), st->dh = tl_take(a, rows * D), st->de = tl_take(a, rows * D);
    st->dq = tl_take(a, rows * Jm), st->dk = tl_take(a, rows * Jm), st->dv = tl_take(a, rows * Jm);
    st->datt = tl_take(a, rows * Jm), st->dff = tl_take(a, rows * F);
    st->dqs = tl_take(a, (size_t)n * p->heads * p->hd + Jp); /* + the summed query gradient */
}

size_t tl_fusion_ws(const struct ml_tnet *net, int n) {
    size_t rows = 2 * (size_t)n, D = (size_t)net->embed;
    size_t J = (size_t)net->fusion[0].q.out, F = (size_t)net->fusion[0].ff1.out;
    size_t Jp = (size_t)net->pool.q.out;
    size_t need = zmax(rows * F, D * F);
    need = zmax(need, rows * zmax(D, zmax(J, Jp)));
    return zmax(need, D * zmax(J, Jp));
}

static float *x_of(const tl_fusion_state *st, int l) {
    return st->xs + (size_t)l * st->rows * st->net->embed;
}

static tl_attn layer_attn(const tl_fusion_state *st, const tl_flayer_act *b) {
    int J = st->net->fusion[0].q.out, hd = J / st->net->fusion_heads;
    tl_attn a = {st->n,     st->net->fusion_heads,
                 hd,        2,
                 2,         NULL,
                 NULL,      0,
                 0,         1.0f / sqrtf((float)hd),
                 LOGIT_CAP, NULL,
                 NULL,      b->q,
                 b->k,      b->v,
                 J,         J,
                 b->att,    J};
    return a;
}

static tl_attn pool_attn(const tl_fusion_state *st) {
    const tl_pool *p = &st->net->pool;
    int Jp = p->q.out;
    tl_attn a = {st->n,     p->heads,   p->hd, 1,      2,      NULL,   NULL, 1,  0,        1.0f,
                 LOGIT_CAP, st->qscale, NULL,  st->pq, st->pk, st->pv, Jp,   Jp, st->patt, Jp};
    return a;
}

static int oom(ml_error *err) { return ml_fail(err, "out of memory in attention scratch"); }

/* softplus computed stably: log1p(exp(-|x|)) + max(x, 0). */
static double softplus(double x) { return log1p(exp(-fabs(x))) + (x > 0 ? x : 0); }

static int layer_forward(tl_fusion_state *st, int l, float *ws, ml_error *err) {
    const tl_flayer *f = &st->net->fusion[l];
    tl_flayer_act *b = &st->acts[l];
    int rows = st->rows, D = st->net->embed;
    size_t rd = (size_t)rows * D;
    const float *x = x_of(st, l);
    float *y = x_of(st, l + 1);
    tl_layernorm_fwd(rows, D, x, &f->ln, FUSION_EPS, 1, st->h, b->m1, b->r1);
    tl_linear_fwd(&f->q, rows, st->h, b->q, 0, NULL);
    tl_linear_fwd(&f->k, rows, st->h, b->k, 0, NULL);
    tl_linear_fwd(&f->v, rows, st->h, b->v, 0, NULL);
    tl_attn a = layer_attn(st, b);
    if (tl_attention_fwd(&a) != 0) return oom(err);
    memcpy(b->a, x, rd * sizeof(float));
    tl_linear_fwd(&f->post, rows, b->att, b->a, 1, ws); /* A = attention + X */
    tl_layernorm_fwd(rows, D, b->a, &f->ff_ln, FUSION_EPS, 1, st->h, b->m2, b->r2);
    tl_linear_fwd(&f->ff1, rows, st->h, b->ff, 0, NULL);
    long nf = (long)rows * f->ff1.out;
    for (long i = 0; i < nf; i++) b->ff[i] = b->ff[i] > 0 ? b->ff[i] : 0.0f;
    memcpy(y, b->a, rd * sizeof(float));
    tl_linear_fwd(&f->ff2, rows, b->ff, y, 1, NULL); /* X = F + A */
    return 0;
}

int tl_fusion_forward(tl_fusion_state *st, const float *img, const int *out_img, const float *txt,
                      const int *out_txt, float *emb, float *ws, ml_error *err) {
    const struct ml_tnet *net = st->net;
    const tl_pool *p = &net->pool;
    int D = net->embed, n = st->n;
    float *x = x_of(st, 0);
    for (int j = 0; j < n; j++) {
        memcpy(x + (size_t)2 * j * D, img + (size_t)out_img[j] * D, sizeof(float) * D);
        memcpy(x + (size_t)(2 * j + 1) * D, txt + (size_t)out_txt[j] * D, sizeof(float) * D);
    }
    for (int l = 0; l < net->n_fusion; l++)
        if (layer_forward(st, l, ws, err) != 0) return -1;
    for (int d = 0; d < p->hd; d++)
        st->qscale[d] = (float)(1.442695041 / sqrt((double)p->hd) * softplus(p->pds[d]));
    const float *xl = x_of(st, net->n_fusion);
    tl_linear_fwd(&p->q, 1, p->query, st->pq, 0, NULL);
    tl_linear_fwd(&p->k, st->rows, xl, st->pk, 0, NULL);
    tl_linear_fwd(&p->v, st->rows, xl, st->pv, 0, NULL);
    tl_attn a = pool_attn(st);
    if (tl_attention_fwd(&a) != 0) return oom(err);
    tl_linear_fwd(&p->post, n, st->patt, st->pe, 0, ws);
    tl_layernorm_fwd(n, D, st->pe, &p->ln, FUSION_EPS, 1, st->ph, st->pm, st->pr);
    tl_l2norm_fwd(n, D, st->ph, st->emb);
    memcpy(emb, st->emb, sizeof(float) * n * D);
    return 0;
}

/* st->dx: d/d(layer output) in, d/d(layer input) out. */
static int layer_backward(tl_fusion_state *st, int l, float *ws, ml_error *err) {
    const tl_flayer *f = &st->net->fusion[l];
    tl_flayer_act *b = &st->acts[l];
    int rows = st->rows, D = st->net->embed;
    const float *x = x_of(st, l);
    /* X = A + ff2(relu(ff1(LN_ff(A)))) */
    tl_linear_bwd_w(&f->ff2, rows, b->ff, NULL, st->dx, ws);
    tl_linear_bwd_x(&f->ff2, rows, st->dx, st->dff, 0, ws);
    tl_relu_bwd((long)rows * f->ff1.out, b->ff, st->dff, st->dff);
    tl_layernorm_fwd(rows, D, b->a, &f->ff_ln, FUSION_EPS, 1, st->h, b->m2, b->r2);
    tl_linear_bwd_w(&f->ff1, rows, st->h, NULL, st->dff, ws);
    tl_linear_bwd_x(&f->ff1, rows, st->dff, st->dh, 0, ws);
    tl_layernorm_bwd(rows, D, b->a, b->m2, b->r2, &f->ff_ln, 1, st->dh, st->dx, 1);
    /* A = X + post(attention(LN(X))) */
    tl_linear_bwd_w(&f->post, rows, b->att, NULL, st->dx, ws);
    tl_linear_bwd_x(&f->post, rows, st->dx, st->datt, 0, ws);
    tl_attn a = layer_attn(st, b);
    if (tl_attention_bwd(&a, st->datt, st->dq, st->dk, st->dv, NULL) != 0) return oom(err);
    tl_layernorm_fwd(rows, D, x, &f->ln, FUSION_EPS, 1, st->h, b->m1, b->r1);
    tl_transpose(rows, D, st->h, D, ws, rows);
    tl_linear_bwd_w(&f->q, rows, NULL, ws, st->dq, NULL);
    tl_linear_bwd_w(&f->k, rows, NULL, ws, st->dk, NULL);
    tl_linear_bwd_w(&f->v, rows, NULL, ws, st->dv, NULL);
    tl_linear_bwd_x(&f->q, rows, st->dq, st->dh, 0, ws);
    tl_linear_bwd_x(&f->k, rows, st->dk, st->dh, 1, ws);
    tl_linear_bwd_x(&f->v, rows, st->dv, st->dh, 1, ws);
    tl_layernorm_bwd(rows, D, x, b->m1, b->r1, &f->ln, 1, st->dh, st->dx, 1);
    return 0;
}

static int pool_backward(tl_fusion_state *st, const float *demb, float *ws, ml_error *err) {
    const struct ml_tnet *net = st->net;
    const tl_pool *p = &net->pool;
    int D = net->embed, n = st->n, rows = st->rows, Jp = p->q.out, hd = p->hd;
    float *dph = st->de, *dpe = st->dh;
    tl_l2norm_bwd(n, D, st->ph, st->emb, demb, dph);
    tl_layernorm_bwd(n, D, st->pe, st->pm, st->pr, &p->ln, 1, dph, dpe, 0);
    tl_linear_bwd_w(&p->post, n, st->patt, NULL, dpe, ws);
    tl_linear_bwd_x(&p->post, n, dpe, st->datt, 0, ws);
    tl_attn a = pool_attn(st);
    if (tl_attention_bwd(&a, st->datt, st->dq, st->dk, st->dv, st->dqs) != 0) return oom(err);
    /* qscale = c * softplus(pds): d/dpds = c * sigmoid(pds). */
    int tasks = n * p->heads;
    for (int d = 0; d < hd; d++) {
        double s = 0;
        for (int t = 0; t < tasks; t++) s += st->dqs[(size_t)t * hd + d];
        double c = 1.442695041 / sqrt((double)hd), sig = 1.0 / (1.0 + exp(-(double)p->pds[d]));
        p->gpds[d] += (float)(s * c * sig);
    }
    /* The one learned query serves every item: sum its gradients. */
    float *dqsum = st->dqs + (size_t)tasks * hd;
    memset(dqsum, 0, sizeof(float) * Jp);
    tl_colsum_add(n, Jp, st->dq, dqsum);
    tl_linear_bwd_w(&p->q, 1, p->query, NULL, dqsum, ws);
    tl_linear_bwd_x(&p->q, 1, dqsum, p->gquery, 1, ws);
    const float *xl = x_of(st, net->n_fusion);
    tl_transpose(rows, D, xl, D, ws, rows);
    tl_linear_bwd_w(&p->k, rows, NULL, ws, st->dk, NULL);
    tl_linear_bwd_w(&p->v, rows, NULL, ws, st->dv, NULL);
    tl_linear_bwd_x(&p->k, rows, st->dk, st->dx, 0, ws);
    tl_linear_bwd_x(&p->v, rows, st->dv, st->dx, 1, ws);
    return 0;
}

int tl_fusion_backward(tl_fusion_state *st, const float *demb, float *dx0, float *ws,
                       ml_error *err) {
    if (pool_backward(st, demb, ws, err) != 0) return -1;
    for (int l = st->net->n_fusion - 1; l >= 0; l--)
        if (layer_backward(st, l, ws, err) != 0) return -1;
    memcpy(dx0, st->dx, sizeof(float) * st->rows * st->net->embed);
    return 0;
}
