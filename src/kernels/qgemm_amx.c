/* qgemm_amx.c - AMX tile kernels (tdpbf16ps, tdpbusd) and the per-task loop.
 * Compiled with AVX-512 + AMX flags; called only after ml_isa_supported(
 * ML_ISA_AMX), which has asked Linux for tile-data permission (process-wide).
 *
 * Tile use (palette 1, every tile 16 rows x 64 bytes):
 *   tmm0..3  C: a 32 x 32 float/int32 block as 2 x 2 tiles of 16 x 16, kept
 *            in tiles over the whole K
 *   tmm4..5  A: 16 rows x (32 bf16 | 64 u8), rows i..i+15 and i+16..i+31,
 *            1 KiB of consecutive bytes each (blocked scratch, qg_amx_task)
 *   tmm6..7  B: one k-depth of panel p and p+1, read straight from the
 *            packed weights (a panel's 64-byte k-group rows are contiguous)
 * Each A tile is used twice and each B tile twice per k step.  The tile
 * configuration is per thread state: each task (one per thread and call)
 * loads it once and releases the tiles when done.
 *
 * The AVX-512 side work - the previous block's epilogue and the packing of
 * the next row block - is spread between the k steps, where it overlaps the
 * tile unit's work (measured, 1 thread, M=1576 N=768 K=768 bf16: with both
 * the epilogue and the packing removed the same loop ran 2.3 TFLOP/s, so
 * they remain the main cost). */
#if defined(__x86_64__)

#include <string.h>

#include "kernels/qgemm_x86.h"
#include "kernels/amx_tiles.h"


#ifndef QG_PF_DIST
#define QG_PF_DIST 0 /* bytes ahead in a B panel; 0: no software prefetch */
#endif

/* Prefetches one k step (a 1 KiB tile) of two B panels into L1.  Past a
 * panel's end this runs into the next panel (the next pair's data); past the
 * last one it is a no-op (prefetches never fault).  bf16 only.  Off by
 * default: it gained 5-10% when each block's tiles were stored at its end,
 * and lost 5-20% (bench_qgemm, ViT-B shapes) once the stores moved into the
 * next block's first k step (QG_BLOCK2); the L2 streamer keeps up alone. */
static inline void prefetch_b(const char *b0, const char *b1) {
#if QG_PF_DIST > 0
    for (int l = 0; l < 1024; l += 64) {
        _mm_prefetch(b0 + l, _MM_HINT_T0);
        _mm_prefetch(b1 + l, _MM_HINT_T0);
    }
#else
    (void)b0, (void)b1;
#endif
}

/* ---- side packing ----
 * The next row block is packed a row at a time between k steps: rows
 * [next, end), one every `every` k steps (QG_SIDE_PACK=0: each block is
 * packed just before its first use instead). */
#ifndef QG_SIDE_PACK
#define QG_SIDE_PACK 1
#endif

typedef struct qg_side {
    qg_pack_fn pack;
    void *ctx;
    int next, end, every;
    /* A read in place: the next row block's cache lines are prefetched into
     * L2 a few per k step (line pf_at of pf_n, pf_row lines a row) */
    const char *pf;
    size_t pf_ld;
    int pf_at, pf_n, pf_row;
    /* B: a slice of the next panel block's weights, lines [wb_at, wb_n)
     * from wb, asked into L2 a few per k step (see qg_amx_task) */
    const char *wb;
    int wb_at, wb_n;
} qg_side;

#ifndef QG_PF_A
#define QG_PF_A 4 /* lines of the next A block per k step (2, 6, 8: slower) */
#endif

#ifndef QG_PF_B
#define QG_PF_B 2 /* lines of the next panel block's B per k step (0: none) */
#endif

static inline void prefetch_next_a(qg_side *sd) {
    for (int n = 0; n < QG_PF_A && sd->pf_at < sd->pf_n; n++, sd->pf_at++)
        _mm_prefetch(sd->pf + (size_t)(sd->pf_at / sd->pf_row) * sd->pf_ld + (size_t)(sd->pf_at % sd->pf_row) * 64,
                     _MM_HINT_T1);
    for (int n = 0; n < QG_PF_B && sd->wb_at < sd->wb_n; n++, sd->wb_at++)
        _mm_prefetch(sd->wb + (size_t)sd->wb_at * 64, _MM_HINT_T1);
}

