/* tlayers.c - forward / backward of the trainable network's layers
 * (tlayers.h; derivations in docs/training-math.md). */
#include "train/tlayers.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/threads.h"
#include "kernels/cpu.h"
#include "kernels/gemm.h"
#include "kernels/precision.h"

/* Work below this many floats is not worth waking the thread pool for. */
#define PAR_MIN 32768

static int grain_rows(int n) { return n > 0 ? PAR_MIN / n + 1 : 1; }

/* ---- transpose ---------------------------------------------------------- */

#define TB 32 /* tile side: a tile of src and of dst both stay in L1 */

typedef struct tr_job {
    int R, C, lds, ldd;
    const float *src;
    float *dst;
} tr_job;

static void tr_tasks(void *ctx, int begin, int end) {
    const tr_job *j = ctx;
    for (int t = begin; t < end; t++) {
        int r0 = t * TB, r1 = r0 + TB < j->R ? r0 + TB : j->R;
        for (int c0 = 0; c0 < j->C; c0 += TB) {
            int c1 = c0 + TB < j->C ? c0 + TB : j->C;
            for (int r = r0; r < r1; r++) {
                const float *s = j->src + (size_t)r * j->lds;
                for (int c = c0; c < c1; c++) j->dst[(size_t)c * j->ldd + r] = s[c];
            }
        }
    }
}

void tl_transpose(int R, int C, const float *src, int lds, float *dst, int ldd) {
    if (R <= 0 || C <= 0) return;
    tr_job j = {R, C, lds, ldd, src, dst};
    int tiles = (R + TB - 1) / TB;
    ml_parallel_for(tiles, (int)(PAR_MIN / ((long)C * TB) + 1), tr_tasks, &j);
}

/* ---- column sums -------------------------------------------------------- */

#define CB 64 /* columns per task: the inner loop over them vectorises */

typedef struct cs_job {
    int R, C;
    const float *x;
    float *out;
} cs_job;

static void cs_tasks(void *ctx, int begin, int end) {
    const cs_job *j = ctx;
    for (int t = begin; t < end; t++) {
        int c0 = t * CB, n = j->C - c0 < CB ? j->C - c0 : CB;
        float acc[CB] = {0};
        for (int r = 0; r < j->R; r++) {
            const float *x = j->x + (size_t)r * j->C + c0;
            for (int c = 0; c < n; c++) acc[c] += x[c];
        }
        for (int c = 0; c < n; c++) j->out[c0 + c] += acc[c];
    }
}

void tl_colsum_add(int R, int C, const float *x, float *out) {
    if (R <= 0 || C <= 0) return;
    cs_job j = {R, C, x, out};
    ml_parallel_for((C + CB - 1) / CB, (int)(PAR_MIN / ((long)R * CB) + 1), cs_tasks, &j);
}

/* ---- linear ------------------------------------------------------------- */

int tl_bf16_native(void) {
    ml_isa isa = ml_isa_active();
    return isa == ML_ISA_AMX || (isa == ML_ISA_AVX512 && ml_cpu_bf16_dot());
}

/* C[M,N] (+)= A @ B (+ bias) with B [K, N] contiguous, in bf16 when the
 * layer asks for it and the CPU has it.  B is packed per call: the weights
 * change every step, and packing reads B once next to M times in the
 * product. */
static void gemm_w(const tl_lin *l, int M, int N, int K, const float *A, int lda, const float *B,
                   const float *bias, float *C, int ldc, int acc) {
    if (l->bf16 && tl_bf16_native()) {
        ml_packed *p = ml_pack_weights(B, K, N, ML_PREC_BF16, ml_isa_active(), NULL);
        if (p) {
            ml_gemm_packed(M, A, lda, p, bias, C, ldc, acc);
            ml_packed_free(p);
            return;
        }
    }
    ml_gemm(M, N, K, A, lda, B, N, bias, C, ldc, acc);
}

void tl_linear_fwd(const tl_lin *l, int M, const float *x, float *y, int acc, float *ws) {
    if (M <= 0) return;
    const float *w = l->w;
    if (l->wt) {
        tl_transpose(l->out, l->in, l->w, l->in, ws, l->out);
        w = ws;
    }
    gemm_w(l, M, l->out, l->in, x, l->in, w, l->b, y, l->out, acc);
}

