/* qgemm_avx2_tmpl.h - the ymm int8 micro-kernel, instantiated twice: by
 * qgemm_avx2.c (AVX2 u8 x s7 with vpmaddubsw + vpmaddwd) and by
 * qgemm_avxvnni.c (AVX-VNNI vpdpbusd on ymm).  Before including it, define
 * QG_Y_MR (rows per block), QG_Y_NAME (the kernel's function name) and
 * QG_Y_DOT(acc, a, w): acc += the 4 products of each 32-bit lane, given
 * a = one k group of the packed u8 A row broadcast and w = 8 columns' k
 * group.
 *
 * Block: mr rows x one 16-column panel = 2 * mr ymm accumulators of 8
 * int32 columns; each k group loads the panel's 64-byte row (two ymm) once
 * for all mr rows.  The epilogue is the portable kernel's arithmetic in the
 * same order, so every path gives identical floats. */
#include <immintrin.h>
#include <string.h>

#include "kernels/qgemm_internal.h"
/* the AVX2 quick GELU of the float32 kernels, for the fused epilogue */
#define ML_SIMD_AVX2
#include "kernels/gemm_simd.h"
#include "kernels/ops_vexp.h"

#define QG_Y_INLINE static inline __attribute__((always_inline))

QG_Y_INLINE int32_t qg_y_load_i32(const void *p) {
    int32_t v;
    memcpy(&v, p, 4); /* one k group of A, without type punning */
    return v;
}

/* C[i, panel p] <- (acc - z[i] * colsum) * (sa[i] * sw) (+ bias) (+ C),
 * quick_gelu'd when j->gelu (then without accumulate). */
QG_Y_INLINE void qg_y_store(const qg_job *j, int i, int p, __m256i acc0, __m256i acc1) {
    const float *sw = j->B->scale + p * QG_NR, *bias = j->bias ? j->bias + p * QG_NR : NULL;
    const int32_t *cs = j->B->colsum + p * QG_NR;
    float *c = j->C + (size_t)i * j->ldc + p * QG_NR;
    int nc = qg_panel_cols(j->B, p);
    __m256i z = _mm256_set1_epi32(j->A->zero[i]);
    __m256 sa = _mm256_set1_ps(j->A->scale[i]);
    __m256i acc[2] = {acc0, acc1};
    for (int h = 0; h < 2; h++) {
        __m256i csv = _mm256_loadu_si256((const __m256i *)(cs + 8 * h));
        __m256i t = acc[h];
        t = _mm256_sub_epi32(t, _mm256_mullo_epi32(z, csv));
        __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(t), _mm256_mul_ps(sa, _mm256_loadu_ps(sw + 8 * h)));
        int n = nc - 8 * h;
        if (n >= 8) {
            if (bias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias + 8 * h));
            if (j->accumulate) v = _mm256_add_ps(v, _mm256_loadu_ps(c + 8 * h));
            if (j->gelu) v = vquick_gelu(v);
            _mm256_storeu_ps(c + 8 * h, v);
        } else if (n > 0) {
            __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
            if (bias) v = _mm256_add_ps(v, _mm256_maskload_ps(bias + 8 * h, m));
            if (j->accumulate) v = _mm256_add_ps(v, _mm256_maskload_ps(c + 8 * h, m));
            if (j->gelu) v = vquick_gelu(v);
            _mm256_maskstore_ps(c + 8 * h, m, v);
        }
    }
}

/* Every r loop fully unrolled (ML_UNROLL; mr is a constant), and the
 * epilogue in its own function: with the epilogue inlined, gcc 12 kept
 * copies of the accumulators on the stack, storing them all every k step
 * (the VNNI kernel ran at 58% of its peak that way). */

/* The epilogue of rows i..i+mr-1 from their accumulators in memory: a
 * separate function, so that its registers do not crowd the k loop's. */
static __attribute__((noinline)) void qg_y_store_rows(const qg_job *j, int i, int p, int mr,
                                                      const __m256i (*acc)[2]) {
    for (int r = 0; r < mr; r++) qg_y_store(j, i + r, p, acc[r][0], acc[r][1]);
}

/* mr rows (a compile-time constant at each call) from row i, panel p. */
QG_Y_INLINE void qg_y_block(const qg_job *j, int i, int p, int mr) {
    int Kp = j->A->Kp;
    const uint8_t *a = (const uint8_t *)j->A->a + (size_t)i * Kp;
    const int8_t *b = qg_panel(j->B, p), *bend = b + (size_t)Kp * 16;
    __m256i acc[QG_Y_MR][2];
ML_UNROLL
    for (int r = 0; r < mr; r++) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
    for (; b < bend; b += 64, a += 4) {
        __m256i w0 = _mm256_load_si256((const __m256i *)b);
        __m256i w1 = _mm256_load_si256((const __m256i *)(b + 32));
ML_UNROLL
        for (int r = 0; r < mr; r++) {
            __m256i av = _mm256_set1_epi32(qg_y_load_i32(a + (size_t)r * Kp));
            acc[r][0] = QG_Y_DOT(acc[r][0], av, w0);
            acc[r][1] = QG_Y_DOT(acc[r][1], av, w1);
        }
    }
    __m256i out[QG_Y_MR][2];
ML_UNROLL
    for (int r = 0; r < mr; r++) out[r][0] = acc[r][0], out[r][1] = acc[r][1];
    qg_y_store_rows(j, i, p, mr, (const __m256i(*)[2])out);
}

/* One function per row count, so that each gets its own register
 * allocation (inlined into one body, the tail cases pushed gcc 12 into
 * spilling the main loop's accumulators). */
#define QG_Y_BLOCK_FN(R) \
    static __attribute__((noinline)) void qg_y_block_##R(const qg_job *j, int i, int p) { qg_y_block(j, i, p, R); }
QG_Y_BLOCK_FN(1)
QG_Y_BLOCK_FN(2)
QG_Y_BLOCK_FN(3)
QG_Y_BLOCK_FN(4)
#if QG_Y_MR > 4
QG_Y_BLOCK_FN(5)
QG_Y_BLOCK_FN(6)
#endif
#define QG_Y_CAT_(a, b) a##b
#define QG_Y_CAT(a, b) QG_Y_CAT_(a, b)

/* Panel outer: its k rows stay in L1/L2 while the task's row blocks pass. */
void QG_Y_NAME(const qg_job *j, int i0, int i1, int p0, int p1) {
    int end = i1 < j->A->M ? i1 : j->A->M;
    for (int p = p0; p < p1; p++) {
        int i = i0;
        for (; i + QG_Y_MR <= end; i += QG_Y_MR) QG_Y_CAT(qg_y_block_, QG_Y_MR)(j, i, p);
        switch (end - i) { /* the last rows */
        case 1: qg_y_block_1(j, i, p); break;
        case 2: qg_y_block_2(j, i, p); break;
        case 3: qg_y_block_3(j, i, p); break;
#if QG_Y_MR > 4
        case 4: qg_y_block_4(j, i, p); break;
        case 5: qg_y_block_5(j, i, p); break;
#endif
        default: break;
        }
    }
}
