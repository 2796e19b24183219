/* optim.h - AdamW with decoupled weight decay, the learning-rate schedule
 * (linear warm-up, then cosine decay) and clipping by global norm.
 *
 * The optimiser works on the flat parameter array of a ml_tmodel; which
 * ranges it updates, and which of those decay, is given per call as a list
 * of ranges so that frozen parameters cost nothing. */
#ifndef ML_TRAIN_OPTIM_H
#define ML_TRAIN_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "magiclens.h"

typedef struct ml_range {
    size_t offset, count;
    int decay; /* 1: weight decay applies */
} ml_range;

typedef struct ml_adamw {
    double beta1, beta2, eps, weight_decay;
    int64_t t;    /* updates done */
    size_t n;     /* length of m and v (= the parameter array) */
    float *m, *v; /* first and second moments, 64-byte aligned */
} ml_adamw;

int ml_adamw_init(ml_adamw *o, size_t n, double beta1, double beta2, double eps,
                  double weight_decay, ml_error *err);
void ml_adamw_free(ml_adamw *o);

/* One update of every range: t += 1, then for each element
 *   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
 *   w -= lr * (wd * w  [decay ranges only]  +  m_hat / (sqrt(v_hat) + eps))
 * with bias-corrected m_hat, v_hat (torch.optim.AdamW's order of operations).
 */
void ml_adamw_step(ml_adamw *o, float *w, const float *g, const ml_range *ranges, int n_ranges,
                   double lr);

/* The global L2 norm of g over the ranges (computed in double). */
double ml_grad_norm(const float *g, const ml_range *ranges, int n_ranges);
/* Multiplies g over the ranges by `s`. */
void ml_grad_scale(float *g, const ml_range *ranges, int n_ranges, float s);

/* Learning rate at `step` (0-based, the update about to be made):
 * lr * (step+1)/warmup during warm-up, then cosine from lr down to
 * lr * min_ratio at step total-1 (and after). */
double ml_lr_at(double lr, int64_t warmup, int64_t total, double min_ratio, int64_t step);

#endif
