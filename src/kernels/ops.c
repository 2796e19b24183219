/* ops.c - element-wise and row operations: the portable scalar versions,
 * and the dispatch to the SIMD ones (ops_tmpl.h) for ml_isa_active(). */
#include "kernels/ops.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>

#include "core/threads.h"
#include "kernels/bf16.h"
#include "kernels/gemm.h"
#include "kernels/gemm_isa.h"

const ml_ops_impl *ml_ops_impl_for(ml_isa isa) {
#if defined(__x86_64__)
    if (isa == ML_ISA_AVX512 || isa == ML_ISA_AMX) return &ml_ops_avx512;
    if (isa == ML_ISA_AVX2) return &ml_ops_avx2;
#endif
#if defined(__aarch64__)
    if (isa >= ML_ISA_NEON && isa <= ML_ISA_NEON_BF16) return &ml_ops_neon;
#endif
    (void)isa;
    return NULL;
}

static const ml_ops_impl *active_ops(void) { return ml_ops_impl_for(ml_isa_active()); }

/* Work below this many floats is not worth waking the thread pool for. */
#define PAR_MIN 65536

static void layernorm_scalar(int rows, int n, const float *x, const float *scale,
                             const float *bias, float eps, int plus_one, float *out) {
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

typedef struct ln_job {
    const ml_ops_impl *ops;
    int n, plus_one;
    const float *x, *scale, *bias;
    float eps;
    float *out;
} ln_job;

static void ln_tasks(void *ctx, int begin, int end) {
    const ln_job *j = ctx;
    for (int r = begin; r < end; r++)
        j->ops->layernorm_row(j->n, j->x + (size_t)r * j->n, j->scale, j->bias, j->eps, j->plus_one,
                              j->out + (size_t)r * j->n);
}

void ml_layernorm(int rows, int n, const float *x, const float *scale, const float *bias,
                  float eps, int plus_one, float *out) {
    const ml_ops_impl *ops = active_ops();
    if (!ops) {
        layernorm_scalar(rows, n, x, scale, bias, eps, plus_one, out);
        return;
    }
    ln_job j = {ops, n, plus_one, x, scale, bias, eps, out};
    int grain = n > 0 ? PAR_MIN / n + 1 : rows;
    ml_parallel_for(rows, grain, ln_tasks, &j);
}

/* LayerNorm to bf16: the same float32 values ml_layernorm gives, each
 * rounded once as it is stored (the portable path goes through a stack row
 * of at most LN_BF16_MAX floats). */
#define LN_BF16_MAX 4096

typedef struct ln_bf16_job {
    const ml_ops_impl *ops;
    int n, plus_one, ldo;
    const float *x, *scale, *bias;
    float eps;
    uint16_t *out;
} ln_bf16_job;

static void ln_bf16_tasks(void *ctx, int begin, int end) {
    const ln_bf16_job *j = ctx;
    for (int r = begin; r < end; r++) {
        const float *x = j->x + (size_t)r * j->n;
        uint16_t *o = j->out + (size_t)r * j->ldo;
        if (j->ops) {
            j->ops->layernorm_row_bf16(j->n, x, j->scale, j->bias, j->eps, j->plus_one, o);
            continue;
        }
        float row[LN_BF16_MAX];
        layernorm_scalar(1, j->n, x, j->scale, j->bias, j->eps, j->plus_one, row);
        for (int i = 0; i < j->n; i++) o[i] = ml_f32_to_bf16(row[i]);
    }
}

int ml_layernorm_bf16(int rows, int n, const float *x, const float *scale, const float *bias,
                      float eps, int plus_one, uint16_t *out, int ldo) {
    if (n > LN_BF16_MAX || ldo < n) return -1;
    ln_bf16_job j = {active_ops(), n, plus_one, ldo, x, scale, bias, eps, out};
    ml_parallel_for(rows, n > 0 ? PAR_MIN / n + 1 : rows, ln_bf16_tasks, &j);
    return 0;
}

void ml_to_bf16(const float *x, uint16_t *out, int n) {
    const ml_ops_impl *ops = active_ops();
    if (ops) ops->to_bf16(x, out, n);
    else
        for (int i = 0; i < n; i++) out[i] = ml_f32_to_bf16(x[i]);
}

/* Element-wise ops split into 4096-float chunks across the pool. */
#define CHUNK 4096
typedef struct ew_job {
    const ml_ops_impl *ops;
    float *y;
    const float *x; /* NULL: gelu */
    long n;
} ew_job;

static void ew_tasks(void *ctx, int begin, int end) {
    const ew_job *j = ctx;
    long b = (long)begin * CHUNK, e = (long)end * CHUNK < j->n ? (long)end * CHUNK : j->n;
    if (j->x) j->ops->add(j->y + b, j->x + b, e - b);
    else j->ops->quick_gelu(j->y + b, e - b);
}

static void elementwise(const ml_ops_impl *ops, float *y, const float *x, long n) {
    ew_job j = {ops, y, x, n};
    ml_parallel_for((int)((n + CHUNK - 1) / CHUNK), PAR_MIN / CHUNK, ew_tasks, &j);
}

void ml_quick_gelu(float *x, long n) {
    const ml_ops_impl *ops = active_ops();
    if (ops) {
        elementwise(ops, x, NULL, n);
        return;
    }
    for (long i = 0; i < n; i++) x[i] = x[i] / (1.0f + expf(-1.702f * x[i]));
}

void ml_relu(float *x, long n) {
    for (long i = 0; i < n; i++) x[i] = x[i] > 0 ? x[i] : 0;
}

void ml_add(float *y, const float *x, long n) {
    const ml_ops_impl *ops = active_ops();
    if (ops) {
        elementwise(ops, y, x, n);
        return;
    }
    for (long i = 0; i < n; i++) y[i] += x[i];
}

void ml_softmax(float *x, int n) {
    const ml_ops_impl *ops = active_ops();
    if (ops) {
        ops->softmax_row(x, n, 1.0f);
        return;
    }
    float mx = -INFINITY, sum = 0;
    for (int i = 0; i < n; i++) mx = fmaxf(mx, x[i]);
    if (mx == -INFINITY) {
        for (int i = 0; i < n; i++) x[i] = 0;
        return;
    }
    for (int i = 0; i < n; i++) sum += x[i] = x[i] == -INFINITY ? 0 : expf(x[i] - mx);
    for (int i = 0; i < n; i++) x[i] /= sum;
}

static void attention_scalar(int T, int S, int heads, int hd, const float *q, int ldq,
                             const float *k, int ldk, const float *v, int ldv, float scale,
                             const float *qscale, float cap, const unsigned char *key_ok, int causal,
                             float *out, int ldo) {
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

/* ---- SIMD attention: two small GEMMs per head ------------------------ */

#define ATT_TB 64 /* most query rows per score block */
/* Scratch (K^T and a block of scores) lives on the stack up to this many
 * floats (96 KB): malloc'ing ~100 KB per (sequence, head) made glibc trim
 * and re-fault the pages every call, which cost more than the maths. */
#define ATT_STACK 24576

typedef struct att_args {
    int T, S, hd, ldq, ldk, ldv, ldo, causal;
    const float *q, *k, *v, *qscale;
    const unsigned char *key_ok;
    float scale, cap;
    float *out;
} att_args;

/* kt[i, s] = k[s, i] * qscale[i]: K^T is the B operand of S = Q K^T, and
 * the per-dimension query scale folds into it for free. */
static void transpose_k(const att_args *a, int ldkt, float *kt) {
    for (int s = 0; s < a->S; s++) {
        const float *ks = a->k + (size_t)s * a->ldk;
        for (int i = 0; i < a->hd; i++) kt[(size_t)i * ldkt + s] = a->qscale ? ks[i] * a->qscale[i] : ks[i];
    }
}

/* Masks, caps and normalises one row of scores for query t. */
static void score_row(const ml_ops_impl *ops, const att_args *a, int t, float *row) {
    int n = a->causal ? (t + 1 < a->S ? t + 1 : a->S) : a->S;
    float sc = a->scale;
    if (a->key_ok)
        for (int s = 0; s < n; s++)
            if (!a->key_ok[s]) row[s] = -INFINITY;
    if (a->cap > 0) {
        for (int s = 0; s < n; s++)
            if (row[s] != -INFINITY) row[s] = a->cap * tanhf(row[s] * a->scale / a->cap);
        sc = 1.0f;
    }
    ops->softmax_row(row, n, sc);
    for (int s = n; s < a->S; s++) row[s] = 0;
}

/* Query rows per block so that K^T + the block fit in `floats`; 0 if not
 * even one 12-row block fits. */
static int att_block_rows(int T, int hd, int ldkt, int floats) {
    int tb = floats / ldkt - hd;
    if (tb > ATT_TB) tb = ATT_TB;
    if (tb > 12) tb -= tb % 12; /* whole micro-kernel row blocks */
    if (tb > T) tb = T;
    return tb >= 12 || tb >= T ? tb : 0;
}

/* One head: S = Q K^T (row blocks), softmax, O = P V with V used in place. */
static void attention_head(const ml_ops_impl *ops, const att_args *a, float *kt, int tb) {
    int ldkt = (a->S + 15) & ~15;
    float *p = kt + (size_t)ldkt * a->hd;
    transpose_k(a, ldkt, kt);
    for (int t0 = 0; t0 < a->T; t0 += tb) {
        int rows = a->T - t0 < tb ? a->T - t0 : tb;
        ml_gemm_serial(rows, a->S, a->hd, a->q + (size_t)t0 * a->ldq, a->ldq, kt, ldkt, NULL, p,
                       ldkt, 0);
        for (int r = 0; r < rows; r++) score_row(ops, a, t0 + r, p + (size_t)r * ldkt);
        ml_gemm_serial(rows, a->hd, a->S, p, ldkt, a->v, a->ldv, NULL, a->out + (size_t)t0 * a->ldo,
                       a->ldo, 0);
    }
}

void ml_attention(int T, int S, int heads, int hd, const float *q, int ldq, const float *k,
                  int ldk, const float *v, int ldv, float scale, const float *qscale, float cap,
                  const unsigned char *key_ok, int causal, float *out, int ldo) {
    const ml_ops_impl *ops = active_ops();
    if (S > ML_MAX_SEQ) S = ML_MAX_SEQ;
    float stack[ATT_STACK], *kt = stack, *heap = NULL;
    int ldkt = (S + 15) & ~15, tb = att_block_rows(T, hd, ldkt, ATT_STACK);
    if (ops && T > 0 && tb == 0) {
        tb = T < ATT_TB ? T : ATT_TB;
        kt = heap = malloc(sizeof(float) * (size_t)ldkt * (hd + tb));
    }
    if (!ops || !kt || T <= 0) { /* scalar ISA, or out of memory */
        attention_scalar(T, S, heads, hd, q, ldq, k, ldk, v, ldv, scale, qscale, cap, key_ok,
                         causal, out, ldo);
        return;
    }
    for (int h = 0; h < heads; h++) {
        size_t c = (size_t)h * hd;
        att_args a = {T, S, hd, ldq, ldk, ldv, ldo, causal, q + c, k + c, v + c, qscale,
                      key_ok, scale, cap, out + c};
        attention_head(ops, &a, kt, tb);
    }
    free(heap);
}

void ml_l2_normalize(float *x, int n) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    double inv = 1.0 / sqrt(ss + 1e-12);
    for (int i = 0; i < n; i++) x[i] = (float)(x[i] * inv);
}
