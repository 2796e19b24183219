/* qgemm_internal.h - shared layout of the low-precision GEMM (qgemm*.c only).
 *
 * One weight layout serves every kernel, so only the kernel choice depends on
 * the ISA.  B is cut into panels of 16 output columns; inside a panel, each
 * group of G consecutive k (G = 2 for bf16, 4 for int8) is one 64-byte row
 * holding the G values of column 0, then of column 1, ...  That is the VNNI
 * order `_mm512_dpbf16_ps` / `_mm512_dpbusd_epi32` read from one zmm, and 16
 * such rows are exactly one AMX B tile (16 rows x 64 bytes).  K is padded with
 * zero weights to a whole AMX tile depth (32 bf16 / 64 int8), N with zero
 * columns to a whole panel.
 *
 * Activations are packed per call into [Mp, Kp] row-major (bf16, or u8 for
 * int8), Mp a multiple of QG_MPAD so kernels may compute whole row blocks;
 * padded rows are zero and never written back.
 *
 * int8 scheme: weights symmetric per output column (s8 in [-127, 127], scale
 * max|B[:,n]| / 127; [-63, 63] and max / 63 for the AVX2 u8 x s7 kernel,
 * see qgemm_avx2.c); activations asymmetric per row (u8 with zero point z,
 * scale (max - min) / 255 over the row with 0 included), so ReLU/GELU-like
 * rows keep all 8 bits.  Then
 *     C[i,n] = sa[i] * sw[n] * (sum_k qa[i,k] * qw[k,n] - z[i] * colsum[n]).
 * The u8 x s8 dot is what both VNNI (vpdpbusd) and AMX (tdpbusd) compute, and
 * aarch64's USMMLA (SDOT after a -128 shift, qgemm_dotprod.c), so all
 * kernels produce the same integers from the same weights (the AVX2 u8 x s7
 * kernel's weights have one bit less, so its integers are its own). */
#ifndef ML_KERNELS_QGEMM_INTERNAL_H
#define ML_KERNELS_QGEMM_INTERNAL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/precision.h"

#define QG_NR 16   /* columns per panel */
#define QG_B_BLOCK (1024 * 1024) /* B bytes a task keeps in L2 (half of 2 MB): 1 MB
                                  * doubled K=3072 AMX speed vs 384 KB */
#define QG_MPAD 32 /* packed activation rows are a multiple of this */

typedef enum qg_kernel {
    QG_REF = 0,     /* portable C */
    QG_AVX512 = 1,  /* AVX512-BF16 / AVX512-VNNI */
    QG_AMX = 2,     /* AMX tiles */
    QG_AVX2 = 3,    /* int8: AVX2 u8 x s7 (vpmaddubsw + vpmaddwd, qgemm_avx2.c) */
    QG_AVXVNNI = 4, /* int8: AVX-VNNI vpdpbusd on ymm (qgemm_avxvnni.c) */
    QG_F32W = 5,    /* bf16: weights widened to float32 into the float32 GEMM (qgemm_avx2.c) */
    /* aarch64 (qgemm_neon.c, qgemm_dotprod.c, qgemm_i8mm.c, qgemm_bf16.c) */
    QG_NEON = 6,    /* int8 / bf16 by widening (baseline Advanced SIMD) */
    QG_DOTPROD = 7, /* int8 on SDOT */
    QG_I8MM = 8,    /* int8 on USMMLA */
    QG_BFMMLA = 9,  /* bf16 on BFMMLA */
} qg_kernel;

struct ml_packed {
    ml_precision prec;
    ml_isa isa;
    qg_kernel kernel;
    int K, N;
    int Kp;      /* K padded: multiple of 32 (bf16) or 64 (int8) */
    int panels;  /* ceil(N / 16) */
    int simd_a;  /* 1: pack activations with the AVX-512 helpers */
    void *w;     /* fp32: [K, N] copy; bf16: uint16 panels; int8: int8 panels */
    float *scale;    /* int8: [panels * 16] per-column scale */
    int32_t *colsum; /* int8: [panels * 16] sum over k of the s8 weights */
    size_t bytes;
};

/* Activations of one call, packed for the kernels. */
typedef struct qg_act {
    int M, Mp, Kp;
    void *a;       /* [Mp, Kp] uint16 (bf16) or uint8 */
    float *scale;  /* int8: [Mp] per-row scale */
    int32_t *zero; /* int8: [Mp] per-row zero point */
} qg_act;

