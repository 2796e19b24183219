/* gemm_simd.h - a thin vector layer so that one kernel source serves AVX2,
 * AVX-512 and aarch64 NEON.  Included only by the ISA files, after they
 * define ML_SIMD_AVX512, ML_SIMD_AVX2 or ML_SIMD_NEON (and are compiled with
 * the matching flags).  vf is a float vector of VL lanes, vm a lane mask. */
#ifndef ML_KERNELS_GEMM_SIMD_H
#define ML_KERNELS_GEMM_SIMD_H

#define ML_INLINE static inline __attribute__((always_inline))

/* Full unrolling of a micro-kernel's constant-trip row / vector loops is
 * what keeps its accumulator array in registers (a rolled loop indexes the
 * array and puts it in memory). */
#if defined(__clang__)
#define ML_UNROLL _Pragma("unroll")
#else
#define ML_UNROLL _Pragma("GCC unroll 16")
#endif

#if defined(ML_SIMD_AVX512)
#include <immintrin.h>
#define VL 16
typedef __m512 vf;
typedef __mmask16 vm;
ML_INLINE vf vzero(void) { return _mm512_setzero_ps(); }
ML_INLINE vf vset1(float a) { return _mm512_set1_ps(a); }
ML_INLINE vf vload(const float *p) { return _mm512_loadu_ps(p); }
ML_INLINE void vstore(float *p, vf v) { _mm512_storeu_ps(p, v); }
ML_INLINE vm vmask(int n) { return (vm)(n >= VL ? 0xffff : n <= 0 ? 0 : (1u << n) - 1); }
ML_INLINE vf vload_m(const float *p, vm m) { return _mm512_maskz_loadu_ps(m, p); }
ML_INLINE void vstore_m(float *p, vf v, vm m) { _mm512_mask_storeu_ps(p, m, v); }
ML_INLINE vf vfma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
ML_INLINE vf vadd(vf a, vf b) { return _mm512_add_ps(a, b); }
ML_INLINE vf vsub(vf a, vf b) { return _mm512_sub_ps(a, b); }
ML_INLINE vf vmul(vf a, vf b) { return _mm512_mul_ps(a, b); }
ML_INLINE vf vdiv(vf a, vf b) { return _mm512_div_ps(a, b); }
ML_INLINE vf vmax(vf a, vf b) { return _mm512_max_ps(a, b); }
ML_INLINE vf vmin(vf a, vf b) { return _mm512_min_ps(a, b); }
ML_INLINE float vhsum(vf a) { return _mm512_reduce_add_ps(a); }
ML_INLINE float vhmax(vf a) { return _mm512_reduce_max_ps(a); }
/* round to nearest integer (as float) */
ML_INLINE vf vround(vf a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT); }
/* 2^n for integral n in [-126, 127] */
ML_INLINE vf vpow2i(vf n) {
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_castsi512_ps(e);
}
/* a where a >= lo, else 0 */
ML_INLINE vf vzero_below(vf x, vf a, float lo) {
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, vset1(lo), _CMP_GE_OQ), a);
}
ML_INLINE void vprefetch(const void *p) { _mm_prefetch((const char *)p, _MM_HINT_T0); }
#define ML_SIMD_SUFFIX avx512

