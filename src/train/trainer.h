/* trainer.h - the training loop behind `magiclens train`: contrastive
 * training of MagicLens on (query image, instruction, target image)
 * triplets, data-parallel over MPI ranks.  docs/training.md describes the
 * options, the loss, the checkpoint files and the logs. */
#ifndef ML_TRAIN_TRAINER_H
#define ML_TRAIN_TRAINER_H

#include <stdint.h>

#include "magiclens.h"

typedef struct ml_train_opts {
    const char *init;        /* .pkl, .mlens or HF CLIP model.safetensors */
    const char *init_fusion; /* NULL or "random" */
    const char *data, *output, *vocab;
    const char *eval_data; /* held-out triplets, or NULL */
    uint64_t seed;
    int64_t steps, warmup;
    int batch, accum; /* global batch per micro-step; micro-steps per update */
    double lr, min_lr_ratio, weight_decay, beta1, beta2, eps, clip_norm;
    int train_towers;   /* 0: --train fusion, 1: --train all */
    double temperature; /* > 0: fixed; else learned (clip/logit_scale) */
    int bf16, workers, resume, quiet, cache_towers;
    int64_t save_every, eval_every, log_every;
    int keep;           /* step checkpoints kept (<= 0: all) */
    int64_t stop_after; /* > 0: stop (as if interrupted) after this many steps
                           (tests) */
} ml_train_opts;

/* Defaults for everything but init, data and output. */
void ml_train_opts_default(ml_train_opts *o);

/* Runs (or resumes) training.  Returns 0 when it finished or was stopped
 * cleanly by SIGINT/SIGTERM (a checkpoint is then saved), -1 on failure. */
int ml_train_run(const ml_train_opts *o, ml_error *err);

/* Set from a signal handler: ask the loop to save and stop. */
void ml_train_request_stop(void);

#endif
