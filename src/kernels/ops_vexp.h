/* ops_vexp.h - the vectorised exp of the SIMD kernels (ops_tmpl.h,
 * attention_amx.c); include after gemm_simd.h. */
#ifndef ML_KERNELS_OPS_VEXP_H
#define ML_KERNELS_OPS_VEXP_H

/* exp(x), Cephes expf: x = n ln2 + r with |r| <= ln2/2 (ln2 split in two
 * so n*ln2 is exact), e^r by a degree-7 polynomial, 2^n by exponent bits.
 * About 1 ulp over the float range; x < -87.3 (incl. -inf) gives exactly 0,
 * which is what a masked softmax entry needs. */
ML_INLINE vf vexp(vf x) {
    const float lo = -87.33654f; /* ln(FLT_MIN): 2^n stays a normal number */
    vf xc = vmax(vmin(x, vset1(88.3762626647949f)), vset1(lo));
    vf n = vround(vmul(xc, vset1(1.44269504088896341f)));
    vf r = vfma(n, vset1(-0.693359375f), xc);
    r = vfma(n, vset1(2.12194440e-4f), r);
    vf p = vset1(1.9875691500e-4f);
    p = vfma(p, r, vset1(1.3981999507e-3f));
    p = vfma(p, r, vset1(8.3334519073e-3f));
    p = vfma(p, r, vset1(4.1665795894e-2f));
    p = vfma(p, r, vset1(1.6666665459e-1f));
    p = vfma(p, r, vset1(5.0000001201e-1f));
    vf r2 = vmul(r, r);
    p = vfma(p, r2, vadd(r, vset1(1.0f)));
    return vzero_below(x, vmul(p, vpow2i(n)), lo);
}

#endif
