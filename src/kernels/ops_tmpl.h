/* ops_tmpl.h - SIMD element-wise and row kernels, instantiated by
 * ops_avx2.c, ops_avx512.c and ops_neon.c after gemm_simd.h. */
#include <math.h>

#include "kernels/bf16.h"
#include "kernels/gemm_isa.h"

#include "kernels/ops_vexp.h"

static void quick_gelu(float *x, long n) {
    long i = 0;
    for (; i + 2 * VL <= n; i += 2 * VL) {
        vf a = vload(x + i), b = vload(x + i + VL);
        vstore(x + i, vquick_gelu(a));
        vstore(x + i + VL, vquick_gelu(b));
    }
    for (; i + VL <= n; i += VL) vstore(x + i, vquick_gelu(vload(x + i)));
    if (i < n) {
        vm m = vmask((int)(n - i));
        vstore_m(x + i, vquick_gelu(vload_m(x + i, m)), m);
    }
}

static void add(float *y, const float *x, long n) {
    long i = 0;
    for (; i + VL <= n; i += VL) vstore(y + i, vadd(vload(y + i), vload(x + i)));
    if (i < n) {
        vm m = vmask((int)(n - i));
        vstore_m(y + i, vadd(vload_m(y + i, m), vload_m(x + i, m)), m);
    }
}

/* Row statistics in double (as the scalar path): the float values are
 * widened 4 / 8 at a time, so this costs about what a float loop would. */
#if defined(ML_SIMD_AVX512)
typedef __m512d vd;
#define VDL 8
ML_INLINE vd vd_load(const float *p) { return _mm512_cvtps_pd(_mm256_loadu_ps(p)); }
ML_INLINE vd vd_zero(void) { return _mm512_setzero_pd(); }
ML_INLINE vd vd_set1(double a) { return _mm512_set1_pd(a); }
ML_INLINE vd vd_add(vd a, vd b) { return _mm512_add_pd(a, b); }
ML_INLINE vd vd_sub(vd a, vd b) { return _mm512_sub_pd(a, b); }
ML_INLINE vd vd_fma(vd a, vd b, vd c) { return _mm512_fmadd_pd(a, b, c); }
ML_INLINE double vd_hsum(vd a) { return _mm512_reduce_add_pd(a); }
#elif defined(ML_SIMD_NEON)
typedef float64x2_t vd;
#define VDL 2
ML_INLINE vd vd_load(const float *p) { return vcvt_f64_f32(vld1_f32(p)); }
ML_INLINE vd vd_zero(void) { return vdupq_n_f64(0.0); }
ML_INLINE vd vd_set1(double a) { return vdupq_n_f64(a); }
ML_INLINE vd vd_add(vd a, vd b) { return vaddq_f64(a, b); }
ML_INLINE vd vd_sub(vd a, vd b) { return vsubq_f64(a, b); }
ML_INLINE vd vd_fma(vd a, vd b, vd c) { return vfmaq_f64(c, a, b); }
ML_INLINE double vd_hsum(vd a) { return vaddvq_f64(a); }
#else
typedef __m256d vd;
#define VDL 4
ML_INLINE vd vd_load(const float *p) { return _mm256_cvtps_pd(_mm_loadu_ps(p)); }
ML_INLINE vd vd_zero(void) { return _mm256_setzero_pd(); }
ML_INLINE vd vd_set1(double a) { return _mm256_set1_pd(a); }
ML_INLINE vd vd_add(vd a, vd b) { return _mm256_add_pd(a, b); }
ML_INLINE vd vd_sub(vd a, vd b) { return _mm256_sub_pd(a, b); }
ML_INLINE vd vd_fma(vd a, vd b, vd c) { return _mm256_fmadd_pd(a, b, c); }
ML_INLINE double vd_hsum(vd a) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}
#endif

