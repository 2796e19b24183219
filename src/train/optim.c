/* optim.c - AdamW, its schedule and gradient clipping (see optim.h). */
#include "train/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/mem.h"
#include "core/threads.h"

int ml_adamw_init(ml_adamw *o, size_t n, double beta1, double beta2, double eps,
                  double weight_decay, ml_error *err) {
    memset(o, 0, sizeof *o);
    o->beta1 = beta1, o->beta2 = beta2, o->eps = eps, o->weight_decay = weight_decay;
    o->n = n;
    o->m = ml_aligned_alloc((n ? n : 1) * sizeof(float), err);
    o->v = ml_aligned_alloc((n ? n : 1) * sizeof(float), err);
    if (!o->m || !o->v) {
        ml_adamw_free(o);
        return -1;
    }
    memset(o->m, 0, n * sizeof(float));
    memset(o->v, 0, n * sizeof(float));
    return 0;
}

void ml_adamw_free(ml_adamw *o) {
    free(o->m);
    free(o->v);
    o->m = o->v = NULL;
}

typedef struct adam_job {
    ml_adamw *o;
    float *w;
    const float *g;
    size_t lo, hi; /* the range being updated */
    int decay;
    double lr, c1, c2;
} adam_job;

#define ADAM_CHUNK 16384

/* Elements [lo, hi) of one range. */
static void adam_span(const adam_job *j, size_t lo, size_t hi) {
    ml_adamw *o = j->o;
    float b1 = (float)o->beta1, b2 = (float)o->beta2, lr = (float)j->lr, eps = (float)o->eps;
    float c1 = (float)j->c1, c2 = (float)j->c2;
    float shrink = j->decay ? (float)(1.0 - j->lr * o->weight_decay) : 1.0f;
    for (size_t i = lo; i < hi; i++) {
        float g = j->g[i];
        float m = o->m[i] = b1 * o->m[i] + (1.0f - b1) * g;
        float v = o->v[i] = b2 * o->v[i] + (1.0f - b2) * g * g;
        /* torch: param.mul_(1 - lr*wd); then param -= lr * m_hat / (sqrt(v_hat) +
         * eps) */
        float w = j->w[i] * shrink;
        j->w[i] = w - lr * (m / c1) / (sqrtf(v / c2) + eps);
    }
}

static void adam_chunks(void *ctx, int begin, int end) {
    const adam_job *j = ctx;
    size_t lo = j->lo + (size_t)begin * ADAM_CHUNK, hi = j->lo + (size_t)end * ADAM_CHUNK;
    adam_span(j, lo, hi < j->hi ? hi : j->hi);
}

void ml_adamw_step(ml_adamw *o, float *w, const float *g, const ml_range *ranges, int n_ranges,
                   double lr) {
    o->t++;
    double c1 = 1.0 - pow(o->beta1, (double)o->t), c2 = 1.0 - pow(o->beta2, (double)o->t);
    for (int r = 0; r < n_ranges; r++) {
        adam_job j = {
            o,  w,  g, ranges[r].offset, ranges[r].offset + ranges[r].count, ranges[r].decay,
            lr, c1, c2};
        int chunks = (int)((ranges[r].count + ADAM_CHUNK - 1) / ADAM_CHUNK);
        ml_parallel_for(chunks, 4, adam_chunks, &j);
    }
}

double ml_grad_norm(const float *g, const ml_range *ranges, int n_ranges) {
    double s = 0;
    for (int r = 0; r < n_ranges; r++) {
        const float *p = g + ranges[r].offset;
        for (size_t i = 0; i < ranges[r].count; i++) s += (double)p[i] * p[i];
    }
    return sqrt(s);
}

void ml_grad_scale(float *g, const ml_range *ranges, int n_ranges, float s) {
    for (int r = 0; r < n_ranges; r++) {
        float *p = g + ranges[r].offset;
        for (size_t i = 0; i < ranges[r].count; i++) p[i] *= s;
    }
}

double ml_lr_at(double lr, int64_t warmup, int64_t total, double min_ratio, int64_t step) {
    if (step < warmup) return lr * (double)(step + 1) / (double)warmup;
    int64_t span = total - 1 - warmup;
    if (span <= 0) return lr;
    double p = (double)(step - warmup) / (double)span;
    if (p > 1) p = 1;
    double cosine = 0.5 * (1.0 + cos(M_PI * p));
    return lr * (min_ratio + (1.0 - min_ratio) * cosine);
}
