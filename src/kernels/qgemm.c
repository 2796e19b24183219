/* qgemm.c - low-precision (bf16 / int8) linear layers: weight packing, the
 * per-call activation packing, run-time kernel choice, threading, and the
 * portable reference kernels that every machine can run.
 *
 * Layout and the int8 scheme are described in qgemm_internal.h.  The portable
 * path computes the same math as the SIMD/AMX kernels on the same packed
 * data (same bf16 rounding, same quantised integers), so paths differ only by
 * float32 summation order. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/mem.h"
#include "core/threads.h"
#include "kernels/bf16.h"
#include "kernels/gemm.h"
#include "kernels/gemm_isa.h"
#include "kernels/ops.h"
#include "kernels/qgemm_avx2.h"
#include "kernels/qgemm_internal.h"

#define QG_MB 64                 /* rows per parallel task (multiple of QG_MPAD) */
#define QG_INT8_MAX_K 65536
#ifndef QG_MT_MIN_WORK
/* AMX products below M * N * Kp = this run on one thread.  It was 24M while
 * waking a pool thread cost ~35 us; with the pool's spin-wait (threads.c)
 * the fusion layers' products (16 x 512 x 512 at base) gain from a second
 * thread: fusion 4.6-4.8 -> 3.7-4.2 ms a batch of 8, batch-1 queries
 * 25-26 -> 27.5-28.5 per second (bf16). */
#define QG_MT_MIN_WORK (4 * 1024 * 1024)
#endif
#ifndef QG_DYNAMIC
#define QG_DYNAMIC 1
#endif
#ifndef QG_PB_EVEN
#define QG_PB_EVEN 1
#endif      /* 255 * 127 * K must fit an int32 */

/* ---- scalar conversions (also the reference for the SIMD packers) ---- */

static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

static int round_up(int v, int m) { return (v + m - 1) / m * m; }

/* ---- weight packing ---- */

static void pack_bf16(const float *B, int K, int N, ml_packed *p) {
    uint16_t *w = p->w;
    for (int pn = 0; pn < p->panels; pn++) {
        uint16_t *dst = w + (size_t)pn * p->Kp * QG_NR;
        for (int k = 0; k < K; k++)
            for (int c = 0; c < QG_NR && pn * QG_NR + c < N; c++)
                dst[(size_t)(k / 2) * 32 + c * 2 + k % 2] =
                    ml_f32_to_bf16(B[(size_t)k * N + pn * QG_NR + c]);
    }
}

/* Symmetric per-column quantisation: q = round(b * qmax / max|b|), qmax
 * 127, or 63 for the AVX2 u8 x s7 kernel (qg_weight_qmax). */
static void pack_int8(const float *B, int K, int N, ml_packed *p) {
    int8_t *w = p->w;
    const int qmax = qg_weight_qmax(p->kernel);
    for (int n = 0; n < N; n++) {
        float mx = 0.0f;
        for (int k = 0; k < K; k++) mx = fmaxf(mx, fabsf(B[(size_t)k * N + n]));
        float inv = mx > 0.0f ? (float)qmax / mx : 0.0f;
        p->scale[n] = mx / (float)qmax;
        int8_t *dst = w + (size_t)(n / QG_NR) * p->Kp * QG_NR;
        int c = n % QG_NR, sum = 0;
        for (int k = 0; k < K; k++) {
            int q = clampi((int)lrintf(B[(size_t)k * N + n] * inv), -qmax, qmax);
            dst[(size_t)(k / 4) * 64 + c * 4 + k % 4] = (int8_t)q;
            sum += q;
        }
        p->colsum[n] = sum;
    }
}

/* The best kernel of `isa` on this CPU.  Wherever AVX2 exists, no precision
 * runs the portable kernels: AVX2, or AVX-512 without its BF16 / VNNI
 * extensions (Skylake-SP; Ice Lake for bf16), takes the ymm kernels, and
 * bf16 widens into the float32 kernel where vdpbf16ps is no faster than
 * FMA (Intel without AMX: ml_cpu_bf16_dot). */
static qg_kernel choose_kernel(ml_precision prec, ml_isa isa) {
#if defined(__x86_64__)
    if (isa == ML_ISA_AMX) return QG_AMX;
    if (isa == ML_ISA_AVX512 && (prec == ML_PREC_BF16 ? ml_cpu_bf16_dot() : ml_cpu_has_avx512_vnni()))
        return QG_AVX512;
    if (isa == ML_ISA_AVX2 || isa == ML_ISA_AVX512) {
        if (prec == ML_PREC_BF16) return QG_F32W;
        return ml_cpu_has_avx_vnni() ? QG_AVXVNNI : QG_AVX2;
    }
#elif defined(__aarch64__)
    if (prec == ML_PREC_BF16) return isa == ML_ISA_NEON_BF16 ? QG_BFMMLA : isa >= ML_ISA_NEON ? QG_NEON : QG_REF;
    if (isa >= ML_ISA_I8MM) return QG_I8MM;
    if (isa == ML_ISA_DOTPROD) return QG_DOTPROD;
    if (isa == ML_ISA_NEON) return QG_NEON;
#else
    (void)prec, (void)isa;
#endif
    return QG_REF;
}

