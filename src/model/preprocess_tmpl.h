/* preprocess_tmpl.h - the resampling kernels (see preprocess_isa.h),
 * instantiated by preprocess.c (portable C), preprocess_avx2.c,
 * preprocess_avx512.c and preprocess_neon.c (defining PRE_AVX2 / PRE_AVX512
 * / PRE_NEON first) as ml_pre_<PRE_NAME>.
 *
 * All three accumulate in float32 in the same order (taps in increasing
 * input index); the SIMD ones fuse multiply and add, so results may differ
 * from the portable ones in the last bit. */
#include "model/preprocess_isa.h"

#include <string.h>

#if defined(PRE_AVX2) || defined(PRE_AVX512)
#include <immintrin.h>
/* The 4-float operations of the width pass (one RGB pixel + 1 per vector). */
#define PRE_V4 __m128
#define P4_ZERO() _mm_setzero_ps()
#define P4_BCAST(p) _mm_broadcast_ss(p)
#define P4_LOAD(p) _mm_loadu_ps(p)
#define P4_STORE(p, v) _mm_storeu_ps(p, v)
#define P4_FMA(w, x, c) _mm_fmadd_ps(w, x, c)
#elif defined(PRE_NEON)
#include <arm_neon.h>
#define PRE_V4 float32x4_t
#define P4_ZERO() vdupq_n_f32(0.0f)
#define P4_BCAST(p) vld1q_dup_f32(p)
#define P4_LOAD(p) vld1q_f32(p)
#define P4_STORE(p, v) vst1q_f32(p, v)
#define P4_FMA(w, x, c) vfmaq_f32(c, w, x)
#endif

#define PRE_CAT2(a, b) a##b
#define PRE_CAT(a, b) PRE_CAT2(a, b)
#define PRE_FN(f) PRE_CAT(f##_, PRE_NAME)

#if defined(PRE_AVX512)
/* 64 columns per step: 4 x 16 floats in registers across all taps. */
static void PRE_FN(vrow_u8)(const uint8_t *const *src, int count, const float *w, size_t n,
                            float *d) {
    if (count <= 0) {
        memset(d, 0, n * sizeof *d);
        return;
    }
    size_t k = 0;
    for (; k + 64 <= n; k += 64) {
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int t = 0; t < count; t++) {
            const uint8_t *p = src[t] + k;
            __m512 wt = _mm512_set1_ps(w[t]);
            __m512i b = _mm512_loadu_si512((const void *)p);
            a0 = _mm512_fmadd_ps(wt, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm512_castsi512_si128(b))), a0);
            a1 = _mm512_fmadd_ps(wt, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(b, 1))), a1);
            a2 = _mm512_fmadd_ps(wt, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(b, 2))), a2);
            a3 = _mm512_fmadd_ps(wt, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(b, 3))), a3);
        }
        _mm512_storeu_ps(d + k, a0);
        _mm512_storeu_ps(d + k + 16, a1);
        _mm512_storeu_ps(d + k + 32, a2);
        _mm512_storeu_ps(d + k + 48, a3);
    }
    for (; k < n; k += 16) {
        size_t r = n - k < 16 ? n - k : 16;
        __mmask16 m = (__mmask16)((1u << r) - 1);
        __m512 a = _mm512_setzero_ps();
        for (int t = 0; t < count; t++) {
            __m128i b = _mm_maskz_loadu_epi8(m, src[t] + k);
            a = _mm512_fmadd_ps(_mm512_set1_ps(w[t]), _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(b)), a);
        }
        _mm512_mask_storeu_ps(d + k, m, a);
    }
}

