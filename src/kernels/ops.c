#include "kernels/ops.h"

#include <math.h>
#include <stddef.h>

void ml_layernorm(int rows, int n, const float *x, const float *scale, const float *bias,
                  float eps, int plus_one, float *out) {
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * n;
        float *o = out + (size_t)r * n;
        /* Two passes in double: the statistics decide the precision of
         * every value after them and cost little next to the matmuls. */
        double mean = 0, var = 0;
        for (int i = 0; i < n; i++) mean += xr[i];
        mean /= n;
        for (int i = 0; i < n; i++) {
            double d = xr[i] - mean;
            var += d * d;
        }
        var /= n;
        double inv = 1.0 / sqrt(var + eps);
        for (int i = 0; i < n; i++) {
            double s = plus_one ? 1.0 + scale[i] : scale[i];
            o[i] = (float)((xr[i] - mean) * inv * s + bias[i]);
        }
    }
}

void ml_quick_gelu(float *x, long n) {
    for (long i = 0; i < n; i++) x[i] = x[i] / (1.0f + expf(-1.702f * x[i]));
}

void ml_relu(float *x, long n) {
    for (long i = 0; i < n; i++) x[i] = x[i] > 0 ? x[i] : 0;
}

void ml_add(float *y, const float *x, long n) {
    for (long i = 0; i < n; i++) y[i] += x[i];
}

void ml_attention(int T, int S, int heads, int hd, const float *q, int ldq, const float *k,
                  int ldk, const float *v, int ldv, float scale, const float *qscale, float cap,
                  const unsigned char *key_ok, int causal, float *out, int ldo) {
    float p[ML_MAX_SEQ]; /* the model loader refuses sequences longer than this */
    if (S > ML_MAX_SEQ) S = ML_MAX_SEQ;
    for (int h = 0; h < heads; h++) {
        for (int t = 0; t < T; t++) {
            const float *qt = q + (size_t)t * ldq + h * hd;
            float *o = out + (size_t)t * ldo + h * hd;
            float mx = -INFINITY;
            int any = 0;
            for (int s = 0; s < S; s++) {
                if ((causal && s > t) || (key_ok && !key_ok[s])) {
                    p[s] = -INFINITY;
                    continue;
                }
                const float *ks = k + (size_t)s * ldk + h * hd;
                float dot = 0;
                if (qscale)
                    for (int i = 0; i < hd; i++) dot += qt[i] * qscale[i] * ks[i];
                else
                    for (int i = 0; i < hd; i++) dot += qt[i] * ks[i];
                dot *= scale;
                if (cap > 0) dot = cap * tanhf(dot / cap);
                p[s] = dot;
                if (dot > mx) mx = dot;
                any = 1;
            }
            for (int i = 0; i < hd; i++) o[i] = 0;
            if (!any) continue;
            float sum = 0;
            for (int s = 0; s < S; s++) {
                p[s] = p[s] == -INFINITY ? 0 : expf(p[s] - mx);
                sum += p[s];
            }
            float inv = 1.0f / sum;
            for (int s = 0; s < S; s++) {
                if (p[s] == 0) continue;
                const float *vs = v + (size_t)s * ldv + h * hd;
                float w = p[s] * inv;
                for (int i = 0; i < hd; i++) o[i] += w * vs[i];
            }
        }
    }
}

void ml_l2_normalize(float *x, int n) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    double inv = 1.0 / sqrt(ss + 1e-12);
    for (int i = 0; i < n; i++) x[i] = (float)(x[i] * inv);
}
