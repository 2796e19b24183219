/* Kernel tests against straightforward double-precision loops, over sizes
 * that hit every edge of the blocking (partial row blocks and panels, K
 * blocks, strided operands), for every instruction set the machine runs. */
#include <math.h>
#include <string.h>
#include <stdint.h>

#include "check.h"
#include "magiclens.h"
#include "core/threads.h"
#include "kernels/cpu.h"
#include "kernels/attention.h"
#include "kernels/gemm.h"
#include "kernels/ops.h"

static uint64_t rng = 88172645463325252ULL;
static float frand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0);
}

static const char *g_isa = "scalar"; /* for failure messages */

/* lda = K + pad, ldb = N + pad, ldc = N + pad: strided views must work.
 * gelu: ml_gemm_gelu (acc must be 0), checked against quick_gelu in double. */
static void test_gemm_op(int M, int N, int K, int bias, int acc, int pad, int gelu) {
    int lda = K + pad, ldb = N + pad, ldc = N + pad;
    float *A = malloc(sizeof(float) * M * lda + 4), *B = malloc(sizeof(float) * K * ldb + 4);
    float *C = malloc(sizeof(float) * M * ldc + 4), *b = malloc(sizeof(float) * N);
    double *R = malloc(sizeof(double) * M * N);
    for (int i = 0; i < M * lda; i++) A[i] = frand();
    for (int i = 0; i < K * ldb; i++) B[i] = frand();
    for (int i = 0; i < N; i++) b[i] = frand();
    for (int i = 0; i < M * ldc; i++) C[i] = frand();
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = acc ? C[i * ldc + j] : 0;
            for (int k = 0; k < K; k++) s += (double)A[i * lda + k] * B[k * ldb + j];
            s += bias ? b[j] : 0;
            R[i * N + j] = gelu ? s / (1 + exp(-1.702 * s)) : s;
        }
    float guard = pad ? C[ldc - 1] : 0;
    if (gelu) ml_gemm_gelu(M, N, K, A, lda, B, ldb, bias ? b : NULL, C, ldc);
    else ml_gemm(M, N, K, A, lda, B, ldb, bias ? b : NULL, C, ldc, acc);
    double worst = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) worst = fmax(worst, fabs(C[i * ldc + j] - R[i * N + j]));
    CHECK_MSG(worst < 1e-4 * sqrt((double)K + 1),
              "%s gemm%s %dx%dx%d bias %d acc %d pad %d: max err %g", g_isa, gelu ? "_gelu" : "", M,
              N, K, bias, acc, pad, worst);
    if (pad) CHECK_MSG(C[ldc - 1] == guard, "%s gemm wrote past N (pad %d)", g_isa, pad);
    free(A), free(B), free(C), free(b), free(R);
}

static void test_gemm(int M, int N, int K, int bias, int acc, int pad) {
    test_gemm_op(M, N, K, bias, acc, pad, 0);
    if (!acc) test_gemm_op(M, N, K, bias, 0, pad, 1);
}

/* direct 1: ml_attention (float32, 1e-5); 2: ml_attention_bf16 (bf16 in
 * and out, the reference on the same rounded inputs); 0: ml_attention_prec at `prec`
 * (fp32: the same bound; bf16 / int8: bf16 operands where the ISA has a
 * kernel, so the bound of bf16 rounding of q, k, p and v). */