/* Mean and variance in one pass: sums of d = x - x[0] and d^2 in double.
 * The shift keeps d near the deviations (no large offset is squared), so
 * var = E[d^2] - E[d]^2 loses only ~1e-16 * (x[0] - mean)^2 / var. */
static void row_stats(const float *x, int n, double *mean, double *var) {
    double k = x[0];
    vd vk = vd_set1(k), s0 = vd_zero(), s1 = vd_zero(), q0 = vd_zero(), q1 = vd_zero();
    int i = 0;
    for (; i + 2 * VDL <= n; i += 2 * VDL) {
        vd d0 = vd_sub(vd_load(x + i), vk), d1 = vd_sub(vd_load(x + i + VDL), vk);
        s0 = vd_add(s0, d0), s1 = vd_add(s1, d1);
        q0 = vd_fma(d0, d0, q0), q1 = vd_fma(d1, d1, q1);
    }
    double s = vd_hsum(vd_add(s0, s1)), q = vd_hsum(vd_add(q0, q1));
    for (; i < n; i++) {
        double d = x[i] - k;
        s += d, q += d * d;
    }
    double m = s / n, v = q / n - m * m;
    *mean = k + m;
    *var = v > 0 ? v : 0;
}

/* One vector of float -> bf16, as ml_f32_to_bf16 (integer operations). */
#if defined(ML_SIMD_AVX512)
ML_INLINE void store_bf16(uint16_t *out, vf f, int n) {
    __m512i u = _mm512_castps_si512(f), hi = _mm512_srli_epi32(u, 16);
    __m512i r = _mm512_srli_epi32(
        _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), _mm512_and_si512(hi, _mm512_set1_epi32(1))), 16);
    r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(f, f, _CMP_UNORD_Q), _mm512_or_si512(hi, _mm512_set1_epi32(0x40)));
    _mm256_mask_storeu_epi16(out, (__mmask16)((1u << n) - 1u), _mm512_cvtepi32_epi16(r));
}
#elif defined(ML_SIMD_NEON)
ML_INLINE void store_bf16(uint16_t *out, vf f, int n) {
    uint32x4_t u = vreinterpretq_u32_f32(f), hi = vshrq_n_u32(u, 16);
    uint32x4_t r = vshrq_n_u32(vaddq_u32(vaddq_u32(u, vdupq_n_u32(0x7fff)), vandq_u32(hi, vdupq_n_u32(1))), 16);
    uint32x4_t nan = vmvnq_u32(vceqq_f32(f, f));
    r = vbslq_u32(nan, vorrq_u32(hi, vdupq_n_u32(0x40)), r);
    uint16x4_t p = vmovn_u32(r);
    if (n == 4) {
        vst1_u16(out, p);
    } else {
        uint16_t t[4];
        vst1_u16(t, p);
        memcpy(out, t, sizeof(uint16_t) * n);
    }
}
#else
ML_INLINE void store_bf16(uint16_t *out, vf f, int n) {
    __m256i u = _mm256_castps_si256(f), hi = _mm256_srli_epi32(u, 16);
    __m256i r = _mm256_srli_epi32(
        _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), _mm256_and_si256(hi, _mm256_set1_epi32(1))), 16);
    __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(f, f, _CMP_UNORD_Q));
    r = _mm256_blendv_epi8(r, _mm256_or_si256(hi, _mm256_set1_epi32(0x40)), nan);
    __m128i p = _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08));
    if (n == 8) {
        _mm_storeu_si128((__m128i *)out, p);
    } else {
        uint16_t t[8];
        _mm_storeu_si128((__m128i *)t, p);
        memcpy(out, t, sizeof(uint16_t) * n);
    }
}
#endif

/* The normalisation itself in float, with the mean split into hi + lo
 * floats: x - hi is exact when x is near the mean (Sterbenz), so large
 * offsets (residual streams of ~100) do not lose the deviation's bits.
 * The result goes to out (float) or, when out is NULL, to outb (bf16). */