/* ---- deferred epilogue ----
 * A finished 32 x 32 block's C tiles are stored to `c` and written out to C
 * (bias, accumulate, int8 dequantisation) a few rows per k step of the NEXT
 * block, so the AVX-512 epilogue runs while the tile unit is busy instead of
 * between blocks.  Rows 0..63 of the pending block: tile t = row / 16 (0: rows
 * i..i+15 of panel p, 1: same rows of p+1, 2/3: rows i+16..i+31), and only
 * rows < M, panels < p + np, row tiles < nr are written. */
typedef struct qg_epi {
    _Alignas(64) float c[4][256]; /* float (bf16) or int32 (int8) tile images */
    __m512 bias[2], sw[2];        /* per panel of the block: bias (or 0), int8 column scales */
    __m512i cs[2];                /* int8 column sums */
    __mmask16 m[2];               /* columns that exist */
    int i, p, np, nr, done;       /* pending block (np panels x nr 16-row tiles); done == 64: none */
    int pend, pi, pp;             /* a 2 x 2 block (rows pi.., panels pp, pp+1) still in tmm0-3 */
} qg_epi;

/* Starts the epilogue of the block just stored: the per-panel vectors are
 * loaded once per block instead of once per row. */
static inline void epi_begin(const qg_job *j, qg_epi *e, int i, int p, int np, int nr) {
    e->i = i, e->p = p, e->np = np, e->nr = nr, e->done = 0;
    for (int t = 0; t < np; t++) {
        __mmask16 m = (__mmask16)((1u << qg_panel_cols(j->B, p + t)) - 1u);
        e->m[t] = m;
        e->bias[t] = j->bias ? _mm512_maskz_loadu_ps(m, j->bias + (p + t) * QG_NR) : _mm512_setzero_ps();
        if (j->B->prec == ML_PREC_INT8) {
            e->sw[t] = _mm512_loadu_ps(j->B->scale + (p + t) * QG_NR);
            e->cs[t] = _mm512_loadu_si512(j->B->colsum + (p + t) * QG_NR);
        }
    }
}

/* Same operations in the same order as qg_store_vec / qg_store_i32 (so int8
 * stays identical to the AVX-512 path), with the panel vectors hoisted. */
static inline __attribute__((always_inline)) void epi_rows(const qg_job *j, qg_epi *e, int upto,
                                                           int bf) {
    for (; e->done < upto; e->done++) {
        int t = e->done >> 4, r = e->done & 15, h = t & 1;
        int row = e->i + (t >> 1) * 16 + r;
        if (row >= j->A->M || h >= e->np || (t >> 1) >= e->nr) continue;
        __m512 v;
        if (bf) {
            v = _mm512_load_ps(e->c[t] + 16 * r);
        } else {
            __m512i acc = _mm512_load_si512(e->c[t] + 16 * r);
            __m512i zc = _mm512_mullo_epi32(_mm512_set1_epi32(j->A->zero[row]), e->cs[h]);
            __m512 s = _mm512_mul_ps(_mm512_set1_ps(j->A->scale[row]), e->sw[h]);
            v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc, zc)), s);
        }
        size_t at = (size_t)row * j->ldc + (size_t)(e->p + h) * QG_NR;
        if (j->bias) v = _mm512_add_ps(v, e->bias[h]);
        if (j->gelu) v = qg_quick_gelu(v);
        if (j->Cb) { /* bf16 out: the next layer's operand, half the bytes */
            _mm256_mask_storeu_epi16(j->Cb + at, e->m[h], (__m256i)_mm512_cvtneps_pbh(v));
            continue;
        }
        if (j->accumulate) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(e->m[h], j->C + at));
        _mm512_mask_storeu_ps(j->C + at, e->m[h], v);
    }
}

/* Stores a 2 x 2 block left in the tiles (see QG_BLOCK2) and starts its
 * epilogue, before a kernel that does not take it over. */
static inline __attribute__((always_inline)) void epi_flush(const qg_job *j, qg_epi *e, int bf) {
    if (!e->pend) return;
    epi_rows(j, e, 64, bf);
    _tile_stored(0, e->c[0], 64);
    _tile_stored(1, e->c[1], 64);
    _tile_stored(2, e->c[2], 64);
    _tile_stored(3, e->c[3], 64);
    epi_begin(j, e, e->pi, e->pp, 2, 2);
    e->pend = 0;
}