static void test_attention_at(int direct, ml_precision prec, int T, int heads, int hd, int causal, int use_mask,
                              float cap) {
    int W = heads * hd;
    float *q = malloc(sizeof(float) * T * W), *k = malloc(sizeof(float) * T * W);
    float *v = malloc(sizeof(float) * T * W), *o = malloc(sizeof(float) * T * W);
    float qs[128];
    unsigned char ok[300];
    for (int i = 0; i < T * W; i++) q[i] = 4 * frand(), k[i] = 4 * frand(), v[i] = frand();
    for (int i = 0; i < hd; i++) qs[i] = 0.5f + frand() * 0.25f;
    /* mask: every third key off, and the first 2 keys off so that causal
     * rows 0-1 have no usable key (their output must be exactly zero) */
    for (int i = 0; i < T; i++) ok[i] = use_mask ? (i % 3 != 1 && i > 1) : 1;
    float scale = 1.0f / sqrtf((float)hd);
    for (int i = 0; i < T * W; i++) o[i] = NAN; /* every output must be written */
    if (direct == 2) { /* bf16 in and out, strided; no qscale or cap */
        int ld = W + 32;
        uint16_t *b = malloc(sizeof(uint16_t) * (size_t)T * ld * 4);
        for (int i = 0; i < hd; i++) qs[i] = 1.0f;
        for (int t = 0; t < T; t++)
            for (int c = 0; c < W; c++) {
                float *src[3] = {q, k, v};
                for (int m = 0; m < 3; m++) {
                    float *f = &src[m][t * W + c];
                    uint32_t u;
                    memcpy(&u, f, 4);
                    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
                    memcpy(f, &u, 4); /* the reference sees the rounded values */
                    b[(size_t)m * T * ld + (size_t)t * ld + c] = (uint16_t)(u >> 16);
                }
            }
        uint16_t *ob = b + (size_t)3 * T * ld;
        for (size_t i = 0; i < (size_t)T * ld; i++) ob[i] = 0x7fc0;
        CHECK(ml_attention_bf16(T, T, heads, hd, b, ld, b + (size_t)T * ld, ld, b + (size_t)2 * T * ld, ld,
                                scale, use_mask ? ok : NULL, causal, ob, ld) == 0);
        int pad = 0;
        for (int t = 0; t < T; t++)
            for (int c = 0; c < ld; c++) {
                uint32_t u = (uint32_t)ob[(size_t)t * ld + c] << 16;
                if (c >= W) pad += u != 0x7fc00000u;
                else memcpy(&o[t * W + c], &u, 4);
            }
        CHECK_MSG(pad == 0, "attention bf16: %d writes past the heads", pad);
        free(b);
    } else if (direct)
        ml_attention(T, T, heads, hd, q, W, k, W, v, W, scale, qs, cap, use_mask ? ok : NULL, causal,
                     o, W);
    else
        ml_attention_prec(prec, T, T, heads, hd, q, W, k, W, v, W, scale, qs, cap,
                          use_mask ? ok : NULL, causal, o, W);
    double worst = 0;
    for (int h = 0; h < heads; h++)
        for (int t = 0; t < T; t++) {
            double p[300], mx = -INFINITY, sum = 0;
            int any = 0;
            for (int s = 0; s < T; s++) {
                p[s] = NAN;
                if ((causal && s > t) || !ok[s]) continue;
                double d = 0;
                for (int i = 0; i < hd; i++) d += (double)q[t * W + h * hd + i] * qs[i] * k[s * W + h * hd + i];
                d *= scale;
                if (cap > 0) d = cap * tanh(d / cap);
                p[s] = d, mx = fmax(mx, d), any = 1;
            }
            for (int s = 0; s < T; s++) sum += isnan(p[s]) ? 0 : exp(p[s] - mx);
            for (int i = 0; i < hd; i++) {
                double r = 0;
                for (int s = 0; s < T && any; s++)
                    if (!isnan(p[s])) r += exp(p[s] - mx) / sum * v[s * W + h * hd + i];
                double e = fabs(r - o[t * W + h * hd + i]);
                worst = isnan(e) ? INFINITY : fmax(worst, e);
            }
        }
    double tol = prec == ML_PREC_FP32 && direct != 2 ? 1e-5 : 3e-2;
    CHECK_MSG(worst < tol, "%s attention (%s) T=%d heads=%d hd=%d causal=%d mask=%d cap=%g: err %g",
              g_isa, ml_precision_name(prec), T, heads, hd, causal, use_mask, cap, worst);
    if (getenv("ML_TEST_VERBOSE"))
        fprintf(stderr, "%s attention (%s) T=%d hd=%d: err %g\n", g_isa, ml_precision_name(prec), T,
                hd, worst);
    free(q), free(k), free(v), free(o);
}

