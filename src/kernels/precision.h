/* precision.h - low-precision weights for the linear layers.
 *
 * float32 weights are used in place (memory-mapped); bf16 and int8 weights
 * are packed once at load time into the layout their kernel wants
 * (e.g. VNNI pairs / AMX tiles), with per-output-channel scales for int8. */
#ifndef ML_KERNELS_PRECISION_H
#define ML_KERNELS_PRECISION_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/cpu.h"
#include "magiclens.h"

typedef enum ml_precision { ML_PREC_FP32 = 0, ML_PREC_BF16 = 1, ML_PREC_INT8 = 2 } ml_precision;

typedef struct ml_packed ml_packed; /* opaque, owned by whoever packed it */

/* Packs B [K, N] (row-major, Flax [in, out]) for `prec` on `isa`. */
ml_packed *ml_pack_weights(const float *B, int K, int N, ml_precision prec, ml_isa isa,
                           ml_error *err);
void ml_packed_free(ml_packed *p);
size_t ml_packed_bytes(const ml_packed *p);

/* C[M,N] = A[M,K] @ dequant(B) (+ bias) (+ C if accumulate).  A is float32;
 * it is converted (bf16) or quantised per row (int8) on the fly. */
void ml_gemm_packed(int M, const float *A, int lda, const ml_packed *B, const float *bias,
                    float *C, int ldc, int accumulate);

/* C[M,N] = quick_gelu(A[M,K] @ dequant(B) + bias): on AMX the activation
 * runs in the GEMM's epilogue (C is written once); elsewhere it is a
 * separate pass over C. */
void ml_gemm_packed_gelu(int M, const float *A, int lda, const ml_packed *B, const float *bias,
                         float *C, int ldc);

/* The bf16 pipeline (bf16 activations between the layers, clip.c): A is
 * bf16 [M, lda] with lda >= the packed K (B's K rounded up to 32); columns
 * K..that must be zero, and rows up to M rounded up to 32 must be readable
 * (the AMX tiles read whole 16-row blocks; a row's result depends on that
 * row only, so their contents do not matter).  The result goes to exactly
 * one of C (float32; flags may add ML_GEMM_ACCUMULATE) or Cb (bf16, rounded
 * to nearest even), with row stride ldc; ML_GEMM_GELU applies quick_gelu
 * after the bias.  B must be packed bf16 or int8 (each row is then
 * quantised from its bf16 values as ml_gemm_packed quantises float rows).
 * On AMX it is one pass (bf16: with no conversions at all); elsewhere it
 * goes through float32 (slow, for tests). */
enum { ML_GEMM_ACCUMULATE = 1, ML_GEMM_GELU = 2 };
void ml_gemm_bf16(int M, const uint16_t *A, int lda, const ml_packed *B, const float *bias,
                  float *C, uint16_t *Cb, int ldc, int flags);
/* The same, told which weights the next product will use: on AMX the
 * product's last items prefetch their first block (a layer's weights come
 * from memory once per batch; ~2% of a bf16 ViT-B pass waited for them). */
void ml_gemm_bf16_then(int M, const uint16_t *A, int lda, const ml_packed *B, const float *bias,
                       float *C, uint16_t *Cb, int ldc, int flags, const ml_packed *then);
int ml_packed_k(const ml_packed *p); /* K as packed (a multiple of 32 or 64) */
int ml_packed_native_bf16(const ml_packed *p); /* 1: ml_gemm_bf16 runs without the float32 detour */

/* The kernel that runs products of `p` (or of `prec` on `isa`), e.g.
 * "avx2-u8s7", "avxvnni-u8s8", "avx512-vnni", "amx-bf16", "avx2-bf16w"
 * (bf16 weights widened to float32 FMA), "avx2-fp32", "scalar-int8". */
const char *ml_packed_kernel_name(const ml_packed *p);
const char *ml_gemm_kernel_name(ml_precision prec, ml_isa isa);

const char *ml_precision_name(ml_precision p);
int ml_precision_parse(const char *name); /* -1 if unknown */

#endif
