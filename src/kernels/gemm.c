/* ml_gemm: the portable scalar kernel, and the driver for the SIMD
 * micro-kernels (gemm_tmpl.h) chosen by ml_isa_active().
 *
 * Portable blocked GEMM.  A panel of NB columns of B (NB*K floats) stays hot
 * in L2 while blocks of MR rows of A stream past it; the MR x NB accumulator
 * is small enough for the compiler to keep in vector registers at -O3.
 * Accumulation is float32 in k order, like a plain dot product. */
#include "kernels/gemm.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"

#include "core/threads.h"
#include "kernels/gemm_isa.h"
#include "kernels/ops.h"

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

static void gemm_scalar(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                        const float *bias, float *C, int ldc, int accumulate, int parallel) {
    gemm_job g = {M, N, K, lda, ldb, ldc, accumulate, (N + NB - 1) / NB, A, B, bias, C};
    int tasks = g.n_panels * ((M + MB - 1) / MB);
    if (parallel) ml_parallel_for(tasks, 1, gemm_tasks, &g);
    else gemm_tasks(&g, 0, tasks);
}

/* ---- SIMD driver ------------------------------------------------------ */

/* Blocking: a KC x NC slab of B (<= 768 KB) stays in L2 while every MR-row
 * block of A (MR x KC, <= 12 KB, in L1) walks across it. */
#ifndef KC
#define KC 256
#endif
#ifndef NC
#define NC 768
#endif

typedef struct simd_job {
    const ml_gemm_impl *impl;
    int M, N, K, lda, ldb, ldc, accumulate, gelu;
    const float *A, *B, *bias;
    float *C;
    int split_m, parts, unit; /* the rectangle of part t: rows or columns */
    atomic_int next;          /* next part to hand out */
    ml_gemm_b_fn bfn;         /* B from this function (always packed), or NULL: B */
    const void *bctx;
} simd_job;

/* Row blocks a rectangle needs before packing B pays: each packed slab is
 * then read by >= 8 micro-kernel rows blocks (attention's 64-row products
 * and the text tower's 77 rows use B in place). */
#define PACK_MIN_BLOCKS 8

/* C[m0:m1, n0:n1] on one thread.  A is read in place: each micro-kernel
 * broadcasts from its mr rows, and every A cache line then serves 16
 * consecutive k.  (Packing A k-major was measured no faster on the ViT
 * shapes and twice as slow on attention's narrow products.)  B is copied
 * slab by slab into nr-column panels (impl->pack_b) when enough row blocks
 * share each slab: read in place, every k step of the micro-kernel touched
 * a different page of the weights (rows of 3-12 KB), which cost ~20% of
 * the GEMM rate on the ViT shapes. */
static void simd_rect(const simd_job *g, int m0, int m1, int n0, int n1) {
    int mr_max = g->impl->mr, nr = g->impl->nr;
    float *buf = NULL;
    if (g->bfn || m1 - m0 >= PACK_MIN_BLOCKS * mr_max) {
        int kc = g->K < KC ? g->K : KC, nn = n1 - n0 < NC ? n1 - n0 : NC;
        buf = ml_aligned_alloc(sizeof(float) * (size_t)kc * (size_t)((nn + nr - 1) / nr * nr), NULL);
        if (!buf && g->bfn) { /* no B to fall back on; a void API: fail loudly */
            fprintf(stderr, "magiclens: out of memory for a %d x %d weight slab\n", kc, nn);
            abort();
        }
    }
    for (int nc0 = n0; nc0 < n1; nc0 += NC) {
        int nn = n1 - nc0 < NC ? n1 - nc0 : NC;
        for (int k0 = 0; k0 < g->K; k0 += KC) {
            int kc = g->K - k0 < KC ? g->K - k0 : KC;
            const float *b = g->B ? g->B + (size_t)k0 * g->ldb + nc0 : NULL;
            long ldb = g->ldb, bpanel = nr;
            if (buf) { /* (out of memory: B in place, slower but the same sums) */
                if (g->bfn) g->bfn(g->bctx, k0, kc, nc0, nn, nr, buf);
                else g->impl->pack_b(b, ldb, kc, nn, buf);
                b = buf, ldb = nr, bpanel = (long)kc * nr;
            }
            for (int i0 = m0; i0 < m1; i0 += mr_max) {
                int mr = m1 - i0 < mr_max ? m1 - i0 : mr_max;
                ml_gemm_panel p = {g->A + (size_t)i0 * g->lda + k0, g->lda, mr, kc, nn, b, ldb,
                                   bpanel, g->C + (size_t)i0 * g->ldc + nc0, g->ldc,
                                   k0 == 0 && g->bias ? g->bias + nc0 : NULL,
                                   k0 > 0 || g->accumulate, g->gelu && k0 + kc >= g->K};
                g->impl->panel(&p);
            }
        }
    }
    free(buf);
}

/* K == 0: C = bias (+ C). */
static void gemm_empty_k(int M, int N, const float *bias, float *C, int ldc, int accumulate) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float *c = C + (size_t)i * ldc + j;
            *c = (accumulate ? *c : 0) + (bias ? bias[j] : 0);
        }
}

