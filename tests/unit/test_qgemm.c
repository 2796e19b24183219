/* Low-precision GEMM tests.  For every ISA this machine runs and both
 * precisions, ml_gemm_packed is compared with
 *   - a double-precision product of the SAME quantised inputs (the test
 *     re-does the bf16 rounding / int8 quantisation itself): a tight bound
 *     that only float32 summation order may use;
 *   - the double product of the original float inputs, with the elementwise
 *     worst-case bound the quantisation allows (a loose bound);
 *   - the portable path's result (AMX vs AVX-512 vs reference).
 * Sizes hit every edge: M = 1, 3, 17, 72, 77, 80, 100, 1576; K not a multiple of 32/64;
 * N not a multiple of 16 and odd panel counts; strided lda/ldc; bias and
 * accumulate on and off; 1 and 2 threads. */
#include <math.h>
#include <stdint.h>

#include "check.h"
#include "magiclens.h"
#include "kernels/cpu.h"
#include "kernels/ops.h"
#include "kernels/gemm_isa.h"
#include "kernels/precision.h"
#include "kernels/qgemm_avx2.h"

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static float frand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0);
}

static float bf16_round(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    memcpy(&f, &u, 4);
    return f;
}

static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* The documented int8 scheme: weights symmetric per column (qmax 127, or
 * 63 for the AVX2 u8 x s7 kernel), activations asymmetric u8 per row (0
 * exactly representable).  Returns dequantised values; *step gets the
 * quantisation step (scale). */
static void quant_col(const float *B, int K, int N, int n, int qmax, double *out, double *step) {
    float mx = 0.0f;
    for (int k = 0; k < K; k++) mx = fmaxf(mx, fabsf(B[(size_t)k * N + n]));
    float inv = mx > 0.0f ? (float)qmax / mx : 0.0f, s = mx / (float)qmax;
    for (int k = 0; k < K; k++)
        out[k] = (double)clampi((int)lrintf(B[(size_t)k * N + n] * inv), -qmax, qmax) * s;
    *step = s;
}

static void quant_row(const float *a, int K, double *out, double *step) {
    float mn = 0.0f, mx = 0.0f;
    for (int k = 0; k < K; k++) mn = fminf(mn, a[k]), mx = fmaxf(mx, a[k]);
    float s = (mx - mn) / 255.0f, inv = s > 0.0f ? 1.0f / s : 0.0f;
    int z = clampi((int)lrintf(-mn * inv), 0, 255);
    for (int k = 0; k < K; k++) out[k] = (double)(clampi((int)lrintf(a[k] * inv) + z, 0, 255) - z) * s;
    *step = s;
}

typedef struct qcase {
    int M, N, K, lda, ldc, bias, acc;
} qcase;

typedef struct qdata {
    float *A, *B, *bias, *C0;
    double *Aq, *Bq, *sa, *sb; /* quantised copies [M,K], [N,K]; steps (int8) */
    double *Bq7, *sb7;         /* int8: the 7-bit weights of avx2-u8s7 */
    double *slack;             /* [M,N] float32 summation-order allowance */
} qdata;