static void test_attention(int T, int heads, int hd, int causal, int use_mask, float cap) {
    test_attention_at(1, ML_PREC_FP32, T, heads, hd, causal, use_mask, cap);
    /* fp32 through the precision dispatch must be the float32 kernel */
    test_attention_at(0, ML_PREC_FP32, T, heads, hd, causal, use_mask, cap);
    test_attention_at(0, ML_PREC_BF16, T, heads, hd, causal, use_mask, cap);
    test_attention_at(0, ML_PREC_INT8, T, heads, hd, causal, use_mask, cap);
    if (cap == 0) test_attention_at(2, ML_PREC_BF16, T, heads, hd, causal, use_mask, cap);
}

/* Mean and 1 / sqrt(variance + 1e-5) of a row, in double. */
static void row_moments(const float *xr, int n, double *mean, double *inv) {
    double m = 0, var = 0;
    for (int i = 0; i < n; i++) m += xr[i];
    m /= n;
    for (int i = 0; i < n; i++) var += (xr[i] - m) * (xr[i] - m);
    *mean = m, *inv = 1.0 / sqrt(var / n + 1e-5);
}

/* Rows of width n with a large offset (the mean must not eat the variance). */
static void test_layernorm(int rows, int n, float offset) {
    float *x = malloc(sizeof(float) * rows * n), *o = malloc(sizeof(float) * rows * n);
    float *s = malloc(sizeof(float) * n), *b = malloc(sizeof(float) * n);
    for (int i = 0; i < rows * n; i++) x[i] = offset + frand();
    for (int i = 0; i < n; i++) s[i] = frand(), b[i] = frand();
    for (int plus = 0; plus < 2; plus++) {
        ml_layernorm(rows, n, x, s, b, 1e-5f, plus, o);
        double worst = 0;
        for (int r = 0; r < rows; r++) {
            const float *xr = x + (size_t)r * n;
            double m, inv;
            row_moments(xr, n, &m, &inv);
            for (int i = 0; i < n; i++) {
                double e = (xr[i] - m) * inv * (plus ? 1 + s[i] : s[i]) + b[i];
                worst = fmax(worst, fabs(e - o[(size_t)r * n + i]));
            }
        }
        CHECK_MSG(worst < 1e-5, "%s layernorm %dx%d plus_one=%d err %g", g_isa, rows, n, plus, worst);
    }
    /* bf16 output (strided, padding columns untouched): within half a bf16
     * step of the exact value, plus the float32 allowance */
    int ldo = n + 5, badb = 0, pad = 0;
    uint16_t *ob = malloc(sizeof(uint16_t) * rows * ldo);
    for (int i = 0; i < rows * ldo; i++) ob[i] = 0xbeef;
    CHECK(ml_layernorm_bf16(rows, n, x, s, b, 1e-5f, 0, ob, ldo) == 0);
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * n;
        double m, inv;
        row_moments(xr, n, &m, &inv);
        for (int i = 0; i < ldo; i++) {
            uint16_t h = ob[(size_t)r * ldo + i];
            if (i >= n) {
                pad += h != 0xbeef;
                continue;
            }
            uint32_t u = (uint32_t)h << 16;
            float got;
            memcpy(&got, &u, 4);
            double e = (xr[i] - m) * inv * s[i] + b[i];
            badb += !(fabs(got - e) <= fabs(e) / 256 + 1e-5);
        }
    }
    CHECK_MSG(badb == 0 && pad == 0, "%s layernorm_bf16 %dx%d: %d off, %d padding writes", g_isa, rows,
              n, badb, pad);
    free(ob);
    ml_layernorm(rows, n, x, s, b, 1e-5f, 0, x); /* in place */
    ml_layernorm(rows, n, o, s, b, 1e-5f, 0, o);
    free(x), free(o), free(s), free(b);
}

/* quick_gelu and add over lengths that leave every possible tail, and a
 * range of inputs that reaches exp's clamps. */
/* quick_gelu's error must be unbiased, not only small: a one-sided error
 * of half an ulp (AVX2's reciprocal estimate + one Newton step always lands
 * below 1/d) passed the 1e-6 bound above, yet moved every activation the
 * same way and, through boosted attention logits, an embedding by 1.1e-4.
 * Over 2^20 inputs in [-8, 8]: signed mean relative error within 1e-8 and
 * mean |error| within 4.5e-8 of double (correctly rounded float: ~3e-8). */