ml_packed *ml_pack_weights(const float *B, int K, int N, ml_precision prec, ml_isa isa,
                           ml_error *err) {
    if (K < 0 || N <= 0 || (prec != ML_PREC_FP32 && prec != ML_PREC_BF16 && prec != ML_PREC_INT8)) {
        ml_fail(err, "ml_pack_weights: bad shape %dx%d or precision %d", K, N, (int)prec);
        return NULL;
    }
    if (!ml_isa_supported(isa)) { /* also asks Linux for AMX permission */
        ml_fail(err, "ml_pack_weights: this machine cannot run the %s kernels", ml_isa_name(isa));
        return NULL;
    }
    if (prec == ML_PREC_INT8 && K > QG_INT8_MAX_K) {
        ml_fail(err, "ml_pack_weights: int8 K=%d over %d would overflow int32", K, QG_INT8_MAX_K);
        return NULL;
    }
    ml_packed *p = ml_calloc(1, sizeof *p, err);
    if (!p) return NULL;
    p->prec = prec, p->isa = isa, p->K = K, p->N = N;
    p->kernel = prec == ML_PREC_FP32 ? QG_REF : choose_kernel(prec, isa);
    /* AVX-512 activation packers: the bf16 one needs vcvtne2ps2bf16 */
    p->simd_a = (p->kernel == QG_AVX512 || p->kernel == QG_AMX) &&
                (prec == ML_PREC_INT8 || ml_cpu_has_avx512_bf16());
    p->panels = (N + QG_NR - 1) / QG_NR;
    p->Kp = round_up(K > 0 ? K : 1, prec == ML_PREC_INT8 ? 64 : 32);
    size_t cols = (size_t)p->panels * QG_NR;
    if (prec == ML_PREC_FP32) p->bytes = (size_t)K * N * sizeof(float);
    else p->bytes = (size_t)p->Kp * cols * (prec == ML_PREC_BF16 ? 2 : 1);
    p->w = ml_aligned_alloc(p->bytes, err);
    if (prec == ML_PREC_INT8) {
        p->scale = ml_calloc(cols, sizeof(float), err);
        p->colsum = ml_calloc(cols, sizeof(int32_t), err);
        p->bytes += cols * (sizeof(float) + sizeof(int32_t));
    }
    if (!p->w || (prec == ML_PREC_INT8 && (!p->scale || !p->colsum))) {
        ml_packed_free(p);
        return NULL;
    }
    if (prec == ML_PREC_FP32) {
        if (p->bytes) memcpy(p->w, B, p->bytes);
        return p;
    }
    memset(p->w, 0, (size_t)p->Kp * cols * (prec == ML_PREC_BF16 ? 2 : 1));
    if (prec == ML_PREC_BF16) pack_bf16(B, K, N, p);
    else pack_int8(B, K, N, p);
    return p;
}

void ml_packed_free(ml_packed *p) {
    if (!p) return;
    free(p->w);
    free(p->scale);
    free(p->colsum);
    free(p);
}

size_t ml_packed_bytes(const ml_packed *p) { return p ? p->bytes + sizeof *p : 0; }

int ml_packed_k(const ml_packed *p) { return p->Kp; }

int ml_packed_native_bf16(const ml_packed *p) { return p->prec != ML_PREC_FP32 && p->kernel == QG_AMX; }

/* ---- activation packing (portable) ---- */

static void ref_pack_bf16(const float *A, int lda, int K, int Kp, uint16_t *dst, int r0, int r1) {
    for (int i = r0; i < r1; i++) {
        uint16_t *d = dst + (size_t)i * Kp;
        const float *a = A + (size_t)i * lda;
        for (int k = 0; k < K; k++) d[k] = ml_f32_to_bf16(a[k]);
        for (int k = K; k < Kp; k++) d[k] = 0;
    }
}

/* Asymmetric per-row u8: scale = (max - min) / 255 with 0 in [min, max], and
 * zero point z = round(-min / scale), so 0.0 is exactly representable.  The
 * AVX-512 packer does the same float operations in the same order. */
