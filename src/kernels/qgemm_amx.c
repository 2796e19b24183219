/* qgemm_amx.c - AMX tile kernels (tdpbf16ps, tdpbusd).
 * Compiled with AVX-512 + AMX flags; called only after ml_isa_supported(
 * ML_ISA_AMX), which has asked Linux for tile-data permission (process-wide).
 *
 * Tile use (palette 1, every tile 16 rows x 64 bytes):
 *   tmm0..3  C: a 32 x 32 float/int32 block as 2 x 2 tiles of 16 x 16
 *   tmm4..5  A: 16 rows x (32 bf16 | 64 u8), rows i..i+15 and i+16..i+31
 *   tmm6..7  B: one k-depth of panel p and p+1; a panel's 64-byte k-group
 *            rows are contiguous, so a B tile is 1 KiB of consecutive bytes.
 * Each A tile is used twice and each B tile twice per k step.  The tile
 * configuration is per thread state, so every task loads it itself (cheap
 * next to a task's work) and releases the tiles when done. */
#if defined(__x86_64__)

#include <string.h>

#include "kernels/qgemm_x86.h"

typedef struct tile_config {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

static void tiles_begin(void) {
    _Alignas(64) tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) cfg.rows[t] = 16, cfg.colsb[t] = 64;
    _tile_loadconfig(&cfg);
}

/* Stores rows [i, i+16) of one 16 x 16 C tile image (`t`) to panel p. */
static void store_f32_tile(const qg_job *j, const float *t, int i, int p) {
    for (int r = 0; r < 16 && i + r < j->A->M; r++) qg_store_vec(j, i + r, p, _mm512_loadu_ps(t + 16 * r));
}

static void store_i32_tile(const qg_job *j, const int32_t *t, int i, int p) {
    for (int r = 0; r < 16 && i + r < j->A->M; r++)
        qg_store_i32(j, i + r, p, _mm512_loadu_si512(t + 16 * r));
}

/* ---- bf16: k step 32 (16 pairs); B tile at byte offset k * 32 ---- */

static void bf16_block2(const qg_job *j, int i, int p) {
    int Kp = j->A->Kp;
    const uint16_t *a = (const uint16_t *)j->A->a + (size_t)i * Kp;
    const char *b0 = qg_panel(j->B, p), *b1 = qg_panel(j->B, p + 1);
    size_t as = (size_t)Kp * 2;
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int k = 0; k < Kp; k += 32) {
        _tile_loadd(4, a + k, as);
        _tile_loadd(6, b0 + (size_t)k * 32, 64);
        _tile_loadd(7, b1 + (size_t)k * 32, 64);
        _tile_loadd(5, a + (size_t)16 * Kp + k, as);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    _Alignas(64) float c[4][256];
    _tile_stored(0, c[0], 64);
    _tile_stored(1, c[1], 64);
    _tile_stored(2, c[2], 64);
    _tile_stored(3, c[3], 64);
    store_f32_tile(j, c[0], i, p), store_f32_tile(j, c[1], i, p + 1);
    store_f32_tile(j, c[2], i + 16, p), store_f32_tile(j, c[3], i + 16, p + 1);
}

static void bf16_block1(const qg_job *j, int i, int p) {
    int Kp = j->A->Kp;
    const uint16_t *a = (const uint16_t *)j->A->a + (size_t)i * Kp;
    const char *b0 = qg_panel(j->B, p);
    size_t as = (size_t)Kp * 2;
    _tile_zero(0);
    _tile_zero(2);
    for (int k = 0; k < Kp; k += 32) {
        _tile_loadd(4, a + k, as);
        _tile_loadd(5, a + (size_t)16 * Kp + k, as);
        _tile_loadd(6, b0 + (size_t)k * 32, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(2, 5, 6);
    }
    _Alignas(64) float c[2][256];
    _tile_stored(0, c[0], 64);
    _tile_stored(2, c[1], 64);
    store_f32_tile(j, c[0], i, p), store_f32_tile(j, c[1], i + 16, p);
}

void qg_amx_bf16(const qg_job *j, int i0, int i1, int p0, int p1) {
    tiles_begin();
    for (int i = i0; i < i1 && i < j->A->M; i += 32) {
        int p = p0;
        for (; p + 2 <= p1; p += 2) bf16_block2(j, i, p);
        if (p < p1) bf16_block1(j, i, p);
    }
    _tile_release();
}

/* ---- int8: k step 64 (16 quads); B tile at byte offset k * 16 ---- */

static void int8_block2(const qg_job *j, int i, int p) {
    int Kp = j->A->Kp;
    const uint8_t *a = (const uint8_t *)j->A->a + (size_t)i * Kp;
    const char *b0 = qg_panel(j->B, p), *b1 = qg_panel(j->B, p + 1);
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int k = 0; k < Kp; k += 64) {
        _tile_loadd(4, a + k, Kp);
        _tile_loadd(6, b0 + (size_t)k * 16, 64);
        _tile_loadd(7, b1 + (size_t)k * 16, 64);
        _tile_loadd(5, a + (size_t)16 * Kp + k, Kp);
        _tile_dpbusd(0, 4, 6);
        _tile_dpbusd(1, 4, 7);
        _tile_dpbusd(2, 5, 6);
        _tile_dpbusd(3, 5, 7);
    }
    _Alignas(64) int32_t c[4][256];
    _tile_stored(0, c[0], 64);
    _tile_stored(1, c[1], 64);
    _tile_stored(2, c[2], 64);
    _tile_stored(3, c[3], 64);
    store_i32_tile(j, c[0], i, p), store_i32_tile(j, c[1], i, p + 1);
    store_i32_tile(j, c[2], i + 16, p), store_i32_tile(j, c[3], i + 16, p + 1);
}

static void int8_block1(const qg_job *j, int i, int p) {
    int Kp = j->A->Kp;
    const uint8_t *a = (const uint8_t *)j->A->a + (size_t)i * Kp;
    const char *b0 = qg_panel(j->B, p);
    _tile_zero(0);
    _tile_zero(2);
    for (int k = 0; k < Kp; k += 64) {
        _tile_loadd(4, a + k, Kp);
        _tile_loadd(5, a + (size_t)16 * Kp + k, Kp);
        _tile_loadd(6, b0 + (size_t)k * 16, 64);
        _tile_dpbusd(0, 4, 6);
        _tile_dpbusd(2, 5, 6);
    }
    _Alignas(64) int32_t c[2][256];
    _tile_stored(0, c[0], 64);
    _tile_stored(2, c[1], 64);
    store_i32_tile(j, c[0], i, p), store_i32_tile(j, c[1], i + 16, p);
}

void qg_amx_int8(const qg_job *j, int i0, int i1, int p0, int p1) {
    tiles_begin();
    for (int i = i0; i < i1 && i < j->A->M; i += 32) {
        int p = p0;
        for (; p + 2 <= p1; p += 2) int8_block2(j, i, p);
        if (p < p1) int8_block1(j, i, p);
    }
    _tile_release();
}

#else
typedef int qgemm_amx_unused; /* ISO C forbids an empty translation unit */
#endif