static void test_gelu_bias(void) {
    const long n = 1L << 20;
    float *y = malloc(sizeof(float) * n);
    for (long i = 0; i < n; i++) y[i] = 8 * frand();
    float *x = malloc(sizeof(float) * n);
    memcpy(x, y, sizeof(float) * n);
    ml_quick_gelu(y, n);
    double sum = 0, sum_abs = 0;
    long used = 0;
    for (long i = 0; i < n; i++) {
        /* the argument as the float code rounds it, so only gelu's own
         * error is measured */
        double e = x[i] / (1.0 + exp((double)(-1.702f * x[i])));
        if (fabs(e) < 1e-3) continue;
        double r = (y[i] - e) / fabs(e);
        sum += r, sum_abs += fabs(r), used++;
    }
    CHECK_MSG(fabs(sum / used) < 1e-8 && sum_abs / used < 4.5e-8,
              "%s quick_gelu: mean relative error %.3g (bias), mean |error| %.3g", g_isa, sum / used,
              sum_abs / used);
    free(x), free(y);
}

static void test_elementwise(long n) {
    float *x = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n), *z = malloc(sizeof(float) * n);
    for (long i = 0; i < n; i++) x[i] = 12 * frand() * frand() * frand() * (i % 50 == 0 ? 10 : 1), y[i] = x[i], z[i] = frand();
    /* the saturated ends: exp(-1.702 x) overflowing / underflowing */
    float ends[] = {-1000.0f, -200.0f, -52.0f, -51.0f, 60.0f, 1000.0f, 0.0f};
    for (int i = 0; i < 7 && i < n; i++) x[i] = y[i] = ends[i];
    ml_quick_gelu(y, n);
    double worst = 0;
    for (long i = 0; i < n; i++) {
        double e = x[i] / (1.0 + exp(-1.702 * x[i]));
        worst = fmax(worst, fabs(e - y[i]) / fmax(1.0, fabs(e)));
    }
    CHECK_MSG(worst < 1e-6, "%s quick_gelu n=%ld rel err %g", g_isa, n, worst);
    for (long i = 0; i < n; i++) y[i] = x[i];
    ml_add(y, z, n);
    int bad = 0;
    for (long i = 0; i < n; i++) bad += y[i] != x[i] + z[i];
    CHECK_MSG(bad == 0, "%s add n=%ld: %d wrong", g_isa, n, bad);
    free(x), free(y), free(z);
}

/* ml_to_bf16 bit for bit against round-to-nearest-even done here in
 * integers: ties both ways, signs, denormals, infinities, NaN. */
static void test_to_bf16(void) {
    uint32_t special[] = {0x3f808000u, 0x3f818000u, 0x3f80ffffu, 0xbf808000u, 0x00000001u,
                          0x7f7fffffu, 0x7f800000u, 0xff800000u, 0x7fc00000u, 0xffa00001u, 0};
    enum { N = 1000 };
    float x[N];
    uint16_t got[N];
    for (int i = 0; i < N; i++) {
        rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
        uint32_t u = i < 11 ? special[i] : (uint32_t)(rng >> 32);
        if (i >= 11 && (u & 0x7f800000u) == 0x7f800000u) u &= 0xbfffffffu; /* keep random ones finite */
        memcpy(&x[i], &u, 4);
    }
    for (int n = N; n >= N - 20; n -= 7) {
        memset(got, 0, sizeof got);
        ml_to_bf16(x, got, n);
        int bad = 0;
        for (int i = 0; i < n; i++) {
            uint32_t u;
            memcpy(&u, &x[i], 4);
            uint16_t want;
            if ((u & 0x7fffffffu) > 0x7f800000u) want = (uint16_t)((u >> 16) | 0x40u);
            else {
                uint32_t low = u & 0xffffu, hi = u >> 16;
                want = (uint16_t)(hi + (low > 0x8000u || (low == 0x8000u && (hi & 1u))));
            }
            bad += got[i] != want;
        }
        CHECK_MSG(bad == 0, "%s to_bf16 n=%d: %d wrong", g_isa, n, bad);
    }
}