void tl_linear_bwd_w(const tl_lin *l, int M, const float *x, const float *xt, const float *dy,
                     float *ws) {
    if (M <= 0) return;
    if (l->wt) { /* gW [out, in] += dy^T @ x */
        tl_transpose(M, l->out, dy, l->out, ws, M);
        ml_gemm(l->out, l->in, M, ws, M, x, l->in, NULL, l->gw, l->in, 1);
    } else { /* gW [in, out] += x^T @ dy */
        if (!xt) {
            tl_transpose(M, l->in, x, l->in, ws, M);
            xt = ws;
        }
        ml_gemm(l->in, l->out, M, xt, M, dy, l->out, NULL, l->gw, l->out, 1);
    }
    if (l->gb) tl_colsum_add(M, l->out, dy, l->gb);
}

void tl_linear_bwd_x(const tl_lin *l, int M, const float *dy, float *dx, int acc, float *ws) {
    if (M <= 0) return;
    if (l->wt) { /* W is [out, in]: dx = dy @ W */
        gemm_w(l, M, l->in, l->out, dy, l->out, l->w, NULL, dx, l->in, acc);
    } else {
        tl_transpose(l->in, l->out, l->w, l->out, ws, l->in);
        gemm_w(l, M, l->in, l->out, dy, l->out, ws, NULL, dx, l->in, acc);
    }
}

/* ---- LayerNorm ---------------------------------------------------------- */

typedef struct ln_job {
    int rows, n, plus_one, acc;
    float eps;
    const float *x, *dy, *mean, *rstd;
    const tl_norm *p;
    float *y, *dx;
    float *mean_out, *rstd_out;
} ln_job;

static float eff_scale(const tl_norm *p, int plus_one, int i) {
    return plus_one ? 1.0f + p->s[i] : p->s[i];
}

static void ln_fwd_rows(void *ctx, int begin, int end) {
    const ln_job *j = ctx;
    int n = j->n;
    for (int r = begin; r < end; r++) {
        const float *x = j->x + (size_t)r * n;
        float *y = j->y + (size_t)r * n;
        /* Statistics in double, two passes, as the inference kernel. */
        double mean = 0, var = 0;
        for (int i = 0; i < n; i++) mean += x[i];
        mean /= n;
        for (int i = 0; i < n; i++) var += (x[i] - mean) * (x[i] - mean);
        var /= n;
        double rstd = 1.0 / sqrt(var + j->eps);
        for (int i = 0; i < n; i++)
            y[i] = (float)((x[i] - mean) * rstd * eff_scale(j->p, j->plus_one, i) + j->p->b[i]);
        j->mean_out[r] = (float)mean;
        j->rstd_out[r] = (float)rstd;
    }
}

void tl_layernorm_fwd(int rows, int n, const float *x, const tl_norm *p, float eps, int plus_one,
                      float *y, float *mean, float *rstd) {
    ln_job j = {rows, n, plus_one, 0, eps, x, NULL, NULL, NULL, p, y, NULL, mean, rstd};
    ml_parallel_for(rows, grain_rows(n), ln_fwd_rows, &j);
}

/* dx = rstd * (dxh - mean(dxh) - xhat * mean(dxh * xhat)), dxh = dy * scale. */
static void ln_bwd_rows(void *ctx, int begin, int end) {
    const ln_job *j = ctx;
    int n = j->n;
    for (int r = begin; r < end; r++) {
        const float *x = j->x + (size_t)r * n, *dy = j->dy + (size_t)r * n;
        float *dx = j->dx + (size_t)r * n;
        float mu = j->mean[r], rs = j->rstd[r];
        double s1 = 0, s2 = 0;
        for (int i = 0; i < n; i++) {
            float dxh = dy[i] * eff_scale(j->p, j->plus_one, i);
            s1 += dxh;
            s2 += dxh * ((x[i] - mu) * rs);
        }
        float m1 = (float)(s1 / n), m2 = (float)(s2 / n);
        for (int i = 0; i < n; i++) {
            float xh = (x[i] - mu) * rs;
            float v = rs * (dy[i] * eff_scale(j->p, j->plus_one, i) - m1 - xh * m2);
            dx[i] = j->acc ? dx[i] + v : v;
        }
    }
}

/* gs[c] += sum_r dy * xhat, gb[c] += sum_r dy, over column blocks. */
static void ln_bwd_params(void *ctx, int begin, int end) {
    const ln_job *j = ctx;
    int n = j->n;
    for (int t = begin; t < end; t++) {
        int c0 = t * CB, w = n - c0 < CB ? n - c0 : CB;
        float as[CB] = {0}, ab[CB] = {0};
        for (int r = 0; r < j->rows; r++) {
            const float *x = j->x + (size_t)r * n + c0, *dy = j->dy + (size_t)r * n + c0;
            float mu = j->mean[r], rs = j->rstd[r];
            for (int c = 0; c < w; c++) {
                as[c] += dy[c] * ((x[c] - mu) * rs);
                ab[c] += dy[c];
            }
        }
        for (int c = 0; c < w; c++) {
            j->p->gs[c0 + c] += as[c];
            j->p->gb[c0 + c] += ab[c];
        }
    }
}

