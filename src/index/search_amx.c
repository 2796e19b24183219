/* search_amx.c - int8 scoring of query batches on AMX tiles (tdpbsud).
 * Compiled with AVX-512 + AMX flags; called only when the AMX path is active.
 *
 * The int8 panel layout is already the tiles' B operand: 16 groups of 4
 * coordinates x 16 rows = one 16 x 64-byte tile, contiguous (1 KB).  Queries
 * are the signed A operand (16 queries x 64 coordinates, row stride dp) and
 * the stored rows the unsigned B operand, so tdpbsud computes the same
 * integer sums as the VNNI kernel.  One pass: 32 queries x 2 panels = 4
 * accumulator tiles, 2 A and 2 B tiles per 64 coordinates.
 *
 * Batches pay off: a tile product is 16 x 16 x 64 multiply-adds.  Queries
 * left over (fewer than 16), and dimensions that are not a multiple of 64,
 * go to the AVX512-VNNI kernel, whose results are bit-identical. */
#if defined(__x86_64__)

#include <immintrin.h>

#include "index/search_internal.h"
#include "kernels/amx_tiles.h"

/* (acc - corr) * qscale * row scale, as every int8 kernel computes it. */
static void epilogue(const int32_t *c, int p, const float *scale, const sk_queries *q, int qi,
                     const float *thr, float *out, uint16_t *mask) {
    __m512 s = _mm512_loadu_ps(scale + p * SK_PANEL);
    for (int m = 0; m < 16; m++) {
        __m512i acc = _mm512_sub_epi32(_mm512_loadu_si512(c + m * 16), _mm512_set1_epi32(q->qcorr[qi + m]));
        __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), _mm512_set1_ps(q->qscale[qi + m]));
        v = _mm512_mul_ps(v, s);
        _mm512_storeu_ps(out + m * SK_BLOCK + p * SK_PANEL, v);
        mask[m * SK_BLOCK_PANELS + p] = (uint16_t)_mm512_cmp_ps_mask(v, _mm512_set1_ps(thr[m]), _CMP_GE_OQ);
    }
}

/* 32 queries (two A tiles) x panels p, p + 1. */
static void pass32(const uint8_t *panels, const float *scale, int dp, const sk_queries *q, int qi,
                   int p, const float *thr, float *out, uint16_t *mask) {
    size_t ps = (size_t)dp * SK_PANEL;
    const int8_t *a = q->q8 + (size_t)qi * dp;
    const uint8_t *b0 = panels + p * ps, *b1 = b0 + ps;
    _Alignas(64) int32_t c[4][256];
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int k = 0; k < dp; k += 64) {
        _tile_loadd(4, a + k, dp);
        _tile_loadd(5, a + (size_t)16 * dp + k, dp);
        _tile_loadd(6, b0 + (size_t)k * SK_PANEL, 64);
        _tile_loadd(7, b1 + (size_t)k * SK_PANEL, 64);
        _tile_dpbsud(0, 4, 6);
        _tile_dpbsud(1, 4, 7);
        _tile_dpbsud(2, 5, 6);
        _tile_dpbsud(3, 5, 7);
    }
    _tile_stored(0, c[0], 64);
    _tile_stored(1, c[1], 64);
    _tile_stored(2, c[2], 64);
    _tile_stored(3, c[3], 64);
    epilogue(c[0], p, scale, q, qi, thr, out, mask);
    epilogue(c[1], p + 1, scale, q, qi, thr, out, mask);
    epilogue(c[2], p, scale, q, qi + 16, thr + 16, out + 16 * SK_BLOCK, mask + 16 * SK_BLOCK_PANELS);
    epilogue(c[3], p + 1, scale, q, qi + 16, thr + 16, out + 16 * SK_BLOCK, mask + 16 * SK_BLOCK_PANELS);
}

/* 16 queries x panels p, p + 1. */
static void pass16(const uint8_t *panels, const float *scale, int dp, const sk_queries *q, int qi,
                   int p, const float *thr, float *out, uint16_t *mask) {
    size_t ps = (size_t)dp * SK_PANEL;
    const int8_t *a = q->q8 + (size_t)qi * dp;
    const uint8_t *b0 = panels + p * ps, *b1 = b0 + ps;
    _Alignas(64) int32_t c[2][256];
    _tile_zero(0);
    _tile_zero(1);
    for (int k = 0; k < dp; k += 64) {
        _tile_loadd(4, a + k, dp);
        _tile_loadd(6, b0 + (size_t)k * SK_PANEL, 64);
        _tile_loadd(7, b1 + (size_t)k * SK_PANEL, 64);
        _tile_dpbsud(0, 4, 6);
        _tile_dpbsud(1, 4, 7);
    }
    _tile_stored(0, c[0], 64);
    _tile_stored(1, c[1], 64);
    epilogue(c[0], p, scale, q, qi, thr, out, mask);
    epilogue(c[1], p + 1, scale, q, qi, thr, out, mask);
}

void sk_amx_i8(const uint8_t *panels, const float *scale, int dp, const sk_queries *q, int q0,
               int nq, const float *thr, float *out, uint16_t *mask) {
    int i = 0;
    if (dp % 64 == 0 && nq >= 16) {
        tiles_begin();
        for (; nq - i >= 32; i += 32)
            for (int p = 0; p < SK_BLOCK_PANELS; p += 2)
                pass32(panels, scale, dp, q, q0 + i, p, thr + i, out + i * SK_BLOCK,
                       mask + i * SK_BLOCK_PANELS);
        for (; nq - i >= 16; i += 16)
            for (int p = 0; p < SK_BLOCK_PANELS; p += 2)
                pass16(panels, scale, dp, q, q0 + i, p, thr + i, out + i * SK_BLOCK,
                       mask + i * SK_BLOCK_PANELS);
        _tile_release();
    }
    if (i < nq)
        sk_avx512_i8(panels, scale, dp, q, q0 + i, nq - i, thr + i, out + i * SK_BLOCK,
                     mask + i * SK_BLOCK_PANELS);
}

#else
typedef int search_amx_unused; /* ISO C forbids an empty translation unit */
#endif
