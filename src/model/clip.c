/* clip.c - the two CLIP towers (scenic's VisionTransformer and TextEncoder).
 *
 * A batch of sequences is stacked into one [rows, width] matrix so that the
 * linear layers run as single large matrix products; only attention works
 * per sequence. */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/mem.h"
#include "core/threads.h"
#include "kernels/attention.h"
#include "kernels/gemm.h"
#include "kernels/ops.h"
#include "model/model.h"

/* Scratch for one tower pass over `rows` stacked tokens. */
typedef struct block_scratch {
    float *h, *q, *k, *v, *att, *ff;
} block_scratch;

static int scratch_alloc(block_scratch *s, size_t rows, int width, int ff, ml_error *err) {
    memset(s, 0, sizeof *s);
    size_t n = rows * (size_t)width;
    s->h = ml_aligned_alloc(n * sizeof(float), err);
    /* q, k, v share one buffer: separate [rows, W] regions, or interleaved
     * [rows, 3W] rows when the fused qkv product wrote them. */
    s->q = ml_aligned_alloc(3 * n * sizeof(float), err);
    s->k = s->q ? s->q + n : NULL;
    s->v = s->q ? s->q + 2 * n : NULL;
    s->att = ml_aligned_alloc(n * sizeof(float), err);
    s->ff = ml_aligned_alloc(rows * (size_t)ff * sizeof(float), err);
    return (s->h && s->q && s->att && s->ff) ? 0 : -1;
}

static void scratch_free(block_scratch *s) {
    free(s->h);
    free(s->q);
    free(s->att);
    free(s->ff);
}

/* Attention over each of `nseq` sequences of `T` tokens, one task per
 * (sequence, head) pair, at the model's precision.  The tasks are handed
 * out one at a time from a shared counter, so that a thread slowed down
 * (by another process on its core) takes fewer of them. */
typedef struct attn_job {
    int T, width, ld, heads, hd, causal, ntasks; /* ld: row stride of q, k, v */
    const float *q, *k, *v;
    ml_precision prec;
    const block_scratch *s;
    const unsigned char *key_ok; /* [nseq*T] or NULL */
    atomic_int next;
} attn_job;

static void attn_tasks(void *ctx, int begin, int end) {
    attn_job *j = ctx;
    (void)begin, (void)end;
    float scale = 1.0f / sqrtf((float)j->hd);
    for (int t; (t = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed)) < j->ntasks;) {
        int seq = t / j->heads, h = t % j->heads;
        size_t off = (size_t)seq * j->T * j->width + (size_t)h * j->hd;
        size_t in = (size_t)seq * j->T * j->ld + (size_t)h * j->hd;
        ml_attention_prec(j->prec, j->T, j->T, 1, j->hd, j->q + in, j->ld, j->k + in, j->ld,
                          j->v + in, j->ld, scale, NULL, 0.0f,
                          j->key_ok ? j->key_ok + (size_t)seq * j->T : NULL, j->causal,
                          j->s->att + off, j->width);
    }
}

/* x [nseq*T, width] += block(x), as scenic's ResidualAttentionBlock. */
static void clip_block(const ml_clip_block *b, ml_precision prec, int nseq, int T, int width,
                       int heads, const unsigned char *key_ok, int causal, float *x,
                       block_scratch *s) {
    int rows = nseq * T;
    ml_layernorm(rows, width, x, b->ln_1.scale, b->ln_1.bias, 1e-5f, 0, s->h);
    attn_job j = {T, width, width, heads, width / heads, causal, nseq * heads, s->q, s->k, s->v,
                  prec, s, key_ok, 0};
    if (b->qkv.packed) {
        ml_linear_forward(&b->qkv, rows, s->h, s->q, 0);
        j.ld = 3 * width, j.k = s->q + width, j.v = s->q + 2 * width;
    } else {
        ml_linear_forward(&b->q, rows, s->h, s->q, 0);
        ml_linear_forward(&b->k, rows, s->h, s->k, 0);
        ml_linear_forward(&b->v, rows, s->h, s->v, 0);
    }
    int parts = ml_num_threads() < j.ntasks ? ml_num_threads() : j.ntasks;
    ml_parallel_for(parts, 1, attn_tasks, &j);
    ml_linear_forward(&b->o, rows, s->att, x, 1);
    ml_layernorm(rows, width, x, b->ln_2.scale, b->ln_2.bias, 1e-5f, 0, s->h);
    ml_linear_forward_gelu(&b->fc, rows, s->h, s->ff);
    ml_linear_forward(&b->proj, rows, s->ff, x, 1);
}

/* Non-overlapping PxP patches of an HWC image, row-major patch order, each
 * flattened (ph, pw, c) to match the HWIO conv kernel viewed as [P*P*3, W]. */
