/* qgemm_avx2.c - low-precision kernels for CPUs with AVX2 + FMA but no
 * AVX-512 VNNI / BF16 (and what the AVX-512 ISA uses where those are
 * missing).  Compiled with -mavx2 -mfma; called only after run-time
 * detection.
 *
 * int8 (u8 activations x s8 weights, the scheme of qgemm_internal.h):
 * vpmaddubsw multiplies u8 by s8 and adds each PAIR of products into a
 * saturating int16: with u8 up to 255 and s8 up to 127 a pair reaches
 * 2 * 255 * 127 = 64770 and saturates, so the plain u8 x s8 sequence is not
 * exact.  Here the activation is re-centred to s8, a' = a - 128 in
 * [-128, 127] (the packer writes a' and |a'|): vpmaddubsw gets |a'| (<= 128,
 * as u8) and the weight with a''s sign (vpsignb; |w| <= 127, so the negation
 * is exact), and a pair is at most 2 * 128 * 127 = 32512 < 32767: never
 * saturated.  vpmaddwd with ones then
 * sums pairs into int32, and the epilogue adds back 128 * colsum, so the
 * integers are exactly those of vpdpbusd / AMX (identical floats).
 *
 * bf16: the weights stay bf16 in memory (half of float32) and are widened
 * to float32 as the float32 GEMM packs its B slabs (qg_widen_bf16); the
 * products are float32 FMAs on float32 activations. */
#if defined(__x86_64__)

#include "kernels/qgemm_avx2.h"

#include <math.h>
#include <string.h>

/* 3 rows: 6 accumulators + 2 weights + ones + the 2 A planes + temporaries
 * (with 4 rows gcc 12 kept two accumulators on the stack) */
#define QG_Y_MR 3
#define QG_Y_NAME qg_avx2_int8
/* The packer (qg_avx2_pack_u8, split) writes a' = a - 128 and |a'| as two
 * planes, so that the dot is 4 operations a 32-byte weight vector: */
#define QG_Y_SPLIT 1
#define QG_Y_DOT(acc, a, m, w)                                                          \
    _mm256_add_epi32((acc), _mm256_madd_epi16(                                          \
                                _mm256_maddubs_epi16((m), _mm256_sign_epi8((w), (a))), \
                                _mm256_set1_epi16(1)))
#include "kernels/qgemm_avx2_tmpl.h"

/* ---- int8 activations ---- */

/* Rows [r0, r1) of A as u8 with ref_pack_u8's scale, zero point and
 * rounding (cvtps2dq rounds to nearest even like lrintf), 32 values a step;
 * the tail past the last whole step and the K padding as ref_pack_u8.
 * split (> 0): for qg_avx2_int8, the row is written as a - 128 (s8), and
 * |a - 128| goes to the same place `split` bytes on (the K padding is 0 in
 * both: its weights are zero). */