ML_INLINE void layernorm_row_to(int n, const float *x, const float *scale, const float *bias,
                                float eps, int plus_one, float *out, uint16_t *outb) {
    double mean, var;
    row_stats(x, n, &mean, &var);
    double inv = 1.0 / sqrt(var + eps);
    float hi = (float)mean;
    vf vmean = vset1(hi), vlo = vset1((float)(mean - hi)), vinv = vset1((float)inv), one = vset1(plus_one ? 1.0f : 0.0f);
    int i = 0;
    for (; i + VL <= n; i += VL) {
        vf s = vadd(vload(scale + i), one);
        vf y = vadd(vmul(vmul(vsub(vsub(vload(x + i), vmean), vlo), vinv), s), vload(bias + i));
        if (out) vstore(out + i, y);
        else store_bf16(outb + i, y, VL);
    }
    if (i < n) {
        vm m = vmask(n - i);
        vf s = vadd(vload_m(scale + i, m), one);
        vf y = vadd(vmul(vmul(vsub(vsub(vload_m(x + i, m), vmean), vlo), vinv), s), vload_m(bias + i, m));
        if (out) vstore_m(out + i, y, m);
        else store_bf16(outb + i, y, n - i);
    }
}

static void layernorm_row(int n, const float *x, const float *scale, const float *bias, float eps,
                          int plus_one, float *out) {
    layernorm_row_to(n, x, scale, bias, eps, plus_one, out, NULL);
}

static void layernorm_row_bf16(int n, const float *x, const float *scale, const float *bias,
                               float eps, int plus_one, uint16_t *out) {
    layernorm_row_to(n, x, scale, bias, eps, plus_one, NULL, out);
}

static float row_max_scaled(const float *x, int n, float scale) {
    vf mx = vset1(-INFINITY), sc = vset1(scale);
    int i = 0;
    for (; i + VL <= n; i += VL) mx = vmax(mx, vmul(vload(x + i), sc));
    float m = vhmax(mx);
    for (; i < n; i++) m = fmaxf(m, x[i] * scale);
    return m;
}

/* x = exp(x*scale - max) / sum; a row whose entries are all -inf is left
 * all zero (the attention caller treats it as having no usable key). */
static void softmax_row(float *x, int n, float scale) {
    float mx = row_max_scaled(x, n, scale);
    if (mx == -INFINITY) {
        for (int i = 0; i < n; i++) x[i] = 0;
        return;
    }
    vf sc = vset1(scale), vmx = vset1(mx), sum = vzero();
    int i = 0;
    for (; i + VL <= n; i += VL) {
        vf e = vexp(vsub(vmul(vload(x + i), sc), vmx));
        vstore(x + i, e);
        sum = vadd(sum, e);
    }
    if (i < n) {
        vm m = vmask(n - i);
        vf e = vexp(vsub(vmul(vload_m(x + i, m), sc), vmx));
        vstore_m(x + i, e, m);
        sum = vadd(sum, vload_m(x + i, m)); /* masked lanes load as 0 */
    }
    vf inv = vset1(1.0f / vhsum(sum));
    for (i = 0; i + VL <= n; i += VL) vstore(x + i, vmul(vload(x + i), inv));
    if (i < n) {
        vm m = vmask(n - i);
        vstore_m(x + i, vmul(vload_m(x + i, m), inv), m);
    }
}

/* float -> bf16 with integer operations (no AVX512-BF16 needed), bit for
 * bit ml_f32_to_bf16: round to nearest even, NaN -> quiet NaN. */
static void to_bf16(const float *x, uint16_t *out, int n) {
    int i = 0;
    for (; i + VL <= n; i += VL) store_bf16(out + i, vload(x + i), VL);
    for (; i < n; i++) out[i] = ml_f32_to_bf16(x[i]);
}

const ml_ops_impl ML_ISA_NAME(ml_ops) = {quick_gelu, add, layernorm_row, softmax_row, to_bf16,
                                         layernorm_row_bf16};
