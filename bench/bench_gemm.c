/* bench_gemm - GFLOP/s of ml_gemm on the shapes of a ViT-B/16 batch of 8
 * (plus the text tower's and the fusion's short products), for the ISA in
 * MAGICLENS_ISA (default: the best one), against the FMA peak measured by a
 * register-only loop on one core.
 *
 * usage: bench_gemm [threads [reps]] */
#include <stdio.h>
#include <stdlib.h>

#include "core/progress.h"
#include "core/threads.h"
#include "kernels/cpu.h"
#include "kernels/gemm.h"
#include "kernels/ops.h"
#include "magiclens.h"

#if defined(__x86_64__) && defined(__GNUC__)
/* 12 independent FMA chains (enough to cover the 4-cycle latency on 2
 * ports), in inline assembly so that no intrinsics leave the ISA files and
 * the compiler cannot split or drop the FMAs. */
#define FMA12(R)                                                                              \
    "vfmadd231ps %%" R "14, %%" R "15, %%" R "0\n\t"                                          \
    "vfmadd231ps %%" R "14, %%" R "15, %%" R "1\n\t"                                          \
    "vfmadd231ps %%" R "14, %%" R "15, %%" R "2\n\t"                                          \
    "vfmadd231ps %%" R "14, %%" R "15, %%" R "3\n\t"                                          \
    "vfmadd231ps %%" R "14, %%" R "15, %%" R "4\n\t"                                          \
    "vfmadd231ps %%" R "14, %%" R "15, %%" R "5\n\t"                                          \
    "vfmadd231ps %%" R "14, %%" R "15, %%" R "6\n\t"                                          \
    "vfmadd231ps %%" R "14, %%" R "15, %%" R "7\n\t"                                          \
    "vfmadd231ps %%" R "14, %%" R "15, %%" R "8\n\t"                                          \
    "vfmadd231ps %%" R "14, %%" R "15, %%" R "9\n\t"                                          \
    "vfmadd231ps %%" R "14, %%" R "15, %%" R "10\n\t"                                         \
    "vfmadd231ps %%" R "14, %%" R "15, %%" R "11\n\t"
#define PEAK_LOOP(name, R)                                                                   \
    __attribute__((noinline)) static void name(long iters) {                                 \
        __asm__ volatile("1:\n\t" FMA12(R) "dec %0\n\tjnz 1b"                                \
                         : "+r"(iters)                                                       \
                         :                                                                   \
                         : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",  \
                           "xmm8", "xmm9", "xmm10", "xmm11", "xmm14", "xmm15", "cc");        \
    }
PEAK_LOOP(peak512, "zmm")
PEAK_LOOP(peak256, "ymm")

/* Single-core FMA peak in GFLOP/s for the ISA (0 for scalar). */
static double fma_peak(ml_isa isa) {
    if (isa == ML_ISA_SCALAR) return 0;
    int lanes = isa == ML_ISA_AVX2 ? 8 : 16;
    long iters = 20000000;
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = ml_now();
        if (isa == ML_ISA_AVX2) peak256(iters);
        else peak512(iters);
        double g = 12.0 * 2 * lanes * iters / (ml_now() - t0) / 1e9;
        if (g > best) best = g;
    }
    return best;
}
#elif defined(__aarch64__) && defined(__GNUC__)
/* aarch64 (docs/arm64.md): 12 independent 4-lane FMA chains, enough for 4
 * FMA pipes of 4-cycle latency (Neoverse V1 / N2 have 4, N1 / A76 2). */
#define FMLA(n) "fmla v" #n ".4s, v14.4s, v15.4s\n\t"
__attribute__((noinline)) static void peak_neon(long iters) {
    __asm__ volatile("1:\n\t" FMLA(0) FMLA(1) FMLA(2) FMLA(3) FMLA(4) FMLA(5) FMLA(6) FMLA(7)
                         FMLA(8) FMLA(9) FMLA(10) FMLA(11) "subs %0, %0, #1\n\tb.ne 1b"
                     : "+r"(iters)
                     :
                     : "v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7", "v8", "v9", "v10", "v11",
                       "v14", "v15", "cc");
}

static double fma_peak(ml_isa isa) {
    if (isa == ML_ISA_SCALAR) return 0;
    long iters = 20000000;
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = ml_now();
        peak_neon(iters);
        double g = 12.0 * 2 * 4 * iters / (ml_now() - t0) / 1e9;
        if (g > best) best = g;
    }
    return best;
}
#else
static double fma_peak(ml_isa isa) {
    (void)isa;
    return 0; /* unknown machine: no peak to compare with */
}
#endif

