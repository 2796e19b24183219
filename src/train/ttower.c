/* ttower.c - the CLIP towers forward and backward (scenic's
 * VisionTransformer / TextEncoder), for training.
 *
 * A batch of sequences is stacked into one [rows, W] matrix so every linear
 * layer is one large product; attention runs per (sequence, head).  Texts
 * are cut after their EOT token, as the inference model does: with causal
 * attention the later positions cannot change the output. */
#include <math.h>
#include <string.h>

#include "core/error.h"
#include "train/tnet.h"

#define CLIP_EPS 1e-5f

int tl_text_len(const int32_t *ids, int context) {
    int eot = 0;
    for (int i = 1; i < context; i++)
        if (ids[i] > ids[eot]) eot = i; /* first position of the largest id, like argmax */
    return eot + 1;
}

static int *take_ints(tl_arena *a, size_t n) {
    return (int *)tl_take(a, n * sizeof(int) / sizeof(float) + 1);
}

void tl_tower_layout(tl_tower_state *st, const tl_tower *tw, int n, const int32_t *ids, int keep,
                     int grads, tl_arena *a) {
    memset(st, 0, sizeof *st);
    st->tw = tw, st->n = n, st->keep = keep, st->grads = grads;
    int W = tw->width, rows = 0;
    for (int i = 0; i < n; i++)
        rows += tw->vision ? tw->tokens : tl_text_len(ids + (size_t)i * tw->context, tw->context);
    st->rows = rows;
    size_t rw = (size_t)rows * W, rf = (size_t)rows * tw->ff, nw = (size_t)n * W;
    st->off = take_ints(a, (size_t)n);
    st->len = take_ints(a, (size_t)n);
    st->pick = take_ints(a, (size_t)n);
    if (tw->vision) {
        int np = tw->grid * tw->grid, pd = tw->patch * tw->patch * 3;
        st->patches = tl_take(a, (size_t)n * np * pd);
        st->x0 = tl_take(a, rw);
        st->m0 = tl_take(a, (size_t)rows);
        st->r0 = tl_take(a, (size_t)rows);
    } else {
        st->ids = (int32_t *)take_ints(a, (size_t)rows);
        st->key_ok = (unsigned char *)tl_take(a, (size_t)rows / sizeof(float) + 1);
    }
    int nact = keep ? tw->layers : 1;
    st->acts = (tl_block_act *)tl_take(a, nact * sizeof(tl_block_act) / sizeof(float) + 1);
    for (int l = 0; l < nact; l++) {
        tl_block_act b;
        b.m1 = tl_take(a, (size_t)rows), b.r1 = tl_take(a, (size_t)rows);
        b.m2 = tl_take(a, (size_t)rows), b.r2 = tl_take(a, (size_t)rows);
        b.q = tl_take(a, rw), b.k = tl_take(a, rw), b.v = tl_take(a, rw);
        b.att = tl_take(a, rw), b.xmid = tl_take(a, rw), b.fc = tl_take(a, rf);
        if (a->base) st->acts[l] = b;
    }
    st->xs = tl_take(a, (keep ? tw->layers + 1 : 2) * rw);
    st->h = tl_take(a, rw);
    st->g = tl_take(a, rf);
    st->fin = tl_take(a, nw), st->fh = tl_take(a, nw);
    st->fm = tl_take(a, (size_t)n), st->fr = tl_take(a, (size_t)n);
    if (grads) {
        st->dx = tl_take(a, rw), st->dh = tl_take(a, rw), st->datt = tl_take(a, rw);
        st->dq = tl_take(a, rw), st->dk = tl_take(a, rw), st->dv = tl_take(a, rw);
        st->dff = tl_take(a, rf);
    }
    if (!a->base) return;
    for (int i = 0, r = 0; i < n; i++) {
        int L = tw->vision ? tw->tokens : tl_text_len(ids + (size_t)i * tw->context, tw->context);
        st->off[i] = r, st->len[i] = L;
        st->pick[i] = tw->vision ? r : r + L - 1; /* CLS token / EOT token */
        if (!tw->vision)
            for (int t = 0; t < L; t++) {
                st->ids[r + t] = ids[(size_t)i * tw->context + t];
                st->key_ok[r + t] = st->ids[r + t] > 0; /* id 0 is padding, even inside the text */
            }
        r += L;
    }
}

