/* quantize.c - running the CLIP towers at bf16 or int8.
 *
 * The towers' linear layers (over 99% of the FLOPs) are packed once at load
 * into the layout of the low-precision kernels, and so is the image patch
 * embedding at bf16 (in float32 it took ~6% of a bf16 image pass).  At bf16
 * the fusion layers are packed too: only 0.6% of the FLOPs, but with 2 rows
 * an item they ran at float32 GEMM speed and took ~4% of a bf16 image pass;
 * in bf16 the worst cosine to float64 moved from 0.999967 to 0.999965
 * (tests/t_precision.sh).  The pooler's key and value products (2 rows an
 * item, 4 MB of float32 weights each at base, read once a batch) are packed
 * too: ~1% of a bf16 pass, worst cosine 0.999959.  The patch embedding and
 * fusion layers at int8 and the projections to the embedding space stay in float32: they cost
 * little and the embedding is most sensitive to them. */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "kernels/gemm.h"
#include "kernels/ops.h"
#include "model/model.h"

void ml_linear_forward(const ml_linear *l, int rows, const float *x, float *y, int accumulate) {
    if (l->packed)
        ml_gemm_packed(rows, x, l->in, l->packed, l->b, y, l->out, accumulate);
    else
        ml_gemm(rows, l->out, l->in, x, l->in, l->w, l->out, l->b, y, l->out, accumulate);
}

/* y = quick_gelu(x @ w + b); every product applies it as it writes y. */
void ml_linear_forward_gelu(const ml_linear *l, int rows, const float *x, float *y) {
    if (l->packed) {
        ml_gemm_packed_gelu(rows, x, l->in, l->packed, l->b, y, l->out);
        return;
    }
    ml_gemm_gelu(rows, l->out, l->in, x, l->in, l->w, l->out, l->b, y, l->out);
}

/* Calls fn on every linear layer of both towers' transformer blocks. */
static int each_block_linear(ml_model *m, int (*fn)(ml_linear *, void *), void *ctx) {
    struct { ml_clip_block *b; int n; } towers[2] = {{m->vision.blocks, m->vision.layers},
                                                     {m->text.blocks, m->text.layers}};
    for (int t = 0; t < 2; t++)
        for (int i = 0; i < towers[t].n && towers[t].b; i++) {
            ml_clip_block *b = &towers[t].b[i];
            /* q, k, v run as the fused qkv product when packed (pack_qkv). */
            ml_linear *ls[4] = {&b->o, &b->fc, &b->proj, &b->qkv};
            for (int j = 0; j < 4; j++)
                if (fn(ls[j], ctx) != 0) return -1;
        }
    return 0;
}

typedef struct pack_ctx {
    ml_precision prec;
    ml_isa isa;
    ml_error *err;
} pack_ctx;

static int pack_one(ml_linear *l, void *ctx) {
    pack_ctx *c = ctx;
    if (!l->w) return 0; /* the fused qkv, packed by pack_qkv */
    l->packed = ml_pack_weights(l->w, l->in, l->out, c->prec, c->isa, c->err);
    return l->packed ? 0 : -1;
}

static int unpack_one(ml_linear *l, void *ctx) {
    (void)ctx;
    ml_packed_free(l->packed);
    l->packed = NULL;
    return 0;
}

/* Packs q, k and v of one block as a single [W, 3W] weight with a [3W] bias. */
static int pack_qkv(ml_model *m, ml_clip_block *b, const pack_ctx *c) {
    int W = b->q.in, N = b->q.out + b->k.out + b->v.out;
    float *w = malloc(sizeof(float) * (size_t)W * N), *bias = malloc(sizeof(float) * (size_t)N);
    if (!w || !bias || ml_tensor_set_own(&m->tensors, bias, c->err) != 0) {
        free(w), free(bias);
        return ml_fail(c->err, "out of memory packing q/k/v");
    }
    const ml_linear *parts[3] = {&b->q, &b->k, &b->v};
    for (int r = 0; r < W; r++)
        for (int p = 0, col = 0; p < 3; col += parts[p++]->out)
            memcpy(w + (size_t)r * N + col, parts[p]->w + (size_t)r * parts[p]->out,
                   sizeof(float) * parts[p]->out);
    for (int p = 0, col = 0; p < 3; col += parts[p++]->out)
        memcpy(bias + col, parts[p]->b, sizeof(float) * parts[p]->out);
    b->qkv = (ml_linear){NULL, bias, W, N, ml_pack_weights(w, W, N, c->prec, c->isa, c->err)};
    free(w);
    return b->qkv.packed ? 0 : -1;
}

static int pack_all_qkv(ml_model *m, const pack_ctx *c) {
    ml_clip_block *towers[2] = {m->vision.blocks, m->text.blocks};
    int layers[2] = {m->vision.layers, m->text.layers};
    for (int t = 0; t < 2; t++)
        for (int i = 0; i < layers[t]; i++)
            if (pack_qkv(m, &towers[t][i], c) != 0) return -1;
    return 0;
}

/* The fusion layers' linear layers (bf16 only; see the top comment). */
static int each_fusion_linear(ml_model *m, int (*fn)(ml_linear *, void *), void *ctx) {
    for (int i = 0; i < m->fusion_layers && m->fusion; i++) {
        ml_fusion_layer *f = &m->fusion[i];
        ml_linear *ls[6] = {&f->q, &f->k, &f->v, &f->post, &f->ff1, &f->ff2};
        for (int j = 0; j < 6; j++)
            if (fn(ls[j], ctx) != 0) return -1;
    }
    if (m->fusion && (fn(&m->pool.k, ctx) != 0 || fn(&m->pool.v, ctx) != 0)) return -1;
    return 0;
}

int ml_model_pack(ml_model *m, ml_precision prec, ml_error *err) {
    m->precision = ML_PREC_FP32;
    if (prec == ML_PREC_FP32) return 0;
    pack_ctx c = {prec, ml_isa_active(), err};
    if (pack_all_qkv(m, &c) != 0 || each_block_linear(m, pack_one, &c) != 0 ||
        (prec == ML_PREC_BF16 && m->vision.patch_embed.w && pack_one(&m->vision.patch_embed, &c) != 0) ||
        (prec == ML_PREC_BF16 && each_fusion_linear(m, pack_one, &c) != 0)) {
        ml_model_unpack(m);
        return ml_fail_prefix(err, "packing weights for %s", ml_precision_name(prec));
    }
    m->precision = prec;
    return 0;
}

void ml_model_unpack(ml_model *m) {
    each_block_linear(m, unpack_one, NULL);
    each_fusion_linear(m, unpack_one, NULL);
    unpack_one(&m->vision.patch_embed, NULL);
}
