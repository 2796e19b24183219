/* export_model.h - a model written out for other tools: the released Flax
 * checkpoint layout (.pkl) or a native .mlens, from a .pkl, a .mlens or
 * Hugging Face CLIP safetensors, optionally with freshly initialised fusion
 * layers (docs/training-init.md).  `magiclens export --model`. */
#ifndef ML_TRAIN_EXPORT_MODEL_H
#define ML_TRAIN_EXPORT_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "magiclens.h"

typedef struct ml_export_model_opts {
    const char *model;  /* input */
    const char *init;   /* NULL, or "random": fresh fusion layers from `seed` */
    uint64_t seed;
    const char *format; /* "flax" or "mlens" */
    const char *output;
    const char *vocab;  /* mlens: the vocabulary file stored in it (NULL: none) */
    uint64_t chunk;     /* flax: arrays over this many bytes are chunked */
} ml_export_model_opts;

/* Writes o->output atomically; *ntensors = tensors written. */
int ml_export_model(const ml_export_model_opts *o, size_t *ntensors, ml_error *err);

#endif
