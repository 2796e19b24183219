/* ops_vexp.h - the vectorised exp, reciprocal and quick GELU of the SIMD
 * kernels (ops_tmpl.h, gemm_tmpl.h, attention_amx.c); include after
 * gemm_simd.h. */
#ifndef ML_KERNELS_OPS_VEXP_H
#define ML_KERNELS_OPS_VEXP_H

/* The Cephes expf core: x = n ln2 + r with |r| <= ln2/2 (ln2 split in two
 * so n*ln2 is exact); returns e^r by a degree-7 polynomial and n, so that
 * exp(x) = result * 2^n.  The caller clamps x. */
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
    return vfma(p, vmul(r, r), vadd(r, vset1(1.0f)));
}

/* exp(x): vexp_reduced with 2^n by exponent bits.  About 1 ulp over the
 * float range; x < -87.3 (incl. -inf) gives exactly 0, which is what a
 * masked softmax entry needs. */
ML_INLINE vf vexp(vf x) {
    const float lo = -87.33654f; /* ln(FLT_MIN): 2^n stays a normal number */
    vf n, p = vexp_reduced(vmax(vmin(x, vset1(88.3762626647949f)), vset1(lo)), &n);
    return vzero_below(x, vmul(p, vpow2i(n)), lo);
}

/* 1 / d: the hardware reciprocal estimate (AVX-512 2^-14, AVX2 1.5 * 2^-12
 * relative error) refined by one Newton step, r (2 - d r): about 1 ulp,
 * at a fraction of a divide's cost. */
#if defined(ML_SIMD_AVX512)
ML_INLINE vf vrcp_nr(vf d) {
    vf r = _mm512_rcp14_ps(d);
    return vmul(r, _mm512_fnmadd_ps(d, r, vset1(2.0f)));
}
#elif defined(ML_SIMD_AVX2)
ML_INLINE vf vrcp_nr(vf d) {
    vf r = _mm256_rcp_ps(d);
    return vmul(r, _mm256_fnmadd_ps(d, r, vset1(2.0f)));
}
#else
/* NEON: the estimate has 8 bits, so two Newton steps (vrecps = 2 - d r). */
ML_INLINE vf vrcp_nr(vf d) {
    vf r = vrecpeq_f32(d);
    r = vmulq_f32(r, vrecpsq_f32(d, r));
    return vmulq_f32(r, vrecpsq_f32(d, r));
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
    return vmul(v, vrcp_nr(vadd(vset1(1.0f), e)));
}
#else
ML_INLINE vf vquick_gelu(vf v) {
    vf e = vexp(vmul(v, vset1(-1.702f)));
    return vmul(v, vrcp_nr(vadd(vset1(1.0f), e)));
}
#endif

#endif
