/* attention_amx.c - one attention head with bf16 operands on AMX tiles.
 * Compiled with AVX-512 (+BF16) and AMX flags; called only when the active
 * ISA is AMX (cpu.c has asked Linux for tile-data permission).
 *
 * S = Q K^T and O = P V run as tdpbf16ps with float32 accumulation; the
 * scale, masks, cap and softmax are float32 (exp_row_bf16: the 1/sum is
 * applied to the output rows; exp(s - max) is rounded to bf16 only as the
 * P V operand).  Per block of 16 query rows: Q -> bf16 tile, 16 x S
 * scores, softmax, 16 x hd output.
 *
 * Scratch (S rounded up to Sp, a multiple of 32; pad keys are zero):
 *   kv  K^T as B tiles: [Sp/16 key blocks][hd/32 k-blocks] of 16 x 16 u32
 *       (u32 = the bf16 pair K[s][2i], K[s][2i+1]; tile row i, column s)
 *   vv  V as B tiles:   [Sp/32 key blocks][hd/16 dim blocks] of 16 x 16 u32
 *       (u32 = V[2j][d], V[2j+1][d]; tile row j, column d)
 *   sb  float scores [16][Sp]; pb bf16 probabilities [16][Sp];
 *   qb  bf16 queries [16][hd]; ob float output block [16][hd]
 * Tiles (palette 1, all 16 rows x 64 bytes): tmm0-3 C, tmm4 A, tmm5-7 B
 * (three B tiles, so a load need not wait for the product before last). */
#if defined(__x86_64__)

#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define ML_SIMD_AVX512
#include "kernels/gemm_simd.h"
#include "kernels/attention_isa.h"
#include "kernels/gemm_isa.h"
#include "kernels/amx_tiles.h"


static inline __m256i bf16x16(__m512 x) { return (__m256i)_mm512_cvtneps_pbh(x); }

/* Where one head's operands are: q, k, v and out are float, or bf16
 * (uint16_t) when `bf16`; strides in elements. */
typedef struct att_io {
    const void *q, *k, *v;
    void *out;
    int ldq, ldk, ldv, ldo, bf16;
} att_io;

static inline int pad32(int n) { return (n + 31) & ~31; }

/* Q, K and V are column slices of [T, width] matrices far bigger than the
 * caches, read one row (hd floats, a few lines) at a time across pages:
 * the hardware prefetchers miss them, so the row `ahead` rows on is asked
 * for explicitly. */
#define ATT_AHEAD 16

#ifndef ATT_GROUP
#define ATT_GROUP 4 /* query blocks of 16 per group (att_head) */
#endif
static inline void prefetch_row(const float *row, int hd) {
    for (int i = 0; i < hd; i += 16) _mm_prefetch((const char *)(row + i), _MM_HINT_T0);
}

size_t ml_att_amx_scratch(int S, int hd) {
    size_t Sp = (size_t)pad32(S);
    return Sp * hd * 2 * 2       /* kv, vv */
           + 16 * Sp * 4         /* sb */
           + ATT_GROUP * 16 * Sp * 2 /* pb */
           + 16 * (size_t)hd * 2 /* qb */
           + 16 * (size_t)hd * 4 /* ob */;
}

/* out[c] = column c of the 16 x 16 u32 matrix whose rows are r[0..15]:
 * 32-bit, then 64-bit interleaves inside 128-bit lanes, then two rounds of
 * lane shuffles (64 shuffles for the 256 values, against 16 gathers of 16
 * elements each). */