static void make_data(const qcase *c, ml_precision prec, qdata *d) {
    d->A = malloc(sizeof(float) * (size_t)c->M * c->lda);
    d->B = malloc(sizeof(float) * (size_t)c->K * c->N);
    d->bias = malloc(sizeof(float) * c->N);
    d->C0 = malloc(sizeof(float) * (size_t)c->M * c->ldc);
    for (size_t i = 0; i < (size_t)c->M * c->lda; i++) d->A[i] = frand();
    for (size_t i = 0; i < (size_t)c->K * c->N; i++) d->B[i] = frand() * 0.1f;
    for (int i = 0; i < c->N; i++) d->bias[i] = frand();
    for (size_t i = 0; i < (size_t)c->M * c->ldc; i++) d->C0[i] = frand();
    /* awkward rows/columns: all zero, all positive (GELU-like), large */
    if (c->M > 2) {
        for (int k = 0; k < c->K; k++) d->A[k] = 0.0f;
        for (int k = 0; k < c->K; k++) d->A[(size_t)c->lda + k] = fabsf(d->A[(size_t)c->lda + k]);
        for (int k = 0; k < c->K; k++) d->A[(size_t)2 * c->lda + k] *= 300.0f;
    }
    if (c->N > 1)
        for (int k = 0; k < c->K; k++) d->B[(size_t)k * c->N + 1] = 0.0f;
    d->Aq = malloc(sizeof(double) * (size_t)c->M * c->K);
    d->Bq = malloc(sizeof(double) * (size_t)c->N * c->K);
    d->sa = calloc((size_t)c->M, sizeof(double));
    d->sb = calloc((size_t)c->N, sizeof(double));
    d->Bq7 = malloc(sizeof(double) * (size_t)c->N * c->K);
    d->sb7 = calloc((size_t)c->N, sizeof(double));
    d->slack = calloc((size_t)c->M * c->N, sizeof(double));
    for (int i = 0; i < c->M; i++) {
        const float *a = d->A + (size_t)i * c->lda;
        if (prec == ML_PREC_INT8) quant_row(a, c->K, d->Aq + (size_t)i * c->K, &d->sa[i]);
        else
            for (int k = 0; k < c->K; k++) d->Aq[(size_t)i * c->K + k] = bf16_round(a[k]);
    }
    for (int n = 0; n < c->N; n++) {
        if (prec == ML_PREC_INT8) {
            quant_col(d->B, c->K, c->N, n, 127, d->Bq + (size_t)n * c->K, &d->sb[n]);
            quant_col(d->B, c->K, c->N, n, 63, d->Bq7 + (size_t)n * c->K, &d->sb7[n]);
        } else
            for (int k = 0; k < c->K; k++) d->Bq[(size_t)n * c->K + k] = bf16_round(d->B[(size_t)k * c->N + n]);
    }
}

static void free_data(qdata *d) {
    free(d->A), free(d->B), free(d->bias), free(d->C0);
    free(d->Aq), free(d->Bq), free(d->sa), free(d->sb), free(d->slack), free(d->Bq7), free(d->sb7);
}

/* Checks C against both references; returns the worst relative error vs
 * the float product (in units of sum |a b|) for the report line. */
static double check_result(const qcase *c, ml_precision prec, qdata *d, const float *C,
                           const char *what, int f32_act, int w7) {
    double worst = 0.0;
    const double *Bq = w7 ? d->Bq7 : d->Bq, *sb = w7 ? d->sb7 : d->sb;
    int bad_tight = 0, bad_loose = 0;
    for (int i = 0; i < c->M; i++)
        for (int n = 0; n < c->N; n++) {
            double q = 0, f = 0, mag = 0, loose = 0;
            for (int k = 0; k < c->K; k++) {
                double a = d->A[(size_t)i * c->lda + k], b = d->B[(size_t)k * c->N + n];
                /* bf16 weights widened to float32 ("...-bf16w"): float32 activations */
                double aq = f32_act ? a : d->Aq[(size_t)i * c->K + k], bq = Bq[(size_t)n * c->K + k];
                q += aq * bq, f += a * b, mag += fabs(aq * bq);
                /* |a b - aq bq| <= |a| db + |bq| da: half a step (int8); bf16 keeps 8
                 * significant bits, so each rounding is within 2^-8 relative */
                loose += prec == ML_PREC_INT8
                             ? fabs(a) * sb[n] / 2 + fabs(bq) * d->sa[i] / 2
                             : (fabs(a * b) + fabs(aq * bq)) * (1.0 / 256);
            }
            double base = (c->acc ? d->C0[(size_t)i * c->ldc + n] : 0.0) + (c->bias ? d->bias[n] : 0.0);
            double got = C[(size_t)i * c->ldc + n];
            double slack = 1e-5 * (mag + fabs(base)) + 1e-6;
            d->slack[(size_t)i * c->N + n] = slack;
            if (fabs(got - (q + base)) > slack) bad_tight++;
            if (fabs(got - (f + base)) > loose * 1.01 + slack) bad_loose++;
            double e = mag > 0 ? fabs(got - (f + base)) / mag : 0.0;
            if (e > worst) worst = e;
        }
    CHECK_MSG(bad_tight == 0, "%s M=%d N=%d K=%d: %d outputs off the quantised product", what, c->M,
              c->N, c->K, bad_tight);
    CHECK_MSG(bad_loose == 0, "%s M=%d N=%d K=%d: %d outputs off the float product", what, c->M,
              c->N, c->K, bad_loose);
    /* ldc padding must be untouched */
    int pad_ok = 1;
    for (int i = 0; i < c->M; i++)
        for (int n = c->N; n < c->ldc; n++)
            pad_ok &= C[(size_t)i * c->ldc + n] == d->C0[(size_t)i * c->ldc + n];
    CHECK_MSG(pad_ok, "%s: wrote outside N columns", what);
    return worst;
}