void tl_layernorm_bwd(int rows, int n, const float *x, const float *mean, const float *rstd,
                      const tl_norm *p, int plus_one, const float *dy, float *dx, int acc) {
    if (rows <= 0) return;
    ln_job j = {rows, n, plus_one, acc, 0, x, dy, mean, rstd, p, NULL, dx, NULL, NULL};
    if (dx) ml_parallel_for(rows, grain_rows(n), ln_bwd_rows, &j);
    if (p->gs)
        ml_parallel_for((n + CB - 1) / CB, (int)(PAR_MIN / ((long)rows * CB) + 1), ln_bwd_params,
                        &j);
}

/* ---- element-wise ------------------------------------------------------- */

#define EW_CHUNK 8192

typedef struct ew_job {
    long n;
    const float *a, *b;
    float *out;
} ew_job;

static void ew_range(const ew_job *j, int t, long *b, long *e) {
    *b = (long)t * EW_CHUNK;
    *e = *b + EW_CHUNK < j->n ? *b + EW_CHUNK : j->n;
}

static void gelu_fwd_tasks(void *ctx, int begin, int end) {
    const ew_job *j = ctx;
    for (int t = begin; t < end; t++) {
        long b, e;
        ew_range(j, t, &b, &e);
        for (long i = b; i < e; i++) {
            float z = j->a[i];
            j->out[i] = z / (1.0f + expf(-1.702f * z));
        }
    }
}

/* d/dz [z s(1.702 z)] = s + 1.702 z s (1 - s). */
static void gelu_bwd_tasks(void *ctx, int begin, int end) {
    const ew_job *j = ctx;
    for (int t = begin; t < end; t++) {
        long b, e;
        ew_range(j, t, &b, &e);
        for (long i = b; i < e; i++) {
            float z = j->a[i], s = 1.0f / (1.0f + expf(-1.702f * z));
            j->out[i] = j->b[i] * (s + 1.702f * z * s * (1.0f - s));
        }
    }
}

static int ew_tasks(long n) { return (int)((n + EW_CHUNK - 1) / EW_CHUNK); }

void tl_quick_gelu_fwd(long n, const float *z, float *y) {
    ew_job j = {n, z, NULL, y};
    ml_parallel_for(ew_tasks(n), 4, gelu_fwd_tasks, &j);
}

void tl_quick_gelu_bwd(long n, const float *z, const float *dy, float *dz) {
    ew_job j = {n, z, dy, dz};
    ml_parallel_for(ew_tasks(n), 4, gelu_bwd_tasks, &j);
}

void tl_relu_bwd(long n, const float *y, const float *dy, float *dz) {
    for (long i = 0; i < n; i++) dz[i] = y[i] > 0 ? dy[i] : 0.0f;
}

/* ---- L2 normalisation --------------------------------------------------- */

void tl_l2norm_fwd(int rows, int n, const float *x, float *y) {
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * n;
        double ss = 0;
        for (int i = 0; i < n; i++) ss += (double)xr[i] * xr[i];
        double inv = 1.0 / sqrt(ss + 1e-12);
        for (int i = 0; i < n; i++) y[(size_t)r * n + i] = (float)(xr[i] * inv);
    }
}

void tl_l2norm_bwd(int rows, int n, const float *x, const float *y, const float *dy, float *dx) {
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * n, *yr = y + (size_t)r * n, *g = dy + (size_t)r * n;
        double ss = 0, yd = 0;
        for (int i = 0; i < n; i++) {
            ss += (double)xr[i] * xr[i];
            yd += (double)yr[i] * g[i];
        }
        double inv = 1.0 / sqrt(ss + 1e-12);
        for (int i = 0; i < n; i++) dx[(size_t)r * n + i] = (float)((g[i] - yr[i] * yd) * inv);
    }
}

/* ---- attention ---------------------------------------------------------- */

/* Where task (sequence i, head h) reads and writes. */
typedef struct att_task {
    int T, S;
    const float *q, *k, *v; /* head h's first query / key / value */
    size_t qrow, krow, orow;
} att_task;