/* One call's work: rows [i0, i1) x panels [p0, p1) at a time. */
typedef struct qg_job {
    const struct ml_packed *B;
    const qg_act *A;
    const float *bias;
    float *C;
    int ldc, accumulate;
    int gelu;     /* AMX and the ymm int8 kernels: quick_gelu after the bias (accumulate = 0) */
    uint16_t *Cb; /* AMX only: bf16 output [M, ldc] instead of C (accumulate = 0) */
    size_t a_ld;  /* AMX only: 0 = A packed by the task; else A->a is row-major
                   * bf16 with rows a_ld bytes apart (read by the tiles in place) */
    const struct ml_packed *then; /* AMX only: the weights of the product that
                                   * comes next (its first block is prefetched), or NULL */
} qg_job;

/* Largest |weight| of the int8 scheme on kernel k: 63 (7 bits) where
 * vpmaddubsw's int16 pair sums must not saturate (qgemm_avx2.c), else 127. */
static inline int qg_weight_qmax(qg_kernel k) { return k == QG_AVX2 ? 63 : 127; }

/* Bytes of one packed panel (bf16 or int8): Kp rows of 16 columns. */
static inline size_t qg_panel_bytes(const struct ml_packed *B) {
    return (size_t)B->Kp * QG_NR * (B->prec == ML_PREC_BF16 ? 2 : 1);
}

/* Panel p's packed data (bf16 or int8), 64 bytes per k group. */
static inline const void *qg_panel(const struct ml_packed *B, int p) {
    return (const char *)B->w + (size_t)p * qg_panel_bytes(B);
}

/* Columns of panel p that exist in C (16 except maybe the last). */
static inline int qg_panel_cols(const struct ml_packed *B, int p) {
    int n = B->N - p * QG_NR;
    return n < QG_NR ? n : QG_NR;
}

/* Kernels: compute rows [i0, i1) (multiples of 32 apart from i1 = Mp) of
 * panels [p0, p1), writing only rows < M and columns < N. */
void qg_ref_bf16(const qg_job *j, int i0, int i1, int p0, int p1);
void qg_ref_int8(const qg_job *j, int i0, int i1, int p0, int p1);
void qg_avx512_bf16(const qg_job *j, int i0, int i1, int p0, int p1);
void qg_avx512_int8(const qg_job *j, int i0, int i1, int p0, int p1);
#if defined(__aarch64__) /* rows i0..i1 in blocks of 4 (packed rows are zero to Mp) */
void qg_neon_int8(const qg_job *j, int i0, int i1, int p0, int p1);
void qg_neon_bf16(const qg_job *j, int i0, int i1, int p0, int p1);
void qg_dotprod_int8(const qg_job *j, int i0, int i1, int p0, int p1);
void qg_i8mm_int8(const qg_job *j, int i0, int i1, int p0, int p1);
void qg_bf16mm_bf16(const qg_job *j, int i0, int i1, int p0, int p1);
#endif

/* AMX: one task over all local rows of j->A (packed lazily by pack, or
 * read in place when j->a_ld != 0 and pack is NULL) and panels [p0, p1) in
 * L2 blocks of pb panels.  With `next`, the (panel block, row block) items
 * are shared by `stride` threads running the same job (in place only). */
typedef void (*qg_pack_fn)(void *ctx, int r0, int r1);
void qg_amx_task(const qg_job *j, int p0, int p1, int pb, qg_pack_fn pack, void *pctx,
                 atomic_int *next, int stride);

/* Activation packers for rows [r0, r1) (< M); the K padding is zeroed. */
void qg_avx512_pack_bf16(const float *A, int lda, int K, int Kp, uint16_t *dst, int r0, int r1);
void qg_avx512_pack_u8(const float *A, int lda, int K, int Kp, uint8_t *dst, float *scale,
                       int32_t *zero, int r0, int r1);

/* One row, k step s (64 bytes) at d + s * cs elements (row-major: cs = 64
 * bytes' worth; AMX blocked layout: QG_MPAD times that); int8 also gives the
 * row's scale / zero point. */
void qg_avx512_pack_bf16_blk(const float *a, int K, int Kp, uint16_t *d, size_t cs);
void qg_avx512_pack_u8_blk(const float *a, int K, int Kp, uint8_t *d, size_t cs, float *scale,
                           int32_t *zero);

#endif