static void PRE_FN(vrow_f32)(const float *const *src, int count, const float *w, size_t n,
                             float *d) {
    if (count <= 0) {
        memset(d, 0, n * sizeof *d);
        return;
    }
    size_t k = 0;
    for (; k + 64 <= n; k += 64) {
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int t = 0; t < count; t++) {
            const float *p = src[t] + k;
            __m512 wt = _mm512_set1_ps(w[t]);
            a0 = _mm512_fmadd_ps(wt, _mm512_loadu_ps(p), a0);
            a1 = _mm512_fmadd_ps(wt, _mm512_loadu_ps(p + 16), a1);
            a2 = _mm512_fmadd_ps(wt, _mm512_loadu_ps(p + 32), a2);
            a3 = _mm512_fmadd_ps(wt, _mm512_loadu_ps(p + 48), a3);
        }
        _mm512_storeu_ps(d + k, a0);
        _mm512_storeu_ps(d + k + 16, a1);
        _mm512_storeu_ps(d + k + 32, a2);
        _mm512_storeu_ps(d + k + 48, a3);
    }
    for (; k < n; k += 16) {
        size_t r = n - k < 16 ? n - k : 16;
        __mmask16 m = (__mmask16)((1u << r) - 1);
        __m512 a = _mm512_setzero_ps();
        for (int t = 0; t < count; t++)
            a = _mm512_fmadd_ps(_mm512_set1_ps(w[t]), _mm512_maskz_loadu_ps(m, src[t] + k), a);
        _mm512_mask_storeu_ps(d + k, m, a);
    }
}
#elif defined(PRE_AVX2)
/* 32 columns per step: 4 x 8 floats in registers across all taps. */
static void PRE_FN(vrow_u8)(const uint8_t *const *src, int count, const float *w, size_t n,
                            float *d) {
    if (count <= 0) {
        memset(d, 0, n * sizeof *d);
        return;
    }
    size_t k = 0;
    for (; k + 32 <= n; k += 32) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int t = 0; t < count; t++) {
            const uint8_t *p = src[t] + k;
            __m256 wt = _mm256_set1_ps(w[t]);
            __m128i lo = _mm_loadu_si128((const __m128i *)p), hi = _mm_loadu_si128((const __m128i *)(p + 16));
            a0 = _mm256_fmadd_ps(wt, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo)), a0);
            a1 = _mm256_fmadd_ps(wt, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8))), a1);
            a2 = _mm256_fmadd_ps(wt, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi)), a2);
            a3 = _mm256_fmadd_ps(wt, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8))), a3);
        }
        _mm256_storeu_ps(d + k, a0);
        _mm256_storeu_ps(d + k + 8, a1);
        _mm256_storeu_ps(d + k + 16, a2);
        _mm256_storeu_ps(d + k + 24, a3);
    }
    for (; k < n; k++) {
        float a = 0;
        for (int t = 0; t < count; t++) a = fmaf(w[t], (float)src[t][k], a);
        d[k] = a;
    }
}

static void PRE_FN(vrow_f32)(const float *const *src, int count, const float *w, size_t n,
                             float *d) {
    if (count <= 0) {
        memset(d, 0, n * sizeof *d);
        return;
    }
    size_t k = 0;
    for (; k + 32 <= n; k += 32) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int t = 0; t < count; t++) {
            const float *p = src[t] + k;
            __m256 wt = _mm256_set1_ps(w[t]);
            a0 = _mm256_fmadd_ps(wt, _mm256_loadu_ps(p), a0);
            a1 = _mm256_fmadd_ps(wt, _mm256_loadu_ps(p + 8), a1);
            a2 = _mm256_fmadd_ps(wt, _mm256_loadu_ps(p + 16), a2);
            a3 = _mm256_fmadd_ps(wt, _mm256_loadu_ps(p + 24), a3);
        }
        _mm256_storeu_ps(d + k, a0);
        _mm256_storeu_ps(d + k + 8, a1);
        _mm256_storeu_ps(d + k + 16, a2);
        _mm256_storeu_ps(d + k + 24, a3);
    }
    for (; k < n; k++) {
        float a = 0;
        for (int t = 0; t < count; t++) a = fmaf(w[t], src[t][k], a);
        d[k] = a;
    }
}
#elif defined(PRE_NEON)
/* 16 columns per step: 4 x 4 floats in registers across all taps. */
static inline float32x4_t pre_u8_f32(uint16x4_t h) { return vcvtq_f32_u32(vmovl_u16(h)); }