static att_task att_geometry(const tl_attn *a, int task) {
    int i = task / a->heads, h = task % a->heads;
    att_task t;
    t.T = a->off ? a->len[i] : a->T;
    t.S = a->off ? a->len[i] : a->S;
    t.orow = a->off ? (size_t)a->off[i] : (size_t)i * a->T;
    t.krow = a->off ? (size_t)a->off[i] : (size_t)i * a->S;
    t.qrow = a->q_shared ? 0 : t.orow;
    t.q = a->q + t.qrow * a->ldq + (size_t)h * a->hd;
    t.k = a->k + t.krow * a->ldk + (size_t)h * a->hd;
    t.v = a->v + t.krow * a->ldk + (size_t)h * a->hd;
    return t;
}

/* Per-thread scratch, sized for the longest sequence. */
typedef struct att_scratch {
    float *qs, *kt, *p, *th, *dp, *pt, *dqs;
} att_scratch;

static void scratch_sizes(const tl_attn *a, int *maxT, int *maxS) {
    *maxT = a->T, *maxS = a->S;
    if (a->off) {
        *maxT = *maxS = 0;
        for (int i = 0; i < a->nseq; i++)
            if (a->len[i] > *maxT) *maxT = *maxS = a->len[i];
    }
}

static float *scratch_alloc(const tl_attn *a, att_scratch *s) {
    int T, S;
    scratch_sizes(a, &T, &S);
    size_t th = (size_t)T * a->hd, sh = (size_t)S * a->hd, ts = (size_t)T * S;
    float *buf = malloc(sizeof(float) * (2 * th + sh + 4 * ts + 16));
    if (!buf) return NULL;
    s->qs = buf, s->dqs = s->qs + th, s->kt = s->dqs + th, s->p = s->kt + sh;
    s->th = s->p + ts, s->dp = s->th + ts, s->pt = s->dp + ts;
    return buf;
}

static void transpose_serial(int R, int C, const float *src, int lds, float *dst) {
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) dst[(size_t)c * R + r] = src[(size_t)r * lds + c];
}

/* P = softmax(cap(scale * (q*qscale) . k)) with the masks; th keeps
 * tanh(logit/cap) for the backward.  Returns the query operand used
 * (scaled copy or q itself) through *qp / *ldqp. */
static void att_probs(const tl_attn *a, const att_task *t, att_scratch *s, const float **qp,
                      int *ldqp) {
    int T = t->T, S = t->S, hd = a->hd;
    *qp = t->q, *ldqp = a->ldq;
    if (a->qscale) {
        for (int r = 0; r < T; r++)
            for (int d = 0; d < hd; d++)
                s->qs[(size_t)r * hd + d] = t->q[(size_t)r * a->ldq + d] * a->qscale[d];
        *qp = s->qs, *ldqp = hd;
    }
    transpose_serial(S, hd, t->k, a->ldk, s->kt);
    ml_gemm(T, S, hd, *qp, *ldqp, s->kt, S, NULL, s->p, S, 0);
    for (int r = 0; r < T; r++) {
        float *row = s->p + (size_t)r * S, *th = s->th + (size_t)r * S;
        float mx = -INFINITY;
        for (int c = 0; c < S; c++) {
            int ok = (!a->key_ok || a->key_ok[t->krow + c]) && (!a->causal || c <= r);
            float l = a->scale * row[c];
            if (a->cap > 0) {
                th[c] = tanhf(l / a->cap);
                l = a->cap * th[c];
            }
            row[c] = ok ? l : -INFINITY;
            if (row[c] > mx) mx = row[c];
        }
        if (mx == -INFINITY) { /* no usable key: zero output, zero gradient */
            memset(row, 0, sizeof(float) * S);
            continue;
        }
        float sum = 0;
        for (int c = 0; c < S; c++) {
            row[c] = row[c] == -INFINITY ? 0.0f : expf(row[c] - mx);
            sum += row[c];
        }
        for (int c = 0; c < S; c++) row[c] /= sum;
    }
}

typedef struct att_job {
    const tl_attn *a;
    const float *dout;
    float *dq, *dk, *dv, *dqscale;
    int ntasks;
    atomic_int next, failed;
} att_job;

static void att_fwd_part(void *ctx, int begin, int end) {
    att_job *j = ctx;
    const tl_attn *a = j->a;
    (void)begin, (void)end;
    att_scratch s;
    float *buf = scratch_alloc(a, &s);
    if (!buf) {
        atomic_store(&j->failed, 1);
        return;
    }
    for (int n; (n = atomic_fetch_add(&j->next, 1)) < j->ntasks;) {
        att_task t = att_geometry(a, n);
        if (t.T <= 0 || t.S <= 0) continue;
        const float *qp;
        int ldqp;
        att_probs(a, &t, &s, &qp, &ldqp);
        float *o = a->out + t.orow * a->ldo + (size_t)(n % a->heads) * a->hd;
        ml_gemm(t.T, a->hd, t.S, s.p, t.S, t.v, a->ldk, NULL, o, a->ldo, 0);
    }
    free(buf);
}