static void test_softmax(int n, int masked) {
    float x[300];
    double r[300], mx = -INFINITY, sum = 0;
    for (int i = 0; i < n; i++) x[i] = masked == 2 || (masked && i % 4 == 0) ? -INFINITY : 30 * frand();
    for (int i = 0; i < n; i++) mx = fmax(mx, x[i]);
    for (int i = 0; i < n; i++) sum += r[i] = mx == -INFINITY || x[i] == -INFINITY ? 0 : exp(x[i] - mx);
    ml_softmax(x, n);
    double worst = 0;
    for (int i = 0; i < n; i++) worst = fmax(worst, fabs((sum > 0 ? r[i] / sum : 0) - x[i]));
    CHECK_MSG(worst < 1e-6, "%s softmax n=%d masked=%d err %g", g_isa, n, masked, worst);
}

static void run_all(void) {
    int sizes[][3] = {{1, 1, 1},      {3, 5, 7},      {4, 64, 16},   {5, 65, 33},
                      {64, 64, 64},   {67, 130, 200}, {197, 96, 48}, {2, 2048, 512},
                      {13, 33, 1},    {1, 47, 300},   {25, 31, 520}, {77, 40, 257},
                      {100, 800, 20}, {50, 17, 600},
                      /* packed B: >= 8 row blocks per thread, two K slabs,
                       * a partial last column panel */
                      {200, 530, 300}};
    for (int t = 1; t <= 2; t++) {
        ml_set_threads(t);
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
            for (int f = 0; f < 8; f++)
                test_gemm(sizes[i][0], sizes[i][1], sizes[i][2], f & 1, (f >> 1) & 1, f & 4 ? 3 : 0);
        test_layernorm(3, 37, 10);
        test_layernorm(200, 768, 100);
        test_layernorm(4, 1000, 3000); /* a larger offset: one-pass stats */
        test_layernorm(2, 1, 5);
        test_elementwise(100003);
        test_gelu_bias();
        test_elementwise(7);
    }
    test_to_bf16();
    test_attention(7, 2, 8, 0, 0, 0);
    test_attention(9, 3, 4, 1, 1, 0);
    test_attention(2, 4, 16, 0, 0, 50.0f);
    test_attention(33, 1, 32, 1, 0, 0);
    test_attention(70, 2, 64, 1, 1, 3.0f);
    test_attention(197, 1, 64, 0, 0, 0);
    test_attention(257, 2, 80, 0, 1, 0);
    /* shapes for the bf16 tile kernel: hd 32 / 64 / 96 / 128, partial
     * query and key blocks, causal text rows */
    test_attention(17, 2, 32, 0, 0, 0);
    test_attention(77, 2, 64, 1, 1, 0);
    test_attention(50, 1, 96, 1, 0, 4.0f);
    test_attention(197, 2, 64, 0, 1, 0);
    test_attention(64, 1, 128, 0, 0, 0);
    test_attention(260, 1, 64, 1, 0, 0);
    for (int n = 1; n < 40; n += 3)
        for (int m = 0; m < 3; m++) test_softmax(n, m);
    test_softmax(257, 1);
}

int main(void) {
    int tested = 0;
    for (int isa = ML_ISA_SCALAR; isa < ML_ISA_COUNT; isa++) {
        if (!check_isa(isa)) continue;
        ml_error err;
        CHECK(ml_isa_set((ml_isa)isa, &err) == 0);
        CHECK(ml_isa_active() == (ml_isa)isa);
        g_isa = ml_isa_name((ml_isa)isa);
        fprintf(stderr, "testing %s\n", g_isa);
        run_all();
        tested++;
    }
    CHECK(tested >= 1);
    CHECK(ml_isa_parse("avx512") == ML_ISA_AVX512 && ml_isa_parse("bogus") == -1);
    CHECK(ml_isa_set(ML_ISA_COUNT, NULL) == -1);
    return check_done("test_kernels");
}