static void ref_pack_u8(const float *A, int lda, int K, int Kp, uint8_t *dst, float *scale,
                        int32_t *zero, int r0, int r1) {
    for (int i = r0; i < r1; i++) {
        const float *a = A + (size_t)i * lda;
        float mn = 0.0f, mx = 0.0f;
        for (int k = 0; k < K; k++) mn = fminf(mn, a[k]), mx = fmaxf(mx, a[k]);
        float s = (mx - mn) / 255.0f, inv = s > 0.0f ? 1.0f / s : 0.0f;
        int z = clampi((int)lrintf(-mn * inv), 0, 255);
        scale[i] = s, zero[i] = z;
        uint8_t *d = dst + (size_t)i * Kp;
        for (int k = 0; k < K; k++) d[k] = (uint8_t)clampi((int)lrintf(a[k] * inv) + z, 0, 255);
        for (int k = K; k < Kp; k++) d[k] = 0;
    }
}

/* ---- portable reference kernels ---- */

/* C row i, panel p <- v (16 values, already dequantised), + bias, + C. */
static void store_row(const qg_job *j, int i, int p, const float *v) {
    float *c = j->C + (size_t)i * j->ldc + p * QG_NR;
    const float *bias = j->bias ? j->bias + p * QG_NR : NULL;
    int nc = qg_panel_cols(j->B, p);
    for (int n = 0; n < nc; n++) {
        float x = v[n] + (bias ? bias[n] : 0.0f);
        c[n] = j->accumulate ? c[n] + x : x;
    }
}

void qg_ref_bf16(const qg_job *j, int i0, int i1, int p0, int p1) {
    int M = j->A->M, Kp = j->A->Kp;
    for (int p = p0; p < p1; p++) {
        const uint16_t *w = qg_panel(j->B, p);
        for (int i = i0; i < i1 && i < M; i++) {
            const uint16_t *a = (const uint16_t *)j->A->a + (size_t)i * Kp;
            float acc[QG_NR] = {0};
            for (int kp = 0; kp < Kp / 2; kp++) {
                float a0 = ml_bf16_to_f32(a[2 * kp]), a1 = ml_bf16_to_f32(a[2 * kp + 1]);
                const uint16_t *b = w + (size_t)kp * 32;
                for (int n = 0; n < QG_NR; n++)
                    acc[n] += a0 * ml_bf16_to_f32(b[2 * n]) + a1 * ml_bf16_to_f32(b[2 * n + 1]);
            }
            store_row(j, i, p, acc);
        }
    }
}

void qg_ref_int8(const qg_job *j, int i0, int i1, int p0, int p1) {
    int M = j->A->M, Kp = j->A->Kp;
    for (int p = p0; p < p1; p++) {
        const int8_t *w = qg_panel(j->B, p);
        const float *sw = j->B->scale + p * QG_NR;
        const int32_t *cs = j->B->colsum + p * QG_NR;
        for (int i = i0; i < i1 && i < M; i++) {
            const uint8_t *a = (const uint8_t *)j->A->a + (size_t)i * Kp;
            int32_t acc[QG_NR] = {0};
            for (int kq = 0; kq < Kp / 4; kq++) {
                const int8_t *b = w + (size_t)kq * 64;
                for (int n = 0; n < QG_NR; n++)
                    for (int t = 0; t < 4; t++) acc[n] += (int32_t)a[4 * kq + t] * b[4 * n + t];
            }
            float v[QG_NR], sa = j->A->scale[i];
            int32_t z = j->A->zero[i];
            for (int n = 0; n < QG_NR; n++) v[n] = (float)(acc[n] - z * cs[n]) * (sa * sw[n]);
            store_row(j, i, p, v);
        }
    }
}

/* ---- per-call driver ---- */

typedef struct pack_job {
    const ml_packed *B;
    const float *A;
    int lda;
    qg_act *act;
    char *tmp;          /* AMX: one packed row (Kp elements) */
    const uint16_t *Ab; /* AMX int8: bf16 rows (stride lda) instead of A */
    float *wide;        /* ... widened here (K floats) before quantisation */
} pack_job;

static void pack_range(const pack_job *pj, int r0, int r1) {
    const ml_packed *B = pj->B;
    qg_act *q = pj->act;
#if defined(__x86_64__)
    if (B->kernel == QG_AVX2 || B->kernel == QG_AVXVNNI) {
        qg_avx2_pack_u8(pj->A, pj->lda, B->K, B->Kp, q->a, q->scale, q->zero, r0, r1);
        return;
    }
    if (B->simd_a) {
        if (B->prec == ML_PREC_BF16) qg_avx512_pack_bf16(pj->A, pj->lda, B->K, B->Kp, q->a, r0, r1);
        else qg_avx512_pack_u8(pj->A, pj->lda, B->K, B->Kp, q->a, q->scale, q->zero, r0, r1);
        return;
    }
#endif
    if (B->prec == ML_PREC_BF16) ref_pack_bf16(pj->A, pj->lda, B->K, B->Kp, q->a, r0, r1);
    else ref_pack_u8(pj->A, pj->lda, B->K, B->Kp, q->a, q->scale, q->zero, r0, r1);
}

