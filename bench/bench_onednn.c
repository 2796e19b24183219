/* bench_onednn - oneDNN (C API, dnnl.h, 2.x) matmul on MagicLens' linear-layer
 * shapes, for comparison with the project's own kernels (ml_gemm /
 * ml_gemm_packed).  Benchmark only: the product does not link oneDNN.
 *
 * C[M,N] = A[M,K] @ B[K,N], A f32 row-major, B f32 [K,N] row-major (Flax
 * [in, out] kernel layout), C f32.  Cases per shape:
 *   f32-inplace  f32 matmul, weights in their given [K,N] layout (no copy)
 *   f32-packed   f32 matmul, weights reordered once to format_tag::any
 *   bf16         bf16 x bf16 -> f32, weights reordered once; src already bf16
 *   bf16+cvt     same, plus the per-call f32 -> bf16 src reorder (timed)
 *   u8s8         u8 x s8 -> f32, per-N (output-channel) scales, src already u8
 *   s8s8         s8 x s8 -> f32, per-N scales, src already s8
 *   s8s8+q       s8s8 plus the per-call f32 -> s8 src reorder (per-tensor
 *                static scale; no amax pass, no per-row scales) (timed)
 * Weight reorders are done once, outside timing.  Reported: best (minimum)
 * time of `reps` runs after one warm-up, as GFLOP/s (int8: GOP/s) = 2MNK/t,
 * the implementation name oneDNN chose, and a spot check of the result
 * against a double-precision reference (max relative error on 64 entries).
 *
 * Also measures the AVX-512 FMA peak (register-only loop) on 1 and 2
 * threads so that numbers can be read as a fraction of the fp32 peak.
 *
 * build: cc -O2 -std=c11 -D_GNU_SOURCE bench/bench_onednn.c -o bench_onednn -ldnnl -pthread -lm
 * run:   OMP_NUM_THREADS=2 ./bench_onednn [reps]
 *        (DNNL_VERBOSE=1 to see dispatch; DNNL_MAX_CPU_ISA=AVX512_CORE_AMX etc.;
 *        BENCH_TRACE=1 prints every repetition's time to stderr) */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <oneapi/dnnl/dnnl.h>

