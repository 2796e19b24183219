/* ops_vexp.h - the vectorised exp, reciprocal and quick GELU of the SIMD
 * kernels (ops_tmpl.h, gemm_tmpl.h, attention_amx.c); include after
 * gemm_simd.h. */
#ifndef ML_KERNELS_OPS_VEXP_H
#define ML_KERNELS_OPS_VEXP_H

/* The Cephes expf core: x = n ln2 + r with |r| <= ln2/2 (ln2 split in two
 * so n*ln2 is exact); returns e^r by a degree-7 polynomial and n, so that
 * exp(x) = result * 2^n.  The caller clamps x.  The sum is Cephes' order,
 * (r^2 p + r) + 1: rounding 1 + r first (as this code once did) drops r's
 * low bits, 1.4x the mean error and 1.4 ulp at worst instead of 1. */
ML_INLINE vf vexp_reduced(vf x, vf *n_out) {
    vf n = vround(vmul(x, vset1(1.44269504088896341f)));
    vf r = vfma(n, vset1(-0.693359375f), x);
    r = vfma(n, vset1(2.12194440e-4f), r);
    vf p = vset1(1.9875691500e-4f);
    p = vfma(p, r, vset1(1.3981999507e-3f));
    p = vfma(p, r, vset1(8.3334519073e-3f));
    p = vfma(p, r, vset1(4.1665795894e-2f));
    p = vfma(p, r, vset1(1.6666665459e-1f));
    p = vfma(p, r, vset1(5.0000001201e-1f));
    *n_out = n;
    return vadd(vfma(p, vmul(r, r), r), vset1(1.0f));
}

/* exp(x): vexp_reduced with 2^n by exponent bits.  About 1 ulp over the
 * float range; x < -87.3 (incl. -inf) gives exactly 0, which is what a
 * masked softmax entry needs. */
ML_INLINE vf vexp(vf x) {
    const float lo = -87.33654f; /* ln(FLT_MIN): 2^n stays a normal number */
    vf n, p = vexp_reduced(vmax(vmin(x, vset1(88.3762626647949f)), vset1(lo)), &n);
    return vzero_below(x, vmul(p, vpow2i(n)), lo);
}

/* 1 / d.  AVX-512: the hardware estimate (2^-14 relative error) refined by
 * one Newton step, r (2 - d r), leaves ~2^-28: within float rounding, at a
 * fraction of a divide's cost.  AVX2: a correctly rounded divide.  Its
 * estimate has 1.5 * 2^-12 error, and one Newton step always lands BELOW
 * 1/d by up to e^2 = 2.3 * 2^-24: every GELU output was biased low by half
 * an ulp on average.  Through a 64x-boosted attention logit (the capped
 * test model) that bias became a 1.1e-4 embedding error, 6.5x the scalar
 * path's; the divide costs ~1 ms an image, next to ~300 ms of GEMM. */
#if defined(ML_SIMD_AVX512)
ML_INLINE vf vrecip(vf d) {
    vf r = _mm512_rcp14_ps(d);
    return vmul(r, _mm512_fnmadd_ps(d, r, vset1(2.0f)));
}
#elif defined(ML_SIMD_AVX2)
ML_INLINE vf vrecip(vf d) {
    return _mm256_div_ps(vset1(1.0f), d);
}
#else
/* NEON: a divide, for the reason given for AVX2 above (the 8-bit estimate
 * refined by Newton steps also always lands below 1/d). */
ML_INLINE vf vrecip(vf d) {
    return vdivq_f32(vset1(1.0f), d);
}
#endif

/* x * sigmoid(1.702 x) = x / (1 + exp(-1.702 x)).  AVX-512: vexp's
 * polynomial with 2^n by vscalefps, which goes to 0 by itself for very
 * negative arguments (so only the top needs a clamp: e <= 2.4e38 keeps
 * 1 + e finite and its reciprocal ~0): fewer instructions on the two
 * 512-bit ports, which bound this loop in cache (0.30 -> 0.24 ns per
 * element on one Sapphire Rapids core).  AVX2: vexp. */
#if defined(ML_SIMD_AVX512)
ML_INLINE vf vquick_gelu(vf v) {
    vf n, p = vexp_reduced(vmin(vmul(v, vset1(-1.702f)), vset1(88.3762626647949f)), &n);
    vf e = _mm512_scalef_ps(p, n);
    return vmul(v, vrecip(vadd(vset1(1.0f), e)));
}
#else
ML_INLINE vf vquick_gelu(vf v) {
    vf e = vexp(vmul(v, vset1(-1.702f)));
    return vmul(v, vrecip(vadd(vset1(1.0f), e)));
}
#endif

#endif
