/* quantize.c - running the CLIP towers at bf16 or int8.
 *
 * The towers' linear layers (over 99% of the FLOPs) are packed once at load
 * into the layout of the low-precision kernels.  The patch embedding, the
 * projections to the embedding space and the small fusion layers stay in
 * float32: they cost little and the embedding is most sensitive to them. */
#include <stdlib.h>

#include "core/error.h"
#include "kernels/gemm.h"
#include "model/model.h"

void ml_linear_forward(const ml_linear *l, int rows, const float *x, float *y, int accumulate) {
    if (l->packed)
        ml_gemm_packed(rows, x, l->in, l->packed, l->b, y, l->out, accumulate);
    else
        ml_gemm(rows, l->out, l->in, x, l->in, l->w, l->out, l->b, y, l->out, accumulate);
}

/* Calls fn on every linear layer of both towers' transformer blocks. */
static int each_block_linear(ml_model *m, int (*fn)(ml_linear *, void *), void *ctx) {
    struct { ml_clip_block *b; int n; } towers[2] = {{m->vision.blocks, m->vision.layers},
                                                     {m->text.blocks, m->text.layers}};
    for (int t = 0; t < 2; t++)
        for (int i = 0; i < towers[t].n && towers[t].b; i++) {
            ml_clip_block *b = &towers[t].b[i];
            ml_linear *ls[6] = {&b->q, &b->k, &b->v, &b->o, &b->fc, &b->proj};
            for (int j = 0; j < 6; j++)
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
    l->packed = ml_pack_weights(l->w, l->in, l->out, c->prec, c->isa, c->err);
    return l->packed ? 0 : -1;
}

static int unpack_one(ml_linear *l, void *ctx) {
    (void)ctx;
    ml_packed_free(l->packed);
    l->packed = NULL;
    return 0;
}

int ml_model_pack(ml_model *m, ml_precision prec, ml_error *err) {
    m->precision = ML_PREC_FP32;
    if (prec == ML_PREC_FP32) return 0;
    pack_ctx c = {prec, ml_isa_active(), err};
    if (each_block_linear(m, pack_one, &c) != 0) {
        ml_model_unpack(m);
        return ml_fail_prefix(err, "packing weights for %s", ml_precision_name(prec));
    }
    m->precision = prec;
    return 0;
}

void ml_model_unpack(ml_model *m) { each_block_linear(m, unpack_one, NULL); }