static double bench_shape(int M, int N, int K, int reps) {
    float *A = calloc((size_t)M * K, 4), *B = calloc((size_t)K * N, 4), *C = calloc((size_t)M * N, 4);
    for (size_t i = 0; i < (size_t)M * K; i++) A[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < (size_t)K * N; i++) B[i] = (float)(i % 5) * 0.1f;
    ml_gemm(M, N, K, A, K, B, N, NULL, C, N, 0);
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = ml_now();
        ml_gemm(M, N, K, A, K, B, N, NULL, C, N, 0);
        double dt = ml_now() - t0;
        if (dt < best) best = dt;
    }
    free(A), free(B), free(C);
    return best;
}

/* The vision tower's attention for one layer of a batch of 8: 96 (sequence,
 * head) tasks of T=197, head_dim 64, as clip.c runs them (serially here). */
static double bench_attention(int reps) {
    int T = 197, W = 768, hd = 64, heads = 12, nseq = 8;
    size_t n = (size_t)nseq * T * W;
    float *q = malloc(n * 4), *k = malloc(n * 4), *v = malloc(n * 4), *o = malloc(n * 4);
    for (size_t i = 0; i < n; i++) q[i] = (float)(i % 13) * 0.01f, k[i] = (float)(i % 7) * 0.01f, v[i] = (float)(i % 5);
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = ml_now();
        for (int s = 0; s < nseq; s++)
            for (int h = 0; h < heads; h++) {
                size_t off = (size_t)s * T * W + (size_t)h * hd;
                ml_attention(T, T, 1, hd, q + off, W, k + off, W, v + off, W, 0.125f, NULL, 0, NULL,
                             0, o + off, W);
            }
        double dt = ml_now() - t0;
        if (dt < best) best = dt;
    }
    free(q), free(k), free(v), free(o);
    return best;
}

int main(int argc, char **argv) {
    int shapes[][3] = {{1576, 2304, 768}, {1576, 768, 768}, {1576, 3072, 768}, {1576, 768, 3072},
                       {77, 1536, 512},   {77, 512, 2048},  {2, 768, 768},     {1, 3072, 768}};
    int nshapes = sizeof shapes / sizeof shapes[0];
    if (argc > 1) ml_set_threads(atoi(argv[1]));
    int reps = argc > 2 ? atoi(argv[2]) : 5;
    ml_isa isa = ml_isa_active();
    int threads = ml_num_threads();
    double peak = fma_peak(isa);
    printf("isa %s, %d thread(s); FMA peak %.1f GFLOP/s per core, %.1f for %d\n", ml_isa_name(isa),
           threads, peak, peak * threads, threads);
    for (int s = 0; s < nshapes; s++) {
        int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        double dt = bench_shape(M, N, K, M < 100 ? reps * 20 : reps);
        double g = 2.0 * M * N * K / dt / 1e9;
        printf("M=%4d N=%4d K=%4d: %8.3f ms, %6.1f GFLOP/s", M, N, K, dt * 1e3, g);
        if (peak > 0) printf(" (%.0f%% of %d-core peak)", 100 * g / (peak * threads), threads);
        printf("\n");
    }
    double at = bench_attention(3);
    printf("attention 8 seq x 12 heads, T=197, hd=64, 1 thread: %.2f ms (%.1f GFLOP/s)\n", at * 1e3,
           8 * 12 * 4.0 * 197 * 197 * 64 / at / 1e9);
    return 0;
}
