/* clip.c - the two CLIP towers (scenic's VisionTransformer and TextEncoder).
 *
 * A batch of sequences is stacked into one [rows, width] matrix so that the
 * linear layers run as single large matrix products; only attention works
 * per sequence. */
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
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

/* ---- the bf16 pipeline ----
 * With bf16 weights on AMX, the activations between the layers are bf16
 * too: the layer norms and the GEMM epilogues write bf16 directly and the
 * products read it in place, so no layer output is written as float32 and
 * converted again.  The operands are the same bf16 values the float32-
 * activation path would have rounded them to (same rounding, same order),
 * only the residual stream x stays float32. */

typedef struct bf16_scratch {
    uint16_t *h;   /* [Mp, Wp] layer-norm output */
    uint16_t *qkv; /* [Mp, 3W] */
    uint16_t *att; /* [Mp, Wp] attention output */
    uint16_t *ff;  /* [Mp, Fp] MLP hidden (and the image patches, Fp >= their width) */
    int Wp, Fp;
} bf16_scratch;

static int round32(int n) { return (n + 31) / 32 * 32; }

/* Zeroes columns [c0, c1) of rows [0, rows) (row stride ld). */
static void zero_cols(uint16_t *a, size_t rows, int ld, int c0, int c1) {
    for (size_t r = 0; c1 > c0 && r < rows; r++) memset(a + r * ld + c0, 0, sizeof(uint16_t) * (size_t)(c1 - c0));
}

/* The K padding columns a product reads must be zero, and nothing else
 * writes them: [width, Wp) of h and att, [ff, Fp) of ff, zeroed here
 * (nothing at all for ViT-B/L widths).  Rows past `rows` are left as they
 * come: the AMX tiles read them in whole 16-row blocks, but each output
 * row depends on its own input row only, and those are never stored.
 * (Zeroing the whole 22 MB of a base batch of 8 cost ~1% of its time, on
 * one thread while the other waited.)  ff may be made wider than the MLP
 * (`cols`: the image patches live there first). */
static int bf16_scratch_alloc(bf16_scratch *s, size_t rows, int width, int ff, int cols, ml_error *err) {
    memset(s, 0, sizeof *s);
    size_t Mp = (rows + 31) / 32 * 32;
    s->Wp = round32(width), s->Fp = round32(ff > cols ? ff : cols);
    size_t nh = Mp * s->Wp, nq = Mp * 3 * (size_t)width, nf = Mp * s->Fp;
    uint16_t *all = ml_aligned_alloc(sizeof(uint16_t) * (2 * nh + nq + nf), err);
    if (!all) return -1;
    s->h = all, s->att = all + nh, s->qkv = all + 2 * nh, s->ff = s->qkv + nq;
    zero_cols(s->h, Mp, s->Wp, width, s->Wp);
    zero_cols(s->att, Mp, s->Wp, width, s->Wp);
    zero_cols(s->ff, Mp, s->Fp, ff, s->Fp);
    return 0;
}

static void bf16_scratch_free(bf16_scratch *s) { free(s->h); }

typedef struct attn_bf16_job {
    int T, width, heads, hd, ldo, causal, ntasks;
    const uint16_t *qkv;
    uint16_t *out;
    const unsigned char *key_ok;
    atomic_int next;
} attn_bf16_job;

static void attn_bf16_tasks(void *ctx, int begin, int end) {
    attn_bf16_job *j = ctx;
    (void)begin, (void)end;
    float scale = 1.0f / sqrtf((float)j->hd);
    int ld = 3 * j->width;
    for (int t; (t = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed)) < j->ntasks;) {
        int seq = t / j->heads, h = t % j->heads;
        const uint16_t *q = j->qkv + (size_t)seq * j->T * ld + (size_t)h * j->hd;
        ml_attention_bf16(j->T, j->T, 1, j->hd, q, ld, q + j->width, ld, q + 2 * j->width, ld, scale,
                          j->key_ok ? j->key_ok + (size_t)seq * j->T : NULL, j->causal,
                          j->out + (size_t)seq * j->T * j->ldo + (size_t)h * j->hd, j->ldo);
    }
}