static void pack_rows(void *ctx, int begin, int end) {
    const pack_job *pj = ctx;
    int M = pj->act->M, r0 = begin * 16, r1 = end * 16 < M ? end * 16 : M;
    pack_range(pj, r0, r1);
}

typedef void (*qg_kernel_fn)(const qg_job *, int, int, int, int);

typedef struct task_job {
    qg_job job;
    qg_kernel_fn fn;
    int n_mblocks, pb; /* row blocks of QG_MB; panel blocks of pb panels */
    int ntasks;
    atomic_int next;   /* next task to hand out */
} task_job;

/* Task t = (panel block t / n_mblocks, row block t % n_mblocks): consecutive
 * tasks share their panel block, which stays in L2.  Each thread takes the
 * next task from a counter instead of a fixed share, so that a thread whose
 * core is busy (a shared machine) or that woke late simply takes fewer: the
 * fixed halves left one of two threads idle for 10-30% of an int8 product
 * (bench_qgemm, 2 threads, 25 tasks). */
static void run_tasks(void *ctx, int begin, int end) {
    task_job *tj = ctx;
    (void)begin, (void)end;
    for (int t; (t = atomic_fetch_add(&tj->next, 1)) < tj->ntasks;) {
        int pblk = t / tj->n_mblocks, mblk = t % tj->n_mblocks;
        int i0 = mblk * QG_MB, i1 = i0 + QG_MB < tj->job.A->Mp ? i0 + QG_MB : tj->job.A->Mp;
        int p0 = pblk * tj->pb, p1 = p0 + tj->pb < tj->job.B->panels ? p0 + tj->pb : tj->job.B->panels;
        tj->fn(&tj->job, i0, i1, p0, p1);
    }
}

static qg_kernel_fn kernel_fn(const ml_packed *B) {
    int bf = B->prec == ML_PREC_BF16;
#if defined(__x86_64__)
    if (B->kernel == QG_AVX512) return bf ? qg_avx512_bf16 : qg_avx512_int8;
    if (B->kernel == QG_AVX2) return qg_avx2_int8;
    if (B->kernel == QG_AVXVNNI) return qg_avxvnni_int8;
#endif
#if defined(__aarch64__)
    switch (B->kernel) {
    case QG_NEON: return bf ? qg_neon_bf16 : qg_neon_int8;
    case QG_DOTPROD: return qg_dotprod_int8;
    case QG_I8MM: return qg_i8mm_int8;
    case QG_BFMMLA: return qg_bf16mm_bf16;
    default: break;
    }
#endif
    return bf ? qg_ref_bf16 : qg_ref_int8;
}

/* Panels per task: as many as fit QG_B_BLOCK (even, for the 2-panel
 * kernels), fewer when that would leave threads idle. */
static int panel_block(const ml_packed *B, int n_mblocks) {
    size_t panel_bytes = qg_panel_bytes(B);
    int pb = (int)(QG_B_BLOCK / panel_bytes) & ~1;
    if (pb < 2) pb = 2;
    int threads = ml_num_threads();
    while (pb > 2 && n_mblocks * ((B->panels + pb - 1) / pb) < 4 * threads) pb = (pb / 2 + 1) & ~1;
    return pb;
}

static int alloc_act(qg_act *q, const ml_packed *B, int M) {
    q->M = M, q->Mp = round_up(M, QG_MPAD), q->Kp = B->Kp;
    size_t esz = B->prec == ML_PREC_BF16 ? 2 : 1, rows = (size_t)q->Mp;
    q->a = ml_aligned_alloc(rows * q->Kp * esz, NULL);
    q->scale = NULL, q->zero = NULL;
    if (B->prec == ML_PREC_INT8) {
        q->scale = ml_malloc(rows * sizeof(float), NULL);
        q->zero = ml_malloc(rows * sizeof(int32_t), NULL);
    }
    if (!q->a || (B->prec == ML_PREC_INT8 && (!q->scale || !q->zero))) return -1;
    /* padded rows: zero inputs (their results are never stored) */
    memset((char *)q->a + (size_t)M * q->Kp * esz, 0, (rows - (size_t)M) * q->Kp * esz);
    return 0;
}

static void free_act(qg_act *q) {
    free(q->a);
    free(q->scale);
    free(q->zero);
}

/* ---- AMX driver: per-thread activation scratch, packed as it is used ----
 *
 * Each thread owns a scratch buffer (grown as needed, reused across calls,
 * freed when the thread exits) that holds the packed activations of its own
 * rows only, so there is no whole-matrix pass, no per-call allocation, and a
 * row block is still in cache when the tiles first read it. */

typedef struct qg_scratch {
    void *p;
    size_t n;
} qg_scratch;

