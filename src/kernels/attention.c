/* attention.c - precision dispatch for attention (attention.h). */
#include "kernels/attention.h"

#include <stdlib.h>

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