static int ends_with(const char *s, const char *tail) {
    size_t n = strlen(s), t = strlen(tail);
    return n >= t && strcmp(s + n - t, tail) == 0;
}

/* Runs one case on one path; returns C (caller frees) or NULL; *kernel
 * gets the name of the kernel that ran. */
static float *run_path(const qcase *c, ml_precision prec, ml_isa isa, const qdata *d,
                       const char **kernel) {
    ml_error err = {0};
    ml_packed *p = ml_pack_weights(d->B, c->K, c->N, prec, isa, &err);
    CHECK_MSG(p != NULL, "pack %s/%s: %s", ml_isa_name(isa), ml_precision_name(prec), err.msg);
    if (!p) return NULL;
    CHECK(ml_packed_bytes(p) > 0);
    *kernel = ml_packed_kernel_name(p);
    CHECK_MSG(!strcmp(*kernel, ml_gemm_kernel_name(prec, isa)), "%s: packed %s, named %s",
              ml_isa_name(isa), *kernel, ml_gemm_kernel_name(prec, isa));
    /* no precision runs the portable kernels where AVX2 exists */
    CHECK_MSG(isa == ML_ISA_SCALAR || strncmp(*kernel, "scalar", 6) != 0, "%s/%s runs %s",
              ml_isa_name(isa), ml_precision_name(prec), *kernel);
    float *C = malloc(sizeof(float) * (size_t)c->M * c->ldc);
    memcpy(C, d->C0, sizeof(float) * (size_t)c->M * c->ldc);
    ml_gemm_packed(c->M, d->A, c->lda, p, c->bias ? d->bias : NULL, C, c->ldc, c->acc);
    ml_packed_free(p);
    return C;
}

static void test_case(const qcase *c, ml_precision prec) {
    qdata d;
    make_data(c, prec, &d);
    float *ref = NULL;
    /* every ISA, and twice where the CPU offers a second kernel: int8 on
     * AVX2 / AVX-512 where it has AVX-VNNI (with it, and the AVX2 u8 x s7
     * kernel without), bf16 on AVX-512 where it has AVX512-BF16 (vdpbf16ps,
     * and the weights widened into the float32 kernel).  The portable path
     * always runs: the others are compared with it. */
    int vnni = ml_cpu_has_avx_vnni(), dot = ml_cpu_bf16_dot(), has_bf16 = ml_cpu_has_avx512_bf16();
    for (int path = 0; path < 2 * ML_ISA_COUNT; path++) {
        int isa = path / 2, alt = path % 2;
        int alt_ok = prec == ML_PREC_INT8 ? vnni && isa != ML_ISA_SCALAR : has_bf16 && isa == ML_ISA_AVX512;
        if ((isa != ML_ISA_SCALAR && !check_isa(isa)) || (alt && !alt_ok)) continue;
        if (prec == ML_PREC_INT8) ml_cpu_set_avx_vnni(vnni && !alt);
        else if (alt) ml_cpu_set_bf16_dot(!dot);
        const char *kernel = "?";
        float *C = run_path(c, prec, (ml_isa)isa, &d, &kernel);
        ml_cpu_set_avx_vnni(vnni);
        ml_cpu_set_bf16_dot(-1);
        if (!C) continue;
        char what[64];
        snprintf(what, sizeof what, "%s/%s", ml_isa_name((ml_isa)isa), kernel);
        int f32_act = ends_with(kernel, "bf16w"), w7 = ends_with(kernel, "u8s7");
        CHECK_MSG(!w7 || prec == ML_PREC_INT8, "%s for %s", kernel, ml_precision_name(prec));
        double worst = check_result(c, prec, &d, C, what, f32_act, w7);
        if (c->M >= 1576) printf("%-14s M=%d N=%d K=%d worst |err|/sum|ab| = %.2e\n", what, c->M, c->N, c->K, worst);
        if (!ref) {
            ref = C;
            continue;
        }
        if (w7) { /* its own 7-bit weights: checked against their exact product above */
            free(C);
            continue;
        }
        /* every path against the portable one: only summation order differs
         * (int8: identical integers, so identical floats) */
        double maxd = 0;
        int over = 0;
        for (int i = 0; i < c->M; i++)
            for (int n = 0; n < c->N; n++) {
                double x = fabs(C[(size_t)i * c->ldc + n] - ref[(size_t)i * c->ldc + n]);
                maxd = x > maxd ? x : maxd;
                over += x > 2 * d.slack[(size_t)i * c->N + n];
            }
        if (prec == ML_PREC_INT8) CHECK_MSG(maxd == 0.0, "%s differs from scalar by %g", what, maxd);
        else if (!f32_act) /* (float32 activations: checked against their own product above) */
            CHECK_MSG(over == 0, "%s: %d outputs differ from scalar (max %g)", what, over, maxd);
        free(C);
    }
    free(ref);
    free_data(&d);
}

