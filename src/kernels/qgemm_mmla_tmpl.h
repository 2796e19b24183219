/* qgemm_mmla_tmpl.h - the aarch64 "matrix multiply-accumulate" kernel,
 * instantiated by qgemm_i8mm.c (USMMLA: u8 x s8 -> int32) and qgemm_bf16.c
 * (BFMMLA: bf16 x bf16 -> float32).  Both instructions take a 2 x 8-byte
 * block of A (rows r, r+1) and one of B (columns c, c+1) and add the 2 x 2
 * product into one accumulator [r c, r c+1, r+1 c, r+1 c+1]: 8 k of int8,
 * 4 k of bf16.  The instantiating file defines
 *   MM_ESIZE         bytes per element (1 int8, 2 bf16)
 *   MM_ACC, MM_ZERO  the accumulator type and its zero
 *   MM_OP(acc, a, b) the instruction on uint8x16_t operands
 *   MM_U64(x), MM_FROM_U64(x)  reinterpretations of MM_ACC
 *   MM_STORE(j, i, p, v)       the epilogue of one row (qgemm_arm.h)
 *   MM_NAME          the kernel's name
 *
 * The packed weights (qgemm_internal.h) hold one k group of 4 columns per
 * 16 bytes (int8: 4 k, bf16: 2 k); two consecutive groups zipped by 32-bit
 * lanes give exactly the B operand of 2 columns x 8 bytes, so the one weight
 * layout of every machine serves here too (8 zips per 128 bytes, shared by
 * the tile's 4 rows).  Tile: 4 rows x 16 columns = 16 accumulators, 8 B
 * and 2 A registers. */
#include "kernels/qgemm_arm.h"

static void mm_tile(const qg_job *j, int i, int p) {
    const size_t row = (size_t)j->A->Kp * MM_ESIZE; /* bytes per activation row */
    const uint8_t *w = qg_panel(j->B, p);
    const uint8_t *a = (const uint8_t *)j->A->a + (size_t)i * row;
    MM_ACC acc[2][8];
    for (int h = 0; h < 2; h++)
        for (int c = 0; c < 8; c++) acc[h][c] = MM_ZERO;
    for (size_t k = 0; k < row; k += 8, w += 128) { /* two packed k groups */
        uint8x16_t b[8];
        for (int q = 0; q < 4; q++) { /* columns 4q..4q+3 */
            uint32x4_t g0 = vreinterpretq_u32_u8(vld1q_u8(w + 16 * q));
            uint32x4_t g1 = vreinterpretq_u32_u8(vld1q_u8(w + 64 + 16 * q));
            b[2 * q] = vreinterpretq_u8_u32(vzip1q_u32(g0, g1));     /* columns 4q, 4q+1 */
            b[2 * q + 1] = vreinterpretq_u8_u32(vzip2q_u32(g0, g1)); /* 4q+2, 4q+3 */
        }
        for (int h = 0; h < 2; h++) { /* rows 2h, 2h+1 */
            uint8x16_t av = vcombine_u8(vld1_u8(a + 2 * h * row + k), vld1_u8(a + (2 * h + 1) * row + k));
            for (int c = 0; c < 8; c++) acc[h][c] = MM_OP(acc[h][c], av, b[c]);
        }
    }
    for (int r = 0; r < 4 && i + r < j->A->M; r++) {
        MM_ACC v[4];
        for (int q = 0; q < 4; q++) {
            uint64x2_t x = MM_U64(acc[r / 2][2 * q]), y = MM_U64(acc[r / 2][2 * q + 1]);
            v[q] = MM_FROM_U64(r % 2 ? vzip2q_u64(x, y) : vzip1q_u64(x, y));
        }
        MM_STORE(j, i + r, p, v);
    }
}

void MM_NAME(const qg_job *j, int i0, int i1, int p0, int p1) {
    for (int p = p0; p < p1; p++)
        for (int i = i0; i < i1 && i < j->A->M; i += 4) mm_tile(j, i, p);
}