static void PRE_FN(vrow_u8)(const uint8_t *const *src, int count, const float *w, size_t n,
                            float *d) {
    if (count <= 0) {
        memset(d, 0, n * sizeof *d);
        return;
    }
    size_t k = 0;
    for (; k + 16 <= n; k += 16) {
        float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0, a2 = a0, a3 = a0;
        for (int t = 0; t < count; t++) {
            uint8x16_t b = vld1q_u8(src[t] + k);
            uint16x8_t lo = vmovl_u8(vget_low_u8(b)), hi = vmovl_u8(vget_high_u8(b));
            a0 = vfmaq_n_f32(a0, pre_u8_f32(vget_low_u16(lo)), w[t]);
            a1 = vfmaq_n_f32(a1, pre_u8_f32(vget_high_u16(lo)), w[t]);
            a2 = vfmaq_n_f32(a2, pre_u8_f32(vget_low_u16(hi)), w[t]);
            a3 = vfmaq_n_f32(a3, pre_u8_f32(vget_high_u16(hi)), w[t]);
        }
        vst1q_f32(d + k, a0);
        vst1q_f32(d + k + 4, a1);
        vst1q_f32(d + k + 8, a2);
        vst1q_f32(d + k + 12, a3);
    }
    for (; k < n; k++) {
        float a = 0;
        for (int t = 0; t < count; t++) a = fmaf(w[t], (float)src[t][k], a);
        d[k] = a;
    }
}

static void PRE_FN(vrow_f32)(const float *const *src, int count, const float *w, size_t n,
                             float *d) {
    if (count <= 0) {
        memset(d, 0, n * sizeof *d);
        return;
    }
    size_t k = 0;
    for (; k + 16 <= n; k += 16) {
        float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0, a2 = a0, a3 = a0;
        for (int t = 0; t < count; t++) {
            const float *p = src[t] + k;
            a0 = vfmaq_n_f32(a0, vld1q_f32(p), w[t]);
            a1 = vfmaq_n_f32(a1, vld1q_f32(p + 4), w[t]);
            a2 = vfmaq_n_f32(a2, vld1q_f32(p + 8), w[t]);
            a3 = vfmaq_n_f32(a3, vld1q_f32(p + 12), w[t]);
        }
        vst1q_f32(d + k, a0);
        vst1q_f32(d + k + 4, a1);
        vst1q_f32(d + k + 8, a2);
        vst1q_f32(d + k + 12, a3);
    }
    for (; k < n; k++) {
        float a = 0;
        for (int t = 0; t < count; t++) a = fmaf(w[t], src[t][k], a);
        d[k] = a;
    }
}
#else
/* Portable: the first tap writes, the others add (the compiler vectorises
 * each tap's loop over the row). */
static void PRE_FN(vrow_u8)(const uint8_t *const *src, int count, const float *w, size_t n,
                            float *d) {
    if (count <= 0) {
        memset(d, 0, n * sizeof *d);
        return;
    }
    for (size_t k = 0; k < n; k++) d[k] = w[0] * (float)src[0][k];
    for (int t = 1; t < count; t++) {
        const uint8_t *p = src[t];
        float wt = w[t];
        for (size_t k = 0; k < n; k++) d[k] += wt * (float)p[k];
    }
}

static void PRE_FN(vrow_f32)(const float *const *src, int count, const float *w, size_t n,
                             float *d) {
    if (count <= 0) {
        memset(d, 0, n * sizeof *d);
        return;
    }
    for (size_t k = 0; k < n; k++) d[k] = w[0] * src[0][k];
    for (int t = 1; t < count; t++) {
        const float *p = src[t];
        float wt = w[t];
        for (size_t k = 0; k < n; k++) d[k] += wt * p[k];
    }
}
#endif

#if defined(PRE_V4)
/* One pixel (3 floats + the next one's first, ignored) per 128-bit FMA,
 * four rows at a time: four independent sums hide the FMA latency and
 * share the weight loads.  The last pixel of a row stores 3 floats only
 * (the next row's first pixel may already be written). */