/* clip_block with bf16 activations (same arguments). */
static void clip_block_bf16(const ml_clip_block *b, int nseq, int T, int width, int heads,
                            const unsigned char *key_ok, int causal, float *x, bf16_scratch *s,
                            const ml_clip_block *nb) {
    int rows = nseq * T;
    ml_layernorm_bf16(rows, width, x, b->ln_1.scale, b->ln_1.bias, 1e-5f, 0, s->h, s->Wp);
    /* each product names the next one's weights (prefetched as it ends) */
    ml_gemm_bf16_then(rows, s->h, s->Wp, b->qkv.packed, b->qkv.b, NULL, s->qkv, 3 * width, 0, b->o.packed);
    attn_bf16_job j = {T, width, heads, width / heads, s->Wp, causal, nseq * heads, s->qkv, s->att,
                       key_ok, 0};
    int parts = ml_num_threads() < j.ntasks ? ml_num_threads() : j.ntasks;
    ml_parallel_for(parts, 1, attn_bf16_tasks, &j);
    ml_gemm_bf16_then(rows, s->att, s->Wp, b->o.packed, b->o.b, x, NULL, width, ML_GEMM_ACCUMULATE,
                      b->fc.packed);
    ml_layernorm_bf16(rows, width, x, b->ln_2.scale, b->ln_2.bias, 1e-5f, 0, s->h, s->Wp);
    ml_gemm_bf16_then(rows, s->h, s->Wp, b->fc.packed, b->fc.b, NULL, s->ff, s->Fp, ML_GEMM_GELU,
                      b->proj.packed);
    ml_gemm_bf16_then(rows, s->ff, s->Fp, b->proj.packed, b->proj.b, x, NULL, width, ML_GEMM_ACCUMULATE,
                      nb ? nb->qkv.packed : NULL);
}

/* The bf16 pipeline runs where its products run natively (AMX, bf16 or
 * int8 weights: int8 rows are quantised from the bf16 activations) and the
 * block widths fit its layer norm and attention. */