static inline void transpose16(const __m512i r[16], __m512i out[16]) {
    __m512i t[16], u[16], v[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    /* u[g + c], lane j: rows g..g+3 of column 4j + c */
    for (int g = 0; g < 16; g += 4) {
        u[g] = _mm512_unpacklo_epi64(t[g], t[g + 2]);
        u[g + 1] = _mm512_unpackhi_epi64(t[g], t[g + 2]);
        u[g + 2] = _mm512_unpacklo_epi64(t[g + 1], t[g + 3]);
        u[g + 3] = _mm512_unpackhi_epi64(t[g + 1], t[g + 3]);
    }
    /* v[h + 2c]: lanes 0, 2 of u[h/2 + c], u[h/2 + 4 + c]; v[h + 2c + 1]: lanes 1, 3 */
    for (int h = 0; h < 16; h += 8)
        for (int c = 0; c < 4; c++) {
            v[h + 2 * c] = _mm512_shuffle_i32x4(u[h + c], u[h + 4 + c], 0x88);
            v[h + 2 * c + 1] = _mm512_shuffle_i32x4(u[h + c], u[h + 4 + c], 0xdd);
        }
    for (int c = 0; c < 4; c++) {
        out[c] = _mm512_shuffle_i32x4(v[2 * c], v[8 + 2 * c], 0x88);
        out[8 + c] = _mm512_shuffle_i32x4(v[2 * c], v[8 + 2 * c], 0xdd);
        out[4 + c] = _mm512_shuffle_i32x4(v[2 * c + 1], v[8 + 2 * c + 1], 0x88);
        out[12 + c] = _mm512_shuffle_i32x4(v[2 * c + 1], v[8 + 2 * c + 1], 0xdd);
    }
}

/* bf16 K^T tiles: per key block of 16 and k-block of 32 dims, the 16 key
 * rows (16 u32 = bf16 pairs each) transposed in registers. */
static void pack_k_bf16(int S, int Sp, int hd, const att_io *io, uint32_t *kv) {
    int KB = hd / 32;
    const uint16_t *k = io->k;
    for (int s0 = 0; s0 < Sp; s0 += 16) {
        uint32_t *dst = kv + (size_t)(s0 / 16) * KB * 256;
        for (int c = 0; c < 16 && s0 + c + ATT_AHEAD < S; c++)
            prefetch_row((const float *)(k + (size_t)(s0 + c + ATT_AHEAD) * io->ldk), hd / 2);
        for (int kb = 0; kb < KB; kb++) {
            __m512i r[16], out[16];
            for (int c = 0; c < 16; c++)
                r[c] = s0 + c < S ? _mm512_loadu_si512(k + (size_t)(s0 + c) * io->ldk + kb * 32)
                                  : _mm512_setzero_si512();
            transpose16(r, out);
            for (int i = 0; i < 16; i++) _mm512_store_si512(dst + kb * 256 + i * 16, out[i]);
        }
    }
}

/* K^T tiles, one key block of 16 at a time: the block's rows go to bf16,
 * then each tile row (one bf16 pair of 16 keys) is a gather of 16 u32. */
static void pack_k(int S, int Sp, int hd, const att_io *io, uint32_t *kv) {
    if (io->bf16) {
        pack_k_bf16(S, Sp, hd, io, kv);
        return;
    }
    int KB = hd / 32, H2 = hd / 2;
    _Alignas(64) uint32_t blk[16 * (ML_ATT_HD_MAX / 2)];
    __m512i idx = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                     _mm512_set1_epi32(H2));
    for (int s0 = 0; s0 < Sp; s0 += 16) {
        for (int c = 0; c < 16; c++) {
            uint16_t *d = (uint16_t *)(blk + (size_t)c * H2);
            if (s0 + c >= S) {
                memset(d, 0, sizeof(uint16_t) * hd);
                continue;
            }
            if (io->bf16) { /* already bf16: a copy */
                const uint16_t *ks = (const uint16_t *)io->k + (size_t)(s0 + c) * io->ldk;
                if (s0 + c + ATT_AHEAD < S) prefetch_row((const float *)(ks + (size_t)ATT_AHEAD * io->ldk), hd / 2);
                memcpy(d, ks, sizeof(uint16_t) * hd);
                continue;
            }
            const float *ks = (const float *)io->k + (size_t)(s0 + c) * io->ldk;
            if (s0 + c + ATT_AHEAD < S) prefetch_row(ks + (size_t)ATT_AHEAD * io->ldk, hd);
            for (int i = 0; i < hd; i += 16) _mm256_store_si256((__m256i *)(d + i), bf16x16(_mm512_loadu_ps(ks + i)));
        }
        uint32_t *dst = kv + (size_t)(s0 / 16) * KB * 256;
        for (int j = 0; j < H2; j++)
            _mm512_store_si512(dst + (j / 16) * 256 + (j % 16) * 16,
                               _mm512_i32gather_epi32(_mm512_add_epi32(idx, _mm512_set1_epi32(j)), blk, 4));
    }
}

