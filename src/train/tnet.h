/* tnet.h - the trainable network's layer views and saved activations
 * (internal to src/train: tmodel.c binds the views, ttower.c and tfusion.c
 * run the towers and the fusion part forward and backward).
 *
 * Every view points into the model's flat w / g arrays, so an optimiser
 * step on w is seen by the next forward without any copying. */
#ifndef ML_TRAIN_TNET_H
#define ML_TRAIN_TNET_H

#include <stddef.h>
#include <stdint.h>

#include "magiclens.h"
#include "train/tlayers.h"

/* ---- views ------------------------------------------------------------- */

/* scenic's ResidualAttentionBlock. */
typedef struct tl_block {
    tl_norm ln1, ln2;
    tl_lin q, k, v, o, fc, proj;
} tl_block;

typedef struct tl_tower {
    int vision; /* 1: image tower, 0: text tower */
    int width, layers, heads, ff;
    int patch, grid, tokens; /* vision: tokens = grid^2 + 1 */
    tl_lin patch_embed;      /* vision: [P*P*3, W], no bias */
    float *cls, *gcls;       /* vision: class embedding [W] */
    tl_norm ln_pre;          /* vision */
    int vocab, context;      /* text */
    float *tok, *gtok;       /* text: token embedding [vocab, W] */
    float *pos, *gpos;       /* positional embedding [tokens or context, W] */
    tl_block *blocks;
    tl_norm ln_post; /* ln_post (vision) or ln_final (text) */
    tl_lin proj;     /* [W, E], no bias */
} tl_tower;

/* One multimodal_encoder/x_layers_i. */
typedef struct tl_flayer {
    tl_norm ln, ff_ln; /* LayerNorm with 1 + scale, eps 1e-6 */
    tl_lin q, k, v, post, ff1, ff2;
} tl_flayer;

typedef struct tl_pool {
    int heads, hd;
    tl_lin q, k, v, post;
    float *pds, *gpds; /* per_dim_scale [hd], raw (softplus at use) */
    tl_norm ln;
    float *query, *gquery; /* pooling_attn_query [1, D] */
} tl_pool;

struct ml_tnet {
    tl_tower vis, txt;
    int n_fusion, fusion_heads, embed;
    tl_flayer *fusion;
    tl_pool pool;
    void *spare; /* a freed state's memory, kept for the next forward */
    size_t spare_bytes;
};

/* ---- memory ------------------------------------------------------------ */

/* A bump allocator run twice: once with base == NULL to measure, once over
 * the real block to hand out 64-byte aligned pointers. */
typedef struct tl_arena {
    char *base;
    size_t used;
} tl_arena;

static inline float *tl_take(tl_arena *a, size_t floats) {
    size_t off = a->used;
    a->used += (floats * sizeof(float) + 63) & ~(size_t)63;
    return a->base ? (float *)(void *)(a->base + off) : NULL;
}

/* ---- tower activations -------------------------------------------------- */

typedef struct tl_block_act {
    float *m1, *r1, *q, *k, *v, *att, *xmid, *m2, *r2, *fc; /* fc: before quick_gelu */
} tl_block_act;

typedef struct tl_tower_state {
    const tl_tower *tw;
    int n, rows, keep, grads;  /* keep: one activation set per block; grads: backward scratch */
    int *off, *len, *pick;     /* per sequence: first row, length, row of CLS / EOT */
    int32_t *ids;              /* text: the id of each row */
    unsigned char *key_ok;     /* text: id > 0 per row */
    float *patches;            /* vision: [n * grid^2, P*P*3] */
    float *x0, *m0, *r0;       /* vision: tokens before ln_pre and its statistics */
    tl_block_act *acts;        /* `layers` sets when keep, else 1 */
    float *xs;                 /* block inputs / outputs: layers+1 (keep) or 2 buffers */
    float *h, *g;              /* scratch: a LayerNorm output [rows, W], quick_gelu [rows, ff] */
    float *fin, *fm, *fr, *fh; /* picked rows [n, W], ln_post statistics, ln_post output */
    float *dx, *dh, *dq, *dk, *dv, *datt, *dff; /* backward scratch (grads) */
} tl_tower_state;

/* Sets n, off/len/pick (text: from ids) and the buffer pointers; with
 * a->base == NULL only measures.  ids: [n, context] (text) or NULL. */
void tl_tower_layout(tl_tower_state *st, const tl_tower *tw, int n, const int32_t *ids, int keep,
                     int grads, tl_arena *a);
/* Raw tower outputs out[n, E].  Vision takes pixels, text the ids given
 * to the layout. Returns -1 (err set) when out of memory. */
int tl_tower_forward(tl_tower_state *st, const float *const *pixels, float *out, ml_error *err);
/* Adds the tower's parameter gradients for d(out) = dout [n, E]. */
int tl_tower_backward(tl_tower_state *st, const float *dout, float *ws, ml_error *err);
/* Workspace floats the tower needs (transposes). */
size_t tl_tower_ws(const tl_tower *tw, int rows, int n);
/* Rows a text of `context` ids occupies (up to its EOT) and that row. */
int tl_text_len(const int32_t *ids, int context);

/* ---- fusion activations ------------------------------------------------- */

typedef struct tl_flayer_act {
    float *m1, *r1, *q, *k, *v, *att, *a, *m2, *r2, *ff; /* a: after attention; ff: after relu */
} tl_flayer_act;

typedef struct tl_fusion_state {
    const struct ml_tnet *net;
    int n, rows; /* n outputs, 2n rows */
    tl_flayer_act *acts;
    float *xs, *h;                  /* layer inputs/outputs [(layers+1), rows, D]; LN scratch */
    float *pq, *pk, *pv, *patt;     /* pooling: query [1, Jp], keys / values [rows, Jp], [n, Jp] */
    float *qscale;                  /* [hd] */
    float *pe, *pm, *pr, *ph, *emb; /* post output, its LN stats and output, normalised [n, D] */
    float *dx, *dh, *dq, *dk, *dv, *datt, *dff, *dqs, *de; /* backward scratch */
} tl_fusion_state;

void tl_fusion_layout(tl_fusion_state *st, const struct ml_tnet *net, int n, tl_arena *a);
/* X0 rows 2j / 2j+1 = img[out_img[j]] / txt[out_txt[j]]; emb [n, E]. */
int tl_fusion_forward(tl_fusion_state *st, const float *img, const int *out_img, const float *txt,
                      const int *out_txt, float *emb, float *ws, ml_error *err);
/* Adds the fusion parameters' gradients; dx0 receives d loss / d X0 [rows, D]. */
int tl_fusion_backward(tl_fusion_state *st, const float *demb, float *dx0, float *ws,
                       ml_error *err);
size_t tl_fusion_ws(const struct ml_tnet *net, int n);

#endif