#if defined(__x86_64__) /* the per-thread scratch and the AMX driver */
static pthread_key_t g_scratch_key;
static pthread_once_t g_scratch_once = PTHREAD_ONCE_INIT;
static int g_scratch_ok; /* written once under pthread_once */

static void scratch_free(void *v) {
    qg_scratch *s = v;
    if (s) free(s->p);
    free(s);
}

static void scratch_init(void) { g_scratch_ok = pthread_key_create(&g_scratch_key, scratch_free) == 0; }

/* This thread's scratch of at least `bytes` (64-byte aligned), or NULL. */
static void *thread_scratch(size_t bytes) {
    pthread_once(&g_scratch_once, scratch_init);
    if (!g_scratch_ok) return NULL;
    qg_scratch *s = pthread_getspecific(g_scratch_key);
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s) return NULL;
        if (pthread_setspecific(g_scratch_key, s) != 0) {
            free(s);
            return NULL;
        }
    }
    if (s->n < bytes) {
        free(s->p);
        s->n = 0;
        s->p = ml_aligned_alloc(bytes, NULL);
        if (s->p) s->n = bytes;
    }
    return s->p;
}

typedef struct amx_job {
    const ml_packed *B;
    const float *A, *bias;
    float *C;
    int M, lda, ldc, accumulate, gelu;
    int mblocks, mparts, nparts, pb;
    const uint16_t *Ab; /* bf16 A read in place (then A is NULL), row stride lda */
    uint16_t *Cb;       /* bf16 C instead of C, row stride ldc */
    int dyn;            /* bf16 in place: every task takes items from `next` */
    atomic_int next;
    const ml_packed *then; /* the next product's weights (prefetched), or NULL */
} amx_job;

/* Packs local rows [r0, r1) into the AMX blocked layout (qg_amx_task).
 * With the AVX-512 packers each row goes straight there; otherwise it is
 * converted into a row buffer after the blocks (tmp) and its 64-byte k steps
 * are spread out.  Packing row M - 1 also zeroes the padding rows of its
 * block (their results are never stored). */
static void amx_pack(void *ctx, int r0, int r1) {
    const pack_job *pj = ctx;
    const qg_act *q = pj->act;
    size_t esz = pj->B->prec == ML_PREC_BF16 ? 2 : 1, row = (size_t)q->Kp * esz;
    size_t steps = row / 64;
    int end = r1 == q->M ? q->Mp : r1;
    for (int r = r0; r < end; r++) {
        char *dst = (char *)q->a + (size_t)(r / QG_MPAD) * QG_MPAD * row + (size_t)(r % QG_MPAD) * 64;
        const float *a = pj->A ? pj->A + (size_t)r * pj->lda : pj->wide;
        if (pj->Ab && r < r1) /* int8 from the bf16 pipeline: widen, then as from float */
            for (int k = 0; k < pj->B->K; k++) pj->wide[k] = ml_bf16_to_f32(pj->Ab[(size_t)r * pj->lda + k]);
#if defined(__x86_64__)
        if (pj->B->simd_a && r < r1) {
            if (esz == 2) qg_avx512_pack_bf16_blk(a, pj->B->K, q->Kp, (uint16_t *)dst, QG_MPAD * 32);
            else qg_avx512_pack_u8_blk(a, pj->B->K, q->Kp, (uint8_t *)dst, QG_MPAD * 64, q->scale + r, q->zero + r);
            continue;
        }
#endif
        char *tmp = pj->tmp;
        if (r < r1) {
            qg_act one = {1, 1, q->Kp, tmp, q->scale ? q->scale + r : NULL, q->zero ? q->zero + r : NULL};
            pack_job pr = {pj->B, a, pj->lda, &one, NULL, NULL, NULL};
            pack_range(&pr, 0, 1);
        } else {
            memset(tmp, 0, row);
        }
        for (size_t s = 0; s < steps; s++) memcpy(dst + s * QG_MPAD * 64, tmp + s * 64, 64);
    }
}