static int use_bf16_pipeline(const ml_model *m, const ml_clip_block *b, int layers, int width,
                             int heads) {
    return m->precision != ML_PREC_FP32 && layers > 0 && b[0].qkv.packed &&
           ml_packed_native_bf16(b[0].qkv.packed) && width <= 4096 && width % heads == 0;
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

typedef struct tokens_job {
    const ml_vision *v;
    const float *pe;
    float *x;
} tokens_job;

/* Images [i0, i1): x = [class, patches] + pos, in one pass per image. */
static void tokens_range(void *ctx, int i0, int i1) {
    const tokens_job *j = ctx;
    const ml_vision *v = j->v;
    int T = v->tokens, W = v->width, np = v->grid * v->grid;
    for (int i = i0; i < i1; i++) {
        float *xi = j->x + (size_t)i * T * W;
        for (int c = 0; c < W; c++) xi[c] = v->class_emb[c] + v->pos_emb[c];
        const float *src = j->pe + (size_t)i * np * W;
        for (size_t c = 0; c < (size_t)np * W; c++) xi[W + c] = src[c] + v->pos_emb[W + c];
    }
}

/* x [n*T, W] <- class token, then the n*np patch embeddings pe, + positions,
 * layer-normed (ln_pre). */
static void vision_tokens(const ml_vision *v, int n, const float *pe, float *x) {
    int T = v->tokens, W = v->width;
    tokens_job j = {v, pe, x};
    ml_parallel_for(n, 1, tokens_range, &j);
    ml_layernorm(n * T, W, x, v->ln_pre.scale, v->ln_pre.bias, 1e-5f, 0, x);
}

/* out [n, E] = proj(ln_post(class token of each image)); tmp: n*W floats. */
static void vision_head(const ml_vision *v, int n, const float *x, float *tmp, float *out) {
    int T = v->tokens, W = v->width;
    for (int i = 0; i < n; i++)
        ml_layernorm(1, W, x + (size_t)i * T * W, v->ln_post.scale, v->ln_post.bias, 1e-5f, 0, tmp + (size_t)i * W);
    ml_gemm(n, v->proj.out, W, tmp, W, v->proj.w, v->proj.out, NULL, out, v->proj.out, 0);
}

typedef struct patches_job {
    const ml_vision *v;
    const float *const *pixels;
    uint16_t *out;
    int ld;
} patches_job;

/* Images [i0, i1)' patches as bf16 rows of ld (extract_patches' order),
 * the K padding of each row zeroed. */
static void patches_range(void *ctx, int i0, int i1) {
    const patches_job *j = ctx;
    const ml_vision *v = j->v;
    const float *const *pixels = j->pixels;
    uint16_t *out = j->out;
    int ld = j->ld;
    int P = v->patch, S = v->grid * P, np = v->grid * v->grid, pd = P * P * 3, pdp = round32(pd);
    for (int i = i0; i < i1; i++)
        for (int py = 0; py < v->grid; py++)
            for (int px = 0; px < v->grid; px++) {
                uint16_t *o = out + ((size_t)i * np + (size_t)py * v->grid + px) * ld;
                for (int ph = 0; ph < P; ph++) {
                    const float *src = pixels[i] + ((size_t)(py * P + ph) * S + (size_t)px * P) * 3;
                    ml_to_bf16(src, o + (size_t)ph * P * 3, P * 3);
                }
                memset(o + pd, 0, sizeof(uint16_t) * (size_t)(pdp - pd));
            }
}

static void patches_bf16(const ml_vision *v, int n, const float *const *pixels, uint16_t *out, int ld) {
    patches_job j = {v, pixels, out, ld};
    ml_parallel_for(n, 1, patches_range, &j);
}

/* The image tower on the bf16 pipeline: with a bf16 patch embedding the
 * patches go to bf16 as they are cut out (in s.ff; at int8 the embedding
 * stays float32 and so do its patches), the embeddings land in float32 in
 * s.qkv's memory (free until the first block), then the blocks run on
 * bf16 activations. */
static int vision_forward_bf16(const ml_model *m, int n, const float *const *pixels, float *out_emb,
                               ml_error *err) {
    const ml_vision *v = &m->vision;
    int T = v->tokens, W = v->width, np = v->grid * v->grid, pd = v->patch * v->patch * 3;
    size_t rows = (size_t)n * T;
    int ffw = v->blocks[0].fc.out, bf = v->patch_embed.packed != NULL;
    bf16_scratch s;
    float *x = ml_aligned_alloc(rows * W * sizeof(float), err), *patches = NULL;
    if (!bf) patches = ml_aligned_alloc((size_t)n * np * pd * sizeof(float), err);
    if (!x || (!bf && !patches) || bf16_scratch_alloc(&s, rows, W, ffw, round32(pd), err) != 0) {
        free(x);
        free(patches);
        return -1;
    }
    float *pe = (float *)(void *)s.qkv; /* [n*np, W] float: fits in [rows, 3W] bf16 */
    if (bf) {
        patches_bf16(v, n, pixels, s.ff, s.Fp);
        ml_gemm_bf16(n * np, s.ff, s.Fp, v->patch_embed.packed, NULL, pe, NULL, W, 0);
        zero_cols(s.ff, (size_t)n * np, s.Fp, ffw, s.Fp); /* patch values in the MLP's padding */
    } else {
        for (int i = 0; i < n; i++) extract_patches(pixels[i], v->grid, v->patch, patches + (size_t)i * np * pd);
        ml_linear_forward(&v->patch_embed, n * np, patches, pe, 0);
        free(patches);
    }
    vision_tokens(v, n, pe, x);
    for (int l = 0; l < v->layers; l++)
        clip_block_bf16(&v->blocks[l], n, T, W, v->heads, NULL, 0, x, &s,
                        l + 1 < v->layers ? &v->blocks[l + 1] : NULL);
    vision_head(v, n, x, (float *)(void *)s.qkv, out_emb);
    free(x);
    bf16_scratch_free(&s);
    return 0;
}

int ml_vision_forward(const ml_model *m, int n, const float *const *pixels, float *out_emb,
                      ml_error *err) {
    const ml_vision *v = &m->vision;
    if (use_bf16_pipeline(m, v->blocks, v->layers, v->width, v->heads))
        return vision_forward_bf16(m, n, pixels, out_emb, err);
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
    vision_tokens(v, n, s.ff, x);
    for (int l = 0; l < v->layers; l++)
        clip_block(&v->blocks[l], (ml_precision)m->precision, n, T, W, v->heads, NULL, 0, x, &s);
    vision_head(v, n, x, s.h, out_emb);
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
    int bf = use_bf16_pipeline(m, t->blocks, t->layers, W, t->heads);
    float *x = ml_aligned_alloc((size_t)(L + 1) * W * sizeof(float), err); /* + the final norm's row */
    block_scratch s = {0};
    bf16_scratch sb = {0};
    if (!x || (bf ? bf16_scratch_alloc(&sb, (size_t)L, W, t->blocks[0].fc.out, 0, err)
                  : scratch_alloc(&s, (size_t)L, W, t->blocks[0].fc.out, err)) != 0) {
        free(x);
        scratch_free(&s);
        bf16_scratch_free(&sb);
        return -1;
    }
    for (int i = 0; i < L; i++) {
        const float *e = t->tok_emb + (size_t)ids[i] * W, *p = t->pos_emb + (size_t)i * W;
        for (int c = 0; c < W; c++) x[(size_t)i * W + c] = e[c] + p[c];
        key_ok[i] = ids[i] > 0; /* id 0 is padding, even inside the text */
    }
    for (int l = 0; l < t->layers; l++) {
        if (bf)
            clip_block_bf16(&t->blocks[l], 1, L, W, t->heads, key_ok, 1, x, &sb,
                            l + 1 < t->layers ? &t->blocks[l + 1] : NULL);
        else clip_block(&t->blocks[l], (ml_precision)m->precision, 1, L, W, t->heads, key_ok, 1, x, &s);
    }
    float *h = x + (size_t)L * W;
    ml_layernorm(1, W, x + (size_t)eot * W, t->ln_final.scale, t->ln_final.bias, 1e-5f, 0, h);
    ml_gemm(1, t->proj.out, W, h, W, t->proj.w, t->proj.out, NULL, out_emb, t->proj.out, 0);
    free(x);
    scratch_free(&s);
    bf16_scratch_free(&sb);
    return 0;
}
