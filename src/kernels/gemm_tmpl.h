/* gemm_tmpl.h - the SIMD GEMM micro-kernel, instantiated by gemm_avx2.c,
 * gemm_avx512.c and gemm_neon.c (after gemm_simd.h and GEMM_MR / GEMM_NV
 * are defined).
 *
 * Broadcast-A / load-B-row: an mr x (GEMM_NV * VL) block of C lives in
 * registers; each k loads GEMM_NV vectors of one B row (B used in place, row
 * stride ldb) and broadcasts mr A values (A in place too), so every B load
 * feeds mr FMAs.  The driver (gemm.c) keeps the A row block in L1 and the
 * Kc x Nc slab of B in L2 while this walks across the slab's panels. */
#include "kernels/gemm_isa.h"
#include "kernels/ops_vexp.h"

#define GEMM_NR (GEMM_NV * VL)

/* (ML_UNROLL, gemm_simd.h: the constant-trip r / v loops fully unrolled keep
 * acc[][] in registers.) */
/* B rows prefetched ahead into L1: the slab comes from L2 (its rows are
 * ldb apart, too far for the L1 streamer to follow). */
#ifndef GEMM_PF
#define GEMM_PF 8
#endif

/* C tile epilogue: + bias, + old C, quick GELU on the last K block, store
 * (masked on a partial panel). */
ML_INLINE void tile_store(vf acc[GEMM_MR][GEMM_NV], int mr, const ml_gemm_panel *p, float *c,
                          const float *bias, const vm *mask, int masked) {
ML_UNROLL
    for (int v = 0; v < GEMM_NV; v++) {
        vf bv = vzero();
        if (bias) bv = masked ? vload_m(bias + v * VL, mask[v]) : vload(bias + v * VL);
ML_UNROLL
        for (int r = 0; r < mr; r++) {
            float *cp = c + r * p->ldc + v * VL;
            vf x = vadd(acc[r][v], bv);
            if (masked) {
                if (p->load_c) x = vadd(x, vload_m(cp, mask[v]));
                if (p->gelu) x = vquick_gelu(x);
                vstore_m(cp, x, mask[v]);
            } else {
                if (p->load_c) x = vadd(x, vload(cp));
                if (p->gelu) x = vquick_gelu(x);
                vstore(cp, x);
            }
        }
    }
}

/* mr and masked are compile-time constants at every call site, so each
 * (mr, masked) pair becomes its own fully unrolled register-blocked loop. */
ML_INLINE void ukernel(int mr, int masked, const ml_gemm_panel *p, const float *b, float *c,
                       const float *bias, int ncols) {
    vf acc[GEMM_MR][GEMM_NV];
    vm mask[GEMM_NV];
    for (int v = 0; v < GEMM_NV; v++) mask[v] = vmask(ncols - v * VL);
ML_UNROLL
    for (int r = 0; r < mr; r++)
ML_UNROLL
        for (int v = 0; v < GEMM_NV; v++) acc[r][v] = vzero();
    const float *a = p->a;
    const long ldb = p->ldb, lda = p->lda;
    for (int k = 0; k < p->kc; k++, a++, b += ldb) {
        vf bv[GEMM_NV];
ML_UNROLL
        for (int v = 0; v < GEMM_NV; v++) {
            bv[v] = masked ? vload_m(b + v * VL, mask[v]) : vload(b + v * VL);
        }
        if (!masked) vprefetch(b + GEMM_PF * ldb);
#if GEMM_NR * 4 > 64
        if (!masked) vprefetch(b + GEMM_PF * ldb + 16);
#endif
ML_UNROLL
        for (int r = 0; r < mr; r++) {
            vf av = vset1(a[r * lda]);
ML_UNROLL
            for (int v = 0; v < GEMM_NV; v++) acc[r][v] = vfma(av, bv[v], acc[r][v]);
        }
    }
    tile_store(acc, mr, p, c, bias, mask, masked);
}

/* One call per (mr, masked): a switch turns the runtime mr into a constant. */
#define GEMM_R(R) (R < GEMM_MR ? R : GEMM_MR)
#define GEMM_CASE(R)                                                        \
    case R:                                                                 \
        if (masked) ukernel(GEMM_R(R), 1, p, b, c, bias, ncols);            \
        else ukernel(GEMM_R(R), 0, p, b, c, bias, ncols);                   \
        break;

static void panel_tile(const ml_gemm_panel *p, const float *b, float *c, const float *bias,
                       int ncols) {
    int masked = ncols < GEMM_NR;
    switch (p->mr) {
        GEMM_CASE(1)
        GEMM_CASE(2)
        GEMM_CASE(3)
        GEMM_CASE(4)
        GEMM_CASE(5)
        GEMM_CASE(6)
#if GEMM_MR > 6
        GEMM_CASE(7)
        GEMM_CASE(8)
        GEMM_CASE(9)
        GEMM_CASE(10)
        GEMM_CASE(11)
        GEMM_CASE(12)
#endif
#if GEMM_MR > 12
        GEMM_CASE(13)
        GEMM_CASE(14)
#endif
    default:
        break;
    }
}

static void gemm_panel(const ml_gemm_panel *p) {
    for (int j = 0, t = 0; j < p->n; j += GEMM_NR, t++) {
        int ncols = p->n - j < GEMM_NR ? p->n - j : GEMM_NR;
        panel_tile(p, p->b + t * p->bpanel, p->c + j, p->bias ? p->bias + j : NULL, ncols);
    }
}

/* The kc x nn slab of B at b (rows ldb apart) as GEMM_NR-column panels of
 * kc contiguous rows (the last one zero-padded), so that the micro-kernel
 * reads B sequentially instead of one short piece per page.  The next rows
 * are prefetched: each row of the slab is on a different page. */
static void gemm_pack_b(const float *b, long ldb, int kc, int nn, float *buf) {
    int panels = (nn + GEMM_NR - 1) / GEMM_NR;
    for (int k = 0; k < kc; k++) {
        const float *row = b + (size_t)k * ldb;
        if (k + GEMM_PF < kc)
            for (int j = 0; j < nn; j += 64 / 4)
                vprefetch(row + GEMM_PF * ldb + j);
        for (int t = 0; t < panels; t++) {
            float *dst = buf + ((size_t)t * kc + k) * GEMM_NR;
            const float *src = row + t * GEMM_NR;
            int w = nn - t * GEMM_NR;
            if (w >= GEMM_NR) {
ML_UNROLL
                for (int v = 0; v < GEMM_NV; v++) vstore(dst + v * VL, vload(src + v * VL));
            } else {
                for (int v = 0; v < GEMM_NV; v++)
                    vstore(dst + v * VL, vload_m(src + v * VL, vmask(w - v * VL)));
            }
        }
    }
}

const ml_gemm_impl ML_ISA_NAME(ml_gemm) = {GEMM_MR, GEMM_NR, gemm_panel, gemm_pack_b};
