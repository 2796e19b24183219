/* attention.c - precision dispatch for attention (attention.h). */
#include "kernels/attention.h"

#include <stdlib.h>
#include <string.h>

#include "kernels/bf16.h"

#include "kernels/attention_isa.h"
#include "kernels/ops.h"

/* Scratch for one head up to this many bytes lives on the stack (ViT-B/L:
 * ~85 KB); beyond it, one malloc per call. */
#define ATT_LOWP_STACK (128 * 1024)

void ml_attention_prec(ml_precision prec, int T, int S, int heads, int hd, const float *q, int ldq,
                       const float *k, int ldk, const float *v, int ldv, float scale,
                       const float *qscale, float cap, const unsigned char *key_ok, int causal,
                       float *out, int ldo) {
    if (S > ML_MAX_SEQ) S = ML_MAX_SEQ;
#if defined(__x86_64__)
    if (prec != ML_PREC_FP32 && ml_isa_active() == ML_ISA_AMX && hd > 0 && hd % 32 == 0 && hd <= ML_ATT_HD_MAX && T > 0 &&
        S > 0) {
        size_t need = ml_att_amx_scratch(S, hd);
        _Alignas(64) unsigned char stack[ATT_LOWP_STACK];
        void *heap = NULL, *buf = stack;
        if (need > sizeof stack) buf = heap = aligned_alloc(64, (need + 63) & ~(size_t)63);
        if (buf) {
            for (int h = 0; h < heads; h++) {
                size_t c = (size_t)h * hd;
                ml_att_amx_head(T, S, hd, q + c, ldq, k + c, ldk, v + c, ldv, scale, qscale, cap,
                                key_ok, causal, out + c, ldo, buf);
            }
            free(heap);
            return;
        }
    }
#endif
    (void)prec;
    ml_attention(T, S, heads, hd, q, ldq, k, ldk, v, ldv, scale, qscale, cap, key_ok, causal, out,
                 ldo);
}

/* Elsewhere than AMX: each head widened to float32, the float32 kernel,
 * the output rounded (same bf16 inputs, float32 arithmetic). */
static int attention_bf16_via_f32(int T, int S, int heads, int hd, const uint16_t *q, int ldq,
                                  const uint16_t *k, int ldk, const uint16_t *v, int ldv,
                                  float scale, const unsigned char *key_ok, int causal,
                                  uint16_t *out, int ldo) {
    size_t qn = (size_t)T * hd, kn = (size_t)S * hd;
    float *f = malloc(sizeof(float) * (2 * qn + 2 * kn));
    if (!f) return -1;
    float *fq = f, *fk = fq + qn, *fv = fk + kn, *fo = fv + kn;
    for (int h = 0; h < heads; h++) {
        size_t c = (size_t)h * hd;
        for (int t = 0; t < T; t++)
            for (int d = 0; d < hd; d++) fq[(size_t)t * hd + d] = ml_bf16_to_f32(q[(size_t)t * ldq + c + d]);
        for (int s = 0; s < S; s++)
            for (int d = 0; d < hd; d++) {
                fk[(size_t)s * hd + d] = ml_bf16_to_f32(k[(size_t)s * ldk + c + d]);
                fv[(size_t)s * hd + d] = ml_bf16_to_f32(v[(size_t)s * ldv + c + d]);
            }
        ml_attention(T, S, 1, hd, fq, hd, fk, hd, fv, hd, scale, NULL, 0.0f, key_ok, causal, fo, hd);
        for (int t = 0; t < T; t++) ml_to_bf16(fo + (size_t)t * hd, out + (size_t)t * ldo + c, hd);
    }
    free(f);
    return 0;
}

int ml_attention_bf16(int T, int S, int heads, int hd, const uint16_t *q, int ldq,
                      const uint16_t *k, int ldk, const uint16_t *v, int ldv, float scale,
                      const unsigned char *key_ok, int causal, uint16_t *out, int ldo) {
    if (T <= 0 || S <= 0 || S > ML_MAX_SEQ || hd <= 0) return -1;
#if defined(__x86_64__)
    if (ml_isa_active() == ML_ISA_AMX && hd % 32 == 0 && hd <= ML_ATT_HD_MAX) {
        size_t need = ml_att_amx_scratch(S, hd);
        _Alignas(64) unsigned char stack[ATT_LOWP_STACK];
        void *heap = NULL, *buf = stack;
        if (need > sizeof stack) buf = heap = aligned_alloc(64, (need + 63) & ~(size_t)63);
        if (!buf) return -1;
        for (int h = 0; h < heads; h++) {
            size_t c = (size_t)h * hd;
            ml_att_amx_head_bf16(T, S, hd, q + c, ldq, k + c, ldk, v + c, ldv, scale, key_ok, causal,
                                 out + c, ldo, buf);
        }
        free(heap);
        return 0;
    }
#endif
    return attention_bf16_via_f32(T, S, heads, hd, q, ldq, k, ldk, v, ldv, scale, key_ok, causal,
                                  out, ldo);
}