static void PRE_FN(hrows)(const float *src, size_t sp, int rows, const ml_pre_axis *a, float *d,
                          size_t dp) {
    int y = 0;
    for (; y + 4 <= rows; y += 4) {
        const float *s0 = src + (size_t)y * sp;
        float *d0 = d + (size_t)y * dp;
        for (int j = 0; j < a->n_out; j++) {
            const float *w = a->w + (size_t)j * a->stride;
            const float *p = s0 + (size_t)a->first[j] * 3;
            const int n = a->count[j];
            PRE_V4 c0 = P4_ZERO(), c1 = c0, c2 = c0, c3 = c0;
            for (int t = 0; t < n; t++, p += 3) {
                PRE_V4 wt = P4_BCAST(w + t);
                c0 = P4_FMA(wt, P4_LOAD(p), c0);
                c1 = P4_FMA(wt, P4_LOAD(p + sp), c1);
                c2 = P4_FMA(wt, P4_LOAD(p + 2 * sp), c2);
                c3 = P4_FMA(wt, P4_LOAD(p + 3 * sp), c3);
            }
            float *o = d0 + 3 * (size_t)j;
            if (j + 1 < a->n_out) {
                P4_STORE(o, c0);
                P4_STORE(o + dp, c1);
                P4_STORE(o + 2 * dp, c2);
                P4_STORE(o + 3 * dp, c3);
            } else {
                float t4[16];
                P4_STORE(t4, c0);
                P4_STORE(t4 + 4, c1);
                P4_STORE(t4 + 8, c2);
                P4_STORE(t4 + 12, c3);
                for (int r = 0; r < 4; r++) memcpy(o + r * dp, t4 + 4 * r, 3 * sizeof(float));
            }
        }
    }
    for (; y < rows; y++) {
        const float *s0 = src + (size_t)y * sp;
        float *d0 = d + (size_t)y * dp;
        for (int j = 0; j < a->n_out; j++) {
            const float *w = a->w + (size_t)j * a->stride;
            const float *p = s0 + (size_t)a->first[j] * 3;
            const int n = a->count[j];
            PRE_V4 c0 = P4_ZERO();
            for (int t = 0; t < n; t++, p += 3)
                c0 = P4_FMA(P4_BCAST(w + t), P4_LOAD(p), c0);
            float t4[4];
            P4_STORE(t4, c0);
            memcpy(d0 + 3 * (size_t)j, t4, 3 * sizeof(float));
        }
    }
}
#else
static void PRE_FN(hrows)(const float *src, size_t sp, int rows, const ml_pre_axis *a, float *d,
                          size_t dp) {
    for (int y = 0; y < rows; y++) {
        const float *s0 = src + (size_t)y * sp;
        float *d0 = d + (size_t)y * dp;
        for (int j = 0; j < a->n_out; j++) {
            const float *w = a->w + (size_t)j * a->stride;
            const float *p = s0 + (size_t)a->first[j] * 3;
            const int n = a->count[j];
            float r = 0, g = 0, b = 0;
            for (int t = 0; t < n; t++) {
                r += w[t] * p[3 * t];
                g += w[t] * p[3 * t + 1];
                b += w[t] * p[3 * t + 2];
            }
            d0[3 * j] = r, d0[3 * j + 1] = g, d0[3 * j + 2] = b;
        }
    }
}
#endif

/* Plain loops the compiler vectorises for each instruction set. */
static uint8_t PRE_FN(max_u8)(const uint8_t *p, size_t n) {
    uint8_t mx = 0;
    for (size_t k = 0; k < n; k++) mx = p[k] > mx ? p[k] : mx;
    return mx;
}

static void PRE_FN(affine_rgb)(float *x, size_t npix, const double a[3], const double b[3]) {
    double a12[12], b12[12];
    for (int i = 0; i < 12; i++) a12[i] = a[i % 3], b12[i] = b[i % 3];
    size_t n = npix * 3, k = 0;
    for (; k + 12 <= n; k += 12)
        for (int i = 0; i < 12; i++) x[k + i] = (float)(x[k + i] * a12[i] + b12[i]);
    for (; k < n; k++) x[k] = (float)(x[k] * a12[k % 3] + b12[k % 3]);
}

const ml_pre_kernels PRE_CAT(ml_pre_, PRE_NAME) = {PRE_FN(vrow_u8), PRE_FN(vrow_f32), PRE_FN(hrows),
                                                   PRE_FN(max_u8), PRE_FN(affine_rgb)};