static void run_amx(void *ctx, int begin, int end) {
    const amx_job *aj = ctx;
    const ml_packed *B = aj->B;
    for (int t = begin; t < end; t++) {
        int mp = t / aj->nparts, np = t % aj->nparts;
        int b0 = (int)((long long)aj->mblocks * mp / aj->mparts);
        int b1 = (int)((long long)aj->mblocks * (mp + 1) / aj->mparts);
        int r0 = b0 * QG_MPAD, r1 = b1 * QG_MPAD < aj->M ? b1 * QG_MPAD : aj->M;
        int pairs = (B->panels + 1) / 2;
        int q0 = 2 * (int)((long long)pairs * np / aj->nparts);
        int q1 = 2 * (int)((long long)pairs * (np + 1) / aj->nparts);
        if (q1 > B->panels) q1 = B->panels;
        if (aj->dyn) { /* all rows and panels, items shared through the counter */
            qg_act act = {aj->M, round_up(aj->M, QG_MPAD), B->Kp, (void *)aj->Ab, NULL, NULL};
            qg_job j = {B,        &act,   aj->bias,           aj->C, aj->ldc, aj->accumulate,
                        aj->gelu, aj->Cb, (size_t)aj->lda * 2, aj->then};
            qg_amx_task(&j, 0, B->panels, aj->pb, NULL, NULL, (atomic_int *)&aj->next, aj->mparts * aj->nparts);
            continue;
        }
        if (r0 >= r1 || q0 >= q1) continue;
        if (aj->Ab && B->prec == ML_PREC_BF16) { /* bf16 rows: the tiles read them where they are */
            qg_act act = {r1 - r0, round_up(r1 - r0, QG_MPAD), B->Kp, (void *)(aj->Ab + (size_t)r0 * aj->lda), NULL, NULL};
            qg_job j = {B, &act, aj->bias, aj->C ? aj->C + (size_t)r0 * aj->ldc : NULL, aj->ldc, aj->accumulate,
                        aj->gelu, aj->Cb ? aj->Cb + (size_t)r0 * aj->ldc : NULL, (size_t)aj->lda * 2, aj->then};
            qg_amx_task(&j, q0, q1, aj->pb, NULL, NULL, NULL, 1);
            continue;
        }
        qg_act act;
        act.M = r1 - r0, act.Mp = round_up(act.M, QG_MPAD), act.Kp = B->Kp;
        size_t abytes = (size_t)act.Mp * act.Kp * (B->prec == ML_PREC_BF16 ? 2 : 1);
        size_t rowb = (size_t)act.Kp * (B->prec == ML_PREC_BF16 ? 2 : 1);
        size_t wideb = aj->Ab ? ((size_t)B->K * sizeof(float) + 63) / 64 * 64 : 0;
        size_t bytes = wideb + abytes + rowb + (B->prec == ML_PREC_INT8 ? (size_t)act.Mp * 8 : 0);
        char *s = thread_scratch(bytes);
        if (!s) {
            fprintf(stderr, "magiclens: out of memory for %d x %d activation scratch\n", act.M, act.Kp);
            abort();
        }
        float *wide = (float *)(void *)s;
        s += wideb;
        act.a = s;
        act.scale = B->prec == ML_PREC_INT8 ? (float *)(s + abytes + rowb) : NULL;
        act.zero = B->prec == ML_PREC_INT8 ? (int32_t *)(s + abytes + rowb + (size_t)act.Mp * 4) : NULL;
        pack_job pj = {B, aj->A ? aj->A + (size_t)r0 * aj->lda : NULL, aj->lda, &act, s + abytes,
                       aj->Ab ? aj->Ab + (size_t)r0 * aj->lda : NULL, wide};
        qg_job j = {B, &act, aj->bias, aj->C ? aj->C + (size_t)r0 * aj->ldc : NULL, aj->ldc, aj->accumulate,
                    aj->gelu, aj->Cb ? aj->Cb + (size_t)r0 * aj->ldc : NULL, 0, aj->then};
        qg_amx_task(&j, q0, q1, aj->pb, amx_pack, &pj, NULL, 1);
    }
}

/* Splits the threads into mparts row ranges x nparts panel ranges: rows
 * when there are enough row blocks (each row range packs its rows once),
 * panels for short M (text tower). */
static void gemm_amx(amx_job *aj) {
    const ml_packed *B = aj->B;
    int M = aj->M;
    aj->mblocks = (M + QG_MPAD - 1) / QG_MPAD;
    int T = ml_num_threads();
    long long work = (long long)M * B->N * B->Kp;
    if (work < QG_MT_MIN_WORK) T = 1; /* waking a thread costs more than it saves */
    int d = 1;
    for (int c = 1; c <= T; c++)
        if (T % c == 0 && c <= aj->mblocks / 4) d = c;
    aj->mparts = d;
    aj->nparts = T / d;
    int pairs = (B->panels + 1) / 2;
    if (aj->nparts > pairs) aj->nparts = pairs;
    size_t panel_bytes = qg_panel_bytes(B);
    aj->pb = (int)(QG_B_BLOCK / panel_bytes) & ~1; /* 1 MB: 256/512 KB and 1.5 MB were slower */
    if (aj->pb < 2) aj->pb = 2;
    /* as many blocks as that needs, of equal size (48 panels in 42 + 6
     * re-read each row block of A for 3 panel pairs' work) */
    int nblk = (B->panels + aj->pb - 1) / aj->pb;
    aj->pb = ((B->panels + nblk - 1) / nblk + 1) & ~1;
    /* bf16 read in place, split by rows: the threads take (panel block,
     * row block) items from a counter instead of fixed halves, so one that
     * is slowed down (a shared machine) takes fewer; the halves left one
     * thread waiting for ~4.6% of the GEMM time */
    aj->dyn = QG_DYNAMIC && aj->Ab && B->prec == ML_PREC_BF16 && aj->nparts == 1 && aj->mparts > 1;
    ml_parallel_for(aj->mparts * aj->nparts, 1, run_amx, aj);
}