/* V[s][d .. d+15] as bf16 in the low halves of 16 u32 (0 past S). */
static inline __m512i v_row16(int s, int S, const att_io *io, int d) {
    if (s >= S) return _mm512_setzero_si512();
    if (io->bf16)
        return _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)((const uint16_t *)io->v + (size_t)s * io->ldv + d)));
    return _mm512_cvtepu16_epi32(bf16x16(_mm512_loadu_ps((const float *)io->v + (size_t)s * io->ldv + d)));
}

static void prefetch_v(const att_io *io, int s, int hd) {
    if (io->bf16) prefetch_row((const float *)((const uint16_t *)io->v + (size_t)s * io->ldv), hd / 2);
    else prefetch_row((const float *)io->v + (size_t)s * io->ldv, hd);
}

/* bf16 V tiles: a key pair's two rows interleaved 16 bits at a time
 * (unpack within 128-bit lanes, then the lanes put in dim order), 32 dims
 * at a time. */
static void pack_v_bf16(int S, int Sp, int hd, const att_io *io, uint32_t *vv) {
    int DB = hd / 16;
    const uint16_t *v = io->v;
    const __m512i first = _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0);
    const __m512i second = _mm512_set_epi64(15, 14, 7, 6, 13, 12, 5, 4);
    for (int p = 0; p < Sp / 2; p++) {
        int kb = p / 16, kk = p % 16, s0 = 2 * p;
        if (s0 + 1 + ATT_AHEAD < S) {
            prefetch_v(io, s0 + ATT_AHEAD, hd);
            prefetch_v(io, s0 + 1 + ATT_AHEAD, hd);
        }
        for (int d = 0; d < hd; d += 32) {
            __m512i a = s0 < S ? _mm512_loadu_si512(v + (size_t)s0 * io->ldv + d) : _mm512_setzero_si512();
            __m512i b = s0 + 1 < S ? _mm512_loadu_si512(v + (size_t)(s0 + 1) * io->ldv + d) : _mm512_setzero_si512();
            __m512i lo = _mm512_unpacklo_epi16(a, b), hi = _mm512_unpackhi_epi16(a, b);
            uint32_t *dst = vv + ((size_t)(kb * DB + d / 16) * 16 + kk) * 16;
            _mm512_store_si512(dst, _mm512_permutex2var_epi64(lo, first, hi));
            _mm512_store_si512(dst + 256, _mm512_permutex2var_epi64(lo, second, hi));
        }
    }
}