static void test_sizes(void) {
    const qcase cases[] = {
        {1, 33, 40, 40, 33, 1, 0},     {3, 16, 64, 70, 20, 0, 1},    {17, 33, 770, 770, 40, 1, 1},
        {17, 48, 32, 32, 48, 0, 0},    {77, 100, 200, 203, 100, 1, 0}, {5, 1, 1, 1, 1, 1, 1},
        {1576, 33, 770, 771, 35, 1, 1}, {40, 64, 3072, 3072, 64, 1, 0},
        /* AMX driver: several L2 blocks of panels (bf16; int8 too at
         * K=1600) on one thread, short M split over panels on two; each
         * ends in a <= 16-row block */
        {80, 700, 800, 803, 701, 1, 1}, {100, 1105, 300, 300, 1105, 0, 0},
        {72, 700, 1600, 1600, 700, 1, 0},
    };
    for (int threads = 1; threads <= 2; threads++) {
        ml_set_threads(threads);
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            if (threads == 2 && cases[i].M >= 1576 && getenv("ML_SKIP_SLOW")) continue;
            test_case(&cases[i], ML_PREC_BF16);
            test_case(&cases[i], ML_PREC_INT8);
        }
    }
}

/* avx512-bf16w (AVX-512 without AVX512-BF16: Skylake-SP, Ice Lake; or
 * with Intel's slow one) is also run directly, on any AVX-512 CPU:
 * bf16 panels widened into the AVX-512 float32 micro-kernel's 32-column
 * panels (two bf16 panels each; a missing second one reads as zero). */
static void test_bf16w_avx512(void) {
#if defined(__x86_64__)
    if (!ml_isa_supported(ML_ISA_AVX512)) return;
    const qcase cases[] = {{77, 100, 200, 203, 101, 1, 0}, {1576, 40, 770, 771, 41, 1, 1},
                           {17, 16, 32, 32, 16, 0, 1}};
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        const qcase *c = &cases[t];
        qdata d;
        make_data(c, ML_PREC_BF16, &d);
        ml_packed *p = ml_pack_weights(d.B, c->K, c->N, ML_PREC_BF16, ML_ISA_AVX2, NULL);
        CHECK(p != NULL && !strcmp(ml_packed_kernel_name(p), "avx2-bf16w"));
        if (p) {
            float *C = malloc(sizeof(float) * (size_t)c->M * c->ldc);
            memcpy(C, d.C0, sizeof(float) * (size_t)c->M * c->ldc);
            ml_gemm_bfn(ML_ISA_AVX512, c->M, c->N, c->K, d.A, c->lda, qg_widen_bf16, p,
                        c->bias ? d.bias : NULL, C, c->ldc, c->acc, 0);
            check_result(c, ML_PREC_BF16, &d, C, "avx512-bf16w", 1, 0);
            free(C);
        }
        ml_packed_free(p);
        free_data(&d);
    }
#endif
}

static void test_api(void) {
    ml_error err = {0};
    float B[6] = {1, 2, 3, 4, 5, 6}, A[2] = {1, -1}, C[3];
    CHECK(ml_pack_weights(B, 2, 0, ML_PREC_BF16, ML_ISA_SCALAR, &err) == NULL);
    CHECK(err.msg[0] != 0);
    CHECK(ml_pack_weights(B, 2, 3, (ml_precision)7, ML_ISA_SCALAR, NULL) == NULL);
    ml_packed *p = ml_pack_weights(B, 2, 3, ML_PREC_FP32, ML_ISA_SCALAR, &err);
    CHECK(p != NULL);
    if (p) {
        ml_gemm_packed(1, A, 2, p, NULL, C, 3, 0);
        CHECK(C[0] == -3.0f && C[1] == -3.0f && C[2] == -3.0f);
    }
    ml_packed_free(p);
    ml_packed_free(NULL);
    CHECK(ml_precision_parse("bf16") == ML_PREC_BF16);
    CHECK(ml_precision_parse("int8") == ML_PREC_INT8);
    CHECK(ml_precision_parse("fp32") == ML_PREC_FP32);
    CHECK(ml_precision_parse("fp8") == -1);
    CHECK(strcmp(ml_precision_name(ML_PREC_INT8), "int8") == 0);
}