#endif /* __x86_64__ */

/* The per-call path of the portable and AVX-512 / ymm kernels: A packed
 * once, then (row block, panel block) tasks on the pool.  gelu: the ymm
 * int8 kernels only (their epilogue applies it). */
static void gemm_tasks(int M, const float *A, int lda, const ml_packed *B, const float *bias,
                       float *C, int ldc, int accumulate, int gelu) {
    qg_act act;
    if (alloc_act(&act, B, M) != 0) {
        /* No way to report it (void API) and no sensible partial result:
         * fail loudly rather than return garbage. */
        fprintf(stderr, "magiclens: out of memory for %d x %d activation scratch\n", M, B->Kp);
        free_act(&act);
        abort();
    }
    pack_job pj = {B, A, lda, &act, NULL, NULL, NULL};
    ml_parallel_for((M + 15) / 16, 2, pack_rows, &pj);
    task_job tj = {{B, &act, bias, C, ldc, accumulate, gelu, NULL, 0, NULL}, kernel_fn(B), 0, 0, 0, 0};
    tj.n_mblocks = (act.Mp + QG_MB - 1) / QG_MB;
    tj.pb = panel_block(B, tj.n_mblocks);
    int n_pblocks = (B->panels + tj.pb - 1) / tj.pb;
    tj.ntasks = tj.n_mblocks * n_pblocks;
    atomic_init(&tj.next, 0);
    int threads = ml_num_threads();
    ml_parallel_for(tj.ntasks < threads ? tj.ntasks : threads, 1, run_tasks, &tj);
    free_act(&act);
}

void ml_gemm_packed(int M, const float *A, int lda, const ml_packed *B, const float *bias,
                    float *C, int ldc, int accumulate) {
    if (M <= 0 || !B) return;
    if (B->prec == ML_PREC_FP32) {
        ml_gemm(M, B->N, B->K, A, lda, B->w, B->N, bias, C, ldc, accumulate);
        return;
    }
#if defined(__x86_64__)
    if (B->kernel == QG_AMX) {
        gemm_amx(&(amx_job){B, A, bias, C, M, lda, ldc, accumulate, 0, 0, 1, 1, 2, NULL, NULL, 0, 0, NULL});
        return;
    }
    if (B->kernel == QG_F32W) {
        ml_gemm_bfn(B->isa, M, B->N, B->K, A, lda, qg_widen_bf16, B, bias, C, ldc, accumulate, 0);
        return;
    }
#endif
    gemm_tasks(M, A, lda, B, bias, C, ldc, accumulate, 0);
}

void ml_gemm_packed_gelu(int M, const float *A, int lda, const ml_packed *B, const float *bias,
                         float *C, int ldc) {
    if (M <= 0 || !B) return;
#if defined(__x86_64__)
    if (B->kernel == QG_AMX && B->prec != ML_PREC_FP32) {
        gemm_amx(&(amx_job){B, A, bias, C, M, lda, ldc, 0, 1, 0, 1, 1, 2, NULL, NULL, 0, 0, NULL});
        return;
    }
    if (B->kernel == QG_F32W) { /* the GELU in the float32 GEMM's epilogue */
        ml_gemm_bfn(B->isa, M, B->N, B->K, A, lda, qg_widen_bf16, B, bias, C, ldc, 0, 1);
        return;
    }
    if (B->kernel == QG_AVX2 || B->kernel == QG_AVXVNNI) { /* in the int8 epilogue */
        gemm_tasks(M, A, lda, B, bias, C, ldc, 0, 1);
        return;
    }
#endif
    if (B->prec == ML_PREC_FP32) {
        ml_gemm_gelu(M, B->N, B->K, A, lda, B->w, B->N, bias, C, ldc);
        return;
    }
    ml_gemm_packed(M, A, lda, B, bias, C, ldc, 0);
    if (ldc == B->N) ml_quick_gelu(C, (long)M * B->N);
    else
        for (int i = 0; i < M; i++) ml_quick_gelu(C + (size_t)i * ldc, B->N);
}

/* ---- bf16 activations (the AMX bf16 pipeline of clip.c) ---- */

/* Elsewhere than AMX, through float32: A widened, the float32-input
 * product, the result rounded.  Same bf16 operands, so the same result up
 * to summation order; slow, but every kernel can run the pipeline. */