/* With P the probabilities and dO the output gradient:
 *   dP = dO V^T, dV = P^T dO, dL = P * (dP - rowsum(P * dP)) (softmax),
 *   times (1 - tanh^2) (cap) and scale; dQs = dL K, dK = dL^T Qs,
 *   dq = dQs * qscale, dqscale += sum_t q * dQs. */
static void att_bwd_part(void *ctx, int begin, int end) {
    att_job *j = ctx;
    const tl_attn *a = j->a;
    (void)begin, (void)end;
    att_scratch s;
    float *buf = scratch_alloc(a, &s);
    if (!buf) {
        atomic_store(&j->failed, 1);
        return;
    }
    int hd = a->hd;
    for (int n; (n = atomic_fetch_add(&j->next, 1)) < j->ntasks;) {
        att_task t = att_geometry(a, n);
        int T = t.T, S = t.S;
        if (T <= 0 || S <= 0) continue;
        size_t hoff = (size_t)(n % a->heads) * hd;
        const float *qp, *dO = j->dout + t.orow * a->ldo + hoff;
        int ldqp;
        att_probs(a, &t, &s, &qp, &ldqp);
        transpose_serial(S, hd, t.v, a->ldk, s.kt); /* kt now holds V^T */
        ml_gemm(T, S, hd, dO, a->ldo, s.kt, S, NULL, s.dp, S, 0);
        transpose_serial(T, S, s.p, S, s.pt);
        ml_gemm(S, hd, T, s.pt, T, dO, a->ldo, NULL, j->dv + t.krow * a->ldk + hoff, a->ldk, 0);
        for (int r = 0; r < T; r++) {
            float *p = s.p + (size_t)r * S, *dp = s.dp + (size_t)r * S, *th = s.th + (size_t)r * S;
            float dot = 0;
            for (int c = 0; c < S; c++) dot += p[c] * dp[c];
            for (int c = 0; c < S; c++) {
                float g = p[c] * (dp[c] - dot);
                if (a->cap > 0) g *= 1.0f - th[c] * th[c];
                dp[c] = g * a->scale;
            }
        }
        float *dq = j->dq + t.orow * a->ldq + hoff;
        if (a->qscale) {
            ml_gemm(T, hd, S, s.dp, S, t.k, a->ldk, NULL, s.dqs, hd, 0);
            float *dqs = j->dqscale ? j->dqscale + (size_t)n * hd : NULL;
            if (dqs) memset(dqs, 0, sizeof(float) * hd);
            for (int r = 0; r < T; r++)
                for (int d = 0; d < hd; d++) {
                    float g = s.dqs[(size_t)r * hd + d];
                    dq[(size_t)r * a->ldq + d] = g * a->qscale[d];
                    if (dqs) dqs[d] += g * t.q[(size_t)r * a->ldq + d];
                }
        } else {
            ml_gemm(T, hd, S, s.dp, S, t.k, a->ldk, NULL, dq, a->ldq, 0);
        }
        transpose_serial(T, S, s.dp, S, s.pt);
        ml_gemm(S, hd, T, s.pt, T, qp, ldqp, NULL, j->dk + t.krow * a->ldk + hoff, a->ldk, 0);
    }
    free(buf);
}

static int att_run(att_job *j, ml_range_fn fn) {
    j->ntasks = j->a->nseq * j->a->heads;
    int parts = ml_num_threads() < j->ntasks ? ml_num_threads() : j->ntasks;
    ml_parallel_for(parts, 1, fn, j);
    /* A part that could not get scratch took no task; the rest took them. */
    return atomic_load(&j->failed) && atomic_load(&j->next) < j->ntasks ? -1 : 0;
}

int tl_attention_fwd(const tl_attn *a) {
    att_job j = {a, NULL, NULL, NULL, NULL, NULL, 0, 0, 0};
    return att_run(&j, att_fwd_part);
}

int tl_attention_bwd(const tl_attn *a, const float *dout, float *dq, float *dk, float *dv,
                     float *dqscale) {
    att_job j = {a, dout, dq, dk, dv, dqscale, 0, 0, 0};
    return att_run(&j, att_bwd_part);
}