size_t tl_tower_ws(const tl_tower *tw, int rows, int n) {
    size_t w = (size_t)tw->width, need = (size_t)rows * tw->ff;
    size_t wt = w * tw->ff > w * tw->proj.out ? w * tw->ff : w * tw->proj.out;
    if (wt > need) need = wt;
    if ((size_t)n * w > need) need = (size_t)n * w;
    if (tw->vision) {
        size_t pd = (size_t)tw->patch * tw->patch * 3, np = (size_t)n * tw->grid * tw->grid;
        if (np * pd > need) need = np * pd;
        if (pd * w > need) need = pd * w;
    }
    return need;
}

static tl_block_act *act_of(const tl_tower_state *st, int l) { return &st->acts[st->keep ? l : 0]; }

/* Block l's input (l = 0..layers: the last is the towers' output). */
static float *x_of(const tl_tower_state *st, int l) {
    size_t rw = (size_t)st->rows * st->tw->width;
    return st->xs + (st->keep ? (size_t)l : (size_t)(l % 2)) * rw;
}

static tl_attn attn_spec(const tl_tower_state *st, const tl_block_act *b) {
    const tl_tower *tw = st->tw;
    int W = tw->width, hd = W / tw->heads;
    tl_attn a = {st->n,   tw->heads, hd,         0,           0,
                 st->off, st->len,   0,          !tw->vision, 1.0f / sqrtf((float)hd),
                 0.0f,    NULL,      st->key_ok, b->q,        b->k,
                 b->v,    W,         W,          b->att,      W};
    return a;
}

static int oom(ml_error *err) { return ml_fail(err, "out of memory in attention scratch"); }

/* x_out = x_in + MHA(LN1(x_in)), then += c_proj(quick_gelu(c_fc(LN2(.)))). */
static int block_forward(tl_tower_state *st, int l, ml_error *err) {
    const tl_tower *tw = st->tw;
    const tl_block *p = &tw->blocks[l];
    tl_block_act *b = act_of(st, l);
    int rows = st->rows, W = tw->width;
    size_t rw = (size_t)rows * W;
    const float *x = x_of(st, l);
    float *y = x_of(st, l + 1);
    tl_layernorm_fwd(rows, W, x, &p->ln1, CLIP_EPS, 0, st->h, b->m1, b->r1);
    tl_linear_fwd(&p->q, rows, st->h, b->q, 0, NULL);
    tl_linear_fwd(&p->k, rows, st->h, b->k, 0, NULL);
    tl_linear_fwd(&p->v, rows, st->h, b->v, 0, NULL);
    tl_attn a = attn_spec(st, b);
    if (tl_attention_fwd(&a) != 0) return oom(err);
    memcpy(b->xmid, x, rw * sizeof(float));
    tl_linear_fwd(&p->o, rows, b->att, b->xmid, 1, NULL);
    tl_layernorm_fwd(rows, W, b->xmid, &p->ln2, CLIP_EPS, 0, st->h, b->m2, b->r2);
    tl_linear_fwd(&p->fc, rows, st->h, b->fc, 0, NULL);
    tl_quick_gelu_fwd((long)rows * tw->ff, b->fc, st->g);
    memcpy(y, b->xmid, rw * sizeof(float));
    tl_linear_fwd(&p->proj, rows, st->g, y, 1, NULL);
    return 0;
}

/* Non-overlapping PxP patches of an HWC image in row-major order, each
 * flattened (ph, pw, c) to match the HWIO kernel viewed as [P*P*3, W]. */
static void extract_patches(const float *img, int grid, int P, float *out) {
    int S = grid * P;
    for (int py = 0; py < grid; py++)
        for (int px = 0; px < grid; px++) {
            float *o = out + ((size_t)py * grid + px) * P * P * 3;
            for (int ph = 0; ph < P; ph++)
                memcpy(o + (size_t)ph * P * 3,
                       img + ((size_t)(py * P + ph) * S + (size_t)px * P) * 3,
                       sizeof(float) * P * 3);
        }
}

