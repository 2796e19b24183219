/* qgemm_dotprod.c - the aarch64 int8 kernel on SDOT (ARMv8.2 dotprod; built
 * with +dotprod, called only when cpu.c has seen it in AT_HWCAP).
 *
 * SDOT multiplies signed bytes by signed bytes, and the activations are u8
 * (one quantisation scheme on every machine, qgemm_internal.h): they are
 * moved to s8 by flipping the top bit (a - 128), and the stored sum adds
 * back 128 * colsum, so the integers equal the u8 x s8 ones exactly.
 *
 * A packed k group (64 bytes: 4 k of 16 columns) is 4 vectors of 4 columns
 * x 4 k, which is the SDOT-by-element operand: one instruction adds 4 k of
 * 4 columns for one row.  Tile: 4 rows x 16 columns = 16 accumulators, 4
 * weight and 4 activation registers. */
#if defined(__aarch64__)
#include "kernels/qgemm_arm.h"

#define QD_ROWS 4

/* k group g (lane g of each row's 16 activations) into all 16 columns. */
#define QD_GROUP(g)                                                                        \
    do {                                                                                   \
        int8x16_t w0 = vld1q_s8(w + 64 * (g)), w1 = vld1q_s8(w + 64 * (g) + 16);           \
        int8x16_t w2 = vld1q_s8(w + 64 * (g) + 32), w3 = vld1q_s8(w + 64 * (g) + 48);      \
        for (int r = 0; r < QD_ROWS; r++) {                                                \
            acc[r][0] = vdotq_laneq_s32(acc[r][0], w0, av[r], g);                          \
            acc[r][1] = vdotq_laneq_s32(acc[r][1], w1, av[r], g);                          \
            acc[r][2] = vdotq_laneq_s32(acc[r][2], w2, av[r], g);                          \
            acc[r][3] = vdotq_laneq_s32(acc[r][3], w3, av[r], g);                          \
        }                                                                                  \
    } while (0)

static void int8_tile(const qg_job *j, int i, int p) {
    const int Kp = j->A->Kp;
    const int8_t *w = qg_panel(j->B, p);
    const uint8_t *a = (const uint8_t *)j->A->a + (size_t)i * Kp;
    int32x4_t acc[QD_ROWS][4];
    for (int r = 0; r < QD_ROWS; r++)
        for (int q = 0; q < 4; q++) acc[r][q] = vdupq_n_s32(0);
    const uint8x16_t flip = vdupq_n_u8(0x80);
    for (int k = 0; k < Kp; k += 16, w += 256) { /* 4 k groups */
        int8x16_t av[QD_ROWS];
        for (int r = 0; r < QD_ROWS; r++)
            av[r] = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(a + (size_t)r * Kp + k), flip));
        QD_GROUP(0);
        QD_GROUP(1);
        QD_GROUP(2);
        QD_GROUP(3);
    }
    for (int r = 0; r < QD_ROWS && i + r < j->A->M; r++) qg_arm_store_i32(j, i + r, p, acc[r], 128);
}

void qg_dotprod_int8(const qg_job *j, int i0, int i1, int p0, int p1) {
    for (int p = p0; p < p1; p++)
        for (int i = i0; i < i1 && i < j->A->M; i += QD_ROWS) int8_tile(j, i, p);
}

#else
typedef int ml_qgemm_dotprod_unused; /* ISO C wants a non-empty file */
#endif
