/* init.h - the starting weights of a training run.
 *
 * A run starts from a released MagicLens checkpoint (.pkl), a native model
 * (.mlens) or the CLIP weights of a Hugging Face `CLIPModel`
 * (model.safetensors of openai/clip-vit-base-patch16, -large-patch14, ...).
 * Whatever the source, the result is a tensor set with the official Flax
 * names and layouts (model-spec section 1), float32 for safetensors input,
 * without the native format's meta/ and vocab/ blobs: it goes as is to
 * ml_tmodel_init, ml_native_write and ml_export_flax_pkl.
 *
 * The fusion layers (multimodal_encoder, contrastive_multimodal_pooler) can
 * be (re-)initialised from a seeded generator; the rules are in
 * docs/training-init.md.  The same seed gives bit-identical tensors. */
#ifndef ML_TRAIN_INIT_H
#define ML_TRAIN_INIT_H

#include <stdint.h>

#include "io/tensors.h"

#define ML_FUSION_LAYERS 4 /* x_layers of the released models */

/* Loads PATH (kind chosen by content: pickle, native magic or safetensors
 * header) into *out (overwritten; empty on failure).  fusion_init: NULL
 * keeps the file's fusion tensors, "random" replaces them with fresh ones
 * drawn from `seed`.  A safetensors file holds no fusion layers, so it needs
 * "random".  For safetensors, the attention head counts come from a
 * Hugging Face config.json beside the file when there is one
 * (text_config / vision_config num_attention_heads), else width / 64. */
int ml_train_init_load(const char *path, const char *fusion_init, uint64_t seed, ml_tensor_set *out,
                       ml_error *err);

/* Reads a Hugging Face CLIPModel safetensors file and maps it to Flax names
 * and layouts (float32).  text_heads / vision_heads <= 0: width / 64.
 * *out is overwritten; empty on failure. */
int ml_hf_clip_load(const char *path, int vision_heads, int text_heads, ml_tensor_set *out,
                    ml_error *err);

/* Appends freshly initialised fusion and pooler tensors for embedding width
 * D (fusion heads: 8 for D = 512, 16 for D = 768 as released, else D / 64;
 * ML_FUSION_LAYERS layers) to *s.  On failure *s may hold some of them. */
int ml_fusion_init_random(ml_tensor_set *s, int D, uint64_t seed, ml_error *err);

/* The fusion head count ml_fusion_init_random uses for width D (0: none fits). */
int ml_fusion_heads_for(int D);

#endif
