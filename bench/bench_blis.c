/* bench_blis - BLIS bli_sgemm (f32) on MagicLens' linear-layer shapes, for
 * comparison with the project's own ml_gemm.  Benchmark only: the product
 * does not link BLIS.
 *
 * C[M,N] = A[M,K] @ B[K,N], all f32 row-major, B in its given [K,N] layout
 * (Flax [in, out]; BLIS packs internally on every call, as ml_gemm does).
 * Reported: best (minimum) time of `reps` runs after one warm-up, as GFLOP/s,
 * with the sub-configuration BLIS picked at run time and a spot check
 * against a double-precision reference.  Also measures the AVX-512 FMA peak
 * (register-only loop) on 1 and 2 threads.
 *
 * With -DWITH_ML_GEMM (and the project's include paths and library) the
 * same binary can also time the project's ml_gemm on the same shapes and
 * data: `bench_blis ml [threads] [reps]` (separate process, so no OpenMP
 * runtime is active while ml_gemm runs).
 *
 * build: cc -O2 -std=c11 -D_GNU_SOURCE -isystem /usr/include/x86_64-linux-gnu/blis-openmp \
 *           bench/bench_blis.c -o bench_blis -lblis -pthread -lm
 * run:   BLIS_NUM_THREADS=2 ./bench_blis blis [threads] [reps]
 *        (threads > 0 calls bli_thread_set_num_threads; 0 = leave to env) */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <blis.h>

#ifdef WITH_ML_GEMM
#include "core/threads.h"
#include "kernels/cpu.h"
#include "kernels/gemm.h"
#endif

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- FMA peak: 12 independent zmm FMA chains per iteration ---- */
#define FMA1(i) "vfmadd231ps %%zmm14, %%zmm15, %%zmm" #i "\n\t"
static void *peak_thread(void *arg) {
    long iters = *(long *)arg;
    /* zero the operands first (garbage could make the accumulators denormal) */
    __asm__ volatile("vpxord %%zmm0, %%zmm0, %%zmm0\n\tvmovaps %%zmm0, %%zmm1\n\t"
                     "vmovaps %%zmm0, %%zmm2\n\tvmovaps %%zmm0, %%zmm3\n\t"
                     "vmovaps %%zmm0, %%zmm4\n\tvmovaps %%zmm0, %%zmm5\n\t"
                     "vmovaps %%zmm0, %%zmm6\n\tvmovaps %%zmm0, %%zmm7\n\t"
                     "vmovaps %%zmm0, %%zmm8\n\tvmovaps %%zmm0, %%zmm9\n\t"
                     "vmovaps %%zmm0, %%zmm10\n\tvmovaps %%zmm0, %%zmm11\n\t"
                     "vmovaps %%zmm0, %%zmm14\n\tvmovaps %%zmm0, %%zmm15\n\t"
                     "1:\n\t" FMA1(0) FMA1(1) FMA1(2) FMA1(3) FMA1(4) FMA1(5) FMA1(6) FMA1(7)
                         FMA1(8) FMA1(9) FMA1(10) FMA1(11) "dec %0\n\tjnz 1b"
                     : "+r"(iters)
                     :
                     : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8",
                       "xmm9", "xmm10", "xmm11", "xmm14", "xmm15", "cc");
    return NULL;
}
static double fma_peak(int nthr) {
    long iters = 20000000;
    double best = 0;
    for (int rep = 0; rep < 5; rep++) {
        pthread_t t[16];
        double t0 = now();
        for (int i = 0; i < nthr; i++) pthread_create(&t[i], NULL, peak_thread, &iters);
        for (int i = 0; i < nthr; i++) pthread_join(t[i], NULL);
        double g = 12.0 * 2 * 16 * iters * nthr / (now() - t0) / 1e9;
        if (g > best) best = g;
    }
    return best;
}

static int use_ml;