#elif defined(ML_SIMD_AVX2)
#include <immintrin.h>
#define VL 8
typedef __m256 vf;
typedef __m256i vm;
ML_INLINE vf vzero(void) { return _mm256_setzero_ps(); }
ML_INLINE vf vset1(float a) { return _mm256_set1_ps(a); }
ML_INLINE vf vload(const float *p) { return _mm256_loadu_ps(p); }
ML_INLINE void vstore(float *p, vf v) { _mm256_storeu_ps(p, v); }
ML_INLINE vm vmask(int n) {
    __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx);
}
ML_INLINE vf vload_m(const float *p, vm m) { return _mm256_maskload_ps(p, m); }
ML_INLINE void vstore_m(float *p, vf v, vm m) { _mm256_maskstore_ps(p, m, v); }
ML_INLINE vf vfma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
ML_INLINE vf vadd(vf a, vf b) { return _mm256_add_ps(a, b); }
ML_INLINE vf vsub(vf a, vf b) { return _mm256_sub_ps(a, b); }
ML_INLINE vf vmul(vf a, vf b) { return _mm256_mul_ps(a, b); }
ML_INLINE vf vdiv(vf a, vf b) { return _mm256_div_ps(a, b); }
ML_INLINE vf vmax(vf a, vf b) { return _mm256_max_ps(a, b); }
ML_INLINE vf vmin(vf a, vf b) { return _mm256_min_ps(a, b); }
ML_INLINE float vhsum(vf a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
ML_INLINE float vhmax(vf a) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
ML_INLINE vf vround(vf a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
ML_INLINE vf vpow2i(vf n) {
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_castsi256_ps(e);
}
ML_INLINE vf vzero_below(vf x, vf a, float lo) {
    return _mm256_and_ps(_mm256_cmp_ps(x, vset1(lo), _CMP_GE_OQ), a);
}
ML_INLINE void vprefetch(const void *p) { _mm_prefetch((const char *)p, _MM_HINT_T0); }
#define ML_SIMD_SUFFIX avx2

#elif defined(ML_SIMD_NEON)
/* 128-bit Advanced SIMD (baseline on aarch64).  NEON has no masked loads,
 * so a mask is a lane count and the partial vector goes through a stack
 * copy (only the last vector of a row or panel; never past the data). */
#include <arm_neon.h>
#include <string.h>
#define VL 4
typedef float32x4_t vf;
typedef int vm;
ML_INLINE vf vzero(void) { return vdupq_n_f32(0.0f); }
ML_INLINE vf vset1(float a) { return vdupq_n_f32(a); }
ML_INLINE vf vload(const float *p) { return vld1q_f32(p); }
ML_INLINE void vstore(float *p, vf v) { vst1q_f32(p, v); }
ML_INLINE vm vmask(int n) { return n >= VL ? VL : n <= 0 ? 0 : n; }
ML_INLINE vf vload_m(const float *p, vm m) {
    float t[VL] = {0};
    memcpy(t, p, sizeof(float) * (size_t)m);
    return vld1q_f32(t);
}
ML_INLINE void vstore_m(float *p, vf v, vm m) {
    float t[VL];
    vst1q_f32(t, v);
    memcpy(p, t, sizeof(float) * (size_t)m);
}
ML_INLINE vf vfma(vf a, vf b, vf c) { return vfmaq_f32(c, a, b); }
ML_INLINE vf vadd(vf a, vf b) { return vaddq_f32(a, b); }
ML_INLINE vf vsub(vf a, vf b) { return vsubq_f32(a, b); }
ML_INLINE vf vmul(vf a, vf b) { return vmulq_f32(a, b); }
ML_INLINE vf vdiv(vf a, vf b) { return vdivq_f32(a, b); }
ML_INLINE vf vmax(vf a, vf b) { return vmaxq_f32(a, b); }
ML_INLINE vf vmin(vf a, vf b) { return vminq_f32(a, b); }
ML_INLINE float vhsum(vf a) { return vaddvq_f32(a); }
ML_INLINE float vhmax(vf a) { return vmaxvq_f32(a); }
ML_INLINE vf vround(vf a) { return vrndnq_f32(a); } /* to nearest, ties to even */
ML_INLINE vf vpow2i(vf n) {
    int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtnq_s32_f32(n), vdupq_n_s32(127)), 23);
    return vreinterpretq_f32_s32(e);
}
ML_INLINE vf vzero_below(vf x, vf a, float lo) {
    return vreinterpretq_f32_u32(vandq_u32(vcgeq_f32(x, vdupq_n_f32(lo)), vreinterpretq_u32_f32(a)));
}
ML_INLINE void vprefetch(const void *p) { __builtin_prefetch(p, 0, 3); }
#define ML_SIMD_SUFFIX neon

#else
#error "define ML_SIMD_AVX512, ML_SIMD_AVX2 or ML_SIMD_NEON before including gemm_simd.h"
#endif

#define ML_CAT_(a, b) a##_##b
#define ML_CAT(a, b) ML_CAT_(a, b)
#define ML_ISA_NAME(name) ML_CAT(name, ML_SIMD_SUFFIX)

#endif
