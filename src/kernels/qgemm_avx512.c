/* qgemm_avx512.c - AVX512-BF16 (vdpbf16ps) and AVX512-VNNI (vpdpbusd)
 * kernels, and the AVX-512 activation packers used by these and the AMX path.
 * Compiled with AVX-512 flags; called only after run-time detection.
 *
 * Micro-kernel: 8 rows x 2 panels (32 columns) = 16 zmm accumulators.  Each
 * k group loads one 64-byte row per panel and broadcasts one 32-bit group
 * (a bf16 pair / u8 quad) per A row.  Packed A has zero rows up to a multiple
 * of 32, so blocks are always 8 full rows; only rows < M are stored. */
#if defined(__x86_64__)

#include <math.h>
#include <string.h>

#include "kernels/qgemm_x86.h"

#define MR 8

static inline int32_t load_i32(const void *p) {
    int32_t v;
    memcpy(&v, p, 4); /* one k group of A, without type punning */
    return v;
}

/* ---- bf16 ---- */

static inline __attribute__((always_inline)) void bf16_block(const qg_job *j, int i, int p,
                                                             int np) {
    int Kp = j->A->Kp, M = j->A->M;
    const uint16_t *a = (const uint16_t *)j->A->a + (size_t)i * Kp;
    const uint16_t *b0 = qg_panel(j->B, p), *b1 = np == 2 ? qg_panel(j->B, p + 1) : b0;
    __m512 acc[MR][2];
    for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int k = 0; k < Kp; k += 2) {
        __m512bh w0 = (__m512bh)_mm512_loadu_si512(b0 + (size_t)k * 16);
        __m512bh w1 = (__m512bh)_mm512_loadu_si512(b1 + (size_t)k * 16);
        for (int r = 0; r < MR; r++) {
            __m512bh av = (__m512bh)_mm512_set1_epi32(load_i32(a + (size_t)r * Kp + k));
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], av, w0);
            if (np == 2) acc[r][1] = _mm512_dpbf16_ps(acc[r][1], av, w1);
        }
    }
    for (int r = 0; r < MR && i + r < M; r++) {
        qg_store_vec(j, i + r, p, acc[r][0]);
        if (np == 2) qg_store_vec(j, i + r, p + 1, acc[r][1]);
    }
}

/* Panel pair outer: its k rows stay in L1 while the task's row groups pass. */
void qg_avx512_bf16(const qg_job *j, int i0, int i1, int p0, int p1) {
    int p = p0;
    for (; p + 2 <= p1; p += 2)
        for (int i = i0; i < i1 && i < j->A->M; i += MR) bf16_block(j, i, p, 2);
    if (p < p1)
        for (int i = i0; i < i1 && i < j->A->M; i += MR) bf16_block(j, i, p, 1);
}

/* ---- int8 (u8 activations x s8 weights) ---- */

static inline __attribute__((always_inline)) void int8_block(const qg_job *j, int i, int p,
                                                             int np) {
    int Kp = j->A->Kp, M = j->A->M;
    const uint8_t *a = (const uint8_t *)j->A->a + (size_t)i * Kp;
    const int8_t *b0 = qg_panel(j->B, p), *b1 = np == 2 ? qg_panel(j->B, p + 1) : b0;
    __m512i acc[MR][2];
    for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm512_setzero_si512();
    for (int k = 0; k < Kp; k += 4) {
        __m512i w0 = _mm512_loadu_si512(b0 + (size_t)k * 16);
        __m512i w1 = _mm512_loadu_si512(b1 + (size_t)k * 16);
        for (int r = 0; r < MR; r++) {
            __m512i av = _mm512_set1_epi32(load_i32(a + (size_t)r * Kp + k));
            acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], av, w0);
            if (np == 2) acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], av, w1);
        }
    }
    for (int r = 0; r < MR && i + r < M; r++) {
        qg_store_i32(j, i + r, p, acc[r][0]);
        if (np == 2) qg_store_i32(j, i + r, p + 1, acc[r][1]);
    }
}

/* Panel pair outer: its k rows stay in L1 while the task's row groups pass. */
void qg_avx512_int8(const qg_job *j, int i0, int i1, int p0, int p1) {
    int p = p0;
    for (; p + 2 <= p1; p += 2)
        for (int i = i0; i < i1 && i < j->A->M; i += MR) int8_block(j, i, p, 2);
    if (p < p1)
        for (int i = i0; i < i1 && i < j->A->M; i += MR) int8_block(j, i, p, 1);
}