static void gemm(int M, int N, int K, const float *A, const float *B, float *C) {
#ifdef WITH_ML_GEMM
    if (use_ml) {
        ml_gemm(M, N, K, A, K, B, N, NULL, C, N, 0);
        return;
    }
#endif
    float one = 1.0f, zero = 0.0f;
    bli_sgemm(BLIS_NO_TRANSPOSE, BLIS_NO_TRANSPOSE, M, N, K, &one, (float *)A, K, 1, (float *)B, N, 1,
              &zero, C, N, 1);
}

int main(int argc, char **argv) {
    const char *lib = argc > 1 ? argv[1] : "blis";
    int threads = argc > 2 ? atoi(argv[2]) : 0;
    int reps = argc > 3 ? atoi(argv[3]) : 10;
    use_ml = !strcmp(lib, "ml");
#ifndef WITH_ML_GEMM
    if (use_ml) {
        fprintf(stderr, "built without -DWITH_ML_GEMM\n");
        return 2;
    }
#endif
    const int shapes[][3] = {{1576, 768, 768}, {1576, 2304, 768}, {1576, 3072, 768},
                             {1576, 768, 3072}, {77, 512, 512},   {77, 1536, 512},
                             {77, 2048, 512},   {77, 512, 2048}};
    double p1 = fma_peak(1), p2 = fma_peak(2);
    if (use_ml) {
#ifdef WITH_ML_GEMM
        if (threads > 0) ml_set_threads(threads);
        printf("ml_gemm, isa %s, %d thread(s)\n", ml_isa_name(ml_isa_active()), ml_num_threads());
#endif
    } else {
        if (threads > 0) bli_thread_set_num_threads(threads);
        printf("BLIS %s, config %s, openmp %d pthreads %d, threads %ld (BLIS_NUM_THREADS=%s)\n",
               bli_info_get_version_str(), bli_arch_string(bli_arch_query_id()),
               (int)bli_info_get_enable_openmp(), (int)bli_info_get_enable_pthreads(),
               (long)bli_thread_get_num_threads(),
               getenv("BLIS_NUM_THREADS") ? getenv("BLIS_NUM_THREADS") : "(unset)");
    }
    printf("FMA peak (AVX-512 fp32): 1 thread %.1f GFLOP/s, 2 threads %.1f GFLOP/s\n", p1, p2);
    printf("%-5s %-5s %-5s %9s %7s %9s\n", "M", "N", "K", "GFLOP/s", "%pk2", "relerr");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        float *A = malloc((size_t)M * K * sizeof(float)), *B = malloc((size_t)K * N * sizeof(float));
        float *C = malloc((size_t)M * N * sizeof(float));
        for (size_t i = 0; i < (size_t)M * K; i++) A[i] = (float)((i * 7919) % 201) / 100.0f - 1.0f;
        for (size_t i = 0; i < (size_t)K * N; i++) B[i] = (float)((i * 104729) % 199) / 1000.0f - 0.1f;
        int r_n = M < 100 ? reps * 10 : reps;
        double best = 1e30;
        for (int r = 0; r <= r_n; r++) {
            double t0 = now();
            gemm(M, N, K, A, B, C);
            double dt = now() - t0;
            if (r > 0 && dt < best) best = dt;
        }
        double maxerr = 0;
        for (int q = 0; q < 64; q++) {
            int m = (int)((q * 7919L) % M), n = (int)((q * 104729L) % N);
            double ref = 0, mag = 0;
            for (int k = 0; k < K; k++) {
                double p = (double)A[(size_t)m * K + k] * B[(size_t)k * N + n];
                ref += p, mag += fabs(p);
            }
            double e = fabs(C[(size_t)m * N + n] - ref) / (mag > 0 ? mag : 1);
            if (e > maxerr) maxerr = e;
        }
        double g = 2.0 * M * N * K / best / 1e9;
        printf("%-5d %-5d %-5d %9.1f %6.0f%% %9.2e\n", M, N, K, g, 100 * g / p2, maxerr);
        fflush(stdout);
        free(A), free(B), free(C);
    }
    return 0;
}