/* ml_gemm_packed_gelu == quick_gelu(ml_gemm_packed(...)) on every path (on
 * AMX the activation runs in the GEMM epilogue; strided ldc). */
static void test_gelu(void) {
    int M = 77, N = 40, K = 70, ldc = 45;
    float *A = malloc(sizeof(float) * M * K), *B = malloc(sizeof(float) * K * N);
    float *bias = malloc(sizeof(float) * N), *C1 = malloc(sizeof(float) * M * ldc);
    float *C2 = malloc(sizeof(float) * M * ldc);
    ml_isa saved = ml_isa_active();
    for (int i = 0; i < M * K; i++) A[i] = 3.0f * frand();
    for (int i = 0; i < K * N; i++) B[i] = frand();
    for (int i = 0; i < N; i++) bias[i] = frand();
    for (int isa = ML_ISA_SCALAR; isa < ML_ISA_COUNT; isa++) {
        if (!check_isa(isa) || ml_isa_set((ml_isa)isa, NULL) != 0) continue;
        /* the second kernels as in test_case: int8 without AVX-VNNI (u8 x
         * s7), bf16 with vdpbf16ps switched */
        int vnni = ml_cpu_has_avx_vnni(), dot = ml_cpu_bf16_dot();
        int bf16_alt = ml_cpu_has_avx512_bf16() && isa == ML_ISA_AVX512;
        for (int variant = 0; variant < 4; variant++) {
            int prec = variant < 2 ? ML_PREC_BF16 : ML_PREC_INT8, alt = variant % 2;
            if (alt && !(prec == ML_PREC_INT8 ? vnni : bf16_alt)) continue;
            if (prec == ML_PREC_INT8) ml_cpu_set_avx_vnni(vnni && !alt);
            else if (alt) ml_cpu_set_bf16_dot(!dot);
            ml_packed *p = ml_pack_weights(B, K, N, (ml_precision)prec, (ml_isa)isa, NULL);
            ml_cpu_set_avx_vnni(vnni);
            ml_cpu_set_bf16_dot(-1);
            CHECK(p != NULL);
            if (!p) continue;
            for (int i = 0; i < M * ldc; i++) C1[i] = C2[i] = 7.0f;
            ml_gemm_packed(M, A, K, p, bias, C1, ldc, 0);
            for (int i = 0; i < M; i++) ml_quick_gelu(C1 + (size_t)i * ldc, N);
            ml_gemm_packed_gelu(M, A, K, p, bias, C2, ldc);
            double worst = 0.0;
            for (int i = 0; i < M * ldc; i++) {
                double d = fabs((double)C1[i] - C2[i]) / (1.0 + fabs((double)C1[i]));
                if (d > worst) worst = d;
            }
            CHECK_MSG(worst <= 1e-6, "gelu %s/%s: worst rel diff %.3g", ml_isa_name((ml_isa)isa),
                      ml_packed_kernel_name(p), worst);
            ml_packed_free(p);
        }
    }
    ml_isa_set(saved, NULL);
    free(A), free(B), free(bias), free(C1), free(C2);
}

/* ml_gemm_bf16 (bf16 activations in, float32 or bf16 out; bf16 or int8
 * weights) against ml_gemm_packed on the same bf16 values, on every path: float32 out must
 * match to summation order, bf16 out must be that result rounded (one bf16
 * step of slack for a float that lands near a rounding boundary).  Rows
 * M..Mp of A hold NaN: the AMX tiles read them, and they must not leak
 * into real rows; C's rows past M and columns past N stay untouched. */
