/* search_fp_block.h - the f32 / f16 scoring loop of one block shared by
 * search_avx2.c and search_neon.c: each panel against the queries, QF at a
 * time, through the including file's fp_tile(pan, f16, d, x, qm, thr, out,
 * mask) (an always-inline function; every constant (f16, qm) pair becomes
 * its own unrolled loop).  Include after fp_tile and QF. */
static void fp_block(const void *panels, int f16, int d, const sk_queries *q, int q0, int nq,
                     const float *thr, float *out, uint16_t *mask) {
    size_t ps = (size_t)d * SK_PANEL * (f16 ? 2 : 4);
    for (int p = 0; p < SK_BLOCK_PANELS; p++) {
        const void *pan = (const uint8_t *)panels + p * ps;
        for (int i = 0; i < nq; i += QF) {
            const float *x[QF];
            int qm = nq - i < QF ? nq - i : QF;
            for (int r = 0; r < qm; r++) x[r] = q->f + (size_t)(q0 + i + r) * q->ldq;
            float *o = out + i * SK_BLOCK + p * SK_PANEL;
            uint16_t *m = mask + i * SK_BLOCK_PANELS + p;
            if (f16) switch (qm) {
                case 1: fp_tile(pan, 1, d, x, 1, thr + i, o, m); break;
                case 2: fp_tile(pan, 1, d, x, 2, thr + i, o, m); break;
                case 3: fp_tile(pan, 1, d, x, 3, thr + i, o, m); break;
                default: fp_tile(pan, 1, d, x, 4, thr + i, o, m); break;
                }
            else switch (qm) {
                case 1: fp_tile(pan, 0, d, x, 1, thr + i, o, m); break;
                case 2: fp_tile(pan, 0, d, x, 2, thr + i, o, m); break;
                case 3: fp_tile(pan, 0, d, x, 3, thr + i, o, m); break;
                default: fp_tile(pan, 0, d, x, 4, thr + i, o, m); break;
                }
        }
    }
}