static void embed_vision(tl_tower_state *st, const float *const *pixels) {
    const tl_tower *tw = st->tw;
    int W = tw->width, T = tw->tokens, np = tw->grid * tw->grid, pd = tw->patch * tw->patch * 3;
    for (int i = 0; i < st->n; i++)
        extract_patches(pixels[i], tw->grid, tw->patch, st->patches + (size_t)i * np * pd);
    float *pe = st->g; /* [n*np, W] fits in the [rows, ff] scratch */
    tl_linear_fwd(&tw->patch_embed, st->n * np, st->patches, pe, 0, NULL);
    for (int i = 0; i < st->n; i++)
        for (int t = 0; t < T; t++) {
            const float *src = t == 0 ? tw->cls : pe + ((size_t)i * np + t - 1) * W;
            float *dst = st->x0 + ((size_t)i * T + t) * W;
            for (int c = 0; c < W; c++) dst[c] = src[c] + tw->pos[(size_t)t * W + c];
        }
    tl_layernorm_fwd(st->rows, W, st->x0, &tw->ln_pre, CLIP_EPS, 0, x_of(st, 0), st->m0, st->r0);
}

static void embed_text(tl_tower_state *st) {
    const tl_tower *tw = st->tw;
    int W = tw->width;
    float *x = x_of(st, 0);
    for (int i = 0; i < st->n; i++)
        for (int t = 0; t < st->len[i]; t++) {
            size_t r = (size_t)st->off[i] + t;
            const float *e = tw->tok + (size_t)st->ids[r] * W, *p = tw->pos + (size_t)t * W;
            for (int c = 0; c < W; c++) x[r * W + c] = e[c] + p[c];
        }
}

int tl_tower_forward(tl_tower_state *st, const float *const *pixels, float *out, ml_error *err) {
    const tl_tower *tw = st->tw;
    int W = tw->width;
    if (tw->vision)
        embed_vision(st, pixels);
    else
        embed_text(st);
    for (int l = 0; l < tw->layers; l++)
        if (block_forward(st, l, err) != 0) return -1;
    const float *xl = x_of(st, tw->layers);
    for (int i = 0; i < st->n; i++)
        memcpy(st->fin + (size_t)i * W, xl + (size_t)st->pick[i] * W, sizeof(float) * W);
    tl_layernorm_fwd(st->n, W, st->fin, &tw->ln_post, CLIP_EPS, 0, st->fh, st->fm, st->fr);
    tl_linear_fwd(&tw->proj, st->n, st->fh, out, 0, NULL);
    return 0;
}

/* st->dx holds d/d(block output) and becomes d/d(block input). */
static int block_backward(tl_tower_state *st, int l, float *ws, ml_error *err) {
    const tl_tower *tw = st->tw;
    const tl_block *p = &tw->blocks[l];
    tl_block_act *b = act_of(st, l);
    int rows = st->rows, W = tw->width;
    long rf = (long)rows * tw->ff;
    const float *x = x_of(st, l);
    /* MLP: out = xmid + proj(gelu(fc(LN2(xmid)))). */
    tl_quick_gelu_fwd(rf, b->fc, st->g);
    tl_linear_bwd_w(&p->proj, rows, st->g, NULL, st->dx, ws);
    tl_linear_bwd_x(&p->proj, rows, st->dx, st->dff, 0, ws);
    tl_quick_gelu_bwd(rf, b->fc, st->dff, st->dff);
    tl_layernorm_fwd(rows, W, b->xmid, &p->ln2, CLIP_EPS, 0, st->h, b->m2, b->r2);
    tl_linear_bwd_w(&p->fc, rows, st->h, NULL, st->dff, ws);
    tl_linear_bwd_x(&p->fc, rows, st->dff, st->dh, 0, ws);
    tl_layernorm_bwd(rows, W, b->xmid, b->m2, b->r2, &p->ln2, 0, st->dh, st->dx, 1);
    /* Attention: xmid = x + o(MHA(LN1(x))). */
    tl_linear_bwd_w(&p->o, rows, b->att, NULL, st->dx, ws);
    tl_linear_bwd_x(&p->o, rows, st->dx, st->datt, 0, ws);
    tl_attn a = attn_spec(st, b);
    if (tl_attention_bwd(&a, st->datt, st->dq, st->dk, st->dv, NULL) != 0) return oom(err);
    tl_layernorm_fwd(rows, W, x, &p->ln1, CLIP_EPS, 0, st->h, b->m1, b->r1);
    tl_transpose(rows, W, st->h, W, ws, rows); /* shared by the three weight gradients */
    tl_linear_bwd_w(&p->q, rows, NULL, ws, st->dq, NULL);
    tl_linear_bwd_w(&p->k, rows, NULL, ws, st->dk, NULL);
    tl_linear_bwd_w(&p->v, rows, NULL, ws, st->dv, NULL);
    tl_linear_bwd_x(&p->q, rows, st->dq, st->dh, 0, ws);
    tl_linear_bwd_x(&p->k, rows, st->dk, st->dh, 1, ws);
    tl_linear_bwd_x(&p->v, rows, st->dv, st->dh, 1, ws);
    tl_layernorm_bwd(rows, W, x, b->m1, b->r1, &p->ln1, 0, st->dh, st->dx, 1);
    return 0;
}