/* ---- kernels: one k step = 64 bytes of K (32 bf16 / 64 u8) ----
 * A's layout is described by qg_alay: in the task's blocked layout (see
 * qg_amx_task) k step s of a 32-row block is 2 KiB at s * 2048, rows 0-15
 * then rows 16-31 at +1024, 64 bytes a row; a row-major bf16 A read in place
 * has k step s at s * 64, rows 16-31 at 16 rows on, rows `ld` bytes apart.
 * B's k step s of a panel is the 1 KiB tile at s * 1024. */
typedef struct qg_alay {
    size_t step, half, ld; /* bytes: next k step, rows 16-31, next row */
} qg_alay;

/* A 2 x 2 block's result stays in tmm0-3 when it ends; the next 2 x 2
 * block stores each tile just before its own first product into it, so the
 * stores overlap the products instead of draining the tile unit at every
 * block boundary (K = 768: ~15% in a tile-only loop). */
#define QG_BLOCK2(name, dp, esz, bf)                                                      \
    static void name(const qg_job *j, qg_epi *e, qg_side *sd, const qg_alay *al, const char *a, \
                     int i, int p) {                                                      \
        int steps = j->A->Kp * (esz) / 64; /* bf16: Kp/32, u8: Kp/64 */                  \
        int cnt = 0, s = 0;                                                               \
        const char *b0 = qg_panel(j->B, p), *b1 = qg_panel(j->B, p + 1);                  \
        if (e->pend) {                                                                    \
            epi_rows(j, e, 64, bf); /* the older block's rows leave e->c first */         \
            if ((esz) == 2) prefetch_b(b0 + QG_PF_DIST, b1 + QG_PF_DIST);                 \
            _tile_loadd(4, a, al->ld);                                                    \
            _tile_loadd(6, b0, 64);                                                       \
            _tile_stored(0, e->c[0], 64);                                                 \
            _tile_zero(0);                                                                \
            dp(0, 4, 6);                                                                  \
            _tile_loadd(7, b1, 64);                                                       \
            _tile_stored(1, e->c[1], 64);                                                 \
            _tile_zero(1);                                                                \
            dp(1, 4, 7);                                                                  \
            _tile_loadd(5, a + al->half, al->ld);                                         \
            _tile_stored(2, e->c[2], 64);                                                 \
            _tile_zero(2);                                                                \
            dp(2, 5, 6);                                                                  \
            _tile_stored(3, e->c[3], 64);                                                 \
            _tile_zero(3);                                                                \
            dp(3, 5, 7);                                                                  \
            epi_begin(j, e, e->pi, e->pp, 2, 2);                                          \
            s = 1;                                                                        \
        } else {                                                                          \
            _tile_zero(0);                                                                \
            _tile_zero(1);                                                                \
            _tile_zero(2);                                                                \
            _tile_zero(3);                                                                \
        }                                                                                 \
        int per = steps > s ? (64 + steps - s - 1) / (steps - s) : 64; /* epilogue rows a step */ \
        int upto = e->done;                                                               \
        for (; s < steps; s++) {                                                          \
            const char *as = a + (size_t)s * al->step;                                    \
            const char *bs0 = b0 + (size_t)s * 1024, *bs1 = b1 + (size_t)s * 1024;        \
            if ((esz) == 2) prefetch_b(bs0 + QG_PF_DIST, bs1 + QG_PF_DIST);               \
            _tile_loadd(4, as, al->ld);                                                   \
            _tile_loadd(6, bs0, 64);                                                      \
            _tile_loadd(7, bs1, 64);                                                      \
            _tile_loadd(5, as + al->half, al->ld);                                        \
            dp(0, 4, 6);                                                                  \
            dp(1, 4, 7);                                                                  \
            dp(2, 5, 6);                                                                  \
            dp(3, 5, 7);                                                                  \
            upto = upto + per < 64 ? upto + per : 64;                                     \
            epi_rows(j, e, upto, bf);                                                     \
            prefetch_next_a(sd);                                                          \
            if (sd->next < sd->end && ++cnt >= sd->every) {                               \
                cnt = 0;                                                                  \
                sd->pack(sd->ctx, sd->next, sd->next + 1);                                \
                sd->next++;                                                               \
            }                                                                             \
        }                                                                                 \
        e->pend = 1, e->pi = i, e->pp = p;                                                \
    }