static void bf16_in_case(int M, int N, int K, int flags, ml_isa isa, ml_precision prec) {
    int lda = ((K + 31) / 32) * 32 + 32, ldc = N + 3, Mp = (M + 31) / 32 * 32;
    uint16_t *Ab = calloc((size_t)Mp * lda, 2), *Cb = malloc((size_t)Mp * ldc * 2);
    float *A = malloc(sizeof(float) * (size_t)M * K), *B = malloc(sizeof(float) * (size_t)K * N);
    float *bias = malloc(sizeof(float) * N), *C1 = malloc(sizeof(float) * (size_t)Mp * ldc);
    float *C2 = malloc(sizeof(float) * (size_t)Mp * ldc);
    for (int i = 0; i < M; i++)
        for (int k = 0; k < K; k++) {
            float v = bf16_round(2.0f * frand()), *f = &A[(size_t)i * K + k];
            *f = v;
            uint32_t u;
            memcpy(&u, f, 4);
            Ab[(size_t)i * lda + k] = (uint16_t)(u >> 16);
        }
    for (size_t i = (size_t)M * lda; i < (size_t)Mp * lda; i++) Ab[i] = 0x7fc0; /* NaN */
    for (int i = 0; i < K * N; i++) B[i] = 0.2f * frand();
    for (int i = 0; i < N; i++) bias[i] = frand();
    for (size_t i = 0; i < (size_t)Mp * ldc; i++) C1[i] = C2[i] = frand(), Cb[i] = 0x1234;
    ml_packed *p = ml_pack_weights(B, K, N, prec, isa, NULL);
    CHECK(p != NULL && ml_packed_k(p) >= K && ml_packed_k(p) % 32 == 0);
    if (!p) goto out;
    if (flags & ML_GEMM_GELU) ml_gemm_packed_gelu(M, A, K, p, bias, C1, ldc);
    else ml_gemm_packed(M, A, K, p, bias, C1, ldc, (flags & ML_GEMM_ACCUMULATE) != 0);
    ml_gemm_bf16(M, Ab, lda, p, bias, C2, NULL, ldc, flags);
    int bad = 0, badb = 0, touched = 0;
    for (int i = 0; i < Mp; i++)
        for (int n = 0; n < ldc; n++) {
            size_t at = (size_t)i * ldc + n;
            if (i >= M || n >= N) {
                touched += C1[at] != C2[at];
                continue;
            }
            bad += !(fabsf(C1[at] - C2[at]) <= 1e-5f * (1.0f + fabsf(C1[at])));
        }
    if (!(flags & ML_GEMM_ACCUMULATE)) {
        /* (told of a next product: only prefetches differ) */
        ml_gemm_bf16_then(M, Ab, lda, p, bias, NULL, Cb, ldc, flags, p);
        for (int i = 0; i < Mp; i++)
            for (int n = 0; n < ldc; n++) {
                size_t at = (size_t)i * ldc + n;
                if (i >= M || n >= N) {
                    touched += Cb[at] != 0x1234;
                    continue;
                }
                uint32_t u = (uint32_t)Cb[at] << 16;
                float got;
                memcpy(&got, &u, 4);
                float want = bf16_round(C1[at]);
                badb += !(fabsf(got - want) <= fabsf(want) * (1.0f / 128) + 1e-30f);
            }
    }
    CHECK_MSG(bad == 0 && badb == 0 && touched == 0,
              "gemm_bf16 %s/%s M=%d N=%d K=%d flags=%d: %d float, %d bf16 outputs off; %d writes outside",
              ml_isa_name(isa), ml_precision_name(prec), M, N, K, flags, bad, badb, touched);
out:
    ml_packed_free(p);
    free(Ab), free(Cb), free(A), free(B), free(bias), free(C1), free(C2);
}

static void test_bf16_in(void) {
    ml_isa saved = ml_isa_active();
    for (int isa = ML_ISA_SCALAR; isa < ML_ISA_COUNT; isa++) {
        if (!check_isa(isa) || ml_isa_set((ml_isa)isa, NULL) != 0) continue;
        for (int threads = 1; threads <= 2; threads++) {
            ml_set_threads(threads);
            for (int prec = ML_PREC_BF16; prec <= ML_PREC_INT8; prec++) {
                for (int flags = 0; flags <= 2; flags++) {
                    bf16_in_case(77, 40, 70, flags, (ml_isa)isa, (ml_precision)prec);
                    bf16_in_case(1, 33, 64, flags, (ml_isa)isa, (ml_precision)prec);
                    bf16_in_case(200, 130, 768, flags, (ml_isa)isa, (ml_precision)prec);
                }
                bf16_in_case(394, 2304, 64, 0, (ml_isa)isa, (ml_precision)prec);
            }
        }
    }
    ml_isa_set(saved, NULL);
}

int main(void) {
    test_api();
    test_bf16w_avx512();
    test_bf16_in();
    test_gelu();
    test_sizes();
    return check_done("test_qgemm");
}