static void vision_embed_backward(tl_tower_state *st, float *ws) {
    const tl_tower *tw = st->tw;
    int W = tw->width, T = tw->tokens, np = tw->grid * tw->grid;
    float *dx0 = st->dh;
    tl_layernorm_bwd(st->rows, W, st->x0, st->m0, st->r0, &tw->ln_pre, 0, st->dx, dx0, 0);
    float *dpe = st->dff; /* [n*np, W] */
    for (int i = 0; i < st->n; i++) {
        const float *d = dx0 + (size_t)i * T * W;
        for (int c = 0; c < W; c++) tw->gcls[c] += d[c];
        memcpy(dpe + (size_t)i * np * W, d + W, sizeof(float) * np * W);
    }
    tl_colsum_add(st->n, T * W, dx0, tw->gpos); /* sum over images of [T*W] rows */
    tl_linear_bwd_w(&tw->patch_embed, st->n * np, st->patches, NULL, dpe, ws);
}

static void text_embed_backward(tl_tower_state *st) {
    const tl_tower *tw = st->tw;
    int W = tw->width;
    for (int i = 0; i < st->n; i++)
        for (int t = 0; t < st->len[i]; t++) {
            size_t r = (size_t)st->off[i] + t;
            const float *d = st->dx + r * W;
            float *ge = tw->gtok + (size_t)st->ids[r] * W, *gp = tw->gpos + (size_t)t * W;
            for (int c = 0; c < W; c++) ge[c] += d[c], gp[c] += d[c];
        }
}

int tl_tower_backward(tl_tower_state *st, const float *dout, float *ws, ml_error *err) {
    const tl_tower *tw = st->tw;
    int W = tw->width, n = st->n;
    if (!st->keep || !st->grads) return ml_fail(err, "tower backward without saved activations");
    tl_linear_bwd_w(&tw->proj, n, st->fh, NULL, dout, ws);
    float *dfh = st->dq, *dfin = st->dk; /* [n, W] each, free until the blocks */
    tl_linear_bwd_x(&tw->proj, n, dout, dfh, 0, ws);
    tl_layernorm_bwd(n, W, st->fin, st->fm, st->fr, &tw->ln_post, 0, dfh, dfin, 0);
    memset(st->dx, 0, sizeof(float) * st->rows * W);
    for (int i = 0; i < n; i++) {
        float *d = st->dx + (size_t)st->pick[i] * W;
        for (int c = 0; c < W; c++) d[c] += dfin[(size_t)i * W + c];
    }
    for (int l = tw->layers - 1; l >= 0; l--)
        if (block_backward(st, l, ws, err) != 0) return -1;
    if (tw->vision)
        vision_embed_backward(st, ws);
    else
        text_embed_backward(st);
    return 0;
}