#define QG_BLOCK1(name, dp, esz, bf)                                                      \
    static void name(const qg_job *j, qg_epi *e, const qg_alay *al, const char *a, int i, int p) { \
        int steps = j->A->Kp * (esz) / 64;                                                \
        const char *b0 = qg_panel(j->B, p);                                               \
        epi_flush(j, e, bf);                                                              \
        epi_rows(j, e, 64, bf);                                                           \
        _tile_zero(0);                                                                    \
        _tile_zero(2);                                                                    \
        for (int s = 0; s < steps; s++) {                                                 \
            const char *as = a + (size_t)s * al->step;                                    \
            _tile_loadd(4, as, al->ld);                                                   \
            _tile_loadd(5, as + al->half, al->ld);                                        \
            _tile_loadd(6, b0 + (size_t)s * 1024, 64);                                    \
            dp(0, 4, 6);                                                                  \
            dp(2, 5, 6);                                                                  \
        }                                                                                 \
        _tile_stored(0, e->c[0], 64);                                                     \
        _tile_stored(2, e->c[2], 64);                                                     \
        epi_begin(j, e, i, p, 1, 2);                                                      \
    }

/* The last row block when it has <= 16 rows (small M, the tail of a task):
 * one A tile, up to 2 panels, half the tile products of a full block. */
#define QG_HALF(name, dp, esz, bf)                                                        \
    static void name(const qg_job *j, qg_epi *e, const qg_alay *al, const char *a, int i, int p, \
                     int np) {                                                            \
        int steps = j->A->Kp * (esz) / 64;                                                \
        const char *b0 = qg_panel(j->B, p), *b1 = qg_panel(j->B, p + np - 1);             \
        epi_flush(j, e, bf);                                                              \
        epi_rows(j, e, 64, bf);                                                           \
        _tile_zero(0);                                                                    \
        _tile_zero(1);                                                                    \
        for (int s = 0; s < steps; s++) {                                                 \
            _tile_loadd(4, a + (size_t)s * al->step, al->ld);                             \
            _tile_loadd(6, b0 + (size_t)s * 1024, 64);                                    \
            _tile_loadd(7, b1 + (size_t)s * 1024, 64);                                    \
            dp(0, 4, 6);                                                                  \
            dp(1, 4, 7);                                                                  \
        }                                                                                 \
        _tile_stored(0, e->c[0], 64);                                                     \
        _tile_stored(1, e->c[1], 64);                                                     \
        epi_begin(j, e, i, p, np, 1);                                                     \
    }

QG_HALF(bf16_half, _tile_dpbf16ps, 2, 1)
QG_HALF(int8_half, _tile_dpbusd, 1, 0)
QG_BLOCK2(bf16_block2, _tile_dpbf16ps, 2, 1)
QG_BLOCK1(bf16_block1, _tile_dpbf16ps, 2, 1)
QG_BLOCK2(int8_block2, _tile_dpbusd, 1, 0)
QG_BLOCK1(int8_block1, _tile_dpbusd, 1, 0)

/* One task: local rows [0, A->M) x panels [p0, p1).  Panels go in blocks of
 * pb (a block of B stays in L2 while the task's row blocks pass); each
 * 32-row block of A is packed (pack(ctx, r0, r1)) just before its first use,
 * then re-read from the task's scratch for the later panel blocks.  The
 * scratch holds A blocked: 32-row block b at b * 32 * Kp * esz, inside it k
 * step s (64 bytes of K) of row r at (s * 32 + r) * 64, so every A tile is
 * 1 KiB of consecutive bytes. */