/* ---- activation packers ---- */

static __mmask16 tail_mask(int k, int K) {
    int n = K - k;
    return n >= 16 ? (__mmask16)0xffff : n <= 0 ? 0 : (__mmask16)((1u << n) - 1u);
}

/* vcvtne2ps2bf16 rounds to nearest even like the portable f32_to_bf16 (it
 * also flushes denormals, far below bf16's useful range). */
void qg_avx512_pack_bf16(const float *A, int lda, int K, int Kp, uint16_t *dst, int r0, int r1) {
    for (int i = r0; i < r1; i++) qg_avx512_pack_bf16_blk(A + (size_t)i * lda, K, Kp, dst + (size_t)i * Kp, 32);
}

/* One row: the 64-byte k step s (32 bf16) goes to d + s * cs (cs in
 * elements; 32: row-major, QG_MPAD * 32: the AMX blocked layout); the K
 * padding is zeroed. */
void qg_avx512_pack_bf16_blk(const float *a, int K, int Kp, uint16_t *d, size_t cs) {
    for (int k = 0; k < Kp; k += 32) {
        __m512 lo = _mm512_maskz_loadu_ps(tail_mask(k, K), a + k);
        __m512 hi = _mm512_maskz_loadu_ps(tail_mask(k + 16, K), a + k + 16);
        _mm512_storeu_si512(d + (size_t)(k / 32) * cs, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
}

static void row_min_max(const float *a, int K, float *mn, float *mx) {
    __m512 vmn = _mm512_setzero_ps(), vmx = _mm512_setzero_ps(); /* 0 is always included */
    for (int k = 0; k < K; k += 16) {
        __m512 x = _mm512_maskz_loadu_ps(tail_mask(k, K), a + k);
        vmn = _mm512_min_ps(vmn, x), vmx = _mm512_max_ps(vmx, x);
    }
    *mn = _mm512_reduce_min_ps(vmn), *mx = _mm512_reduce_max_ps(vmx);
}

/* Row-major (one row = one run of Kp bytes). */
void qg_avx512_pack_u8(const float *A, int lda, int K, int Kp, uint8_t *dst, float *scale,
                       int32_t *zero, int r0, int r1) {
    for (int i = r0; i < r1; i++)
        qg_avx512_pack_u8_blk(A + (size_t)i * lda, K, Kp, dst + (size_t)i * Kp, 64, scale + i, zero + i);
}

/* One row, u8: k step s (64 values) goes to d + s * cs (cs = 64: row-major;
 * QG_MPAD * 64: the AMX blocked layout).  Same scale / zero point / rounding
 * (cvtps2dq: nearest even, like lrintf) as the portable ref_pack_u8 in
 * qgemm.c. */
void qg_avx512_pack_u8_blk(const float *a, int K, int Kp, uint8_t *d, size_t cs, float *scale,
                           int32_t *zero) {
    float mn, mx;
    row_min_max(a, K, &mn, &mx);
    float s = (mx - mn) / 255.0f, inv = s > 0.0f ? 1.0f / s : 0.0f;
    int z = (int)lrintf(-mn * inv);
    z = z < 0 ? 0 : z > 255 ? 255 : z;
    *scale = s, *zero = z;
    __m512 vinv = _mm512_set1_ps(inv);
    __m512i vz = _mm512_set1_epi32(z), lo = _mm512_setzero_si512(), hi = _mm512_set1_epi32(255);
    for (int k = 0; k < Kp; k += 16) {
        __mmask16 m = tail_mask(k, K);
        __m512 x = _mm512_maskz_loadu_ps(m, a + k);
        __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(x, vinv)), vz);
        q = _mm512_maskz_mov_epi32(m, _mm512_min_epi32(_mm512_max_epi32(q, lo), hi));
        _mm_storeu_si128((__m128i *)(d + (size_t)(k / 64) * cs + k % 64), _mm512_cvtepi32_epi8(q));
    }
}

#else
typedef int qgemm_avx512_unused; /* ISO C forbids an empty translation unit */
#endif
