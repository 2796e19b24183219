/* qgemm_avx2.c - low-precision kernels for CPUs with AVX2 + FMA but no
 * AVX-512 VNNI / BF16 (and what the AVX-512 ISA uses where those are
 * missing).  Compiled with -mavx2 -mfma; called only after run-time
 * detection.
 *
 * int8 (u8 activations x s8 weights, the scheme of qgemm_internal.h):
 * vpmaddubsw multiplies u8 by s8 and adds each PAIR of products into a
 * saturating int16.  With u8 up to 255 and s8 up to 127 a pair reaches
 * 2 * 255 * 127 = 64770 and saturates (ONNX Runtime's AVX2 kernel accepts
 * that; its docs suggest "reduce_range").  Here the weights this kernel
 * gets are 7-bit, [-63, 63] with scale max|w| / 63 (pack_int8,
 * qg_weight_qmax), so a pair is at most 2 * 255 * 63 = 32130 < 32767 and
 * never saturates: the integers are exact for those weights.  Then each
 * 32-byte weight vector costs 3 operations (vpmaddubsw, vpmaddwd with ones,
 * vpaddd), two on the multiply ports, like ONNX Runtime's, where the exact
 * alternatives cost more: re-centring A to s8 and moving its sign onto the
 * weight (vpsignb, an extra multiply-port op a pair: 1.5x the time, the
 * kernel before this one) or widening to int16 for vpmaddwd alone (half the
 * products an op).  The price is the weight step, doubled: on the random
 * base checkpoint the int8 embeddings stay above cosine 0.999 to float64
 * (docs/performance.md).  With AVX-VNNI (qgemm_avxvnni.c) vpdpbusd adds in
 * int32, so that kernel keeps 8-bit weights.
 *
 * bf16: the weights stay bf16 in memory (half of float32) and are widened
 * to float32 as the float32 GEMM packs its B slabs (qg_widen_bf16); the
 * products are float32 FMAs on float32 activations. */
#if defined(__x86_64__)

#include "kernels/qgemm_avx2.h"

#include <math.h>
#include <string.h>

/* 4 rows: 8 accumulators + 2 weights + the broadcast + ones + 2 products */
#define QG_Y_MR 4
#define QG_Y_NAME qg_avx2_int8
#define QG_Y_DOT(acc, a, w) \
    _mm256_add_epi32((acc), _mm256_madd_epi16(_mm256_maddubs_epi16((a), (w)), _mm256_set1_epi16(1)))
#include "kernels/qgemm_avx2_tmpl.h"

/* ---- int8 activations ---- */

/* Rows [r0, r1) of A as u8 with ref_pack_u8's scale, zero point and
 * rounding (cvtps2dq rounds to nearest even like lrintf), 32 values a step;
 * the tail past the last whole step and the K padding as ref_pack_u8. */
void qg_avx2_pack_u8(const float *A, int lda, int K, int Kp, uint8_t *dst, float *scale,
                     int32_t *zero, int r0, int r1) {
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
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
            _mm256_storeu_si256((__m256i *)(d + k), w);
        }
        for (; k < K; k++) {
            int q = (int)lrintf(a[k] * inv) + z;
            q = q < 0 ? 0 : q > 255 ? 255 : q;
            d[k] = (uint8_t)q;
        }
        memset(d + K, 0, (size_t)(Kp - K));
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
