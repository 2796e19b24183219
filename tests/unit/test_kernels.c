/* Kernel tests against straightforward double-precision loops, over sizes
 * that hit every edge of the blocking (partial row blocks and panels). */
#include <math.h>
#include <stdint.h>

#include "check.h"
#include "magiclens.h"
#include "core/threads.h"
#include "kernels/gemm.h"
#include "kernels/ops.h"

static uint64_t rng = 88172645463325252ULL;
static float frand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0);
}

static void test_gemm(int M, int N, int K, int bias, int acc) {
    float *A = malloc(sizeof(float) * M * K), *B = malloc(sizeof(float) * K * N);
    float *C = malloc(sizeof(float) * M * N), *b = malloc(sizeof(float) * N);
    double *R = malloc(sizeof(double) * M * N);
    for (int i = 0; i < M * K; i++) A[i] = frand();
    for (int i = 0; i < K * N; i++) B[i] = frand();
    for (int i = 0; i < N; i++) b[i] = frand();
    for (int i = 0; i < M * N; i++) C[i] = frand();
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = acc ? C[i * N + j] : 0;
            for (int k = 0; k < K; k++) s += (double)A[i * K + k] * B[k * N + j];
            R[i * N + j] = s + (bias ? b[j] : 0);
        }
    ml_gemm(M, N, K, A, K, B, N, bias ? b : NULL, C, N, acc);
    double worst = 0;
    for (int i = 0; i < M * N; i++) worst = fmax(worst, fabs(C[i] - R[i]));
    CHECK_MSG(worst < 1e-4 * sqrt((double)K + 1), "gemm %dx%dx%d bias %d acc %d: max err %g", M,
              N, K, bias, acc, worst);
    free(A), free(B), free(C), free(b), free(R);
}

static void test_attention(int T, int heads, int hd, int causal, int use_mask, float cap) {
    int W = heads * hd;
    float *q = malloc(sizeof(float) * T * W), *k = malloc(sizeof(float) * T * W);
    float *v = malloc(sizeof(float) * T * W), *o = malloc(sizeof(float) * T * W);
    float qs[64];
    unsigned char ok[64];
    for (int i = 0; i < T * W; i++) q[i] = 4 * frand(), k[i] = 4 * frand(), v[i] = frand();
    for (int i = 0; i < hd; i++) qs[i] = 0.5f + frand() * 0.25f;
    for (int i = 0; i < T; i++) ok[i] = use_mask ? (i % 3 != 1) : 1;
    float scale = 1.0f / sqrtf((float)hd);
    ml_attention(T, T, heads, hd, q, W, k, W, v, W, scale, qs, cap, use_mask ? ok : NULL, causal,
                 o, W);
    double worst = 0;
    for (int h = 0; h < heads; h++)
        for (int t = 0; t < T; t++) {
            double p[64], mx = -INFINITY, sum = 0;
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
                worst = fmax(worst, fabs(r - o[t * W + h * hd + i]));
            }
        }
    CHECK_MSG(worst < 1e-5, "attention T=%d heads=%d hd=%d causal=%d mask=%d cap=%g: err %g", T,
              heads, hd, causal, use_mask, cap, worst);
    free(q), free(k), free(v), free(o);
}

static void test_layernorm(void) {
    float x[3 * 37], s[37], b[37], o[3 * 37];
    for (int i = 0; i < 3 * 37; i++) x[i] = 10 + frand();
    for (int i = 0; i < 37; i++) s[i] = frand(), b[i] = frand();
    for (int plus = 0; plus < 2; plus++) {
        ml_layernorm(3, 37, x, s, b, 1e-5f, plus, o);
        double worst = 0;
        for (int r = 0; r < 3; r++) {
            double m = 0, var = 0;
            for (int i = 0; i < 37; i++) m += x[r * 37 + i];
            m /= 37;
            for (int i = 0; i < 37; i++) var += (x[r * 37 + i] - m) * (x[r * 37 + i] - m);
            var /= 37;
            for (int i = 0; i < 37; i++) {
                double e = (x[r * 37 + i] - m) / sqrt(var + 1e-5) * (plus ? 1 + s[i] : s[i]) + b[i];
                worst = fmax(worst, fabs(e - o[r * 37 + i]));
            }
        }
        CHECK_MSG(worst < 1e-5, "layernorm plus_one=%d err %g", plus, worst);
    }
}

int main(void) {
    int sizes[][3] = {{1, 1, 1}, {3, 5, 7}, {4, 64, 16}, {5, 65, 33}, {64, 64, 64},
                      {67, 130, 200}, {197, 96, 48}, {2, 2048, 512}};
    for (int t = 1; t <= 2; t++) {
        ml_set_threads(t);
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
            for (int f = 0; f < 4; f++) test_gemm(sizes[i][0], sizes[i][1], sizes[i][2], f & 1, f >> 1);
    }
    test_attention(7, 2, 8, 0, 0, 0);
    test_attention(9, 3, 4, 1, 1, 0);
    test_attention(2, 4, 16, 0, 0, 50.0f);
    test_attention(33, 1, 32, 1, 0, 0);
    test_layernorm();
    return check_done("test_kernels");
}