/* Part t of `parts` equal shares of n, in whole units. */
static void share(int n, int unit, int t, int parts, int *b, int *e) {
    int units = (n + unit - 1) / unit;
    *b = (int)((long long)units * t / parts) * unit;
    *e = (int)((long long)units * (t + 1) / parts) * unit;
    if (*e > n) *e = n;
}

/* Each thread takes parts until none are left: when there are more parts
 * than threads, a thread whose core is busy simply takes fewer, instead of
 * the whole product waiting for its fixed share.  Which thread computes a part does not change
 * its result. */
static void simd_tasks(void *ctx, int begin, int end) {
    simd_job *g = ctx;
    (void)begin, (void)end;
    for (int t; (t = atomic_fetch_add(&g->next, 1)) < g->parts;) {
        int b, e;
        if (g->split_m) {
            share(g->M, g->unit, t, g->parts, &b, &e);
            simd_rect(g, b, e, 0, g->N);
        } else {
            share(g->N, g->unit, t, g->parts, &b, &e);
            simd_rect(g, 0, g->M, b, e);
        }
    }
}

#define PARTS_PER_THREAD 4 /* column parts (short products, B in place) */ /* parts stay >= 4 row blocks: B is re-read per part */

static void gemm_simd(const ml_gemm_impl *impl, int M, int N, int K, const float *A, int lda,
                      const float *B, int ldb, const float *bias, float *C, int ldc, int accumulate,
                      int gelu, int parallel, ml_gemm_b_fn bfn, const void *bctx) {
    simd_job g = {impl, M, N, K, lda, ldb, ldc, accumulate, gelu, A, B, bias, C, 1, 1, impl->mr, 0,
                  bfn, bctx};
    int threads = parallel ? ml_num_threads() : 1;
    double flops = 2.0 * M * N * K;
    if (threads > 1 && flops > 2e6) {
        /* Tall products split rows, one part per thread: each part reads
         * and packs all of B from memory, and at 4 parts per thread that
         * copying cost ~6% of the image tower.  Short ones (text tower,
         * fusion) split columns, in 16-column units so panels stay
         * vector-aligned, several parts per thread. */
        int rows_parts = M / (4 * impl->mr), col_parts = N / 32;
        if (rows_parts >= threads) {
            g.parts = threads;
        } else if (col_parts >= threads) {
            g.split_m = 0, g.unit = 16;
            g.parts = col_parts < threads * PARTS_PER_THREAD ? col_parts : threads * PARTS_PER_THREAD;
        }
    }
    if (g.parts > 1) ml_parallel_for(threads, 1, simd_tasks, &g);
    else simd_rect(&g, 0, M, 0, N);
}

static void gemm_dispatch(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                          const float *bias, float *C, int ldc, int accumulate, int gelu,
                          int parallel) {
    if (M <= 0 || N <= 0) return;
    const ml_gemm_impl *impl = K > 0 ? ml_gemm_impl_for(ml_isa_active()) : NULL;
    if (impl) {
        gemm_simd(impl, M, N, K, A, lda, B, ldb, bias, C, ldc, accumulate, gelu, parallel, NULL, NULL);
        return;
    }
    if (K <= 0) gemm_empty_k(M, N, bias, C, ldc, accumulate);
    else gemm_scalar(M, N, K, A, lda, B, ldb, bias, C, ldc, accumulate, parallel);
    if (gelu)
        for (int i = 0; i < M; i++) ml_quick_gelu(C + (size_t)i * ldc, N);
}

const ml_gemm_impl *ml_gemm_impl_for(ml_isa isa) {
#if defined(__x86_64__)
    if (isa == ML_ISA_AVX512 || isa == ML_ISA_AMX) return &ml_gemm_avx512;
    if (isa == ML_ISA_AVX2) return &ml_gemm_avx2;
#endif
#if defined(__aarch64__) /* every aarch64 path shares the fp32 NEON kernel */
    if (isa >= ML_ISA_NEON && isa <= ML_ISA_NEON_BF16) return &ml_gemm_neon;
#endif
    (void)isa;
    return NULL;
}

void ml_gemm(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
             const float *bias, float *C, int ldc, int accumulate) {
    gemm_dispatch(M, N, K, A, lda, B, ldb, bias, C, ldc, accumulate, 0, 1);
}

void ml_gemm_gelu(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                  const float *bias, float *C, int ldc) {
    gemm_dispatch(M, N, K, A, lda, B, ldb, bias, C, ldc, 0, 1, 1);
}

void ml_gemm_bfn(ml_isa isa, int M, int N, int K, const float *A, int lda, ml_gemm_b_fn bfn,
                 const void *bctx, const float *bias, float *C, int ldc, int accumulate, int gelu) {
    const ml_gemm_impl *impl = ml_gemm_impl_for(isa);
    if (M <= 0 || N <= 0 || !impl) return;
    if (K <= 0) {
        gemm_empty_k(M, N, bias, C, ldc, accumulate);
        if (gelu)
            for (int i = 0; i < M; i++) ml_quick_gelu(C + (size_t)i * ldc, N);
        return;
    }
    gemm_simd(impl, M, N, K, A, lda, NULL, 0, bias, C, ldc, accumulate, gelu, 1, bfn, bctx);
}

void ml_gemm_serial(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                    const float *bias, float *C, int ldc, int accumulate) {
    gemm_dispatch(M, N, K, A, lda, B, ldb, bias, C, ldc, accumulate, 0, 0);
}