static void extract_patches(const float *img, int grid, int P, float *out) {
    int S = grid * P;
    for (int py = 0; py < grid; py++)
        for (int px = 0; px < grid; px++) {
            float *o = out + ((size_t)py * grid + px) * P * P * 3;
            for (int ph = 0; ph < P; ph++) {
                const float *row = img + ((size_t)(py * P + ph) * S + (size_t)px * P) * 3;
                memcpy(o + (size_t)ph * P * 3, row, sizeof(float) * P * 3);
            }
        }
}

int ml_vision_forward(const ml_model *m, int n, const float *const *pixels, float *out_emb,
                      ml_error *err) {
    const ml_vision *v = &m->vision;
    int T = v->tokens, W = v->width, np = v->grid * v->grid, pd = v->patch * v->patch * 3;
    size_t rows = (size_t)n * T;
    int ffw = v->blocks[0].fc.out;
    block_scratch s;
    float *x = ml_aligned_alloc(rows * W * sizeof(float), err);
    float *patches = ml_aligned_alloc((size_t)n * np * pd * sizeof(float), err);
    if (!x || !patches || scratch_alloc(&s, rows, W, ffw > pd ? ffw : pd, err) != 0) {
        free(x);
        free(patches);
        scratch_free(&s);
        return -1;
    }
    for (int i = 0; i < n; i++) extract_patches(pixels[i], v->grid, v->patch, patches + (size_t)i * np * pd);
    /* Patch embeddings land in s.ff, then move behind each class token. */
    ml_linear_forward(&v->patch_embed, n * np, patches, s.ff, 0); /* [pd, W], no bias */
    for (int i = 0; i < n; i++) {
        float *xi = x + (size_t)i * T * W;
        memcpy(xi, v->class_emb, sizeof(float) * W);
        memcpy(xi + W, s.ff + (size_t)i * np * W, sizeof(float) * np * W);
        ml_add(xi, v->pos_emb, (long)T * W);
    }
    ml_layernorm((int)rows, W, x, v->ln_pre.scale, v->ln_pre.bias, 1e-5f, 0, x);
    for (int l = 0; l < v->layers; l++)
        clip_block(&v->blocks[l], (ml_precision)m->precision, n, T, W, v->heads, NULL, 0, x, &s);
    for (int i = 0; i < n; i++) {
        float *cls = s.h + (size_t)i * W;
        ml_layernorm(1, W, x + (size_t)i * T * W, v->ln_post.scale, v->ln_post.bias, 1e-5f, 0, cls);
    }
    ml_gemm(n, v->proj.out, W, s.h, W, v->proj.w, v->proj.out, NULL, out_emb, v->proj.out, 0);
    free(x);
    free(patches);
    scratch_free(&s);
    return 0;
}

int ml_text_forward(const ml_model *m, const int32_t *ids, float *out_emb, ml_error *err) {
    const ml_text *t = &m->text;
    int W = t->width, eot = 0;
    for (int i = 0; i < t->context; i++) {
        if (ids[i] < 0 || ids[i] >= t->vocab)
            return ml_fail(err, "token id %d at position %d is outside the vocabulary of %d",
                           ids[i], i, t->vocab);
        if (ids[i] > ids[eot]) eot = i; /* first position of the largest id, like argmax */
    }
    /* Causal attention: positions after the EOT token cannot change it. */
    int L = eot + 1;
    unsigned char key_ok[ML_MAX_SEQ];
    float *x = ml_aligned_alloc((size_t)L * W * sizeof(float), err);
    block_scratch s;
    if (!x || scratch_alloc(&s, (size_t)L, W, t->blocks[0].fc.out, err) != 0) {
        free(x);
        scratch_free(&s);
        return -1;
    }
    for (int i = 0; i < L; i++) {
        const float *e = t->tok_emb + (size_t)ids[i] * W, *p = t->pos_emb + (size_t)i * W;
        for (int c = 0; c < W; c++) x[(size_t)i * W + c] = e[c] + p[c];
        key_ok[i] = ids[i] > 0; /* id 0 is padding, even inside the text */
    }
    for (int l = 0; l < t->layers; l++)
        clip_block(&t->blocks[l], (ml_precision)m->precision, 1, L, W, t->heads, key_ok, 1, x, &s);
    ml_layernorm(1, W, x + (size_t)eot * W, t->ln_final.scale, t->ln_final.bias, 1e-5f, 0, s.h);
    ml_gemm(1, t->proj.out, W, s.h, W, t->proj.w, t->proj.out, NULL, out_emb, t->proj.out, 0);
    free(x);
    scratch_free(&s);
    return 0;
}