static void gemm_bf16_via_f32(int M, const uint16_t *A, int lda, const ml_packed *B,
                              const float *bias, float *C, uint16_t *Cb, int ldc, int flags) {
    int K = B->K, N = B->N;
    float *a = ml_malloc(sizeof(float) * ((size_t)M * K + (Cb ? (size_t)M * N : 0)), NULL);
    if (!a) {
        fprintf(stderr, "magiclens: out of memory for %d x %d bf16 activations\n", M, K);
        abort();
    }
    for (int i = 0; i < M; i++)
        for (int k = 0; k < K; k++) a[(size_t)i * K + k] = ml_bf16_to_f32(A[(size_t)i * lda + k]);
    float *c = Cb ? a + (size_t)M * K : C;
    int ld = Cb ? N : ldc;
    if (flags & ML_GEMM_GELU) ml_gemm_packed_gelu(M, a, K, B, bias, c, ld);
    else ml_gemm_packed(M, a, K, B, bias, c, ld, (flags & ML_GEMM_ACCUMULATE) != 0);
    if (Cb)
        for (int i = 0; i < M; i++)
            for (int n = 0; n < N; n++) Cb[(size_t)i * ldc + n] = ml_f32_to_bf16(c[(size_t)i * N + n]);
    free(a);
}

void ml_gemm_bf16_then(int M, const uint16_t *A, int lda, const ml_packed *B, const float *bias,
                       float *C, uint16_t *Cb, int ldc, int flags, const ml_packed *then) {
    if (M <= 0 || !B || B->prec == ML_PREC_FP32 || !C == !Cb || (Cb && (flags & ML_GEMM_ACCUMULATE)))
        return;
#if defined(__x86_64__)
    if (B->kernel == QG_AMX) {
        gemm_amx(&(amx_job){B, NULL, bias, C, M, lda, ldc, (flags & ML_GEMM_ACCUMULATE) != 0,
                            (flags & ML_GEMM_GELU) != 0, 0, 1, 1, 2, A, Cb, 0, 0,
                            then && then->kernel == QG_AMX ? then : NULL});
        return;
    }
#endif
    (void)then;
    gemm_bf16_via_f32(M, A, lda, B, bias, C, Cb, ldc, flags);
}

void ml_gemm_bf16(int M, const uint16_t *A, int lda, const ml_packed *B, const float *bias,
                  float *C, uint16_t *Cb, int ldc, int flags) {
    ml_gemm_bf16_then(M, A, lda, B, bias, C, Cb, ldc, flags, NULL);
}

/* ---- names ---- */

static const char *kernel_name(ml_precision prec, ml_isa isa, qg_kernel k) {
    int i8 = prec == ML_PREC_INT8;
    if (prec == ML_PREC_FP32)
        return isa == ML_ISA_SCALAR ? "scalar-fp32"
               : isa == ML_ISA_AVX2 ? "avx2-fp32"
               : isa >= ML_ISA_NEON ? "neon-fp32"
                                    : "avx512-fp32";
    switch (k) {
    case QG_AVX512: return i8 ? "avx512-vnni" : "avx512-bf16";
    case QG_AMX: return i8 ? "amx-int8" : "amx-bf16";
    case QG_AVX2: return "avx2-u8s7";
    case QG_AVXVNNI: return "avxvnni-u8s8";
    case QG_F32W: return isa == ML_ISA_AVX2 ? "avx2-bf16w" : "avx512-bf16w";
    case QG_NEON: return i8 ? "neon-int8" : "neon-bf16"; /* bf16 x bf16 products, widened */
    case QG_DOTPROD: return "dotprod-int8";
    case QG_I8MM: return "i8mm-int8";
    case QG_BFMMLA: return "bfmmla-bf16";
    case QG_REF: break;
    }
    return i8 ? "scalar-int8" : "scalar-bf16";
}

const char *ml_packed_kernel_name(const ml_packed *p) {
    return p ? kernel_name(p->prec, p->isa, p->kernel) : "none";
}

const char *ml_gemm_kernel_name(ml_precision prec, ml_isa isa) {
    return kernel_name(prec, isa, prec == ML_PREC_FP32 ? QG_REF : choose_kernel(prec, isa));
}

const char *ml_precision_name(ml_precision p) {
    switch (p) {
    case ML_PREC_FP32: return "fp32";
    case ML_PREC_BF16: return "bf16";
    case ML_PREC_INT8: return "int8";
    }
    return "unknown";
}

int ml_precision_parse(const char *name) {
    if (!name) return -1;
    if (!strcmp(name, "fp32") || !strcmp(name, "f32") || !strcmp(name, "float32")) return ML_PREC_FP32;
    if (!strcmp(name, "bf16") || !strcmp(name, "bfloat16")) return ML_PREC_BF16;
    if (!strcmp(name, "int8") || !strcmp(name, "i8")) return ML_PREC_INT8;
    return -1;
}
