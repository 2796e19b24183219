/* Portable blocked GEMM.  A panel of NB columns of B (NB*K floats) stays hot
 * in L2 while blocks of MR rows of A stream past it; the MR x NB accumulator
 * is small enough for the compiler to keep in vector registers at -O3.
 * Accumulation is float32 in k order, like a plain dot product. */
#include "kernels/gemm.h"

#include <string.h>

#include "core/threads.h"

#define MR 4
#define NB 64
#define MB 64 /* rows per parallel task */

typedef struct {
    int M, N, K, lda, ldb, ldc, accumulate, n_panels;
    const float *A, *B, *bias;
    float *C;
} gemm_job;

/* One MR x NB block (or smaller at the edges). */
static void gemm_block(const gemm_job *g, int i0, int mr, int j0, int nb) {
    float acc[MR][NB];
    memset(acc, 0, sizeof acc);
    for (int k = 0; k < g->K; k++) {
        const float *b = g->B + (size_t)k * g->ldb + j0;
        for (int r = 0; r < mr; r++) {
            float a = g->A[(size_t)(i0 + r) * g->lda + k];
            for (int j = 0; j < nb; j++) acc[r][j] += a * b[j];
        }
    }
    for (int r = 0; r < mr; r++) {
        float *c = g->C + (size_t)(i0 + r) * g->ldc + j0;
        for (int j = 0; j < nb; j++) {
            float v = acc[r][j];
            if (g->bias) v += g->bias[j0 + j];
            c[j] = g->accumulate ? c[j] + v : v;
        }
    }
}

/* Full-width fast path: MR rows x NB columns with compile-time bounds. */
static void gemm_block_full(const gemm_job *g, int i0, int j0) {
    float acc[MR][NB];
    memset(acc, 0, sizeof acc);
    const float *a0 = g->A + (size_t)i0 * g->lda;
    for (int k = 0; k < g->K; k++) {
        const float *b = g->B + (size_t)k * g->ldb + j0;
        for (int r = 0; r < MR; r++) {
            float a = a0[(size_t)r * g->lda + k];
            for (int j = 0; j < NB; j++) acc[r][j] += a * b[j];
        }
    }
    for (int r = 0; r < MR; r++) {
        float *c = g->C + (size_t)(i0 + r) * g->ldc + j0;
        for (int j = 0; j < NB; j++) {
            float v = acc[r][j];
            if (g->bias) v += g->bias[j0 + j];
            c[j] = g->accumulate ? c[j] + v : v;
        }
    }
}

static void gemm_tasks(void *ctx, int begin, int end) {
    const gemm_job *g = ctx;
    for (int t = begin; t < end; t++) {
        int panel = t % g->n_panels, mblock = t / g->n_panels;
        int j0 = panel * NB, nb = g->N - j0 < NB ? g->N - j0 : NB;
        int m_end = (mblock + 1) * MB < g->M ? (mblock + 1) * MB : g->M;
        for (int i0 = mblock * MB; i0 < m_end; i0 += MR) {
            int mr = m_end - i0 < MR ? m_end - i0 : MR;
            if (mr == MR && nb == NB) gemm_block_full(g, i0, j0);
            else gemm_block(g, i0, mr, j0, nb);
        }
    }
}

void ml_gemm(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
             const float *bias, float *C, int ldc, int accumulate) {
    if (M <= 0 || N <= 0) return;
    gemm_job g = {M, N, K, lda, ldb, ldc, accumulate, (N + NB - 1) / NB, A, B, bias, C};
    int m_blocks = (M + MB - 1) / MB;
    ml_parallel_for(g.n_panels * m_blocks, 1, gemm_tasks, &g);
}
