/* tmodel.h - the MagicLens network in trainable form: every parameter in one
 * flat float32 array (the optimiser's view), a gradient array of the same
 * layout, and forward / backward passes over a batch (llm.c style: one clear
 * forward and backward per layer, checked against PyTorch autograd).
 *
 * The inference model (model/model.h) is built for speed at a fixed
 * precision over read-only, possibly memory-mapped weights; this one keeps
 * float32 master weights it can change, plus the activations a backward pass
 * needs.
 *
 * Parameter names and shapes are exactly those of the tensor set it was
 * built from (Flax paths without "params/", e.g. "clip/visual/conv1/kernel"),
 * so ml_tmodel_to_tensors() gives back a set that the native writer and the
 * Flax exporter take as is. */
#ifndef ML_TRAIN_TMODEL_H
#define ML_TRAIN_TMODEL_H

#include <stddef.h>
#include <stdint.h>

#include "io/tensors.h"
#include "magiclens.h"

/* Parameter groups (flags of ml_tparam). */
enum {
    ML_TP_VISION = 1u,  /* clip/visual/...                                  */
    ML_TP_TEXT = 2u,    /* clip/text/...                                    */
    ML_TP_FUSION = 4u,  /* multimodal_encoder/..., contrastive_multimodal_pooler/... */
    ML_TP_SCALE = 8u,   /* clip/logit_scale: the loss' log inverse temperature */
    ML_TP_NODECAY = 16u /* norms, biases, embeddings, per_dim_scale, pooling query, logit_scale */
};

typedef struct ml_tparam {
    const char *name; /* points into the model's own copy */
    int ndim;
    int64_t shape[ML_MAX_DIMS];
    size_t offset, count; /* element range in w / g */
    unsigned flags;
} ml_tparam;

typedef struct ml_tnet ml_tnet; /* views into w / g per layer (tmodel.c) */

typedef struct ml_tmodel {
    ml_config cfg;
    int n_params;
    ml_tparam *params; /* in the tensor set's order */
    size_t total;      /* elements in w and g */
    float *w;          /* master weights, float32, 64-byte aligned */
    float *g;          /* gradients, same layout; backward ADDS to it */
    int bf16;          /* 1: matrix products take bf16-rounded operands (fp32 accumulate):
                          the products with weights, on CPUs with native bf16 (AMX or
                          AVX-512 BF16); weight gradients and attention stay fp32 */
    ml_tnet *net;
} ml_tmodel;

/* Builds the trainable model from a tensor set holding a full MagicLens
 * parameter tree (any float dtype; converted to float32).  A missing
 * clip/logit_scale is created with log(1/0.07).  g starts at zero. */
int ml_tmodel_init(ml_tmodel *tm, const ml_tensor_set *ts, ml_error *err);
void ml_tmodel_free(ml_tmodel *tm);
const ml_tparam *ml_tmodel_find(const ml_tmodel *tm, const char *name);
void ml_tmodel_zero_grad(ml_tmodel *tm);

/* Appends every parameter to *out as a float32 tensor whose data points
 * into tm->w (valid while tm lives and is not changed); *out should start
 * empty.  Names and shapes are the original ones. */
int ml_tmodel_to_tensors(const ml_tmodel *tm, ml_tensor_set *out, ml_error *err);

/* What one forward pass encodes.  Images and texts are listed once each;
 * output j is the fusion of image out_img[j] with text out_txt[j], so a
 * query image and its "query negative" (the same image with the empty
 * instruction) share one pass through the image tower.
 *   pixels:  n_img preprocessed images (image_size^2*3 floats, HWC), or
 *            NULL when img_emb holds the towers' raw outputs [n_img, E]
 *            (frozen towers with cached outputs);
 *   ids:     [n_txt, context_length] token ids, or NULL when txt_emb holds
 *            raw text tower outputs [n_txt, E]. */
typedef struct ml_tbatch {
    int n_img;
    const float *const *pixels;
    const float *img_emb;
    int n_txt;
    const int32_t *ids;
    const float *txt_emb;
    int n_out;
    const int *out_img, *out_txt;
} ml_tbatch;

typedef struct ml_tstate ml_tstate; /* activations saved by a forward pass */

/* Forward pass.  emb receives [n_out, E] L2-normalised MagicLens embeddings
 * (the same values the inference model gives for these weights).
 * train_towers: 0 = towers frozen (no tower activations kept, no tower
 * gradients), 1 = the towers are trained too (only meaningful with pixels /
 * ids: a tower whose outputs are given is never trained).  The returned
 * state belongs to the caller: pass it to ml_tmodel_backward or
 * ml_tstate_free.  NULL on failure.  Passes over one model are not
 * thread-safe (they share its scratch); free every state before the model
 * (a freed state's memory is kept for the next forward). */
ml_tstate *ml_tmodel_forward(ml_tmodel *tm, const ml_tbatch *b, int train_towers, float *emb,
                             ml_error *err);
/* Backward pass of the forward that made st: adds d(sum_j d_emb[j] . emb[j])
 * / d(parameters) to tm->g.  st stays valid (free it after). */
int ml_tmodel_backward(ml_tmodel *tm, ml_tstate *st, const float *d_emb, ml_error *err);
void ml_tstate_free(ml_tstate *st);

/* Tower outputs alone (raw, not normalised), for caching frozen towers. */
int ml_tmodel_image_tower(ml_tmodel *tm, int n, const float *const *pixels, float *out,
                          ml_error *err);
int ml_tmodel_text_tower(ml_tmodel *tm, int n, const int32_t *ids, float *out, ml_error *err);

/* The paper's contrastive loss, one direction (queries to targets).
 * q, t: [N, E] normalised query and target embeddings; qn: [N, E] the query
 * images with the empty instruction ("query negatives"), or NULL.  With
 * s = exp(log_scale) (clamped to 100, as CLIP), query i scores
 * s * q_i . t_j for every target j and s * q_i . qn_j for every query
 * negative j (its own included); its positive is t_i; the loss is the mean
 * over i of the cross-entropy.  Writes dL/dq, dL/dt, dL/dqn (when not NULL;
 * overwritten, not added) and dL/dlog_scale (0 when clamped); *acc (may be
 * NULL) = fraction of queries whose best candidate is their target.
 * Returns the loss. */
double ml_contrastive_loss(int N, int E, const float *q, const float *t, const float *qn,
                           float log_scale, float *dq, float *dt, float *dqn,
                           float *d_log_scale, double *acc);

#endif