void qg_avx2_pack_u8(const float *A, int lda, int K, int Kp, uint8_t *dst, float *scale,
                     int32_t *zero, int r0, int r1, size_t split) {
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7), bias = _mm256_set1_epi8((char)0x80);
    for (int i = r0; i < r1; i++) {
        const float *a = A + (size_t)i * lda;
        uint8_t *d = dst + (size_t)i * Kp;
        __m256 vmn = _mm256_setzero_ps(), vmx = _mm256_setzero_ps(); /* 0 is always included */
        int k = 0;
        for (; k + 8 <= K; k += 8) {
            __m256 x = _mm256_loadu_ps(a + k);
            vmn = _mm256_min_ps(vmn, x), vmx = _mm256_max_ps(vmx, x);
        }
        float lo[8], hi[8], mn = 0.0f, mx = 0.0f;
        _mm256_storeu_ps(lo, vmn), _mm256_storeu_ps(hi, vmx);
        for (int t = 0; t < 8; t++) mn = fminf(mn, lo[t]), mx = fmaxf(mx, hi[t]);
        for (; k < K; k++) mn = fminf(mn, a[k]), mx = fmaxf(mx, a[k]);
        float s = (mx - mn) / 255.0f, inv = s > 0.0f ? 1.0f / s : 0.0f;
        int z = (int)lrintf(-mn * inv);
        z = z < 0 ? 0 : z > 255 ? 255 : z;
        scale[i] = s, zero[i] = z;
        __m256 vinv = _mm256_set1_ps(inv);
        __m256i vz = _mm256_set1_epi32(z), v0 = _mm256_setzero_si256(), v255 = _mm256_set1_epi32(255);
        for (k = 0; k + 32 <= K; k += 32) {
            __m256i q[4];
            for (int t = 0; t < 4; t++) {
                __m256i v = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(a + k + 8 * t), vinv));
                q[t] = _mm256_min_epi32(_mm256_max_epi32(_mm256_add_epi32(v, vz), v0), v255);
            }
            /* 0..255 already, so the saturating packs are plain narrowing;
             * they interleave 128-bit lanes, which the permute undoes */
            __m256i w = _mm256_packus_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
            w = _mm256_permutevar8x32_epi32(w, order);
            if (split) {
                w = _mm256_xor_si256(w, bias); /* a - 128 as s8 */
                _mm256_storeu_si256((__m256i *)(d + split + k), _mm256_abs_epi8(w));
            }
            _mm256_storeu_si256((__m256i *)(d + k), w);
        }
        for (; k < K; k++) {
            int q = (int)lrintf(a[k] * inv) + z;
            q = q < 0 ? 0 : q > 255 ? 255 : q;
            d[k] = (uint8_t)(split ? q ^ 0x80 : q);
            if (split) d[split + k] = (uint8_t)(q >= 128 ? q - 128 : 128 - q);
        }
        memset(d + K, 0, (size_t)(Kp - K));
        if (split) memset(d + split + K, 0, (size_t)(Kp - K));
    }
}

/* ---- bf16 ---- */

/* The kc x nn slab of B at (k0, n0) from the bf16 panels (n0 a multiple of
 * 16: a panel boundary), widened, as nr-column panels of kc rows: row k of
 * dst panel t at buf + (t * kc + k - k0) * nr.  A 64-byte bf16 row holds k
 * and k + 1 of 16 columns interleaved; 32 bits per column pair: the low
 * half (shifted up) is row k, the high half (masked) row k + 1. */
void qg_widen_bf16(const void *ctx, int k0, int kc, int n0, int nn, int nr, float *buf) {
    const ml_packed *B = ctx;
    int panels = (nn + nr - 1) / nr;
    const __m256i hi_mask = _mm256_set1_epi32((int)0xffff0000u);
    for (int t = 0; t < panels; t++)
        for (int g = 0; g < nr; g += 8) {
            int col = n0 + t * nr + g; /* first of 8 columns */
            float *d = buf + (size_t)t * kc * nr + g;
            if (col >= B->panels * QG_NR) { /* past the last panel: zero columns */
                for (int k = 0; k < kc; k++) _mm256_storeu_ps(d + (size_t)k * nr, _mm256_setzero_ps());
                continue;
            }
            const uint16_t *s = (const uint16_t *)qg_panel(B, col / QG_NR) + (col % QG_NR) * 2;
            for (int k = 0; k < kc; k += 2) {
                __m256i x = _mm256_loadu_si256((const __m256i *)(s + (size_t)((k0 + k) / 2) * 32));
                _mm256_storeu_ps(d + (size_t)k * nr, _mm256_castsi256_ps(_mm256_slli_epi32(x, 16)));
                if (k + 1 < kc)
                    _mm256_storeu_ps(d + (size_t)(k + 1) * nr,
                                     _mm256_castsi256_ps(_mm256_and_si256(x, hi_mask)));
            }
        }
}

#else
typedef int qgemm_avx2_unused; /* ISO C forbids an empty translation unit */
#endif