void qg_amx_task(const qg_job *j, int p0, int p1, int pb, qg_pack_fn pack, void *pctx,
                 atomic_int *next, int stride) {
    int bf = j->B->prec == ML_PREC_BF16, M = j->A->M;
    int mblocks = (M + 31) / 32, items = (p1 - p0 + pb - 1) / pb * mblocks;
    int steps = j->A->Kp * (bf ? 2 : 1) / 64;
    /* A: the blocked scratch (1 KiB tiles), or row-major bf16 in place */
    size_t blk = j->a_ld ? 32 * j->a_ld : (size_t)32 * j->A->Kp * (bf ? 2 : 1);
    qg_alay al = j->a_ld ? (qg_alay){64, 16 * j->a_ld, j->a_ld} : (qg_alay){2048, 1024, 64};
    qg_epi e;
    e.i = e.p = e.np = e.nr = 0, e.done = 64, e.pend = 0;
    qg_side sd = {pack, pctx, 0, 0, 1, NULL, j->a_ld, 0, 0, (int)((size_t)j->A->Kp * 2 / 64), NULL, 0, 0};
    size_t panel_lines = qg_panel_bytes(j->B) / 64;
    /* the next product's panels only (int8 scales live elsewhere) */
    size_t then_lines = j->then ? qg_panel_bytes(j->then) * (size_t)j->then->panels / 64 : 0;
    if (then_lines > QG_B_BLOCK / 64) then_lines = QG_B_BLOCK / 64;
    tiles_begin();
    /* work items: (panel block, row block), panel block major; handed out
     * in order, or taken from the shared counter `next` (then pack is NULL) */
    for (int it = 0;; it++) {
        int w = next ? atomic_fetch_add_explicit(next, 1, memory_order_relaxed) : it;
        if (w >= items) break;
        int q0 = p0 + w / mblocks * pb, q1 = q0 + pb < p1 ? q0 + pb : p1, i = w % mblocks * 32;
        {
            if (q0 == p0 && pack) {
                /* finish this block's rows, then spread the next block's
                 * over the k steps of this one's panel pairs */
                int end = i + 32 < M ? i + 32 : M;
                if (sd.next < i) sd.next = i;
                if (sd.next < end) pack(pctx, sd.next, end);
                sd.next = end;
                /* (a long row packed in one go between two k steps stalls
                 * the tile unit more than it hides: K = 3072 lost ~4%) */
                sd.end = QG_SIDE_PACK && j->B->K <= 1024 && i + 64 < M ? i + 64 : end;
                int pairs = (q1 - q0) / 2, rows = sd.end - sd.next;
                int per = pairs > 0 ? (rows + pairs - 1) / pairs : rows;
                sd.every = per > 0 && steps / per > 0 ? steps / per : 1;
            } else {
                sd.end = sd.next; /* all packed */
            }
            /* in place: the next block's rows, on every pass over the panel
             * blocks (for K = 3072 a task's A is over 2 MB, so each pass
             * reads it from L3 again: +5-10% on the float32-out shapes) */
            if (j->a_ld && QG_PF_A > 0) { /* (shared counter: this thread's likely next) */
                int nx = i + 32 * stride;
                int n = nx < M ? (M - nx < 32 ? M - nx : 32) : 0;
                sd.pf = (const char *)j->A->a + (size_t)nx * j->a_ld;
                sd.pf_at = 0, sd.pf_n = n * sd.pf_row;
            }
            /* The next panel block's weights come from memory (each layer's
             * are read once per batch), and the first items of a block
             * waited for them: a ViT-B bf16 pass that reused layer 0's
             * weights in every layer ran ~5% faster.  So the items of this
             * block ask for them between their k steps, each item a slice
             * (slices of items `stride` apart overlap, so every thread's L2
             * gets most of the block); in the last block, the first 1 MB of
             * the next product's weights (j->then).  A/B, medians of 6
             * alternating runs: +2% for the former, +4% with both. */
            sd.wb_n = 0;
            if (QG_PF_B > 0 && (q1 < p1 || j->then)) {
                /* the next block, or the first of the next product's */
                int r1 = q1 + pb < p1 ? q1 + pb : p1, rb = i / 32;
                size_t lines = q1 < p1 ? (size_t)(r1 - q1) * panel_lines : then_lines;
                size_t at = lines * rb / mblocks, to = lines * (rb + (size_t)stride) / mblocks;
                sd.wb = q1 < p1 ? (const char *)qg_panel(j->B, q1) : (const char *)j->then->w;
                sd.wb_at = (int)at, sd.wb_n = (int)(to < lines ? to : lines);
            }
            const char *a = (const char *)j->A->a + (size_t)(i / 32) * blk;
            int p = q0;
            if (M - i <= 16) { /* short last block */
                for (; p < q1; p += 2) {
                    int np = q1 - p < 2 ? 1 : 2;
                    if (bf) bf16_half(j, &e, &al, a, i, p, np);
                    else int8_half(j, &e, &al, a, i, p, np);
                }
                continue;
            }
            if (bf) {
                for (; p + 2 <= q1; p += 2) bf16_block2(j, &e, &sd, &al, a, i, p);
                if (p < q1) bf16_block1(j, &e, &al, a, i, p);
            } else {
                for (; p + 2 <= q1; p += 2) int8_block2(j, &e, &sd, &al, a, i, p);
                if (p < q1) int8_block1(j, &e, &al, a, i, p);
            }
        }
    }
    if (bf) {
        epi_flush(j, &e, 1);
        epi_rows(j, &e, 64, 1);
    } else {
        epi_flush(j, &e, 0);
        epi_rows(j, &e, 64, 0);
    }
    _tile_release();
}

#else
typedef int qgemm_amx_unused; /* ISO C forbids an empty translation unit */
#endif
