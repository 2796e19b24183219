/* ckpt.h - training checkpoints: DIR/step_N.mlens (the model, in the native
 * format every command takes as --model) plus DIR/step_N.state (optimiser
 * moments, step, data position), both written atomically.
 *
 * The state file records a hash of the weights it goes with, so a state is
 * only used with the very model file it was saved beside, and a hash of the
 * run's settings (data, batch, seed, ...), so --resume refuses to continue a
 * different run.  Layout: docs/training.md. */
#ifndef ML_TRAIN_CKPT_H
#define ML_TRAIN_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "train/optim.h"
#include "train/tmodel.h"

typedef struct ml_ckpt_pos {
    int64_t step;  /* optimiser steps done */
    int64_t epoch; /* data position: epoch and index within its order */
    int64_t index;
} ml_ckpt_pos;

/* What a saved model file carries besides the weights. */
typedef struct ml_ckpt_meta {
    const char *config_json; /* may be NULL */
    const uint8_t *vocab_gz; /* may be NULL */
    size_t vocab_len;
    uint64_t settings_hash;
} ml_ckpt_meta;

/* Writes DIR/NAME.mlens and, when opt is not NULL, DIR/NAME.state. */
int ml_ckpt_save(const char *dir, const char *name, const ml_tmodel *tm, const ml_adamw *opt,
                 const ml_ckpt_pos *pos, const ml_ckpt_meta *meta, ml_error *err);
/* The largest N with a DIR/step_N.state, or -1 when there is none. */
int64_t ml_ckpt_latest(const char *dir);
/* Loads DIR/step_N.{mlens,state} into tm->w, opt and pos, after checking
 * the files' integrity, the weights hash and settings_hash. */
int ml_ckpt_load(const char *dir, int64_t step, ml_tmodel *tm, ml_adamw *opt, ml_ckpt_pos *pos,
                 uint64_t settings_hash, ml_error *err);
/* Deletes step files older than the newest `keep` (keep <= 0: none). */
void ml_ckpt_prune(const char *dir, int keep);
/* XXH3-64 of the weights, as recorded in state files. */
uint64_t ml_ckpt_weights_hash(const ml_tmodel *tm);

#endif