static void pack_v(int S, int Sp, int hd, const att_io *io, uint32_t *vv) {
    if (io->bf16) {
        pack_v_bf16(S, Sp, hd, io, vv);
        return;
    }
    int DB = hd / 16;
    for (int p = 0; p < Sp / 2; p++) {
        int kb = p / 16, kk = p % 16;
        if (2 * p + 1 + ATT_AHEAD < S) {
            prefetch_v(io, 2 * p + ATT_AHEAD, hd);
            prefetch_v(io, 2 * p + 1 + ATT_AHEAD, hd);
        }
        for (int db = 0; db < DB; db++) {
            __m512i lo = v_row16(2 * p, S, io, db * 16), hi = v_row16(2 * p + 1, S, io, db * 16);
            _mm512_store_si512(vv + ((size_t)(kb * DB + db) * 16 + kk) * 16,
                               _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
        }
    }
}

/* 2^y for y <= 0 to about 4e-5 relative: far below the bf16 rounding
 * (2^-9) the result gets next.  y = n + f, |f| <= 1/2, 2^f by its degree-4
 * Taylor polynomial in f ln 2, 2^n by vscalefps.  A finite y below -150
 * gives 0 or a float32 denormal, which bf16 rounds to 0 and no sum
 * notices; -inf (a masked key) would give NaN, so rows that may hold it
 * clamp y at -150 first (`clamp`). */
static inline __m512 exp2_bf16grade(__m512 y, int clamp) {
    if (clamp) y = _mm512_max_ps(y, _mm512_set1_ps(-150.0f));
    __m512 n = _mm512_roundscale_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_sub_ps(y, n);
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(9.6181291e-3f), f, _mm512_set1_ps(5.5504109e-2f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022651e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.9314718e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* dst[0, n) = bf16(exp(row * sc - max)), zeros in [n, Sp); returns
 * 1 / sum of the exponentials (0 for a row with no usable key: all -inf),
 * which the caller applies to the output row (P V is linear in P).  Whole
 * pairs of vectors go to bf16 in one conversion and one 64-byte store
 * (Sp is a multiple of 32); `clamp`: the row may hold -inf. */
static inline __attribute__((always_inline)) float exp_row_bf16_at(const float *row, int n, int Sp,
                                                                   float sc, uint16_t *dst, int clamp) {
    vf mx = vset1(-INFINITY);
    int i = 0;
    for (; i + 16 <= n; i += 16) mx = vmax(mx, vload(row + i));
    if (i < n) mx = _mm512_mask_max_ps(mx, vmask(n - i), mx, vload_m(row + i, vmask(n - i)));
    float m = vhmax(mx) * sc; /* sc > 0: the max of row * sc */
    if (m == -INFINITY) {
        memset(dst, 0, sizeof(uint16_t) * Sp);
        return 0.0f;
    }
    /* exp(x sc - m) = 2^(x c - m log2 e) with c = sc log2 e: one fma */
    const float log2e = 1.44269504088896341f;
    vf vc = vset1(sc * log2e), neg_m = vset1(-m * log2e), s0 = vzero(), s1 = vzero();
    for (i = 0; i + 32 <= n; i += 32) {
        vf e0 = exp2_bf16grade(vfma(vload(row + i), vc, neg_m), clamp);
        vf e1 = exp2_bf16grade(vfma(vload(row + i + 16), vc, neg_m), clamp);
        s0 = vadd(s0, e0), s1 = vadd(s1, e1);
        _mm512_storeu_si512(dst + i, (__m512i)_mm512_cvtne2ps_pbh(e1, e0));
    }
    for (; i < Sp; i += 32) { /* the last (partial) pair, then zeros */
        int k0 = n - i < 0 ? 0 : n - i > 16 ? 16 : n - i, k1 = n - i - 16 < 0 ? 0 : n - i - 16 > 16 ? 16 : n - i - 16;
        vm m0 = vmask(k0), m1 = vmask(k1);
        vf e0 = _mm512_maskz_mov_ps(m0, exp2_bf16grade(vfma(vload_m(row + i, m0), vc, neg_m), 1));
        vf e1 = _mm512_maskz_mov_ps(m1, exp2_bf16grade(vfma(vload_m(row + i + 16, m1), vc, neg_m), 1));
        s0 = vadd(s0, e0), s1 = vadd(s1, e1);
        _mm512_storeu_si512(dst + i, (__m512i)_mm512_cvtne2ps_pbh(e1, e0));
    }
    return 1.0f / vhsum(vadd(s0, s1));
}

static float exp_row_bf16(const float *row, int n, int Sp, float sc, uint16_t *dst) {
    return exp_row_bf16_at(row, n, Sp, sc, dst, 0);
}

static float exp_row_bf16_masked(const float *row, int n, int Sp, float sc, uint16_t *dst) {
    return exp_row_bf16_at(row, n, Sp, sc, dst, 1);
}

/* Query rows [t0, t0 + rows) to bf16 (times qscale), zero rows to 16. */
static void load_q(const att_io *io, int T, int hd, int t0, int rows, const float *qscale, uint16_t *qb) {
    for (int r = 0; r < 16; r++) {
        uint16_t *d = qb + (size_t)r * hd;
        if (r >= rows) {
            memset(d, 0, sizeof(uint16_t) * hd);
            continue;
        }
        if (io->bf16) {
            const uint16_t *qt = (const uint16_t *)io->q + (size_t)(t0 + r) * io->ldq;
            if (!qscale) {
                memcpy(d, qt, sizeof(uint16_t) * hd);
                continue;
            }
            for (int i = 0; i < hd; i += 16) {
                __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(qt + i)));
                __m512 x = _mm512_mul_ps(_mm512_castsi512_ps(_mm512_slli_epi32(w, 16)), _mm512_loadu_ps(qscale + i));
                _mm256_storeu_si256((__m256i *)(d + i), bf16x16(x));
            }
            continue;
        }
        const float *qt = (const float *)io->q + (size_t)(t0 + r) * io->ldq;
        if (t0 + r + 16 < T) prefetch_row(qt + (size_t)16 * io->ldq, hd);
        for (int i = 0; i < hd; i += 16) {
            __m512 x = _mm512_loadu_ps(qt + i);
            if (qscale) x = _mm512_mul_ps(x, _mm512_loadu_ps(qscale + i));
            _mm256_storeu_si256((__m256i *)(d + i), bf16x16(x));
        }
    }
}

/* out rows [t0, t0 + rows) = ob rows times 1/sum, as float or bf16. */
static void store_out(const att_io *io, int hd, int t0, int rows, const float *ob, const float *inv) {
    for (int r = 0; r < rows; r++) {
        const float *src = ob + (size_t)r * hd;
        vf w = vset1(inv[r]);
        if (io->bf16) {
            uint16_t *dst = (uint16_t *)io->out + (size_t)(t0 + r) * io->ldo;
            for (int i = 0; i < hd; i += 16) _mm256_storeu_si256((__m256i *)(dst + i), bf16x16(vmul(vload(src + i), w)));
        } else {
            float *dst = (float *)io->out + (size_t)(t0 + r) * io->ldo;
            for (int i = 0; i < hd; i += 16) vstore(dst + i, vmul(vload(src + i), w));
        }
    }
}

/* Scores of 16 query rows (bf16 tile rows at q, qs bytes apart) against
 * the key blocks covering the first maxn keys: sb [16][Sp] floats. */
static void scores_block(const uint16_t *q, size_t qs, const uint32_t *kv, int KB, int maxn,
                         float *sb, int Sp) {
    int nblk = (maxn + 15) / 16, nb = 0;
    size_t ss = (size_t)Sp * 4;
    for (; nb + 4 <= nblk; nb += 4) {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        for (int kb = 0; kb < KB; kb++) {
            const uint32_t *b = kv + ((size_t)nb * KB + kb) * 256;
            _tile_loadd(4, q + kb * 32, qs);
            _tile_loadd(6, b, 64);
            _tile_dpbf16ps(0, 4, 6);
            _tile_loadd(7, b + (size_t)KB * 256, 64);
            _tile_dpbf16ps(1, 4, 7);
            _tile_loadd(5, b + (size_t)2 * KB * 256, 64);
            _tile_dpbf16ps(2, 4, 5);
            _tile_loadd(6, b + (size_t)3 * KB * 256, 64);
            _tile_dpbf16ps(3, 4, 6);
        }
        _tile_stored(0, sb + (size_t)nb * 16, ss);
        _tile_stored(1, sb + (size_t)nb * 16 + 16, ss);
        _tile_stored(2, sb + (size_t)nb * 16 + 32, ss);
        _tile_stored(3, sb + (size_t)nb * 16 + 48, ss);
    }
    for (; nb < nblk; nb++) {
        _tile_zero(0);
        for (int kb = 0; kb < KB; kb++) {
            _tile_loadd(4, q + kb * 32, qs);
            _tile_loadd(6, kv + ((size_t)nb * KB + kb) * 256, 64);
            _tile_dpbf16ps(0, 4, 6);
        }
        _tile_stored(0, sb + (size_t)nb * 16, ss);
    }
}

/* Softmax of rows [t0, t0 + rows) in float: the unnormalised exponentials
 * go to pb as bf16 (zero rows past `rows`), 1 / sum to inv. */
static void softmax_block(float *sb, int Sp, int S, int t0, int rows, float scale, float cap,
                          const unsigned char *key_ok, int causal, uint16_t *pb, float *inv) {
    for (int r = 0; r < 16; r++) {
        uint16_t *pr = pb + (size_t)r * Sp;
        if (r >= rows) {
            memset(pr, 0, sizeof(uint16_t) * Sp);
            continue;
        }
        int t = t0 + r, n = causal ? (t + 1 < S ? t + 1 : S) : S;
        float *row = sb + (size_t)r * Sp, sc = scale;
        if (key_ok)
            for (int k = 0; k < n; k++)
                if (!key_ok[k]) row[k] = -INFINITY;
        if (cap > 0) {
            for (int k = 0; k < n; k++)
                if (row[k] != -INFINITY) row[k] = cap * tanhf(row[k] * scale / cap);
            sc = 1.0f;
        }
        inv[r] = key_ok ? exp_row_bf16_masked(row, n, Sp, sc, pr) : exp_row_bf16(row, n, Sp, sc, pr);
    }
}

/* ob [16][hd] floats = P V over the kbn key blocks of 32 that can be nonzero. */
static void pv_block(const uint16_t *pb, int Sp, const uint32_t *vv, int DB, int kbn, float *ob,
                     int hd) {
    size_t os = (size_t)hd * 4, ps = (size_t)Sp * 2;
    int db = 0;
    for (; db + 4 <= DB; db += 4) {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        for (int kb = 0; kb < kbn; kb++) {
            const uint32_t *b = vv + ((size_t)kb * DB + db) * 256;
            _tile_loadd(4, pb + kb * 32, ps);
            _tile_loadd(6, b, 64);
            _tile_dpbf16ps(0, 4, 6);
            _tile_loadd(7, b + 256, 64);
            _tile_dpbf16ps(1, 4, 7);
            _tile_loadd(5, b + 512, 64);
            _tile_dpbf16ps(2, 4, 5);
            _tile_loadd(6, b + 768, 64);
            _tile_dpbf16ps(3, 4, 6);
        }
        _tile_stored(0, ob + db * 16, os);
        _tile_stored(1, ob + db * 16 + 16, os);
        _tile_stored(2, ob + db * 16 + 32, os);
        _tile_stored(3, ob + db * 16 + 48, os);
    }
    for (; db < DB; db += 2) { /* hd % 32 == 0: dim blocks come in pairs */
        _tile_zero(0);
        _tile_zero(1);
        for (int kb = 0; kb < kbn; kb++) {
            const uint32_t *b = vv + ((size_t)kb * DB + db) * 256;
            _tile_loadd(4, pb + kb * 32, ps);
            _tile_loadd(6, b, 64);
            _tile_dpbf16ps(0, 4, 6);
            _tile_loadd(7, b + 256, 64);
            _tile_dpbf16ps(1, 4, 7);
        }
        _tile_stored(0, ob + db * 16, os);
        _tile_stored(1, ob + db * 16 + 16, os);
    }
}

/* Keys any row of the block at t0 may use (causal: up to its last row). */
static int block_keys(int T, int S, int t0, int causal) {
    int rows = T - t0 < 16 ? T - t0 : 16;
    return causal ? (t0 + rows < S ? t0 + rows : S) : S;
}

/* Query blocks of 16 rows go in groups of ATT_GROUP: scores and softmax of
 * the whole group, then its P V products.  A tile load of P written by
 * vector stores just before waits for those stores to drain; grouping
 * leaves one such wait per group instead of one per block.  For the same
 * reason full bf16 query blocks are read by the tiles where they are. */
static void att_head(int T, int S, int hd, const att_io *io, float scale, const float *qscale,
                     float cap, const unsigned char *key_ok, int causal, void *scratch) {
    int Sp = pad32(S), KB = hd / 32, DB = hd / 16;
    uint32_t *kv = scratch, *vv = kv + (size_t)Sp * hd / 2;
    float *sb = (float *)(vv + (size_t)Sp * hd / 2);
    uint16_t *pb = (uint16_t *)(sb + (size_t)16 * Sp), *qb = pb + (size_t)ATT_GROUP * 16 * Sp;
    float *ob = (float *)(qb + (size_t)16 * hd);
    float inv[ATT_GROUP * 16];
    pack_k(S, Sp, hd, io, kv);
    pack_v(S, Sp, hd, io, vv);
    tiles_begin();
    for (int g0 = 0; g0 < T; g0 += 16 * ATT_GROUP) {
        int g1 = g0 + 16 * ATT_GROUP < T ? g0 + 16 * ATT_GROUP : T;
        for (int t0 = g0; t0 < g1; t0 += 16) {
            int rows = T - t0 < 16 ? T - t0 : 16, b = (t0 - g0) / 16;
            const uint16_t *q = qb;
            size_t qs = (size_t)hd * 2;
            if (io->bf16 && !qscale && rows == 16) {
                q = (const uint16_t *)io->q + (size_t)t0 * io->ldq;
                qs = (size_t)io->ldq * 2;
            } else {
                load_q(io, T, hd, t0, rows, qscale, qb);
            }
            scores_block(q, qs, kv, KB, block_keys(T, S, t0, causal), sb, Sp);
            softmax_block(sb, Sp, S, t0, rows, scale, cap, key_ok, causal, pb + (size_t)b * 16 * Sp,
                          inv + b * 16);
        }
        for (int t0 = g0; t0 < g1; t0 += 16) {
            int rows = T - t0 < 16 ? T - t0 : 16, b = (t0 - g0) / 16;
            pv_block(pb + (size_t)b * 16 * Sp, Sp, vv, DB, (block_keys(T, S, t0, causal) + 31) / 32, ob, hd);
            store_out(io, hd, t0, rows, ob, inv + b * 16);
        }
    }
    _tile_release();
}

void ml_att_amx_head(int T, int S, int hd, const float *q, int ldq, const float *k, int ldk,
                     const float *v, int ldv, float scale, const float *qscale, float cap,
                     const unsigned char *key_ok, int causal, float *out, int ldo, void *scratch) {
    att_io io = {q, k, v, out, ldq, ldk, ldv, ldo, 0};
    att_head(T, S, hd, &io, scale, qscale, cap, key_ok, causal, scratch);
}

void ml_att_amx_head_bf16(int T, int S, int hd, const uint16_t *q, int ldq, const uint16_t *k,
                          int ldk, const uint16_t *v, int ldv, float scale,
                          const unsigned char *key_ok, int causal, uint16_t *out, int ldo,
                          void *scratch) {
    att_io io = {q, k, v, out, ldq, ldk, ldv, ldo, 1};
    att_head(T, S, hd, &io, scale, NULL, 0.0f, key_ok, causal, scratch);
}

#else
typedef int ml_attention_amx_unused; /* ISO C wants a non-empty file */
#endif