#define CHECK(x)                                                                   \
    do {                                                                           \
        dnnl_status_t st_ = (x);                                                   \
        if (st_ != dnnl_success) {                                                 \
            fprintf(stderr, "%s:%d: %s -> status %d\n", __FILE__, __LINE__, #x, st_); \
            return -1;                                                             \
        }                                                                          \
    } while (0)

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- FMA peak: 12 independent zmm FMA chains per iteration ---- */
#define FMA1(i) "vfmadd231ps %%zmm14, %%zmm15, %%zmm" #i "\n\t"
static void *peak_thread(void *arg) {
    long iters = *(long *)arg;
    /* zero the operands first: garbage left in zmm14/15 can make the
     * accumulators denormal, and denormal FMAs take microcode assists */
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

/* ---- oneDNN cases ---- */
enum { C_F32_INPLACE, C_F32_PACKED, C_BF16, C_BF16_CVT, C_U8S8, C_S8S8, C_S8S8_Q, C_COUNT };
static const char *case_name[] = {"f32-inplace", "f32-packed", "bf16",  "bf16+cvt",
                                  "u8s8",        "s8s8",       "s8s8+q"};

static dnnl_engine_t eng;
static dnnl_stream_t strm;

static int reorder(dnnl_memory_t from, dnnl_memory_t to, const dnnl_primitive_attr_t attr) {
    const dnnl_memory_desc_t *fmd, *tmd;
    dnnl_memory_get_memory_desc(from, &fmd);
    dnnl_memory_get_memory_desc(to, &tmd);
    dnnl_primitive_desc_t rpd;
    CHECK(dnnl_reorder_primitive_desc_create(&rpd, fmd, eng, tmd, eng, attr));
    dnnl_primitive_t r;
    CHECK(dnnl_primitive_create(&r, rpd));
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
    CHECK(dnnl_primitive_execute(r, strm, 2, args));
    CHECK(dnnl_stream_wait(strm));
    dnnl_primitive_destroy(r);
    dnnl_primitive_desc_destroy(rpd);
    return 0;
}

/* Runs one case; returns GFLOP/s (or -1), fills impl and err. */
static double run_case(int c, int M, int N, int K, const float *A, const float *B, int reps,
                       char *impl, size_t impl_len, double *err) {
    dnnl_data_type_t sdt = dnnl_f32, wdt = dnnl_f32;
    if (c == C_BF16 || c == C_BF16_CVT) sdt = wdt = dnnl_bf16;
    if (c == C_U8S8) sdt = dnnl_u8, wdt = dnnl_s8;
    if (c == C_S8S8 || c == C_S8S8_Q) sdt = wdt = dnnl_s8;
    int int8 = wdt == dnnl_s8;
    dnnl_dims_t sd = {M, K}, wd = {K, N}, dd = {M, N};
    dnnl_memory_desc_t smd, wmd, dmd, a32md, b32md;
    CHECK(dnnl_memory_desc_init_by_tag(&smd, 2, sd, sdt, dnnl_ab));
    CHECK(dnnl_memory_desc_init_by_tag(&wmd, 2, wd, wdt, c == C_F32_INPLACE ? dnnl_ab : dnnl_format_tag_any));
    CHECK(dnnl_memory_desc_init_by_tag(&dmd, 2, dd, dnnl_f32, dnnl_ab));
    CHECK(dnnl_memory_desc_init_by_tag(&a32md, 2, sd, dnnl_f32, dnnl_ab));
    CHECK(dnnl_memory_desc_init_by_tag(&b32md, 2, wd, dnnl_f32, dnnl_ab));

    /* int8 scales: per-output-channel symmetric weights, per-tensor src. */
    float *wscale = NULL, *wscale_inv = NULL, *oscale = NULL;
    float amax = 0, sscale = 1; /* src value = q / sscale */
    if (int8) {
        for (size_t i = 0; i < (size_t)M * K; i++) amax = fmaxf(amax, fabsf(A[i]));
        sscale = (sdt == dnnl_u8 ? 255.0f : 127.0f) / amax;
        wscale = malloc(N * sizeof(float)), wscale_inv = malloc(N * sizeof(float));
        oscale = malloc(N * sizeof(float));
        for (int n = 0; n < N; n++) {
            float mx = 1e-30f;
            for (int k = 0; k < K; k++) mx = fmaxf(mx, fabsf(B[(size_t)k * N + n]));
            wscale[n] = mx / 127.0f, wscale_inv[n] = 127.0f / mx;
            oscale[n] = wscale[n] / sscale;
        }
    }

    dnnl_matmul_desc_t md;
    CHECK(dnnl_matmul_desc_init(&md, &smd, &wmd, NULL, &dmd));
    dnnl_primitive_attr_t attr;
    CHECK(dnnl_primitive_attr_create(&attr));
    if (int8) CHECK(dnnl_primitive_attr_set_output_scales(attr, N, 1 << 1, oscale));
    dnnl_primitive_desc_t pd;
    dnnl_status_t st = dnnl_primitive_desc_create(&pd, &md, attr, eng, NULL);
    if (st != dnnl_success) {
        snprintf(impl, impl_len, "unsupported (status %d)", st);
        return -1;
    }
    const char *info = NULL;
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &info);
    snprintf(impl, impl_len, "%s", info ? info : "?");
    const dnnl_memory_desc_t *wmd_real = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    dnnl_primitive_t mm;
    CHECK(dnnl_primitive_create(&mm, pd));

    /* memories */
    dnnl_memory_t a32, b32, src, wei, dst;
    CHECK(dnnl_memory_create(&a32, &a32md, eng, (void *)A));
    CHECK(dnnl_memory_create(&b32, &b32md, eng, (void *)B));
    float *C = malloc((size_t)M * N * sizeof(float));
    CHECK(dnnl_memory_create(&dst, &dmd, eng, C));
    if (c == C_F32_INPLACE || c == C_F32_PACKED) src = a32;
    else CHECK(dnnl_memory_create(&src, &smd, eng, DNNL_MEMORY_ALLOCATE));
    if (c == C_F32_INPLACE) wei = b32; /* in place: no copy of the weights */
    else CHECK(dnnl_memory_create(&wei, wmd_real, eng, DNNL_MEMORY_ALLOCATE));

    /* one-time weight reorder (f32 -> packed f32 / bf16 / s8 with per-N scale) */
    if (c != C_F32_INPLACE) {
        dnnl_primitive_attr_t wa;
        CHECK(dnnl_primitive_attr_create(&wa));
        if (int8) CHECK(dnnl_primitive_attr_set_output_scales(wa, N, 1 << 1, wscale_inv));
        if (reorder(b32, wei, wa)) return -1;
        dnnl_primitive_attr_destroy(wa);
    }
    /* src conversion primitive (also used per call for the +cvt / +q cases) */
    dnnl_primitive_t srcr = NULL;
    dnnl_primitive_desc_t srpd = NULL;
    if (src != a32) {
        dnnl_primitive_attr_t sa;
        CHECK(dnnl_primitive_attr_create(&sa));
        if (int8) CHECK(dnnl_primitive_attr_set_output_scales(sa, 1, 0, &sscale));
        CHECK(dnnl_reorder_primitive_desc_create(&srpd, &a32md, eng, &smd, eng, sa));
        CHECK(dnnl_primitive_create(&srcr, srpd));
        dnnl_primitive_attr_destroy(sa);
        if (sdt == dnnl_u8) {
            /* u8 case: shift to [0,255] would need a src zero point; for the
             * kernel timing use |A| quantized (values only matter for the check). */
            uint8_t *q;
            dnnl_memory_get_data_handle(src, (void **)&q);
            for (size_t i = 0; i < (size_t)M * K; i++) q[i] = (uint8_t)lrintf(fabsf(A[i]) * sscale);
        } else {
            dnnl_exec_arg_t ra[2] = {{DNNL_ARG_FROM, a32}, {DNNL_ARG_TO, src}};
            CHECK(dnnl_primitive_execute(srcr, strm, 2, ra));
            CHECK(dnnl_stream_wait(strm));
        }
    }
    int per_call = c == C_BF16_CVT || c == C_S8S8_Q;
    dnnl_exec_arg_t margs[3] = {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, dst}};
    dnnl_exec_arg_t rargs[2] = {{DNNL_ARG_FROM, a32}, {DNNL_ARG_TO, src}};
    double best = 1e30;
    for (int r = 0; r <= reps; r++) { /* run 0 warms up */
        double t0 = now();
        if (per_call) CHECK(dnnl_primitive_execute(srcr, strm, 2, rargs));
        CHECK(dnnl_primitive_execute(mm, strm, 3, margs));
        CHECK(dnnl_stream_wait(strm));
        double dt = now() - t0;
        if (r > 0 && dt < best) best = dt;
        if (getenv("BENCH_TRACE")) fprintf(stderr, "%s %dx%dx%d rep %d: %.3f ms\n", case_name[c], M, N, K, r, dt * 1e3);
    }

    /* spot check against a double reference (u8 case: reference uses |A|) */
    double maxerr = 0;
    for (int s = 0; s < 64; s++) {
        int m = (int)((s * 7919L) % M), n = (int)((s * 104729L) % N);
        double ref = 0, mag = 0;
        for (int k = 0; k < K; k++) {
            double a = A[(size_t)m * K + k];
            if (sdt == dnnl_u8) a = fabs(a);
            ref += a * B[(size_t)k * N + n];
            mag += fabs(a * B[(size_t)k * N + n]);
        }
        double e = fabs(C[(size_t)m * N + n] - ref) / (mag > 0 ? mag : 1);
        if (e > maxerr) maxerr = e;
    }
    *err = maxerr;

    if (srcr) dnnl_primitive_destroy(srcr), dnnl_primitive_desc_destroy(srpd);
    if (src != a32) dnnl_memory_destroy(src);
    if (wei != b32) dnnl_memory_destroy(wei);
    dnnl_memory_destroy(a32), dnnl_memory_destroy(b32), dnnl_memory_destroy(dst);
    dnnl_primitive_destroy(mm), dnnl_primitive_desc_destroy(pd), dnnl_primitive_attr_destroy(attr);
    free(C), free(wscale), free(wscale_inv), free(oscale);
    return 2.0 * M * N * K / best / 1e9;
}

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 10;
    const char *only = argc > 2 ? argv[2] : NULL; /* optional: run only this case name */
    const int shapes[][3] = {{1576, 768, 768}, {1576, 2304, 768}, {1576, 3072, 768},
                             {1576, 768, 3072}, {77, 512, 512},   {77, 1536, 512},
                             {77, 2048, 512},   {77, 512, 2048}};
    const dnnl_version_t *v = dnnl_version();
    double p1 = fma_peak(1), p2 = fma_peak(2);
    printf("oneDNN %d.%d.%d (hash %s, cpu_runtime %u), OMP_NUM_THREADS=%s, effective ISA 0x%x\n",
           v->major, v->minor, v->patch, v->hash, v->cpu_runtime,
           getenv("OMP_NUM_THREADS") ? getenv("OMP_NUM_THREADS") : "(unset)",
           (unsigned)dnnl_get_effective_cpu_isa());
    printf("FMA peak (AVX-512 fp32): 1 thread %.1f GFLOP/s, 2 threads %.1f GFLOP/s\n", p1, p2);
    if (dnnl_engine_create(&eng, dnnl_cpu, 0) != dnnl_success) return 1;
    if (dnnl_stream_create(&strm, eng, dnnl_stream_default_flags) != dnnl_success) return 1;
    printf("%-5s %-5s %-5s %-12s %9s %7s %9s  %s\n", "M", "N", "K", "case", "GFLOP/s", "%pk2", "relerr",
           "impl");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        float *A = malloc((size_t)M * K * sizeof(float)), *B = malloc((size_t)K * N * sizeof(float));
        for (size_t i = 0; i < (size_t)M * K; i++) A[i] = (float)((i * 7919) % 201) / 100.0f - 1.0f;
        for (size_t i = 0; i < (size_t)K * N; i++) B[i] = (float)((i * 104729) % 199) / 1000.0f - 0.1f;
        for (int c = 0; c < C_COUNT; c++) {
            if (only && strcmp(only, case_name[c])) continue;
            char impl[256];
            double err = 0;
            double g = run_case(c, M, N, K, A, B, M < 100 ? reps * 10 : reps, impl, sizeof impl, &err);
            if (g < 0) printf("%-5d %-5d %-5d %-12s %9s %7s %9s  %s\n", M, N, K, case_name[c], "-", "-", "-", impl);
            else
                printf("%-5d %-5d %-5d %-12s %9.1f %6.0f%% %9.2e  %s\n", M, N, K, case_name[c], g,
                       100 * g / p2, err, impl);
            fflush(stdout);
        }
        free(A), free(B);
    }
    dnnl_stream_destroy(strm), dnnl_engine_destroy(eng);
    return 0;
}
