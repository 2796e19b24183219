/* bench_qgemm - GFLOP/s (int8: GOP/s, 2 per multiply-add) of ml_gemm_packed
 * per shape, ISA and precision, with fp32 ml_gemm for comparison.  Shapes:
 * the ViT-B/16 batch-8 linear layers (M = 8 * 197) and text-tower sizes.
 * Usage: [BENCH_ISA=amx] bench_qgemm [threads] [reps].  Best of `reps` runs is reported
 * (the machine is shared; the best run is the least disturbed). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/progress.h"
#include "core/threads.h"
#include "kernels/cpu.h"
#include "kernels/gemm.h"
#include "kernels/precision.h"
#include "magiclens.h"

/* Wall time, or with BENCH_CPUTIME=1 this process's CPU time: on a shared
 * machine a 1-thread run then counts only the time it was on a core. */
static double now(void) {
    static int cpu = -1;
    if (cpu < 0) cpu = getenv("BENCH_CPUTIME") && !strcmp(getenv("BENCH_CPUTIME"), "1");
    if (!cpu) return ml_now();
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct shape {
    int M, N, K;
} shape;

static double best_of(int reps, int M, const float *A, const ml_packed *p, const shape *s,
                      const float *B, float *C) {
    double best = 1e30;
    for (int r = 0; r <= reps; r++) { /* run 0 warms caches and pages */
        double t0 = now();
        if (p) ml_gemm_packed(M, A, s->K, p, NULL, C, s->N, 0);
        else ml_gemm(M, s->N, s->K, A, s->K, B, s->N, NULL, C, s->N, 0);
        double dt = now() - t0;
        if (r > 0 && dt < best) best = dt;
    }
    return best;
}

/* The bf16 pipeline's product: bf16 activations in, float32 or bf16 out. */
static double best_of_bf16(int reps, const ml_packed *p, const shape *s, const uint16_t *Ab,
                           float *C, uint16_t *Cb) {
    double best = 1e30;
    for (int r = 0; r <= reps; r++) {
        double t0 = now();
        ml_gemm_bf16(s->M, Ab, ml_packed_k(p), p, NULL, Cb ? NULL : C, Cb, s->N, 0);
        double dt = now() - t0;
        if (r > 0 && dt < best) best = dt;
    }
    return best;
}

static void bench_bf16_in(const shape *s, int reps, const float *B, double flop) {
    ml_packed *p = ml_pack_weights(B, s->K, s->N, ML_PREC_BF16, ML_ISA_AMX, NULL);
    if (!p) return;
    size_t rows = (size_t)(s->M + 31) / 32 * 32, kp = (size_t)ml_packed_k(p);
    uint16_t *Ab = calloc(rows * kp, 2), *Cb = malloc(rows * s->N * 2);
    float *C = malloc(sizeof(float) * rows * s->N);
    for (size_t i = 0; i < (size_t)s->M * kp; i++) Ab[i] = (uint16_t)(0x3c00 + (i * 7919) % 512);
    printf(" | bf16-in/amx f32-out %7.1f", flop / best_of_bf16(reps, p, s, Ab, C, NULL) / 1e9);
    printf(" bf16-out %7.1f", flop / best_of_bf16(reps, p, s, Ab, C, Cb) / 1e9);
    free(Ab), free(Cb), free(C);
    ml_packed_free(p);
}

static void bench_shape(const shape *s, int reps) {
    float *A = malloc(sizeof(float) * (size_t)s->M * s->K);
    float *B = malloc(sizeof(float) * (size_t)s->K * s->N);
    float *C = malloc(sizeof(float) * (size_t)s->M * s->N);
    for (size_t i = 0; i < (size_t)s->M * s->K; i++) A[i] = (float)((i * 7919) % 201) / 100.0f - 1.0f;
    for (size_t i = 0; i < (size_t)s->K * s->N; i++) B[i] = (float)((i * 104729) % 199) / 1000.0f - 0.1f;
    double flop = 2.0 * s->M * s->N * s->K;
    printf("M=%-5d N=%-5d K=%-5d", s->M, s->N, s->K);
    const char *only = getenv("BENCH_ISA"); /* e.g. BENCH_ISA=amx: that ISA only, no fp32 */
    double t;
    if (!only) {
        t = best_of(reps, s->M, A, NULL, s, B, C);
        printf(" | fp32 %7.1f", flop / t / 1e9);
    }
    int vnni = ml_cpu_has_avx_vnni();
    for (int prec = ML_PREC_BF16; prec <= ML_PREC_INT8; prec++)
        for (int path = 0; path <= 2 * ML_ISA_AMX + 1; path++) {
            /* each ISA; int8 on AVX2 / AVX-512 also without AVX-VNNI (the u8 x s8 kernel) */
            int isa = path / 2, no_vnni = path % 2;
            if (!ml_isa_supported((ml_isa)isa)) continue;
            if (no_vnni && (!vnni || prec != ML_PREC_INT8 || isa == ML_ISA_SCALAR || isa == ML_ISA_AMX ||
                            (isa == ML_ISA_AVX512 && ml_cpu_has_avx512_vnni())))
                continue;
            if (only && strcmp(only, ml_isa_name((ml_isa)isa)) != 0) continue;
            if (isa == ML_ISA_SCALAR && s->M * (double)s->N * s->K > 2e8) {
                printf(" | %s/%s %7s", ml_precision_name((ml_precision)prec), ml_isa_name((ml_isa)isa), "-");
                continue; /* the portable path is for correctness; too slow to time here */
            }
            ml_cpu_set_avx_vnni(vnni && !no_vnni);
            ml_packed *p = ml_pack_weights(B, s->K, s->N, (ml_precision)prec, (ml_isa)isa, NULL);
            ml_cpu_set_avx_vnni(vnni);
            if (!p) continue;
            int saved = ml_isa_active(); /* the float32 GEMM under avx2-bf16w is the active ISA's */
            ml_isa_set((ml_isa)isa, NULL);
            t = best_of(reps, s->M, A, p, s, B, C);
            ml_isa_set((ml_isa)saved, NULL);
            printf(" | %s %7.1f", ml_packed_kernel_name(p), flop / t / 1e9);
            ml_packed_free(p);
        }
    if (ml_isa_supported(ML_ISA_AMX) && (!only || !strcmp(only, "amx"))) bench_bf16_in(s, reps, B, flop);
    printf("\n");
    fflush(stdout);
    free(A), free(B), free(C);
}

int main(int argc, char **argv) {
    const shape shapes[] = {{1576, 768, 768},  {1576, 2304, 768}, {1576, 3072, 768},
                            {1576, 768, 3072}, {616, 512, 512},   {77, 512, 512},
                            {1, 512, 512}};
    if (argc > 1) ml_set_threads(atoi(argv[1]));
    int reps = argc > 2 ? atoi(argv[2]) : 5;
    printf("GFLOP/s (int8: GOP/s), best of %d, %d threads\n", reps, ml_num_threads());
    shape one;
    const char *env = getenv("BENCH_SHAPE"); /* "M,N,K": that shape only */
    if (env && sscanf(env, "%d,%d,%d", &one.M, &one.N, &one.K) == 3 && one.M > 0 && one.N > 0 && one.K > 0) {
        bench_shape(&one, reps);
        return 0;
    }
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) bench_shape(&shapes[i], reps);
    return 0;
}
