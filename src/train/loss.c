/* loss.c - MagicLens' contrastive loss (one direction, queries to
 * targets, with the query images' own "empty instruction" embeddings as
 * extra negatives), its gradients and the batch accuracy.  See tmodel.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train/tmodel.h"

#define MAX_SCALE 100.0 /* CLIP clamps exp(logit_scale) here */

static double dot(int E, const float *a, const float *b) {
    double s = 0;
    for (int e = 0; e < E; e++) s += (double)a[e] * b[e];
    return s;
}

/* Candidate j of 2N: targets first, then query negatives. */
static const float *cand(int N, int E, const float *t, const float *qn, int j) {
    return j < N ? t + (size_t)j * E : qn + (size_t)(j - N) * E;
}

double ml_contrastive_loss(int N, int E, const float *q, const float *t, const float *qn,
                           float log_scale, float *dq, float *dt, float *dqn, float *d_log_scale,
                           double *acc) {
    int C = qn ? 2 * N : N;
    double *G = malloc(sizeof(double) * (size_t)N * (C > 0 ? C : 1));
    if (!G || N <= 0) {
        free(G);
        return NAN;
    }
    double s = exp((double)log_scale);
    int clamped = s > MAX_SCALE;
    if (clamped) s = MAX_SCALE;
    double loss = 0, dls = 0;
    int hits = 0;
    for (int i = 0; i < N; i++) {
        double *g = G + (size_t)i * C, mx = -INFINITY, sum = 0;
        int best = 0;
        for (int j = 0; j < C; j++) {
            g[j] = s * dot(E, q + (size_t)i * E, cand(N, E, t, qn, j));
            if (g[j] > mx) mx = g[j], best = j;
        }
        hits += best == i;
        for (int j = 0; j < C; j++) sum += exp(g[j] - mx);
        loss += mx + log(sum) - g[i];
        /* d loss / d logit_ij = (softmax_ij - [j == i]) / N; the logit is
         * s * dot, so d / d log_scale adds G_ij * logit_ij. */
        for (int j = 0; j < C; j++) {
            double logit = g[j];
            g[j] = (exp(logit - mx) / sum - (j == i)) / N;
            dls += g[j] * logit;
        }
    }
    if (dq) {
        for (int i = 0; i < N; i++)
            for (int e = 0; e < E; e++) {
                double a = 0;
                for (int j = 0; j < C; j++) a += G[(size_t)i * C + j] * cand(N, E, t, qn, j)[e];
                dq[(size_t)i * E + e] = (float)(s * a);
            }
    }
    for (int side = 0; side < 2; side++) { /* dt: candidates 0..N-1; dqn: N..2N-1 */
        float *d = side ? dqn : dt;
        if (!d) continue;
        if (side && !qn) {
            memset(d, 0, sizeof(float) * (size_t)N * E);
            continue;
        }
        for (int j = 0; j < N; j++)
            for (int e = 0; e < E; e++) {
                double a = 0;
                for (int i = 0; i < N; i++)
                    a += G[(size_t)i * C + side * N + j] * q[(size_t)i * E + e];
                d[(size_t)j * E + e] = (float)(s * a);
            }
    }
    if (d_log_scale) *d_log_scale = clamped ? 0.0f : (float)dls;
    if (acc) *acc = (double)hits / N;
    free(G);
    return loss / N;
}
